"""The guard's tick on a recording-backed source and a fake clock: the whole decision flow,
idempotency, crash recovery from the operation log, and failed actions."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from guardian.actuators.noop import NoopActuator
from guardian.clock import FakeClock
from guardian.domain import Action, Outcome, Phase
from guardian.engine.guard import Guard, GuardConfig, StartSpec
from guardian.engine.store import SQLiteStore
from guardian.rules.book import RuleBook
from guardian.sources.recording import RecordingSource
from tests.fixtures.driving import CrashOn, drive

START = 1_767_614_400.0
RULES = """
service: checkout
checks:
  - {name: error-rate, kind: threshold, ratio: errors / requests, above: 5%, window: 4s, for: 4s, min_samples: 20}
"""


def recording(n: int, error_ratio=lambda t: 0.01, rps: float = 40, missing=()) -> dict:
    req = [None if t in missing else rps for t in range(n)]
    err = [None if t in missing else round(rps * error_ratio(t)) for t in range(n)]
    return {
        "format": "guardian-recording/v1", "service": "checkout", "step_seconds": 2,
        "start": datetime.fromtimestamp(START, UTC).isoformat(),
        "series": {"requests": {"canary": req, "baseline": [rps] * n},
                   "errors": {"canary": err, "baseline": [0] * n}},
    }


@pytest.fixture
def rules(tmp_path):
    (tmp_path / "checkout.yaml").write_text(RULES)
    return RuleBook([tmp_path])


def make_guard(rec, rules, store=None, actuator=None):
    clock = FakeClock(START)
    actuator = actuator or NoopActuator()
    guard = Guard(store or SQLiteStore(":memory:"), RecordingSource(rec), rules, lambda target: actuator, clock,
                  GuardConfig(evaluation_delay=0.5))
    return guard, clock, actuator


def spec(**kw) -> StartSpec:
    return StartSpec(**({"service": "checkout", "image": "v2", "steps": (25, 50, 100), "step_seconds": 2.0,
                         "analysis_seconds": 6.0} | kw))


def test_healthy_canary_walks_every_step_and_is_promoted(rules):
    guard, clock, noop = make_guard(recording(60), rules)
    state = guard.start(spec())
    drive(guard, clock, state.id, 60, 2.0)
    final = guard.store.get(state.id)
    assert final.phase is Phase.PROMOTED
    applied = [(r.action, r.weight) for r in noop.applied]
    assert applied == [(Action.START, 25), (Action.ADVANCE, 50), (Action.ADVANCE, 100), (Action.PROMOTE, 100)]
    log = guard.store.decisions(state.id)
    assert [d["action"] for d in log] == ["start", "advance", "advance", "promote"]
    assert all(d["outcome"]["ok"] for d in log)
    promote = log[-1]
    assert promote["verdicts"][0]["result"] == "pass" and promote["verdicts"][0]["sample_size"] >= 20


def test_errors_roll_back_after_for_and_the_decision_carries_its_evidence(rules):
    rec = recording(60, error_ratio=lambda t: 0.25 if t >= 5 else 0.0)
    guard, clock, noop = make_guard(rec, rules)
    state = guard.start(spec(analysis_seconds=1000))
    drive(guard, clock, state.id, 60, 2.0)
    final = guard.store.get(state.id)
    assert final.phase is Phase.ROLLED_BACK
    rollback = guard.store.decisions(state.id)[-1]
    assert rollback["action"] == "rollback" and rollback["tick"] == 7  # breach at 5, for: 4s = 2 ticks
    v = rollback["verdicts"][0]
    assert v["result"] == "fail" and v["value"] == pytest.approx(0.25) and v["threshold"] == 0.05
    assert noop.applied[-1].action is Action.ROLLBACK and noop.applied[-1].weight == 0


def test_missing_data_pauses_then_resumes_and_never_promotes_meanwhile(rules):
    rec = recording(80, missing=set(range(4, 24)))
    guard, clock, noop = make_guard(rec, rules)
    state = guard.start(spec(analysis_seconds=10.0, steps=(50, 100)))
    drive(guard, clock, state.id, 14, 2.0)
    mid = guard.store.get(state.id)
    assert mid.phase is Phase.PAUSED and mid.paused_by == "guardian"
    actions = [d["action"] for d in guard.store.decisions(state.id)]
    assert "pause" in actions and "promote" not in actions
    drive(guard, clock, state.id, 60, 2.0)
    actions = [d["action"] for d in guard.store.decisions(state.id)]
    assert actions.index("resume") > actions.index("pause")
    assert guard.store.get(state.id).phase is Phase.PROMOTED


def test_tick_is_idempotent_for_the_same_time(rules):
    guard, clock, _ = make_guard(recording(10), rules)
    state = guard.start(spec())
    clock.advance(2.6)
    assert guard.tick(state.id) is not None
    assert guard.tick(state.id) is None
    assert len(guard.store.ticks(state.id)) == 1


def test_ticks_missed_while_down_are_caught_up_and_recorded(rules):
    guard, clock, _ = make_guard(recording(20), rules)
    state = guard.start(spec())
    clock.advance(2.0 * 8 + 0.6)
    guard.tick(state.id)
    rec = guard.store.recording(state.id)
    assert rec["format"] == "guardian-recording/v1"
    assert rec["series"]["requests"]["canary"] == [40.0] * 8


def test_an_action_interrupted_by_a_crash_is_completed_once_on_restart(rules, tmp_path):
    db = tmp_path / "state.db"
    actuator = CrashOn(Action.ADVANCE)
    guard, clock, _ = make_guard(recording(60), rules, store=SQLiteStore(db), actuator=actuator)
    state = guard.start(spec())
    with pytest.raises(KeyboardInterrupt):
        drive(guard, clock, state.id, 60, 2.0)
    assert guard.store.pending_ops(state.id), "the intent was written before the actuator was called"
    # restart: a new guard on the same database file
    guard2 = Guard(SQLiteStore(db), RecordingSource(recording(60)), rules, lambda t: actuator, clock,
                   GuardConfig(evaluation_delay=0.5))
    clock.advance(2.0)
    guard2.tick(state.id)
    assert not guard2.store.pending_ops(state.id)
    advances = [r for r in actuator.applied if r.action is Action.ADVANCE]
    assert len(advances) == 1 and advances[0].weight == 50
    assert guard2.store.get(state.id).step_index == 1


class FailingRollback(NoopActuator):
    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures

    def apply(self, request):
        if request.action is Action.ROLLBACK and self.failures > 0:
            self.failures -= 1
            return Outcome(False, "rollback", "target refused: HTTP 503")
        return super().apply(request)


def test_a_failed_rollback_is_reported_and_retried_on_the_next_tick(rules):
    rec = recording(40, error_ratio=lambda t: 0.3)
    guard, clock, _ = make_guard(rec, rules, actuator=FailingRollback(failures=1))
    state = guard.start(spec(analysis_seconds=1000))
    drive(guard, clock, state.id, 40, 2.0)
    log = guard.store.decisions(state.id)
    rollbacks = [d for d in log if d["action"] == "rollback"]
    assert len(rollbacks) == 2
    assert not rollbacks[0]["outcome"]["ok"] and "HTTP 503" in rollbacks[0]["outcome"]["detail"]
    assert rollbacks[1]["outcome"]["ok"]
    assert guard.store.get(state.id).phase is Phase.ROLLED_BACK


def test_user_pause_stops_acting_but_keeps_watching(rules):
    rec = recording(40, error_ratio=lambda t: 0.3 if t > 3 else 0.0)
    guard, clock, noop = make_guard(rec, rules)
    state = guard.start(spec(analysis_seconds=1000))
    guard.override(state.id, Action.PAUSE)
    drive(guard, clock, state.id, 20, 2.0)
    assert guard.store.get(state.id).phase is Phase.PAUSED
    assert len(guard.store.ticks(state.id)) == 19  # tick t is due at (t+1)*2s + 0.5s
    assert [r.action for r in noop.applied] == [Action.START, Action.PAUSE]
