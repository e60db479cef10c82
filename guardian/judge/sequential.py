"""Canary versus baseline, sequentially and validly: anytime-valid tests checked every tick.

Rate test (errors, slow requests). Conditional on the events of a tick in both arms, the canary's
share is binomial with θ(λ) = λρ / (λρ + 1 − ρ), where ρ is the canary's share of the traffic in
that tick and λ the ratio of the canary's event rate to the baseline's. Under H0 (λ ≤ λ0, the
tolerance) the likelihood ratio of any λ > λ0 against λ0 is a supermartingale, and so is a mixture
over a grid of λ: an e-process. Rejecting when it reaches 1/α keeps the false-rollback rate ≤ α
however often we look (Ville's inequality) — no peeking penalty, unlike a repeated z-test.

Four things make it usable on real traffic:
- tempering: each tick's log-LR is divided by the overdispersion φ of the canary's share, estimated
  predictably from the baseline's own tick-to-tick variation (`share_test_dispersion`, `share_dispersion`):
  a quasi-likelihood, still an e-value to second order when the variance is φ times the binomial's; until the
  baseline's ticks say how bursty the service is, a cv² of SHARE_CV2_PRIOR is assumed;
- burst cap: one tick may multiply the evidence by at most `burst_cap` (the log-LR is clipped
  from above, which keeps the supermartingale property), so one overdispersed burst of errors
  cannot roll back a release on its own; a real regression keeps adding evidence tick after tick;
- staggered starts: a new test starts every `every` ticks with its own share α_j = α·6/(π² j²)
  of α, so a regression that begins late is not diluted by the healthy ticks before it;
- warm-up: the first ticks after the start are not counted (for signals that warm up: judge/compare.py).

Level test (the fast path for errors, `level_log_lr`). The share test above cannot tell one tick of a canary
whose errors are blatant from one burst of a bursty service, so its cap makes it take five ticks or more. When
the guard knows the service's error rate from before the rollout (a window of the baseline's history), a second
e-process judges each tick's canary count on its own: under H0 it is negative binomial around the canary's
requests × the tolerance × the service's pooled rate (the pre-rollout window and the baseline's ticks so far,
one standard deviation up: its error is the same in every tick), its shape from the burstiness of the per-tick
rate (`burst_cv2`: the baseline's excess variance, shrunk towards a pessimistic cv² of 4) and from the pooled
rate's own uncertainty; the null also allows the rate of the baseline's latest ticks (so an outage hitting both
arms at once is not the canary's fault). Its null is
pessimistic enough that one tick of overwhelming evidence may decide (`level_log_cap`); A/A runs with bursts
of cv 2 in each arm stay inside α (benchmarks/aa_rate.py). The level test spends LEVEL_ALPHA_SHARE of α, the
share test the rest; without a pre-rollout reference (NO_REFERENCE) the baseline's own ticks are the reference,
and the level test starts once they hold LEVEL_MIN_REFERENCE_TICKS ticks' worth of the service's traffic.
A live look adds one tick to a `LevelTracker` (running sums); `level_log_lr` judges whole paths at once.

Sign test (gauges such as P99): each tick is one Bernoulli trial "canary > (1+margin)·baseline";
under H0 (same distribution) its probability is at most 1/2. The same machinery runs on it.
"""
from __future__ import annotations

import itertools
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


def cv2_from_sums(k: float, n: float, kk: float, nn: float, kn: float, w: float, prior: float,
                  prior_ticks: float) -> float:
    """`burst_cv2` of one tick from the running sums of the baseline's ticks before it (Σk, Σn, Σk², Σn², Σkn and
    the weight Σ min(1, (n·p)²)), for the trackers that add one tick a look."""
    p = k / n if n > 0 else 0.0
    denom = p * p * nn
    try:
        excess = kk - 2 * p * kn + p * p * nn - p * (1 - p) * n
        estimate = excess / denom if denom > 0 else 0.0
        cv2 = (estimate * w + prior * prior_ticks) / (w + prior_ticks)
    except ZeroDivisionError:
        return prior
    return max(cv2, 0.0) if math.isfinite(cv2) else prior


