"""Power: the smallest regression a canary-versus-baseline check's evidence could have revealed, and how much
more evidence a minimal regression (`min_detectable`) still needs. Pure: numbers in, numbers out (plus two
memos of running sums on the Evidence, as judge/compare.py keeps its own).

A passing check says "no evidence the canary is worse". That is worth something only when the evidence could
have shown harm: a canary at 0.5 requests/s with a ×5 error rate passes just as well as a healthy one. So a
passing rate or sign verdict can state what it could have seen (docs/rules.md, "Power"; the guard asks for it
where it decides: policy.power_due):

- rate test (errors, slow requests: judge/sequential.py's e-process): the smallest ratio λ of the canary's
  rate to the baseline's (the baseline's rate over every tick it reported, floored at half an event as
  judge/compare.py does) that the *first* staggered test — the one that has seen all the evidence since the
  warm-up, at the lowest threshold 1/α₁ = π²/(6α) — would have rejected with 80% power, had the canary been λ×
  worse over the same traffic. Analytic, not simulated: for each alternative of the mixture the expected
  log-likelihood ratio over the ticks both arms had traffic (their requests; Poisson events at the baseline's
  rate, λ× for the canary) minus 0.84 of its standard deviation must reach log(1/α₁) plus the mixture's
  log-width; both tempered by the share's dispersion φ as the test tempers them (φ from the baseline's
  Pearson dispersion, as sequential.baseline_dispersion), one canary event counting at most the per-tick
  cap; where a tick's log-LR often reaches the cap the ticks are modelled as capped normal variables.
  `rate_needed`: the canary requests that bring `min_detectable` within 80% power, more ticks like these.
- sign test (P99 and other gauges): each paired tick is one trial "canary > (1 + margin) × baseline". First
  the smallest share q* of such ticks the first test would reject with 80% power after the paired ticks seen
  (binomial mean minus 0.84 s.d., as above); then the regression that would put the canary beyond the margin
  in q* of the ticks, given the tick-to-tick noise of log(canary / baseline) observed (its deviations from
  their median, shifted up by the regression): "+35%" when the ratio is noisy, the margin itself when it is
  not. `sign_ticks_for`: the paired ticks `min_detectable` needs.

A Monte Carlo cross-check of the 80% claims with the real tests is in tests/unit/test_power.py.
"""
from __future__ import annotations

import bisect
import math
import re
from functools import lru_cache
from typing import Any

from guardian.domain import Evidence
from guardian.judge.sequential import RATE_ALTERNATIVES, SIGN_ALTERNATIVES

POWER = 0.8
Z_POWER = 0.8416212335729143  # the standard normal's 80% quantile: mean − 0.84 s.d. reached 80% of the time
FIRST_TEST_LEVEL = math.pi ** 2 / 6  # 1/α₁ = π²/(6α): the first staggered test's threshold (judge/sequential.py)
DISPERSION_PRIOR_TICKS = 10  # as judge/sequential.py's baseline_dispersion: pseudo-ticks of Poisson counts
_CAP_BINDS = 3.0  # the cap within this many s.d. of a tick's expected log-LR: model the cap on whole ticks
_NORMAL = 1 / math.sqrt(2 * math.pi)
_SQRT2 = math.sqrt(2)


def first_threshold(alpha: float) -> float:
    """1/α₁: the threshold of the first staggered test, the one that sees all the evidence since the warm-up."""
    return FIRST_TEST_LEVEL / alpha


def _log_level(threshold: float, width: int) -> float:
    """What the best alternative's log-LR must reach for the mixture of `width` to reach `threshold`."""
    return math.log(threshold) + math.log(max(width, 1))


# -- the rate test ------------------------------------------------------------------------------------------
Row = tuple[float, float, float, float]


def baseline_rate(e_b: float, n_b: float) -> float:
    """The baseline's event rate, floored at half an event (as judge/compare.py's ratio: finite with none)."""
    return max(e_b, 0.5) / n_b if n_b > 0 else math.nan


