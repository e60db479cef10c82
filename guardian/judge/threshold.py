"""Absolute guards: one arm's signal, or a ratio of two counters, against a limit, for a duration.

Pure: reads `Evidence` arrays up to tick t and returns a `Verdict`. Each tick is classed as

- BREACH: confidently beyond the limit (for ratios: the Wilson bound is beyond it),
- UNSURE: the point estimate is beyond the limit but the bound is not (small samples),
- CLEAR:  within the limit,
- NODATA: missing values or fewer than `min_samples` samples in the window.

A breach run starts at a BREACH tick, goes on through BREACH and UNSURE ticks, and ends at CLEAR
or NODATA (as an absent series resets a Prometheus alert's `for`). The check FAILS once a run has
lasted `for`; while it is shorter, the verdict is INCONCLUSIVE with `breaching=True` (hold, do not
advance). Missing data is INCONCLUSIVE, an unreachable source an ERROR — never a pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from statistics import NormalDist

from guardian.domain import Evidence, Result, Verdict
from guardian.rules.models import ThresholdCheck

DEFAULT_WINDOW_SECONDS = 30.0


class TickState(Enum):
    BREACH = "breach"
    UNSURE = "unsure"
    CLEAR = "clear"
    NODATA = "nodata"


@dataclass(frozen=True)
class Reading:
    state: TickState
    value: float | None
    samples: float
    statistic: str
    why: str = ""


@lru_cache(maxsize=64)
def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(confidence)  # stdlib: scipy.stats costs 0.7 s to import


def wilson_bounds(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """One-sided Wilson score bounds at `confidence` for a binomial proportion k/n."""
    if n <= 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = min(max(successes / n, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, round(centre - half, 12)), min(1.0, round(centre + half, 12))


def window_ticks(check: ThresholdCheck, step_seconds: float) -> int:
    window = check.window if check.window is not None else DEFAULT_WINDOW_SECONDS
    return max(1, round(window / step_seconds))


def _sum(values: list[float | None]) -> tuple[float, int]:
    present = [v for v in values if v is not None]
    return float(sum(present)), len(present)


def read_tick(check: ThresholdCheck, ev: Evidence, t: int) -> Reading:
    """Class tick t from the window of ticks ending at t."""
    w = window_ticks(check, ev.step_seconds)
    lo = max(0, t - w + 1)
    span = f"{w * ev.step_seconds:g}s"
    above = check.direction == "above"
    if check.ratio:
        num_name, den_name = check.signals
        nums, dens = ev.column(num_name, check.arm)[lo : t + 1], ev.column(den_name, check.arm)[lo : t + 1]
        pairs = [(a, b) for a, b in zip(nums, dens, strict=True) if a is not None and b is not None]
        k, n = sum(a for a, _ in pairs), sum(b for _, b in pairs)
        if not (math.isfinite(k) and math.isfinite(n)):  # counts beyond any float: no usable evidence
            return Reading(TickState.NODATA, None, n, "ratio", f"counts not finite: {k:g}/{n:g} in {span}")
        if not pairs and any(b is not None for b in dens):  # "0 of N" would read as within the limit
            return Reading(TickState.NODATA, None, 0.0, "ratio",
                           f"no data for {num_name} in {span}{ev.why_missing(num_name, check.arm)}, though "
                           f"{den_name} has data")
        if not pairs:
            return Reading(TickState.NODATA, None, 0.0, "ratio",
                           f"no data for {den_name} in {span}{ev.why_missing(den_name, check.arm)}")
        if n <= 0 or n < check.min_samples:
            return Reading(TickState.NODATA, None, n, "ratio",
                           f"too few samples: {n:g} {den_name} in {span} (need {check.min_samples:g})")
        ratio = k / n
        lower, upper = wilson_bounds(k, n, check.confidence)
        bound = lower if above else upper
        stat = f"wilson_{'lower' if above else 'upper'}({check.confidence:g})={bound:.4g}"
        beyond = (lambda x: x > check.limit) if above else (lambda x: x < check.limit)
        state = TickState.BREACH if beyond(bound) else TickState.UNSURE if beyond(ratio) else TickState.CLEAR
        return Reading(state, ratio, n, stat, f"{k:g}/{n:g} in {span}")
    signal = check.signal or ""
    column = ev.column(signal, check.arm)[lo : t + 1]
    if check.min_samples > 0:
        samples, seen = _sum(ev.column(check.samples_from, check.arm)[lo : t + 1])
        if seen == 0:
            return Reading(TickState.NODATA, None, 0.0, "last", f"no data for {check.samples_from} in {span}"
                           f"{ev.why_missing(check.samples_from, check.arm)} (need {check.min_samples:g})")
        if samples < check.min_samples:
            return Reading(TickState.NODATA, None, samples, "last",
                           f"too few samples: {samples:g} {check.samples_from} in {span} "
                           f"(need {check.min_samples:g})")
    else:
        samples = float("nan")
    present = [v for v in column if v is not None]
    if not present:
        return Reading(TickState.NODATA, None, samples, "last",
                       f"no data for {signal} in {span}{ev.why_missing(signal, check.arm)}")
    if signal in ev.counters:
        value, stat = float(sum(present)), f"sum over {span}"
    else:
        value, stat = float(present[-1]), "last"
    if not math.isfinite(value):  # a sum beyond any float (the source never gives a non-finite value)
        return Reading(TickState.NODATA, None, samples, stat, f"{signal} is not finite in {span}: {value:g}")
    beyond = value > check.limit if above else value < check.limit
    return Reading(TickState.BREACH if beyond else TickState.CLEAR, value, samples, stat)


def evaluate(check: ThresholdCheck, ev: Evidence, t: int) -> Verdict:
    """The verdict of `check` at tick t (0-based, t < ev.ticks)."""
    base = {"check": check.name, "threshold": check.limit, "action": check.action_enum, "replicas": check.replicas}
    if ev.unavailable[t]:
        return Verdict(result=Result.ERROR, reason=f"metrics unavailable: {ev.unavailable[t]}", **base)
    now = read_tick(check, ev, t)
    common = {**base, "value": now.value, "sample_size": now.samples, "statistic": now.statistic}
    what = f"{check.ratio or check.signal} ({check.arm})"
    if now.state is TickState.NODATA:
        if t + 1 < window_ticks(check, ev.step_seconds):  # the first window is not full yet: hold, not pause
            return Verdict(result=Result.INCONCLUSIVE, warming_up=True, reason=f"{what}: warming up: {now.why}",
                           **common)
        return Verdict(result=Result.INCONCLUSIVE, reason=f"{what}: {now.why}", **common)
    run_start = _breach_run_start(check, ev, t, now)
    limit = f"{check.direction} {check.limit:g}"
    detail = f"{what} = {now.value:.4g} ({now.why or now.statistic}; {now.statistic})" if now.why else (
        f"{what} = {now.value:.4g} ({now.statistic})")
    if run_start is None:
        if now.state is TickState.UNSURE:
            return Verdict(result=Result.INCONCLUSIVE, breaching=True, **common,
                           reason=f"{detail} is {limit} but not significantly; holding")
        return Verdict(result=Result.PASS, reason=f"{detail} within limit ({limit} fails)", **common)
    lasted = (t - run_start) * ev.step_seconds
    if lasted >= check.for_:
        return Verdict(result=Result.FAIL, **common,
                       reason=f"{detail} {limit} for {lasted:g}s (for: {check.for_:g}s)")
    return Verdict(result=Result.INCONCLUSIVE, breaching=True, **common,
                   reason=f"{detail} {limit} for {lasted:g}s of the required {check.for_:g}s")


def _breach_run_start(check: ThresholdCheck, ev: Evidence, t: int, now: Reading) -> int | None:
    """The first BREACH tick of the run that tick t belongs to, or None when t is in no run."""
    if now.state is TickState.CLEAR:
        return None
    for_ticks = math.ceil(check.for_ / ev.step_seconds)
    start = t if now.state is TickState.BREACH else None
    i = t - 1
    limit = max(0, t - 4 * for_ticks - 10)  # a run of UNSURE ticks this long no longer carries the breach
    while i >= limit:
        state = read_tick(check, ev, i).state
        if state in (TickState.CLEAR, TickState.NODATA) or ev.unavailable[i]:
            break
        if state is TickState.BREACH:
            start = i
            if t - i >= for_ticks:
                break  # long enough; no need to look further back
        i -= 1
    return start
