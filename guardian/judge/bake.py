"""The bake's before/after tests: the new version at 100% against the same service before it. Pure.

In the bake (RolloutState.baking) the previous version serves nothing, so a canary-versus-baseline test gains
no evidence (each of its ticks has no baseline traffic). A compare check then also runs a one-sample test
of the bake's ticks against a reference frozen when the bake began (`Evidence.bake`): the previous
version's own ticks during the rollout's steps (the baseline arm before the bake) plus the pre-rollout window
the guard fetched at the start. Both tests stay inside the check's α:

- rate (errors / requests): the reference rate's upper confidence bound at 1 − α/2 (Wilson), times the
  check's tolerance λ0, is H0's rate p0; each bake tick's binomial log-likelihood ratio of p0·m against p0
  (m over the same grid as the canary test) is divided by the reference's own dispersion (Pearson χ²/df of
  the previous version's ticks around its pooled rate, at least 1: a bursty service needs more evidence).
- sign (a gauge such as p99): each bake tick is a trial "value > (1 + margin) × the reference's upper
  quartile"; under H0 (the same distribution as before) its chance is at most 1/4 < 1/2.

Both run the mixture e-process of a test started at every bake tick, at α/2 in all: the bake's nominal
length S (in ticks) shares α/2 evenly among its first S starts, the next S starts share a quarter of it
(α_k = α/2 · 6/(π²k²) for block k), and so on, so a regression that begins late in the bake is judged from
its own first tick on, not diluted by the healthy ticks before it. One tick's log-LR is capped at half of
the first block's rejection level (plus the mixture's log-width), so a single tick can never roll a release
back on its own, while two ticks of overwhelming evidence can.

Without a reference (no traffic before the bake at all) the check is inconclusive: the bake's clock stops
(missing data is never a pass).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from guardian.domain import Evidence, Result, Verdict
from guardian.judge.sequential import RATE_ALTERNATIVES, SequentialResult, cumulative, log_mixture, sign_log_lr
from guardian.judge.threshold import wilson_bounds

BAKE_WARMUP_TICKS = 1  # the tick the traffic flipped in is left out: it mixes both versions
REFERENCE_MIN_GAUGES = 3  # a gauge's reference needs this many values before the bake


def bake_start(ev: Evidence) -> int | None:
    """The bake's first tick, or None when the rollout is not (yet) baking."""
    return (ev.bake or {}).get("from_tick")


def _before(ev: Evidence, signal: str) -> float | None:
    value = ((ev.bake or {}).get("before") or {}).get(signal)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _dispersion(k: np.ndarray, n: np.ndarray) -> float:
    """Pearson χ²/df of per-tick counts k of n around their pooled rate; 1 when it cannot be estimated."""
    ok = ~(np.isnan(k) | np.isnan(n)) & (n > 0)
    k, n = k[ok], n[ok]
    if len(k) < 3 or k.sum() <= 0:
        return 1.0
    p = k.sum() / n.sum()
    if not 0 < p < 1:
        return 1.0
    chi2 = float(np.sum((k - n * p) ** 2 / (n * p * (1 - p))))
    return max(1.0, chi2 / (len(k) - 1))


def _bake_rate_lr(k: np.ndarray, n: np.ndarray, p0: float, dispersion: float, cap: float) -> np.ndarray:
    p1 = np.minimum(p0 * RATE_ALTERNATIVES, 1 - (1 - p0) / RATE_ALTERNATIVES)[None, :]
    valid = ~(np.isnan(k) | np.isnan(n)) & (n > 0) & (k >= 0) & (k <= n)
    kk, nn = np.where(valid, k, 0.0)[:, None], np.where(valid, n, 0.0)[:, None]
    ll = (kk * np.log(p1 / p0) + (nn - kk) * np.log((1 - p1) / (1 - p0))) / dispersion
    return np.where(valid[:, None], np.minimum(ll, cap), np.nan)


def _block_ticks(ev: Evidence) -> int:
    return max(1, int((ev.bake or {}).get("ticks") or 1))


def _log_level(alpha: float, block: int, k: int) -> float:
    """log 1/α_s of a start in block k (from 1): α/2 · 6/(π²k²) shared by `block` starts."""
    return math.log(block * math.pi ** 2 / 6 * k * k / alpha)


def _cap(alpha: float, block: int, width: int) -> float:
    """The most one tick may add: half of the first block's level plus half the mixture's log-width."""
    return (_log_level(alpha, block, 1) + math.log(width)) / 2


def every_tick_mixture(lr: np.ndarray, t: int, alpha: float, block: int, *, warmup: int) -> SequentialResult:
    """Tests started at every tick from `warmup`: the one closest to rejecting at tick t (see the docstring)."""
    if t < warmup:
        return SequentialResult(False, 1.0, math.exp(_log_level(alpha, block, 1)), None, 0)
    cum = cumulative(lr[: t + 1])
    log_e = log_mixture(cum[t + 1] - cum[warmup: t + 1])  # per start
    k = 1 + np.arange(len(log_e)) // block
    log_thr = np.log(block * math.pi ** 2 / 6 / alpha) + 2 * np.log(k)
    margin = log_e - log_thr
    best = int(margin.argmax())
    return SequentialResult(bool(margin[best] >= 0), float(np.exp(min(log_e[best], 700))),
                            float(np.exp(log_thr[best])), warmup + best, t + 1 - warmup - best)


