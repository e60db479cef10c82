"""Counts whose sums leave the floats (inf, NaN) are no evidence: the canary-versus-baseline rate test
and the threshold judge are inconclusive on them, never a pass."""
from __future__ import annotations

from guardian.domain import Evidence, Result
from guardian.judge import threshold
from guardian.judge.compare import evaluate
from guardian.rules.defaults import DEFAULT_RULES
from guardian.rules.models import ThresholdCheck


def _errors_check():
    return next(c for c in DEFAULT_RULES.checks if c.name == "errors-vs-baseline")


def _evidence(requests_canary):
    ev = Evidence(step_seconds=10.0, counters=frozenset({"requests", "errors"}))
    for r in requests_canary:
        ev.append({"requests": {"canary": r, "baseline": 1000.0}, "errors": {"canary": 0.0, "baseline": 0.0}})
    return ev


def test_healthy_finite_counts_pass():
    ev = _evidence([1000.0] * 40)
    assert evaluate(_errors_check(), ev, 39).result is Result.PASS


def test_counts_beyond_any_float_are_inconclusive_not_a_pass():
    ev = _evidence([1000.0] * 10 + [1.7e308] * 30)  # the running sum overflows to inf, then inf - inf
    v = evaluate(_errors_check(), ev, 39)
    assert v.result is Result.INCONCLUSIVE, v.reason
    assert "not finite" in v.reason


def _threshold(**kw):
    return ThresholdCheck.model_validate({"name": "t", "window": "60s", "min_samples": 50, "above": 0.05} | kw)


def test_threshold_ratio_over_a_window_summing_to_inf_is_inconclusive_not_a_pass():
    ev = _evidence([1000.0] * 10 + [1.7e308] * 30)  # 6 ticks of 1.7e308 in a 60 s window: inf requests
    v = threshold.evaluate(_threshold(ratio="errors / requests"), ev, 39)
    assert v.result is Result.INCONCLUSIVE, v.reason
    assert "not finite" in v.reason
    assert threshold.evaluate(_threshold(ratio="errors / requests"), ev, 9).result is Result.PASS


def test_threshold_on_a_counter_summing_beyond_any_float_is_inconclusive_not_a_pass():
    ev = Evidence(step_seconds=10.0, counters=frozenset({"requests", "errors"}))
    for _ in range(12):  # nonsense negative increments whose window sum is -inf, below any limit
        ev.append({"requests": {"canary": 1000.0}, "errors": {"canary": -1.7e308}})
    v = threshold.evaluate(_threshold(signal="errors", above=10, min_samples=0), ev, 11)
    assert v.result is Result.INCONCLUSIVE, v.reason
    assert "not finite" in v.reason
