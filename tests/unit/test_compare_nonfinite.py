"""The canary-versus-baseline rate test never passes on counts that are not finite numbers."""
from __future__ import annotations

from guardian.domain import Evidence, Result
from guardian.judge.compare import evaluate
from guardian.rules.defaults import DEFAULT_RULES


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