def _rate_terms(n_c: float, n_b: float, p: float, tolerance: float, dispersion: float,
                burst_cap: float | None, alternatives) -> tuple[float, list[Row]] | None:
    """(the baseline's rate p, per alternative (A, B, C, D)): with λ the canary's ratio, the tempered log-LR's
    mean is A·λ + B and its variance C·λ + D over the observed exposures (Poisson events, the share's φ)."""
    if not (n_c > 0 and n_b > 0 and 0 < p < 1 and math.isfinite(n_c + n_b)):
        return None
    rho = n_c / (n_c + n_b)
    th0 = tolerance * rho / (tolerance * rho + 1 - rho)
    if not 0 < th0 < 1:
        return None
    phi_s = 1 + max(1.0, 2 * th0) * (max(dispersion, 1.0) - 1)  # sequential.share_dispersion
    cap = math.log(burst_cap) if burst_cap else math.inf
    rows = []
    for mult in alternatives:
        lam = tolerance * float(mult)
        th1 = lam * rho / (lam * rho + 1 - rho)
        if not 0 < th1 < 1:
            continue
        a = min(math.log(th1 / th0) / phi_s, cap)  # one canary event counts at most the per-tick cap
        b = math.log((1 - th1) / (1 - th0)) / phi_s
        rows.append((p * n_c * a, p * n_b * b, phi_s * p * n_c * a * a, phi_s * p * n_b * b * b))
    return p, rows


def _solve_rate(row: Row, level: float, z: float) -> float:
    """The λ where A·λ + B − z·√(C·λ + D) = level (u = √(Cλ + D) solves a quadratic)."""
    a, b, c, d = row
    if a <= 0 or c <= 0:
        return math.inf
    r = a / c
    u = (z + math.sqrt(max(z * z - 4 * r * (b - r * d - level), 0.0))) / (2 * r)
    return (u * u - d) / c


def _per_tick(row: Row, lam: float, ticks: float, cap: float) -> tuple[float, float]:
    """(mean, variance) of one tick's log-LR at λ, the evidence taken as `ticks` equal ticks, each a normal
    variable capped at `cap`."""
    a, b, c, d = row
    m, s = (a * lam + b) / ticks, math.sqrt(max(c * lam + d, 0.0) / ticks)
    if s <= 0 or not math.isfinite(cap):
        return min(m, cap), s * s
    w = (cap - m) / s
    below = 0.5 * math.erfc(-w / _SQRT2)  # Φ(w)
    return m - ((m - cap) * (1 - below) + s * _NORMAL * math.exp(-w * w / 2)), s * s * below


def _capped_margin(row: Row, lam: float, ticks: float, cap: float, level: float, z: float) -> float:
    """Expected capped log-LR minus z s.d., minus the level (`_per_tick` over `ticks` ticks)."""
    mean, var = _per_tick(row, lam, ticks, cap)
    return ticks * mean - z * math.sqrt(ticks * var) - level


def _capped_solve(row: Row, ticks: float, cap: float, level: float, z: float, lo: float, hi: float) -> float:
    """The smallest λ in [lo, hi] whose capped margin reaches 0 (to 2%), or math.inf: steps of ×1.25 from `lo`
    (the uncapped answer, a lower bound), then bisection."""
    if _capped_margin(row, lo, ticks, cap, level, z) >= 0:
        return lo
    top = lo
    while True:
        top = min(top * 1.25, hi)
        if _capped_margin(row, top, ticks, cap, level, z) >= 0:
            break
        if top >= hi:
            return math.inf
        lo = top
    while top / lo > 1.02:
        mid = math.sqrt(lo * top)
        if _capped_margin(row, mid, ticks, cap, level, z) >= 0:
            top = mid
        else:
            lo = mid
    return top


