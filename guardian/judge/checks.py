"""One entry point for every kind of check: the guard calls `evaluate(check, evidence, t)`."""
from __future__ import annotations

from guardian.domain import Evidence, Verdict
from guardian.judge import compare, forecast, threshold
from guardian.rules.models import CompareCheck, ForecastCheck, ThresholdCheck


def evaluate(check: ThresholdCheck | CompareCheck | ForecastCheck, ev: Evidence, t: int) -> Verdict:
    if isinstance(check, CompareCheck):
        return compare.evaluate(check, ev, t)
    if isinstance(check, ForecastCheck):
        return forecast.evaluate(check, ev, t)
    return threshold.evaluate(check, ev, t)


def with_power(check: ThresholdCheck | CompareCheck | ForecastCheck, verdict: Verdict, ev: Evidence, t: int) -> Verdict:
    """The verdict with what its evidence could have revealed (judge/power.py): a compare check's passing rate or
    sign test; any other verdict as it is."""
    return compare.with_power(check, verdict, ev, t)
