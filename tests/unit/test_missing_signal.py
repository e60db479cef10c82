"""A signal with no data is inconclusive whatever the other signals say (issue 17, defects 1 and 2): a ratio
whose numerator the source never returned is not "0 of N", and the source's own reason for the missing
data (no series for that label, …) reaches the verdict a person reads."""
from __future__ import annotations

import copy

from guardian.actuators.noop import NoopActuator
from guardian.clock import FakeClock
from guardian.domain import Result
from guardian.engine.guard import Guard, GuardConfig, StartSpec
from guardian.engine.replay import replay_recording
from guardian.engine.store import SQLiteStore
from guardian.errors import NoData
from guardian.rules.book import RuleBook
from guardian.rules.loader import DEFAULT_RULESET, RuleSet, parse_text
from guardian.sources import SignalQuery
from guardian.sources.recording import RecordingSource
from tests.unit.recordings import steady_recording


def with_slow(rec: dict, canary, baseline) -> dict:
    rec = copy.deepcopy(rec)
    n = len(rec["series"]["requests"]["canary"])
    rec["series"]["slow"] = {"canary": [canary] * n, "baseline": [baseline] * n}
    return rec


def last_verdicts(result) -> dict[str, dict]:
    ticked = [d for d in result.decisions if d.get("verdicts")]
    return {v["check"]: v for v in ticked[-1]["verdicts"]}


def test_a_histogram_without_the_objectives_bucket_is_never_a_pass():
    """The exporter has no le="0.5" bucket: `slow` is null in both arms at every tick. The default policy
    must not promote ("canary 0/760 slow per requests" was a pass): slow-vs-baseline is inconclusive."""
    result = replay_recording(with_slow(steady_recording(60), None, None), "no-slow-bucket.json", DEFAULT_RULESET)
    assert result.decision != "promote", result.reason
    slow = last_verdicts(result)["slow-vs-baseline"]
    assert slow["result"] == "inconclusive" and "no data for slow" in slow["reason"], slow


def test_the_same_rollout_with_its_slow_counts_is_promoted():
    result = replay_recording(with_slow(steady_recording(60), 0, 1), "with-slow.json", DEFAULT_RULESET)
    assert result.decision == "promote", result.reason


def test_a_threshold_ratio_whose_numerator_is_missing_says_so():
    rules = RuleSet.of(parse_text("service: checkout\nchecks:\n  - {name: error-rate, kind: threshold, ratio: "
                                  "errors / requests, above: 5%, min_samples: 10}\n", "checkout.yaml"), "checkout.yaml")
    rec = steady_recording(12)
    rec["series"]["errors"] = {"canary": [None] * 12, "baseline": [None] * 12}
    result = replay_recording(rec, "no-errors.json", rules)
    assert result.decision == "pause"
    v = last_verdicts(result)["error-rate"]
    assert v["result"] == "inconclusive" and "no data for errors" in v["reason"], v


class _NoSeries(RecordingSource):
    """The recording, except that the canary's series do not exist (a label mismatch)."""

    def fetch(self, query: SignalQuery, service: str, arm, start: float, end: float) -> float:
        if arm.arm == "canary":
            raise NoData(f'no series for checkout/canary: '
                         f'sum(http_requests_total{{service="{service}",track="canary"}})')
        return super().fetch(query, service, arm, start, end)


def test_the_sources_reason_for_missing_data_reaches_the_verdict(tmp_path):
    """'too few samples: 0 requests' hid a label mismatch: the verdict now carries the source's own words."""
    rec = with_slow(steady_recording(20), 0, 1)
    source = _NoSeries(rec)
    clock = FakeClock(source.start)
    guard = Guard(SQLiteStore(":memory:"), source, RuleBook([]), lambda t: NoopActuator(), clock,
                  GuardConfig(evaluation_delay=0.0))
    state = guard.start(StartSpec(service="checkout", image="checkout:v2", step_seconds=10, analysis_seconds=60))
    for t in range(8):
        clock.t = source.start + (t + 1) * 10
        guard.tick(state.id)
    verdicts = {v["check"]: v for v in guard.store.latest_tick(state.id)["verdicts"]}
    errors = verdicts["errors-vs-baseline"]
    assert errors["result"] == Result.INCONCLUSIVE.value
    assert "no series for checkout/canary" in errors["reason"], errors["reason"]
    assert "too little canary traffic" not in errors["reason"]  # it is no traffic data at all