def _detectable(p: float, rows: list[Row], ticks: float, level: float, cap: float, z: float) -> float:
    if ticks <= 0 or ticks * cap <= level:  # even a capped tick after capped tick would not reach it
        return math.inf
    best, best_row = math.inf, None
    for row in rows:
        lam = _solve_rate(row, level, z)
        if lam < best:
            best, best_row = lam, row
    if best_row is None or best * p >= 1:
        return math.inf
    a, b, c, d = best_row
    mean, spread = (a * best + b) / ticks, math.sqrt(max(c * best + d, 0.0) / ticks)
    if cap - mean < _CAP_BINDS * spread:  # a tick's log-LR often reaches the cap: model the cap on whole ticks
        return _capped_solve(best_row, ticks, cap, level, z, best, 1 / p)
    return best


def _needed(p: float, rows: list[Row], n_c: float, ticks: float, target: float, level: float, cap: float,
            z: float) -> float:
    """The canary requests beyond `n_c` that bring `target` within 80% power: more ticks like these (each
    exposure scaled alike: a tick's capped log-LR keeps its mean m and variance v), s·T·m − z·√(s·T·v) = level."""
    if ticks <= 0:
        return math.inf
    best = math.inf
    for row in rows:
        mean, var = _per_tick(row, target, ticks, cap)
        if mean <= 0:
            continue
        root = (z * math.sqrt(var) + math.sqrt(z * z * var + 4 * mean * level)) / (2 * mean)
        best = min(best, root * root / ticks)  # s: the scale of the evidence
    return math.inf if not math.isfinite(best) else max(0.0, (best - 1) * n_c)


def rate_detectable(n_c: float, n_b: float, e_b: float, *, ticks: float, threshold: float, tolerance: float = 1.0,
                    dispersion: float = 1.0, burst_cap: float | None = None, z: float = Z_POWER,
                    alternatives=RATE_ALTERNATIVES) -> float:
    """The smallest ratio λ (× the baseline's rate) the rate test would have rejected with 80% power on this
    evidence: `n_c`, `n_b` requests of each arm and `e_b` baseline events over `ticks` paired ticks since the
    test began, `threshold` its 1/α_j, `dispersion` the baseline's φ̂. math.inf when no ratio would do (too
    few ticks for the per-tick cap, or even a canary failing every request would not be enough)."""
    terms = _rate_terms(n_c, n_b, baseline_rate(e_b, n_b), tolerance, dispersion, burst_cap, alternatives)
    if terms is None:
        return math.inf
    cap = math.log(burst_cap) if burst_cap else math.inf
    return _detectable(*terms, ticks, _log_level(threshold, len(alternatives)), cap, z)


def rate_needed(n_c: float, n_b: float, e_b: float, *, ticks: float, target: float, threshold: float,
                tolerance: float = 1.0, dispersion: float = 1.0, burst_cap: float | None = None, z: float = Z_POWER,
                alternatives=RATE_ALTERNATIVES) -> float:
    """The canary requests still needed (beyond `n_c`) for the rate test to detect a ratio `target` with 80%
    power, the traffic going on at the same share and baseline rate (every exposure scaled alike): 0 when it
    already could, math.inf when it never could (no paired traffic yet, or `target` × the baseline's rate is
    not a rate: above 1)."""
    terms = _rate_terms(n_c, n_b, baseline_rate(e_b, n_b), tolerance, dispersion, burst_cap, alternatives)
    if terms is None or target * terms[0] >= 1 or target <= tolerance:
        return math.inf
    cap = math.log(burst_cap) if burst_cap else math.inf
    return _needed(*terms, n_c, ticks, target, _log_level(threshold, len(alternatives)), cap, z)


# -- the sign test ------------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _sign_rows(alternatives: tuple[float, ...]) -> tuple[tuple[float, float], ...]:
    """(log-LR of a tick beyond the margin, of one within it) per alternative."""
    return tuple((math.log(2 * p), math.log(2 * (1 - p))) for p in alternatives)


