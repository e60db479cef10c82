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
