"""Canary versus baseline, sequentially and validly: anytime-valid tests checked every tick.

Rate test (errors, slow requests). Conditional on the events of a tick in both arms, the canary's
share is binomial with θ(λ) = λρ / (λρ + 1 − ρ), where ρ is the canary's share of the traffic in
that tick and λ the ratio of the canary's event rate to the baseline's. Under H0 (λ ≤ λ0, the
tolerance) the likelihood ratio of any λ > λ0 against λ0 is a supermartingale, and so is a mixture
over a grid of λ: an e-process. Rejecting when it reaches 1/α keeps the false-rollback rate ≤ α
however often we look (Ville's inequality) — no peeking penalty, unlike a repeated z-test.

Four things make it usable on real traffic:
- tempering: each tick's log-LR is divided by the overdispersion φ of the canary's share, estimated
  predictably from the baseline's own tick-to-tick variation (`baseline_dispersion`, `share_dispersion`):
  a quasi-likelihood, still an e-value to second order when the variance is φ times the binomial's;
- burst cap: one tick may multiply the evidence by at most `burst_cap` (the log-LR is clipped
  from above, which keeps the supermartingale property), so one overdispersed burst of errors
  cannot roll back a release on its own; a real regression keeps adding evidence tick after tick;
- staggered starts: a new test starts every `every` ticks with its own share α_j = α·6/(π² j²)
  of α, so a regression that begins late is not diluted by the healthy ticks before it;
- warm-up: the first ticks after the start are not counted (for signals that warm up: judge/compare.py).

Sign test (gauges such as P99): each tick is one Bernoulli trial "canary > (1+margin)·baseline";
under H0 (same distribution) its probability is at most 1/2. The same machinery runs on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

RATE_ALTERNATIVES = np.array([1.5, 2.0, 3.0, 5.0, 10.0, 30.0])  # multiples of the tolerance λ0
SIGN_ALTERNATIVES = np.array([0.6, 0.75, 0.9, 0.98])
_BASEL = math.pi**2 / 6


def as_array(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@dataclass(frozen=True)
class SequentialResult:
    """What a sequential test concluded at one tick."""

    rejected: bool
    e_value: float  # the mixture e-value of the test closest to rejecting
    threshold: float  # the 1/α_j it is compared with
    start: int | None  # the tick that test started at
    ticks: int  # ticks since that test started


def staggered_mixture(log_lr: np.ndarray, t: int, alpha: float, *, warmup: int, every: int) -> SequentialResult:
    """log_lr: per tick × alternative (NaN where a tick carries no evidence). Tests start at
    ticks warmup, warmup+every, ...; test j (from 1) has threshold j²·π²/6/α. Returns the test with
    the largest e-value relative to its threshold."""
    return staggered_from_cumulative(cumulative(log_lr[: t + 1]), t, alpha, warmup=warmup, every=every)


def cumulative(log_lr: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Row i+1 = sum of rows ≤ i (row 0 = zeros); extends `previous` (the cumulative of a prefix)."""
    lr = np.where(np.isnan(log_lr), 0.0, log_lr)
    if previous is None:
        return np.vstack([np.zeros(lr.shape[1]), np.cumsum(lr, axis=0)])
    return np.vstack([previous, previous[-1] + np.cumsum(lr, axis=0)])


@lru_cache(maxsize=256)
def _log_thresholds(alpha: float, n_starts: int) -> np.ndarray:
    return np.log(np.arange(1, n_starts + 1) ** 2 * _BASEL / alpha)


def log_mixture(llr: np.ndarray) -> np.ndarray:
    """Per row (a test's start) of log-LRs over the alternatives: the log of their equal-weight mixture, the
    test's log e-value (computed from the largest, so that no exp overflows)."""
    peak = llr.max(axis=1)
    return peak + np.log(np.exp(llr - peak[:, None]).mean(axis=1))


def staggered_from_cumulative(cum: np.ndarray, t: int, alpha: float, *, warmup: int, every: int) -> SequentialResult:
    if t < warmup:
        return SequentialResult(False, 1.0, _BASEL / alpha, None, 0)
    every = max(1, every)
    log_e = log_mixture(cum[t + 1] - cum[warmup : t + 1 : every])  # per start
    log_thr = _log_thresholds(alpha, len(log_e))
    margin = log_e - log_thr
    best = int(margin.argmax())
    start = warmup + best * every
    return SequentialResult(bool(margin[best] >= 0), float(np.exp(min(log_e[best], 700))), float(np.exp(log_thr[best])),
                    start, t + 1 - start)


DISPERSION_PRIOR_TICKS = 10  # pseudo-ticks of Poisson-like (φ = 1) counts the dispersion estimate starts from