_SIGN = tuple(float(x) for x in SIGN_ALTERNATIVES)


@lru_cache(maxsize=4096)
def sign_share_detectable(n: int, *, threshold: float, z: float = Z_POWER, alternatives: tuple = _SIGN) -> float:
    """The smallest share q of ticks beyond the margin that the sign test would reject with 80% power after `n`
    paired ticks; math.inf when even every tick beyond it would not be enough."""
    if n <= 0:
        return math.inf
    level = _log_level(threshold, len(alternatives))
    best = math.inf
    for w1, w0 in _sign_rows(alternatives):
        if n * w1 < level:
            continue
        delta = w1 - w0
        # n(w0 + qΔ) − level = zΔ√(n q(1−q)), squared: a quadratic in q; its larger root is the one
        g0 = n * w0 - level
        qa = n * n * delta * delta + z * z * delta * delta * n
        qb = 2 * n * delta * g0 - z * z * delta * delta * n
        disc = qb * qb - 4 * qa * g0 * g0
        q = 1.0 if disc < 0 else (-qb + math.sqrt(disc)) / (2 * qa)
        best = min(best, min(max(q, 0.5), 1.0))
    return best


def sign_ticks_for(q: float, *, threshold: float, z: float = Z_POWER, alternatives: tuple = _SIGN) -> float:
    """The paired ticks the sign test needs to reject with 80% power when a share `q` of them is beyond the
    margin; math.inf when q is too small for any alternative."""
    level = _log_level(threshold, len(alternatives))
    best = math.inf
    for w1, w0 in _sign_rows(alternatives):
        delta = w1 - w0
        mean = w0 + q * delta
        if mean <= 0:
            continue
        spread = z * delta * math.sqrt(max(q * (1 - q), 0.0))
        root = (spread + math.sqrt(spread * spread + 4 * mean * level)) / (2 * mean)
        best = min(best, root * root)
    return best


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    return ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])


def sign_detectable(log_ratios, *, margin: float, threshold: float, z: float = Z_POWER,
                    alternatives: tuple = _SIGN) -> tuple[float, float]:
    """(the smallest regression δ — the canary's gauge (1 + δ)× the baseline's — the sign test would have
    rejected with 80% power, the share q* of ticks beyond the margin that takes), from the paired ticks'
    log(canary / baseline) (sorted or not); (math.inf, q*) when no regression would have been enough."""
    ordered = sorted(log_ratios)
    n = len(ordered)
    q = sign_share_detectable(n, threshold=threshold, z=z, alternatives=alternatives)
    if not math.isfinite(q):
        return math.inf, q
    k = min(n, max(1, math.ceil(q * n - 1e-9)))  # ticks that must be beyond the margin
    noise = ordered[n - k] - _median(ordered)  # the k-th largest deviation from the median
    return max(margin, (1 + margin) * math.exp(-noise) - 1), q


def sign_share_beyond(log_ratios, *, margin: float, regression: float) -> float:
    """The share of ticks a regression of `regression` (+25%) would put beyond the margin, given the noise."""
    ordered = sorted(log_ratios)
    if not ordered:
        return 0.0
    edge = math.log1p(margin) - math.log1p(regression) + _median(ordered)
    return (len(ordered) - bisect.bisect_right(ordered, edge)) / len(ordered)


# -- from a check's evidence to a verdict's fields -----------------------------------------------------------
_HEADLINE = re.compile(r"have detected ([×+][^\s,]+)")


_ASKED = re.compile(r"; ([×+][^\s)]+) asked\)")


def headline(detectable: str | None) -> str:
    """The regression a statement says could have been detected: '×1.7', '+35%', or 'none'."""
    m = _HEADLINE.search(detectable or "")
    return m.group(1) if m else "none"


def asked(detectable: str | None) -> str:
    """The `min_detectable` a statement was judged against: '×2', '+25%' ('' when it does not say)."""
    m = _ASKED.search(detectable or "")
    return m.group(1) if m else ""