class DispersionTracker:
    """`share_test_dispersion` one tick at a time, from running sums (a live rollout or a replay adds one tick per
    look: recomputing the whole history each time would cost O(ticks) a tick). `step(k_b, n_b)` returns the
    tick's φ (from the ticks before it) and then counts the tick."""

    def __init__(self) -> None:
        self.seen = 0
        # Pearson: Σk²/n, Σk, Σn, ticks; burstiness: Σk², Σn², Σkn, Σ weight
        self.sq = self.sk = self.sn = self.m = 0.0
        self.kk = self.nn = self.kn = self.w = 0.0

    def step(self, k: float, n: float) -> float:
        ok = math.isfinite(k) and math.isfinite(n) and n > 0 and k >= 0
        p = self.sk / self.sn if self.sn > 0 else 0.0
        try:
            if p > 0:
                x2 = (self.sq - 2 * p * self.sk + p * p * self.sn) / (p * (1 - p))
            else:
                x2 = self.m
            pearson = (x2 + DISPERSION_PRIOR_TICKS) / (max(self.m - 1, 0.0) + DISPERSION_PRIOR_TICKS)
        except ZeroDivisionError:
            pearson = math.nan
        pearson = max(pearson, 1.0) if math.isfinite(pearson) else 1.0
        cv2 = cv2_from_sums(self.sk, self.sn, self.kk, self.nn, self.kn, self.w, SHARE_CV2_PRIOR, SHARE_PRIOR_TICKS)
        rate = (self.sk + 0.5) / (self.sn + 1)
        burst = 1 + (n if ok else 0.0) * rate * cv2
        phi = max(pearson, burst if math.isfinite(burst) else 1.0)
        if ok:
            self.sq += k * k / n
            self.sk += k
            self.sn += n
            self.m += 1
            self.kk += k * k
            self.nn += n * n
            self.kn += k * n
            self.w += min(1.0, (n * p) ** 2)
        self.seen += 1
        return phi


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


LEVEL_ALPHA_SHARE = 0.3  # the part of a rate check's α the level test spends when it runs
BURST_CV2_PRIOR, BURST_PRIOR_TICKS = 4.0, 10.0  # the burstiness assumed until the baseline's ticks say otherwise
SHARE_CV2_PRIOR, SHARE_PRIOR_TICKS = 2.0, 3.0  # the same for the share test's tempering (share_test_dispersion)
LEVEL_FIXED_RATES = (0.05, 0.25)  # absolute canary error rates among the alternatives (for a spotless service)
LEVEL_MULTIPLES = (3.0, 10.0, 30.0)  # and multiples of the tolerated rate
LEVEL_COLUMNS = len(LEVEL_MULTIPLES) + len(LEVEL_FIXED_RATES)
LEVEL_MIN_REFERENCE_TICKS = 10  # the ticks' worth of the service's traffic the reference must hold
LEVEL_SPREAD_WEIGHT = 6.0  # × the variance of the pooled rate's mean over its ticks (bursts are skewed: pessimistic)
NO_REFERENCE = (0.0, 0.0, 0.0)  # no window before the rollout: the baseline's own ticks are the reference
LEVEL_RECENT_TICKS = 6  # the baseline's latest ticks whose rate H0 also allows the canary (a shared outage)


def level_log_cap(alpha: float) -> float:
    """The most one tick may add to the level test's log e-value: its first start's rejection level plus the log
    of its mixture's width. One tick of overwhelming evidence may decide (a canary failing one request in five
    where the service failed none of thousands); the cap only keeps a single absurd count from carrying the
    test for the ticks after it."""
    return math.log(_BASEL / alpha) + math.log(LEVEL_COLUMNS)