def baseline_dispersion(k_b, n_b) -> np.ndarray:
    """Per tick t, the baseline's overdispersion φ̂_t estimated from ticks < t only (predictable, so the
    tempered e-process stays one): Pearson's X² of its event counts against their pooled rate, per degree
    of freedom, shrunk towards 1 with DISPERSION_PRIOR_TICKS pseudo-ticks, never below 1.

    The baseline is the healthy arm, so its bursts say how bursty the service's events are without being
    inflated by a regression. X² is kept as running sums: Σ(k − np)²/n = Σk²/n − 2pΣk + p²Σn."""
    k_b, n_b = np.asarray(k_b, dtype=float), np.asarray(n_b, dtype=float)
    ok = np.isfinite(k_b) & np.isfinite(n_b) & (n_b > 0) & (k_b >= 0)
    k, n = np.where(ok, k_b, 0.0), np.where(ok, n_b, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        cols = np.column_stack([np.where(ok, k * k / n, 0.0), k, np.where(ok, n_b, 0.0), ok.astype(float)])
        before = np.vstack([np.zeros(4), np.cumsum(cols, axis=0)[:-1]])  # sums over ticks < t
        sq, sk, sn, m = before.T
        p = np.where(sn > 0, sk / np.where(sn > 0, sn, 1.0), 0.0)
        x2 = np.where(p > 0, (sq - 2 * p * sk + p * p * sn) / np.where(p > 0, p * (1 - p), 1.0), 0.0)
        x2 = np.where(p > 0, x2, m)  # no event yet: nothing says the counts are bursty
        phi = (x2 + DISPERSION_PRIOR_TICKS) / (np.maximum(m - 1, 0) + DISPERSION_PRIOR_TICKS)
    return np.where(np.isfinite(phi), np.maximum(phi, 1.0), 1.0)


def share_dispersion(phi_b: np.ndarray | float, share: np.ndarray | float) -> np.ndarray | float:
    """The overdispersion of the canary's share of a tick's events, from the baseline's φ_b and the canary's
    expected share θ under H0: with independent bursts in each arm (a gamma-mixed rate, each arm its own),
    Var = Kθ(1−θ)·(1 + 2θ(φ_b − 1)) when φ_b − 1 grows with the arm's expected count (as for a gamma mix), so
    φ_share − 1 = 2θ(φ_b − 1) ≤ φ_b − 1 for θ ≤ 1/2. Bursts that hit both arms at once cancel in the share."""
    return 1 + np.maximum(1.0, 2 * np.asarray(share)) * (np.asarray(phi_b) - 1)


def rate_log_lr(k_c, n_c, k_b, n_b, *, tolerance: float = 1.0, burst_cap: float = 3.0,
                dispersion=None) -> np.ndarray:
    """Per-tick log-likelihood ratios (tick × alternative) of the rate test; NaN where a tick has
    no usable counts (missing, no traffic in an arm, or no events). `dispersion` (per tick, or None for 1):
    the baseline's φ̂ (`baseline_dispersion`); each tick's log-LR is tempered by the share's φ (quasi-
    likelihood: with the variance φ times the binomial's, exp(log-LR / φ) is still an e-value to second
    order), then capped at log(burst_cap)."""
    k_c, n_c, k_b, n_b = (np.asarray(a, dtype=float) for a in (k_c, n_c, k_b, n_b))
    phi = np.ones(len(k_c)) if dispersion is None else np.broadcast_to(np.asarray(dispersion, float), (len(k_c),))
    if len(k_c) == 1:  # the live case, one new tick at a time: scalar arithmetic beats numpy's overhead
        return _rate_log_lr_row(float(k_c[0]), float(n_c[0]), float(k_b[0]), float(n_b[0]), tolerance, burst_cap,
                                float(phi[0]))
    valid = ~(np.isnan(k_c) | np.isnan(n_c) | np.isnan(k_b) | np.isnan(n_b)) & (n_c > 0) & (n_b > 0)
    valid &= (k_c + k_b) > 0
    rho = np.where(valid, n_c / np.where(valid, n_c + n_b, 1.0), 0.5)[:, None]
    lam = (tolerance * RATE_ALTERNATIVES)[None, :]

    def theta(ratio):
        return ratio * rho / (ratio * rho + 1 - rho)

    th1, th0 = theta(lam), theta(tolerance)
    kc, kb = np.where(valid, k_c, 0.0)[:, None], np.where(valid, k_b, 0.0)[:, None]
    ll = kc * np.log(th1 / th0) + kb * np.log((1 - th1) / (1 - th0))
    ll = ll / share_dispersion(phi[:, None], th0)
    ll = np.minimum(ll, math.log(burst_cap))
    return np.where(valid[:, None], ll, np.nan)


def _rate_log_lr_row(kc: float, nc: float, kb: float, nb: float, tolerance: float, burst_cap: float,
                     phi: float = 1.0) -> np.ndarray:
    """`rate_log_lr` for a single tick (the same formula, in scalars)."""
    if not math.isfinite(kc + nc + kb + nb) or nc <= 0 or nb <= 0 or kc + kb <= 0:
        return np.full((1, len(RATE_ALTERNATIVES)), np.nan)
    rho = nc / (nc + nb)
    th0 = tolerance * rho / (tolerance * rho + 1 - rho)
    temper = 1 / float(share_dispersion(phi, th0))
    cap = math.log(burst_cap)
    row = []
    try:
        for mult in RATE_ALTERNATIVES:
            lam = tolerance * float(mult)
            th1 = lam * rho / (lam * rho + 1 - rho)
            row.append(min((kc * math.log(th1 / th0) + kb * math.log((1 - th1) / (1 - th0))) * temper, cap))
    except (ZeroDivisionError, ValueError):  # counts so far apart (or so extreme) that a share rounds to 0 or 1
        return np.full((1, len(RATE_ALTERNATIVES)), np.nan)
    return np.array([row])


def sign_log_lr(g_c, g_b, *, margin: float = 0.2) -> np.ndarray:
    """Per-tick log-LRs of the sign test "canary > (1+margin)·baseline" (NaN where a value is missing)."""
    g_c, g_b = np.asarray(g_c, dtype=float), np.asarray(g_b, dtype=float)
    valid = ~(np.isnan(g_c) | np.isnan(g_b))
    worse = (g_c > (1 + margin) * g_b)[:, None]
    p = SIGN_ALTERNATIVES[None, :]
    ll = np.where(worse, np.log(2 * p), np.log(2 * (1 - p)))
    return np.where(valid[:, None], ll, np.nan)


def collapse_p_value(n_c, n_b, t: int, *, warmup: int, min_before: float = 5.0) -> tuple[float, int, float, float]:
    """Has the canary stopped getting traffic it used to get (a crash loop)?

    Finds the trailing run of ticks with *zero* canary requests (missing scrapes neither count nor
    break it) and the canary's traffic share before it (its Wilson lower bound, to be cautious).
    Under H0 (the share is unchanged) the chance of no canary request among the baseline's B
    requests is (1 − ρ)^B. Returns (p, run length in ticks, B, ρ); p = 1 when there is no run or
    the canary never had traffic (a canary that never had any is a silent canary, not a crash)."""
    n_c, n_b = np.asarray(n_c[: t + 1], dtype=float), np.asarray(n_b[: t + 1], dtype=float)
    i, run, baseline = t, 0, 0.0
    while i >= warmup:
        if np.isnan(n_c[i]):
            i -= 1
            continue
        if n_c[i] > 0:
            break
        run += 1
        baseline += 0.0 if np.isnan(n_b[i]) else n_b[i]
        i -= 1
    if run == 0:  # the canary got traffic at its latest answered tick: nothing has collapsed
        return 1.0, 0, 0.0, float("nan")
    before = slice(warmup if i >= warmup else 0, i + 1)
    seen_c, seen_b = np.nansum(n_c[before]), np.nansum(n_b[before])
    if seen_c < min_before or seen_c + seen_b <= 0:
        return 1.0, run, baseline, float("nan")
    from guardian.judge.threshold import wilson_bounds

    share, _ = wilson_bounds(seen_c, seen_c + seen_b, 0.95)
    if not 0 < share < 1:  # also nonsense counts (negative, or too large to add up) that put it outside (0, 1)
        return 1.0, run, baseline, share
    return float(math.exp(baseline * math.log1p(-share))), run, baseline, float(share)


def first_rejection(log_lr: np.ndarray, alpha: float, *, warmup: int, every: int) -> int | None:
    """The first tick at which `staggered_mixture` rejects on this path, or None: the same test
    checked at every tick, computed for a whole path at once (for simulations and benchmarks)."""
    n = log_lr.shape[0]
    if n <= warmup:
        return None
    cum = cumulative(log_lr)
    starts = np.arange(warmup, n, max(1, every))
    log_thr = np.log(np.arange(1, len(starts) + 1) ** 2 * _BASEL / alpha)
    earliest = None
    for j, s in enumerate(starts):
        if earliest is not None and s >= earliest:
            break  # a test starting later cannot reject earlier
        log_e = log_mixture(cum[s + 1 :] - cum[s])  # ticks s..n-1
        hits = np.flatnonzero(log_e >= log_thr[j])
        if hits.size and (earliest is None or s + int(hits[0]) < earliest):
            earliest = s + int(hits[0])
    return earliest