def _rate_sums(ev: Evidence, num: str, den: str, t: int) -> list[tuple[float, ...]]:
    """Running sums (item i: ticks < i), memoised on the evidence and extended with new ticks only: over the
    ticks both arms had traffic (the rate test's evidence), (ticks, canary requests, baseline requests); over
    every tick the baseline reported, its Pearson sums (Σk²/n, Σk, Σn, ticks)."""
    key = ("power_rate", num, den)
    sums = ev.cache.get(key)
    if sums is None:
        sums = ev.cache[key] = [(0.0,) * 7]
    if len(sums) <= t + 1:
        have = len(sums) - 1
        k_c, n_c = ev.array(num, "canary"), ev.array(den, "canary")
        k_b, n_b = ev.array(num, "baseline"), ev.array(den, "baseline")
        m, sc, sb, q, k, n, ok = sums[-1]
        for i in range(have, t + 1):
            kc, nc, kb, nb = float(k_c[i]), float(n_c[i]), float(k_b[i]), float(n_b[i])
            if math.isfinite(kb + nb) and nb > 0 and kb >= 0:
                q, k, n, ok = q + kb * kb / nb, k + kb, n + nb, ok + 1
                if math.isfinite(kc + nc) and nc > 0:
                    m, sc, sb = m + 1, sc + nc, sb + nb
            sums.append((m, sc, sb, q, k, n, ok))
    return sums


def pearson_dispersion(sq: float, sk: float, sn: float, m: float) -> float:
    """The baseline's φ̂ from its sums Σk²/n, Σk, Σn over m ticks, shrunk towards 1 (judge/sequential.py)."""
    if sn <= 0 or sk <= 0:
        return 1.0
    p = sk / sn
    if not 0 < p < 1:
        return 1.0
    x2 = (sq - 2 * p * sk + p * p * sn) / (p * (1 - p))
    phi = (x2 + DISPERSION_PRIOR_TICKS) / (max(m - 1, 0) + DISPERSION_PRIOR_TICKS)
    return max(phi, 1.0) if math.isfinite(phi) else 1.0


def _up(x: float, digits: int = 2) -> float:
    """x rounded up to `digits` significant digits: a power statement never claims more than it has."""
    if x <= 0 or not math.isfinite(x):
        return x
    scale = 10 ** (math.floor(math.log10(x)) - digits + 1)
    return math.ceil(x / scale - 1e-9) * scale


def _ratio(x: float) -> str:
    return f"×{_up(x):.2g}" if x < 10 else f"×{_up(x):.0f}"


def _percent(x: float) -> str:
    """0.0123 -> '1.3%', 0.354 -> '36%', 1.25 -> '125%' (rounded up)."""
    v = _up(x * 100)
    return f"{v:.2g}%" if v < 10 else f"{v:.0f}%"


def _count(x: float) -> str:
    return f"{x:,.0f}" if x < 1e4 else f"{float(f'{x:.2g}'):,.0f}"


