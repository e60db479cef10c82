"""The threshold judge on arrays: Wilson bounds, min samples, `for:` persistence, missing data."""
from __future__ import annotations

import pytest

from guardian.domain import Evidence, Result
from guardian.judge.threshold import evaluate, wilson_bounds
from guardian.rules.models import ThresholdCheck


def _evidence(requests, errors, *, p99=None, step=10.0, unavailable=None):
    ev = Evidence(step_seconds=step, counters=frozenset({"requests", "errors"}))
    for i, (r, e) in enumerate(zip(requests, errors, strict=True)):
        values = {"requests": {"canary": r, "baseline": 100}, "errors": {"canary": e, "baseline": 0}}
        if p99 is not None:
            values["p99_seconds"] = {"canary": p99[i], "baseline": 0.1}
        ev.append(values, unavailable=(unavailable or {}).get(i))
    return ev


def _ratio(**kw):
    base = {"name": "error-rate", "ratio": "errors / requests", "above": 0.05, "window": "10s", "min_samples": 50}
    return ThresholdCheck.model_validate(base | kw)


def test_wilson_bounds_bracket_the_ratio_and_narrow_with_samples():
    lo, hi = wilson_bounds(8, 40, 0.95)
    assert lo < 0.2 < hi
    lo2, hi2 = wilson_bounds(80, 400, 0.95)
    assert lo < lo2 < 0.2 < hi2 < hi
    assert wilson_bounds(0, 0) == (0.0, 1.0)


def test_healthy_canary_passes_with_value_threshold_and_sample_size():
    v = evaluate(_ratio(), _evidence([200] * 5, [2] * 5), 4)
    assert v.result is Result.PASS
    assert v.value == pytest.approx(0.01)
    assert v.threshold == 0.05 and v.sample_size == 200
    assert v.statistic.startswith("wilson_lower")


def test_too_few_requests_is_inconclusive_never_pass_or_fail():
    v = evaluate(_ratio(), _evidence([10] * 5, [10] * 5), 4)  # 100% errors, but only 10 requests
    assert v.result is Result.INCONCLUSIVE and not v.breaching
    assert "too few samples" in v.reason and v.sample_size == 10


def test_missing_data_is_inconclusive():
    v = evaluate(_ratio(), _evidence([200, None], [2, None]), 1)
    assert v.result is Result.INCONCLUSIVE


def test_unavailable_source_is_an_error():
    v = evaluate(_ratio(), _evidence([200, 200], [2, 2], unavailable={1: "connection refused"}), 1)
    assert v.result is Result.ERROR and "connection refused" in v.reason


def test_breach_fails_at_once_without_for():
    v = evaluate(_ratio(), _evidence([200, 200], [2, 40]), 1)
    assert v.result is Result.FAIL and v.value == pytest.approx(0.2)


def test_for_holds_the_failure_until_the_breach_has_lasted():
    check = _ratio(**{"for": "30s"})
    ev = _evidence([200] * 8, [2, 40, 40, 40, 40, 40, 40, 40])
    results = [evaluate(check, ev, t) for t in range(8)]
    assert results[0].result is Result.PASS
    assert [r.result for r in results[1:4]] == [Result.INCONCLUSIVE] * 3
    assert all(r.breaching for r in results[1:4])
    assert results[4].result is Result.FAIL  # breached at tick 1, 30 s later at tick 4
    assert "for 30s" in results[4].reason


def test_a_clear_tick_resets_the_for_timer():
    check = _ratio(**{"for": "30s"})
    ev = _evidence([200] * 7, [40, 40, 2, 40, 40, 40, 40])
    assert evaluate(check, ev, 5).result is Result.INCONCLUSIVE
    assert evaluate(check, ev, 6).result is Result.FAIL


def test_not_significant_excess_holds_but_does_not_fail():
    # 4 errors of 60: 6.7% > 5%, but the Wilson lower bound is well below 5%
    v = evaluate(_ratio(), _evidence([60], [4]), 0)
    assert v.result is Result.INCONCLUSIVE and v.breaching


def test_window_aggregates_ticks():
    check = _ratio(window="30s")  # 3 ticks of 20 requests = 60 >= 50
    ev = _evidence([20, 20, 20], [0, 0, 12])
    v = evaluate(check, ev, 2)
    assert v.sample_size == 60 and v.value == pytest.approx(0.2)
    assert v.result is Result.FAIL


def test_gauge_signal_threshold_uses_last_value_and_needs_samples():
    check = ThresholdCheck.model_validate({"name": "p99", "signal": "p99_seconds", "above": "1s", "for": "20s",
                                           "min_samples": 20})
    ev = _evidence([100] * 4, [0] * 4, p99=[0.2, 1.5, 1.6, 1.7])
    assert evaluate(check, ev, 0).result is Result.PASS
    assert evaluate(check, ev, 1).result is Result.INCONCLUSIVE
    v = evaluate(check, ev, 3)
    assert v.result is Result.FAIL and v.value == 1.7 and v.statistic == "last"
    starved = _evidence([1] * 4, [0] * 4, p99=[5.0] * 4)
    assert evaluate(check, starved, 3).result is Result.INCONCLUSIVE


def test_below_direction_uses_the_upper_bound():
    check = ThresholdCheck.model_validate({"name": "success", "ratio": "errors / requests", "below": 0.5,
                                           "window": "10s"})
    assert evaluate(check, _evidence([200], [20]), 0).result is Result.FAIL  # 10% < 50% confidently
    assert evaluate(check, _evidence([200], [150]), 0).result is Result.PASS


def test_a_young_rollout_is_warming_up_not_missing_data():
    check = _ratio(window="30s")  # 3 ticks
    ev = _evidence([10, 10, 10, 10], [0, 0, 0, 0])
    first = evaluate(check, ev, 0)
    assert first.result is Result.INCONCLUSIVE and first.warming_up
    full = evaluate(check, ev, 3)  # the window is full and still has only 30 < 50 requests
    assert full.result is Result.INCONCLUSIVE and not full.warming_up
