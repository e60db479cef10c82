"""One signal against its seasonal forecast ("the 3σ forecast"), period by period. Pure.

The model (guardian/forecast/model.py, fitted by `guardian baseline fit`) is frozen when the rollout starts:
the guard puts it into `Evidence.models[check.name]` (or the reason there is none) and
`Evidence.started_at` is the freeze time. Ticks are grouped into periods of `check.period` (default:
the model's bucket), each period's value is the mean of its ticks — counters as per-second rates,
`arm: total` summed over the arms — and compared with the forecast at the period's middle:

    z = (value − centre) / σ          beyond: |z| > sigma on the watched side

The check FAILS once `consecutive` periods in a row are beyond (the run is reported as the
statistic), or once the one-sided CUSUM crosses `cusum_h` (a small sustained shift). A period with
fewer than half of its ticks answered is missing: it neither extends nor breaks a run.

Gating checks (action rollback / pause): a run shorter than `consecutive` holds the step
(INCONCLUSIVE, breaching), a missing latest period is INCONCLUSIVE (pause: missing data is never a
pass), the first period still filling is warming up. Advisory checks (scale / notify) never hold a
rollout: until they have something to say they abstain, visibly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from guardian.domain import Evidence, Result, Verdict
from guardian.forecast.model import SeasonalModel
from guardian.judge.forecast_monitor import ForecastMonitor, Observation
from guardian.rules.models import ADVISORY_ACTIONS, ForecastCheck


@dataclass
class _Progress:
    monitor: ForecastMonitor
    ticks_per_period: int
    periods: list[Observation] = field(default_factory=list)
    present: list[int] = field(default_factory=list)  # ticks answered in each period


def period_ticks(check: ForecastCheck, model: SeasonalModel, step_seconds: float) -> int:
    return max(1, round((check.period or model.bucket) / step_seconds))


def period_value(check: ForecastCheck, ev: Evidence, lo: int, hi: int) -> tuple[float | None, int]:
    """The check's signal over ticks [lo, hi): (mean value in the model's units, ticks answered)."""
    arms = ("canary", "baseline") if check.arm == "total" else (check.arm,)
    cols = np.vstack([ev.array(check.signal, arm)[lo:hi] for arm in arms])
    answered = ~np.isnan(cols).all(axis=0)
    unavailable = np.array([u is not None for u in ev.unavailable[lo:hi]], dtype=bool)
    answered &= ~unavailable
    n = int(answered.sum())
    if n * 2 < hi - lo:
        return None, n
    per_tick = np.nansum(cols[:, answered], axis=0)
    value = float(per_tick.mean())
    if check.signal in ev.counters:
        value /= ev.step_seconds  # increments per tick -> per second, as the model was fitted
    return value, n


def _progress(check: ForecastCheck, ev: Evidence, model: SeasonalModel) -> _Progress:
    key = ("forecast", check.name)
    p = ev.cache.get(key)
    if p is None:
        monitor = ForecastMonitor(model, k=check.sigma, consecutive=check.consecutive, frozen_at=ev.started_at,
                                  direction=check.direction, recalibrate=0,
                                  cusum_k=check.cusum_k, cusum_h=check.cusum_h if check.cusum else None,
                                  min_change=check.change_floor)
        p = ev.cache[key] = _Progress(monitor, period_ticks(check, model, ev.step_seconds))
    return p


def evaluate(check: ForecastCheck, ev: Evidence, t: int) -> Verdict:
    advisory = check.action in ADVISORY_ACTIONS
    base = {"check": check.name, "action": check.action_enum, "replicas": check.replicas}
    what = f"{check.signal} ({check.arm})"
    model = ev.models.get(check.name)
    if not isinstance(model, SeasonalModel):
        why = model or f"no baseline model for {check.signal}"
        return Verdict(result=Result.INCONCLUSIVE, abstained=check.optional or advisory,
                       reason=f"{what}: {why}", statistic="forecast", **base)
    if ev.unavailable[t] and not advisory:
        return Verdict(result=Result.ERROR, reason=f"metrics unavailable: {ev.unavailable[t]}", **base)
    try:
        p = _progress(check, ev, model)
    except ValueError as e:  # e.g. a model fitted after the rollout started
        return Verdict(result=Result.INCONCLUSIVE, abstained=check.optional or advisory,
                       reason=f"{what}: {e}", statistic="forecast", **base)
    n = p.ticks_per_period
    while (len(p.periods) + 1) * n <= t + 1:  # fold in every period completed by tick t
        j = len(p.periods)
        value, present = period_value(check, ev, j * n, (j + 1) * n)
        middle = ev.started_at + (j + 0.5) * n * ev.step_seconds
        p.periods.append(p.monitor.observe(middle, value))
        p.present.append(present)
    span = f"{n * ev.step_seconds:g}s"
    if not p.periods:
        return Verdict(result=Result.INCONCLUSIVE, warming_up=not advisory, abstained=advisory,
                       reason=f"{what}: the first {span} period is not complete ({t + 1} of {n} ticks)",
                       statistic="forecast", **base)
    last = p.periods[-1]
    limit = f"{check.sigma:g}σ" + (f" and {check.change_floor:.0%}" if check.change_floor else "")
    common = {**base, "sample_size": float(p.present[-1]), "threshold": _limit_value(last, check)}
    if last.value is None:
        return Verdict(result=Result.INCONCLUSIVE, abstained=advisory, value=None, statistic="forecast",
                       reason=f"{what}: no data for the {span} period ending at tick {len(p.periods) * n - 1} "
                              f"({p.present[-1]} of {n} ticks answered)", **common)
    shown = (f"{what} = {last.value:.4g} against forecast {last.centre:.4g} ± {last.sigma:.3g} "
             f"(z = {last.z:+.2f}, over {span})")
    stat = f"z={last.z:+.2f}; run {last.run_length}/{check.consecutive} beyond {limit}"
    if check.cusum:
        stat += f"; cusum={max(last.cusum_upper, last.cusum_lower):.2f}/{check.cusum_h:g}"
    common |= {"value": last.value, "statistic": stat}
    if last.breached:
        return Verdict(result=Result.FAIL, **common,
                       reason=f"{shown}: {last.run_length} periods in a row beyond {limit} "
                              f"(consecutive: {check.consecutive})")
    if last.cusum_alarm:
        return Verdict(result=Result.FAIL, **common,
                       reason=f"{shown}: CUSUM {max(last.cusum_upper, last.cusum_lower):.2f} ≥ {check.cusum_h:g} "
                              "(a sustained shift)")
    if last.beyond:
        return Verdict(result=Result.PASS if advisory else Result.INCONCLUSIVE, breaching=not advisory, **common,
                       reason=f"{shown}: {last.run_length} of {check.consecutive} periods in a row beyond "
                              f"{limit}; {'warning' if advisory else 'holding'}")
    return Verdict(result=Result.PASS, **common, reason=f"{shown}: within {limit}")


def _limit_value(obs: Observation, check: ForecastCheck) -> float | None:
    """The value the signal must cross to count: centre ± max(sigma·σ, min_change·|centre|) on the watched side."""
    if not math.isfinite(obs.sigma):
        return None
    reach = max(check.sigma * obs.sigma, check.change_floor * abs(obs.centre))
    if check.direction == "below" or (check.direction == "both" and math.isfinite(obs.z) and obs.z < 0):
        return obs.centre - reach
    return obs.centre + reach