def rate_power(check: Any, ev: Evidence, t: int, since: int, alpha: float | None = None) -> dict[str, Any]:
    """The power fields of a rate verdict (Verdict.detectable, .powered, .needed) at tick t, for the test that
    began at tick `since` (the first: it has seen everything after the warm-up); `alpha`: the share test's part
    of the check's α (less than all of it when the level test runs beside it; judge/compare.py)."""
    num, den = check.signals
    sums = _rate_sums(ev, num, den, t)
    now, then = sums[t + 1], sums[min(since, t + 1)]
    ticks, n_c, n_b = (now[i] - then[i] for i in range(3))
    rate = baseline_rate(now[4] - then[4], now[5] - then[5])  # from every tick the baseline reported since then
    tolerance, target = check.effective_tolerance, check.effective_min_detectable
    burst_cap = getattr(check, "burst_cap", None)
    terms = _rate_terms(n_c, n_b, rate, tolerance, pearson_dispersion(*now[3:]), burst_cap, RATE_ALTERNATIVES)
    evidence = f"{_count(n_c)} canary {den} over {ticks:.0f} ticks"
    if terms is None:
        return {"detectable": f"could not have detected any regression: no ticks with traffic in both arms yet "
                              f"({_ratio(target)} asked)", "powered": False, "needed": None}
    p, rows = terms
    threshold = first_threshold(check.alpha if alpha is None else alpha)
    level, cap = _log_level(threshold, len(RATE_ALTERNATIVES)), math.log(burst_cap or math.inf)
    lam = _detectable(p, rows, ticks, level, cap, Z_POWER)
    powered = lam <= target
    needed = 0.0 if powered else (
        _needed(p, rows, n_c, ticks, target, level, cap, Z_POWER) if target * p < 1 and target > tolerance
        else math.inf)
    if not math.isfinite(lam):
        said = f"could not have detected any regression with {POWER:.0%} power ({evidence}; {_ratio(target)} asked)"
    else:
        said = (f"could {'' if powered else 'only '}have detected {_ratio(lam)} ({_percent(lam * p)} {num}) "
                f"with {POWER:.0%} power ({evidence}; {_ratio(target)} asked)")
    if not powered:
        said += (f": ~{_count(max(needed, 1))} more canary {den} needed" if math.isfinite(needed)
                 else f": {_ratio(target)} cannot be seen in this traffic")
    return {"detectable": said, "powered": powered,
            "needed": float(math.ceil(needed)) if math.isfinite(needed) else None}


def _log_ratios(ev: Evidence, signal: str, since: int, t: int) -> list[float]:
    """log(canary / baseline) of the paired ticks since `since` (both values positive), sorted; memoised on the
    evidence and extended with new ticks only."""
    key = ("power_sign", signal, since)
    memo = ev.cache.get(key)
    if memo is None:
        memo = ev.cache[key] = [since, []]
    elif memo[0] > t + 1:  # it has seen ticks after t: a fresh one for this look
        memo = [since, []]
    if memo[0] <= t:
        g_c, g_b = ev.array(signal, "canary"), ev.array(signal, "baseline")
        ordered = memo[1]
        for i in range(memo[0], t + 1):
            c, b = float(g_c[i]), float(g_b[i])
            if c > 0 and b > 0 and math.isfinite(c + b):
                bisect.insort(ordered, math.log(c / b))
        memo[0] = t + 1
    return memo[1]


def sign_power(check: Any, ev: Evidence, t: int, since: int) -> dict[str, Any]:
    """The power fields of a sign verdict (Verdict.detectable, .powered; .needed is None: the statement says the
    paired ticks still needed) at tick t, for the test that began at tick `since`."""
    ordered = _log_ratios(ev, check.signal or "", since, t)
    n = len(ordered)
    margin, target, threshold = check.effective_tolerance, check.effective_min_detectable, first_threshold(check.alpha)
    delta, q = sign_detectable(ordered, margin=margin, threshold=threshold)
    powered = delta <= target
    evidence = f"its margin +{margin:.0%}, {n} paired ticks; +{target:.0%} asked"
    if math.isfinite(delta):
        said = (f"could {'' if powered else 'only '}have detected +{_percent(delta)} with {POWER:.0%} power "
                f"(beyond the margin in {q:.0%} of ticks; {evidence})")
    else:
        said = f"could not have detected any regression with {POWER:.0%} power ({evidence})"
    if not powered:
        share = sign_share_beyond(ordered, margin=margin, regression=target) if n else 1.0
        more = sign_ticks_for(share, threshold=threshold) - n
        said += (f": ~{max(1, math.ceil(more))} more paired ticks needed" if math.isfinite(more)
                 else f": +{target:.0%} is within the tick-to-tick noise")
    return {"detectable": said, "powered": powered, "needed": None}