def _nb_log_kernel(k: np.ndarray, mu: np.ndarray, s: np.ndarray) -> np.ndarray:
    """log P(k) of a negative binomial with mean mu and shape s (variance mu + mu²/s), less its log-binomial
    term, which depends on k and s alone and so cancels in the ratio of two means' densities."""
    mu = np.maximum(mu, 1e-300)
    return s * np.log(s / (s + mu)) + k * np.log(mu / (s + mu))


def _nb_log_kernel_float(k: float, mu: float, s: float) -> float:
    """`_nb_log_kernel` for one tick's floats (NaN where numpy would give a non-finite value)."""
    mu = max(mu, 1e-300)
    try:
        return s * math.log(s / (s + mu)) + k * math.log(mu / (s + mu))
    except (ValueError, ZeroDivisionError, OverflowError):
        return math.nan


def _sums_before(x: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(x)[:-1]])


def burst_cv2(k_b, n_b, prior: float | None = None, prior_ticks: float | None = None) -> np.ndarray:
    """Per tick t, from the baseline's ticks < t only (predictable): the squared coefficient of variation of its
    per-tick event rate beyond binomial noise (method of moments: Σ[(k − np)² − np(1 − p)] / Σ(np)²), shrunk
    towards `prior` with `prior_ticks` pseudo-ticks (BURST_CV2_PRIOR, BURST_PRIOR_TICKS unless given); a tick
    weighs fully once it expects an event."""
    prior = BURST_CV2_PRIOR if prior is None else prior
    prior_ticks = BURST_PRIOR_TICKS if prior_ticks is None else prior_ticks
    k_b, n_b = np.asarray(k_b, dtype=float), np.asarray(n_b, dtype=float)
    ok = np.isfinite(k_b) & np.isfinite(n_b) & (n_b > 0) & (k_b >= 0)
    kb, nb = np.where(ok, k_b, 0.0), np.where(ok, n_b, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        big_k, big_n, kk, nn, kn = (_sums_before(x) for x in (kb, nb, kb * kb, nb * nb, kb * nb))
        p = np.where(big_n > 0, big_k / np.where(big_n > 0, big_n, 1.0), 0.0)
        excess = kk - 2 * p * kn + p * p * nn - p * (1 - p) * big_n
        denom = p * p * nn
        estimate = np.where(denom > 0, excess / np.where(denom > 0, denom, 1.0), 0.0)
        weight = _sums_before(np.minimum(1.0, (nb * p) ** 2))
        cv2 = (estimate * weight + prior * prior_ticks) / (weight + prior_ticks)
    return np.where(np.isfinite(cv2), np.maximum(cv2, 0.0), prior)


def share_test_dispersion(k_b, n_b) -> np.ndarray:
    """The dispersion the share test is tempered by, per tick from the baseline's ticks before it: the larger of
    its Pearson estimate (`baseline_dispersion`) and 1 + (expected events per tick) × cv², the burstiness from
    `burst_cv2` shrunk towards SHARE_CV2_PRIOR with SHARE_PRIOR_TICKS pseudo-ticks. The second keeps the first
    ticks careful while the Pearson estimate knows nothing yet (a gamma-mixed rate has φ − 1 = μ·cv²)."""
    k_b, n_b = np.asarray(k_b, dtype=float), np.asarray(n_b, dtype=float)
    ok = np.isfinite(k_b) & np.isfinite(n_b) & (n_b > 0) & (k_b >= 0)
    kb, nb = np.where(ok, k_b, 0.0), np.where(ok, n_b, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        rate = (_sums_before(kb) + 0.5) / (_sums_before(nb) + 1)
        phi = 1 + nb * rate * burst_cv2(k_b, n_b, SHARE_CV2_PRIOR, SHARE_PRIOR_TICKS)
    return np.maximum(baseline_dispersion(k_b, n_b), np.where(np.isfinite(phi), phi, 1.0))


def level_log_lr(k_c, n_c, k_b, n_b, *, reference: tuple[float, float, float], tolerance: float = 1.0,
                 log_cap: float = math.inf) -> np.ndarray:
    """Per-tick log-LRs (tick × LEVEL_COLUMNS) of the level test; NaN where a tick carries no evidence.

    `reference`: (events, requests, the window's length in ticks) of the service before the rollout; a tick is
    judged once the reference holds LEVEL_MIN_REFERENCE_TICKS ticks' worth of the service's traffic.
    H0: the canary's count is negative binomial around n_c × tolerance × the larger of the pooled rate (the
    reference and the baseline's ticks up to t) and the baseline's rate over its LEVEL_RECENT_TICKS latest ticks
    (t included; one standard deviation up, shrunk towards the pooled rate by 10 pseudo-requests). Its shape
    combines the burstiness (`burst_cv2`) with the pooled rate's own uncertainty (Poisson on its events, bursts
    averaged over its ticks). Alternatives: the canary at LEVEL_MULTIPLES × the null rate and at
    LEVEL_FIXED_RATES (at least 3×), with the same shape. A live look adds one tick: `LevelTracker`."""
    k_c, n_c, k_b, n_b = (np.asarray(a, dtype=float) for a in (k_c, n_c, k_b, n_b))
    ref_k, ref_n, ref_ticks = (max(0.0, float(x)) if math.isfinite(x) else 0.0 for x in reference)
    ok_b = np.isfinite(k_b) & np.isfinite(n_b) & (n_b > 0) & (k_b >= 0)
    kb, nb = np.where(ok_b, k_b, 0.0), np.where(ok_b, n_b, 0.0)
    valid = np.isfinite(k_c) & np.isfinite(n_c) & (n_c > 0) & (k_c >= 0) & ok_b
    kc, nc = np.where(valid, k_c, 0.0), np.where(valid, n_c, 1.0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        big_k, big_n = ref_k + np.cumsum(kb), ref_n + np.cumsum(nb)  # up to and with tick t
        cv2 = burst_cv2(k_b, n_b)
        # how many ticks of traffic the reference holds: its requests over the service's per tick so far (a
        # service younger than the window holds less than the window's length); too few, and no level test
        per_tick = np.cumsum(nb + np.where(valid, nc, 0.0)) / np.maximum(np.cumsum(ok_b), 1)
        worth = np.minimum(ref_ticks, ref_n / np.maximum(per_tick, 1e-9))
        # the baseline's own ticks count too: without a window, the test starts once they hold enough
        valid &= worth + np.cumsum(nb) / np.maximum(per_tick, 1e-9) >= LEVEL_MIN_REFERENCE_TICKS
        spread = worth + np.cumsum(ok_b)
        # the baseline's last LEVEL_RECENT_TICKS ticks (this one included), one standard deviation up: an outage
        # that hits both arms shows there before the pooled rate notices it
        cum_k, cum_n = np.concatenate([[0.0], np.cumsum(kb)]), np.concatenate([[0.0], np.cumsum(nb)])
        back = np.maximum(np.arange(1, len(kb) + 1) - LEVEL_RECENT_TICKS, 0)
        recent_k, recent_n = cum_k[1:] - cum_k[back], cum_n[1:] - cum_n[back]
        pooled = (big_k + 0.5) / (big_n + 1)
        own = (1 + 1 / (big_k + 0.5)) * (1 + LEVEL_SPREAD_WEIGHT * cv2 / spread) - 1  # the pooled rate's uncertainty
        shape = 1 / ((1 + cv2) * (1 + own) - 1)
        now = (recent_k + np.sqrt(recent_k) + 10 * pooled) / (recent_n + 10)
        # the null's rate one standard deviation above the pooled one (the rate's Jeffreys posterior, Gamma(K + ½):
        # 1.2 events over its requests when it has none): the pooled rate's error is the same in every tick, so the
        # shape above cannot carry it alone (a canary's events one by one over many ticks against a young,
        # spotless reference add up otherwise)
        p0 = tolerance * (big_k + 0.5 + np.sqrt(big_k + 0.5)) / (big_n + 1)
        log0 = np.maximum(_nb_log_kernel(kc, nc * p0, shape), _nb_log_kernel(kc, nc * tolerance * now, shape))
        rates = [m * p0 for m in LEVEL_MULTIPLES] + [np.maximum(3 * p0, r) for r in LEVEL_FIXED_RATES]
        ll = np.column_stack([_nb_log_kernel(kc, nc * np.minimum(p1, 0.95), shape) - log0 for p1 in rates])
        ll = np.minimum(ll, log_cap)
    ok = valid[:, None] & np.isfinite(ll)
    return np.where(ok, ll, np.nan)


class LevelTracker:
    """`level_log_lr` one tick at a time, from running sums (a live look or a replay's adds one tick: the whole
    history each time costs O(ticks) a tick). `step(k_c, n_c, k_b, n_b)` returns the tick's LEVEL_COLUMNS
    log-LRs (NaN where it carries no evidence) and then counts it; tests/unit/test_level_test.py holds it equal to
    `level_log_lr` on whole paths."""

    def __init__(self, reference: tuple[float, float, float], tolerance: float = 1.0,
                 log_cap: float = math.inf) -> None:
        self.ref_k, self.ref_n, self.ref_ticks = (max(0.0, float(x)) if math.isfinite(x) else 0.0 for x in reference)
        self.tolerance, self.log_cap = tolerance, log_cap
        self.seen = 0
        self.k = self.n = self.kk = self.nn = self.kn = self.w = 0.0  # the baseline's ticks before this one
        self.answered = 0.0  # baseline ticks that answered
        self.traffic = 0.0  # both arms' requests where they count towards the service's traffic per tick
        self.recent: list[tuple[float, float]] = []  # the baseline's latest LEVEL_RECENT_TICKS ticks

    def step(self, k_c: float, n_c: float, k_b: float, n_b: float) -> np.ndarray:
        ok_b = math.isfinite(k_b) and math.isfinite(n_b) and n_b > 0 and k_b >= 0
        kb, nb = (k_b, n_b) if ok_b else (0.0, 0.0)
        valid = ok_b and math.isfinite(k_c) and math.isfinite(n_c) and n_c > 0 and k_c >= 0
        kc, nc = (k_c, n_c) if valid else (0.0, 1.0)
        cv2 = cv2_from_sums(self.k, self.n, self.kk, self.nn, self.kn, self.w, BURST_CV2_PRIOR, BURST_PRIOR_TICKS)
        p = self.k / self.n if self.n > 0 else 0.0
        # count the tick (the sums below include it, as level_log_lr's cumulative sums do)
        self.k, self.n = self.k + kb, self.n + nb
        self.kk, self.nn, self.kn = self.kk + kb * kb, self.nn + nb * nb, self.kn + kb * nb
        if ok_b:
            self.w += min(1.0, (nb * p) * (nb * p))
            self.answered += 1
        self.traffic += nb + (nc if valid else 0.0)
        self.recent = (self.recent + [(kb, nb)])[-LEVEL_RECENT_TICKS:]
        self.seen += 1
        row = [math.nan] * LEVEL_COLUMNS
        if not valid:
            return np.array(row)
        per_tick = max(self.traffic / max(self.answered, 1.0), 1e-9)
        worth = min(self.ref_ticks, self.ref_n / per_tick)
        if worth + self.n / per_tick < LEVEL_MIN_REFERENCE_TICKS:
            return np.array(row)
        big_k, big_n = self.ref_k + self.k, self.ref_n + self.n
        spread = worth + self.answered
        pooled = (big_k + 0.5) / (big_n + 1)
        own = (1 + 1 / (big_k + 0.5)) * (1 + LEVEL_SPREAD_WEIGHT * cv2 / spread) - 1
        shape = 1 / ((1 + cv2) * (1 + own) - 1)
        recent_k, recent_n = sum(x for x, _ in self.recent), sum(x for _, x in self.recent)
        now = (recent_k + math.sqrt(recent_k) + 10 * pooled) / (recent_n + 10)
        p0 = self.tolerance * (big_k + 0.5 + math.sqrt(big_k + 0.5)) / (big_n + 1)
        # as _nb_log_kernel, in plain floats: five numbers a tick cost numpy more than the arithmetic
        nulls = (_nb_log_kernel_float(kc, nc * p0, shape), _nb_log_kernel_float(kc, nc * self.tolerance * now, shape))
        if any(math.isnan(x) for x in nulls):  # as numpy's maximum: a NaN null is no evidence
            return np.array(row)
        log0 = max(nulls)
        rates = [m * p0 for m in LEVEL_MULTIPLES] + [max(3 * p0, r) for r in LEVEL_FIXED_RATES]
        for j, p1 in enumerate(rates):
            ll = min(_nb_log_kernel_float(kc, nc * min(p1, 0.95), shape) - log0, self.log_cap)
            row[j] = ll if math.isfinite(ll) else math.nan
        return np.array(row)


def sign_log_lr(g_c, g_b, *, margin: float = 0.2) -> np.ndarray:
    """Per-tick log-LRs of the sign test "canary > (1+margin)·baseline" (NaN where a value is missing)."""
    g_c, g_b = np.asarray(g_c, dtype=float), np.asarray(g_b, dtype=float)
    valid = ~(np.isnan(g_c) | np.isnan(g_b))
    worse = (g_c > (1 + margin) * g_b)[:, None]
    p = SIGN_ALTERNATIVES[None, :]
    ll = np.where(worse, np.log(2 * p), np.log(2 * (1 - p)))
    return np.where(valid[:, None], ll, np.nan)


def collapse_p_value(n_c, n_b, t: int, *, warmup: int, min_before: float = 20.0) -> tuple[float, int, float, float]:
    """Has the canary stopped getting traffic it used to get (a crash loop)?

    Finds the trailing run of ticks with *zero* canary requests (missing scrapes neither count nor
    break it). Under H0 (each request the canary's with one constant chance) the chance that all the canary's
    requests since the warm-up fell before the run, none among the baseline's B requests in it, is
    hypergeometric (`_all_before`: exact at any traffic, about (1 − ρ)^B). Returns (p, run length in ticks, B,
    ρ the canary's share before the run); p = 1 when there is no run or the canary never had traffic (a canary
    that never had any is a silent canary, not a crash)."""
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
    before = slice(warmup if i >= warmup else 0, i)  # not tick i: it is there because it had traffic (selected)
    seen_c, seen_b = np.nansum(n_c[before]), np.nansum(n_b[before])
    if seen_c < min_before or seen_c + seen_b <= 0:
        return 1.0, run, baseline, float("nan")
    return _all_before(seen_c, seen_c + seen_b, baseline), run, baseline, float(seen_c / (seen_c + seen_b))


def _all_before(canary: float, before: float, after: float) -> float:
    """Under H0 (each request the canary's with one constant chance), given the canary's `canary` requests among
    the `before` requests of both arms in some ticks and `after` more requests in the others: the chance that all
    of the canary's fell in the first (hypergeometric, exact at any traffic): C(before, canary) / C(before + after,
    canary). Counts that add up to nonsense (negative, not finite, canary > before) give 1."""
    if not all(math.isfinite(x) for x in (canary, before, after)) or canary < 0 or after < 0 or canary > before:
        return 1.0
    lg = math.lgamma
    log_p = (lg(before + 1) - lg(before - canary + 1)) - (lg(before + after + 1) - lg(before + after - canary + 1))
    return float(math.exp(min(log_p, 0.0)))


def flapping_p_value(n_c, n_b, t: int, *, warmup: int, window: int = 6, min_zero: int = 2,
                     min_before: float = 20.0) -> tuple[float, int, float, float]:
    """Does the canary keep dropping out (a crash loop that comes back between crashes)?

    Among the last `window` answered ticks up to t (after the warm-up), the ticks with *zero* canary requests while
    the baseline got some; with z >= `min_zero` of them, a union bound over every choice S of z ticks of the window:
    the sum of the chances under H0 (each request the canary's with one constant chance) that all the canary's
    requests fell outside S (`_all_before`, exact, each S with its own requests). The empty ticks are picked by
    the data, so every pick the data could have made counts: at low traffic a pick of quiet ticks is likely, and
    C(window, z) times the chance of the busy ticks the canary missed would understate it.
    Returns (p, zero ticks, B the baseline's requests in them, ρ); p = 1 when there are too few zero ticks or the
    canary's share is unknown."""
    n_c, n_b = np.asarray(n_c[: t + 1], dtype=float), np.asarray(n_b[: t + 1], dtype=float)
    answered: list[int] = []
    for i in range(t, warmup - 1, -1):  # the latest `window` answered ticks, oldest first
        if not (math.isnan(n_c[i]) or math.isnan(n_b[i])):
            answered.insert(0, i)
            if len(answered) == window:
                break
    zeros = [i for i in answered if n_c[i] == 0 and n_b[i] > 0]
    if len(zeros) < min_zero:
        return 1.0, len(zeros), 0.0, float("nan")
    others = np.ones(t + 1, dtype=bool)
    others[zeros] = False
    others[:warmup] = False
    seen_c, seen_b = np.nansum(n_c[others]), np.nansum(n_b[others])
    baseline = float(np.sum(n_b[zeros]))
    if seen_c < min_before or seen_c + seen_b <= 0:
        return 1.0, len(zeros), baseline, float("nan")
    total = seen_c + seen_b + baseline  # every request since the warm-up (the empty ticks hold the baseline's only)
    load = {i: float(n_c[i] + n_b[i]) for i in answered}
    p = 0.0
    for pick in itertools.combinations(answered, len(zeros)):
        held = sum(load[i] for i in pick)
        p += _all_before(seen_c, total - held, held)
        if p >= 1.0:
            break
    return min(p, 1.0), len(zeros), baseline, float(seen_c / (seen_c + seen_b))


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


def rate_test_first_rejection(k_c, n_c, k_b, n_b, *, alpha: float, reference: tuple[float, float, float] | None = None,
                              tolerance: float = 1.0, burst_cap: float = 3.0, warmup: int = 0,
                              every: int = 6) -> int | None:
    """The first tick the default rate test rejects on this whole path (None: never), as judge/compare.py runs it
    one tick at a time: the share test (tempered by `share_test_dispersion`, capped at `burst_cap`) at α·(1 −
    LEVEL_ALPHA_SHARE) and the level test (against `reference`, the window before the rollout, or the baseline's
    own ticks without one) at the rest. For simulations and benchmarks."""
    level_alpha = alpha * LEVEL_ALPHA_SHARE
    share = rate_log_lr(k_c, n_c, k_b, n_b, tolerance=tolerance, burst_cap=burst_cap,
                        dispersion=share_test_dispersion(k_b, n_b))
    level = level_log_lr(k_c, n_c, k_b, n_b, reference=reference or NO_REFERENCE, tolerance=tolerance,
                         log_cap=level_log_cap(level_alpha))
    found = [t for t in (first_rejection(share, alpha - level_alpha, warmup=warmup, every=every),
                         first_rejection(level, level_alpha, warmup=warmup, every=every)) if t is not None]
    return min(found) if found else None
