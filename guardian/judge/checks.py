"""One entry point for every kind of check: the guard calls `evaluate(check, evidence, t)`."""
from __future__ import annotations

from guardian.domain import Evidence, Verdict
from guardian.judge import compare, threshold
from guardian.rules.models import CompareCheck, ThresholdCheck


def evaluate(check: ThresholdCheck | CompareCheck, ev: Evidence, t: int) -> Verdict:
    if isinstance(check, CompareCheck):
        return compare.evaluate(check, ev, t)
    return threshold.evaluate(check, ev, t)