def bake_rate(verdict: Verdict, ev: Evidence, t: int, num: str, den: str, *, tolerance: float,
              alpha: float) -> Verdict:
    """The rate check's verdict at a bake tick: `verdict` (the canary-versus-baseline test's) when that one
    failed; else the before/after test's."""
    first = bake_start(ev)
    if first is None or t < first or verdict.result is Result.FAIL:
        return verdict
    k_b, n_b = ev.array(num, "baseline")[:first], ev.array(den, "baseline")[:first]
    k_ref = float(np.nansum(k_b)) + (_before(ev, num) or 0.0)
    n_ref = float(np.nansum(n_b)) + (_before(ev, den) or 0.0)
    k_c, n_c = ev.array(num, "canary")[first:t + 1], ev.array(den, "canary")[first:t + 1]
    with np.errstate(invalid="ignore"):
        k_bake, n_bake = float(np.nansum(k_c)), float(np.nansum(n_c))
    if n_ref <= 0:
        return replace(verdict, result=Result.INCONCLUSIVE, breaching=False, warming_up=False, reason=(
            f"baking, and nothing to compare with: no {den} from the previous version before the bake nor in the "
            "pre-rollout window (the bake's clock stops; missing data is never a pass)"))
    upper = wilson_bounds(k_ref, n_ref, 1 - alpha / 2)[1]
    p0 = min(max(tolerance * max(upper, 1e-9), 1e-9), 0.99)
    dispersion = _dispersion(k_b, n_b)
    block = _block_ticks(ev)
    lr = _bake_rate_lr(k_c, n_c, p0, dispersion, _cap(alpha / 2, block, len(RATE_ALTERNATIVES)))
    result = every_tick_mixture(lr, t - first, alpha / 2, block, warmup=BAKE_WARMUP_TICKS)
    rate_bake = k_bake / n_bake if n_bake > 0 else None
    ratio = rate_bake / max(k_ref / n_ref, 0.5 / n_ref) if rate_bake is not None else None
    facts = (f"baking: {k_bake:g}/{n_bake:g} {num} per {den} since tick {first} vs the service before "
             f"{k_ref:g}/{n_ref:g} (upper bound {upper:.3g}; H0 rate {p0:.3g}, dispersion {dispersion:.2g})")
    stat = (f"e_value={result.e_value:.3g} (reject at {result.threshold:.3g}, alpha/2={alpha / 2:g}, before/after "
            "binomial)")
    common: dict[str, Any] = {"value": ratio, "threshold": tolerance, "sample_size": n_bake, "statistic": stat,
                              "breaching": False, "warming_up": False}
    if result.rejected:
        return replace(verdict, result=Result.FAIL, reason=f"{num} rate worse than {tolerance:g}x the service "
                       f"before the rollout: {facts}; {stat}", **common)
    if np.isnan(k_c[-1]) or np.isnan(n_c[-1]):
        return replace(verdict, result=Result.INCONCLUSIVE, reason=f"no {num} or {den} from the new version at "
                       f"this tick{ev.why_missing(den, 'canary')}: the bake's clock stops ({facts})", **common)
    if t - first < BAKE_WARMUP_TICKS:
        return replace(verdict, result=Result.INCONCLUSIVE, reason=f"the traffic flip's tick ({facts})",
                       **{**common, "warming_up": True})
    if verdict.result is not Result.PASS:
        return verdict
    return replace(verdict, result=Result.PASS, reason=f"no evidence the new version is worse than before: {facts}; "
                   f"{stat}", **common)


def bake_sign(verdict: Verdict, ev: Evidence, t: int, signal: str, *, margin: float, alpha: float) -> Verdict:
    """The sign check's verdict at a bake tick (see the module docstring)."""
    first = bake_start(ev)
    if first is None or t < first or verdict.result is Result.FAIL:
        return verdict
    ref = ev.array(signal, "baseline")[:first]
    ref = ref[~np.isnan(ref)]
    if (pre := _before(ev, signal)) is not None:
        ref = np.append(ref, pre)
    g = ev.array(signal, "canary")[first:t + 1]
    if len(ref) < REFERENCE_MIN_GAUGES:
        return replace(verdict, result=Result.INCONCLUSIVE, breaching=False, warming_up=False, reason=(
            f"baking, and {len(ref)} value(s) of {signal} from the service before the bake (need "
            f"{REFERENCE_MIN_GAUGES}): the bake's clock stops (missing data is never a pass)"))
    level = float(np.quantile(ref, 0.75))
    lr = sign_log_lr(g, np.full(len(g), level), margin=margin)
    result = every_tick_mixture(lr, t - first, alpha / 2, _block_ticks(ev), warmup=BAKE_WARMUP_TICKS)
    seen = g[~np.isnan(g)]
    worse = int(np.sum(seen > (1 + margin) * level))
    facts = (f"baking: {signal} above {1 + margin:g}x the service before (upper quartile {level:.4g} of "
             f"{len(ref)} values) in {worse} of {len(seen)} ticks since tick {first}")
    stat = f"e_value={result.e_value:.3g} (reject at {result.threshold:.3g}, alpha/2={alpha / 2:g}, before/after sign)"
    common: dict[str, Any] = {"value": float(np.mean(seen)) / level if len(seen) and level else None,
                              "threshold": 1 + margin, "sample_size": float(len(seen)), "statistic": stat,
                              "breaching": False, "warming_up": False}
    if result.rejected:
        return replace(verdict, result=Result.FAIL, reason=f"{signal} worse than the service before the rollout: "
                       f"{facts}; {stat}", **common)
    if np.isnan(g[-1]):
        return replace(verdict, result=Result.INCONCLUSIVE, reason=f"no {signal} from the new version at this "
                       f"tick{ev.why_missing(signal, 'canary')}: the bake's clock stops ({facts})", **common)
    if verdict.result is not Result.PASS:
        return verdict
    return replace(verdict, result=Result.PASS, reason=f"no evidence the new version is worse than before: {facts}; "
                   f"{stat}", **common)
