"""The bake: after the last step a rollout with `bake:` stays at 100% (BAKING) with the previous version warm,
judged against the service before it (judge/bake.py), and is promoted only when the bake passed; a
regression in the bake rolls it back; ticks without evidence stop the bake's clock; the reference is frozen
with the models so a replay of the recording judges the same."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from guardian.actuators.noop import NoopActuator
from guardian.clock import FakeClock
from guardian.domain import BAKE_REFERENCE_KEY, Action, Evidence, Phase, Result, Verdict
from guardian.engine.guard import Guard, GuardConfig, StartSpec
from guardian.engine.replay import replay_recording
from guardian.engine.store import SQLiteStore
from guardian.errors import ModelMissing
from guardian.judge.bake import bake_rate, bake_sign
from guardian.rules.book import RuleBook
from guardian.rules.loader import parse_text
from guardian.sources.recording import RecordingSource
from tests.fixtures.driving import drive

START = 1_767_614_400.0
STEP = 2.0
RULES = """
service: checkout
bake: 20s
checks:
  - {name: errors-vs-baseline, kind: compare, ratio: errors / requests, min_samples: 20}
"""


def recording(n: int, canary_errors=lambda t: 0, rps: int = 50, unavailable=()) -> dict:
    req = [None if t in unavailable else rps for t in range(n)]
    err = [None if t in unavailable else canary_errors(t) for t in range(n)]
    rng = np.random.default_rng(7)
    return {
        "format": "guardian-recording/v1", "service": "checkout", "step_seconds": STEP,
        "start": datetime.fromtimestamp(START, UTC).isoformat(),
        "series": {"requests": {"canary": req, "baseline": [None if t in unavailable else rps for t in range(n)]},
                   "errors": {"canary": err, "baseline": [None if t in unavailable else int(rng.random() < 0.2)
                                                          for t in range(n)]}},
    }


@pytest.fixture
def rules(tmp_path):
    (tmp_path / "checkout.yaml").write_text(RULES)
    return RuleBook([tmp_path])


def make_guard(rec, rules, recordings_dir=None):
    clock = FakeClock(START)
    noop = NoopActuator()
    guard = Guard(SQLiteStore(":memory:"), RecordingSource(rec), rules, lambda target: noop, clock,
                  GuardConfig(evaluation_delay=0.5, recordings_dir=recordings_dir))
    return guard, clock, noop


def spec(**kw) -> StartSpec:
    return StartSpec(**({"service": "checkout", "image": "v2", "steps": (25, 100), "step_seconds": STEP,
                         "analysis_seconds": 10.0} | kw))


def test_a_good_release_bakes_at_100_percent_then_is_promoted(rules):
    guard, clock, noop = make_guard(recording(80), rules)
    state = guard.start(spec())
    decisions = drive(guard, clock, state.id, 80, STEP)
    final = guard.store.get(state.id)
    assert final.phase is Phase.PROMOTED
    assert [(r.action, r.weight) for r in noop.applied] == [
        (Action.START, 25), (Action.ADVANCE, 100), (Action.BAKE, 100), (Action.PROMOTE, 100)]
    bake = next(d for d in decisions if d.action is Action.BAKE)
    promote = decisions[-1]
    assert "baking at 100% for 20s" in bake.reason
    assert "the bake passed: 20s" in promote.reason
    # the bake's ticks were judged against the service before it
    baked = [d for d in decisions if d.tick is not None and d.tick > bake.tick]
    assert len(baked) == 11  # the flip's tick (not counted) and 10 that passed
    assert all("than before" in d.verdicts[0].reason or "flip" in d.verdicts[0].reason for d in baked)
    assert final.baked_ticks == 10 and final.bake_tick == bake.tick + 1


def test_a_regression_in_the_bake_rolls_back_within_two_ticks_of_strong_evidence(rules):
    onset = 13  # the bake began at tick 9; 10% errors at 250 requests a second (500 a tick)
    guard, clock, noop = make_guard(recording(80, canary_errors=lambda t: 50 if t >= onset else 0, rps=500), rules)
    state = guard.start(spec(step_seconds=STEP))
    decisions = drive(guard, clock, state.id, 80, STEP)
    final = guard.store.get(state.id)
    assert final.phase is Phase.ROLLED_BACK
    assert noop.applied[-1].action is Action.ROLLBACK
    assert Action.BAKE in [r.action for r in noop.applied]
    rollback = decisions[-1]
    assert rollback.tick - onset <= 1  # the onset tick and the next: one tick alone never rolls back
    failing = [v for v in rollback.verdicts if v.result is Result.FAIL]
    assert "worse than 1x the service before the rollout" in failing[0].reason
    assert failing[0].sample_size > 0 and failing[0].statistic.startswith("e_value=")


def test_one_burst_tick_in_the_bake_does_not_roll_back(rules):
    guard, clock, _ = make_guard(recording(80, canary_errors=lambda t: 40 if t == 20 else 0), rules)
    state = guard.start(spec())
    drive(guard, clock, state.id, 80, STEP)
    assert guard.store.get(state.id).phase is Phase.PROMOTED


def test_missing_data_in_the_bake_stops_its_clock_and_never_promotes(rules):
    gone = set(range(11, 80))  # Prometheus down from just after the bake began (tick 9)
    guard, clock, _ = make_guard(recording(80, unavailable=gone), rules)
    state = guard.start(spec())
    decisions = drive(guard, clock, state.id, 60, STEP)
    final = guard.store.get(state.id)
    assert final.phase is Phase.PAUSED and final.bake_tick is not None
    assert final.weight == 100  # the new version keeps its traffic; the previous one stays warm
    assert final.baked_ticks < 10
    assert Action.PROMOTE not in [d.action for d in decisions]


def test_the_bake_resumes_after_missing_data_and_keeps_its_clock(rules):
    gone = set(range(12, 16))
    guard, clock, _ = make_guard(recording(90, unavailable=gone), rules)
    state = guard.start(spec())
    decisions = drive(guard, clock, state.id, 90, STEP)
    final = guard.store.get(state.id)
    assert final.phase is Phase.PROMOTED
    actions = [d.action for d in decisions]
    assert actions.index(Action.PAUSE) < actions.index(Action.RESUME) < actions.index(Action.PROMOTE)
    assert final.baked_ticks == 10  # only passing ticks counted: the outage did not count as baked


def test_a_baked_rollouts_recording_replays_to_the_same_rollback(rules, tmp_path):
    onset = 13
    out = tmp_path / "recordings"
    guard, clock, _ = make_guard(recording(80, canary_errors=lambda t: 5 if t >= onset else 0), rules,
                                 recordings_dir=out)
    state = guard.start(spec())
    live = drive(guard, clock, state.id, 80, STEP)[-1]
    doc = json.loads((out / f"{state.id}.json").read_text())
    assert doc["models"][BAKE_REFERENCE_KEY]["from_tick"] == guard.store.get(state.id).bake_tick
    replayed = replay_recording(doc, "baked.json", rules.for_service("checkout"))
    assert (replayed.decision, replayed.tick) == ("rollback", live.tick)


def test_a_bake_that_could_never_be_judged_is_refused_at_the_start(rules):
    guard, _, noop = make_guard(recording(40), rules)  # the recording has nothing before the start
    with pytest.raises(ModelMissing, match="cannot be judged.*no step below 100%"):
        guard.start(spec(steps=(100,)))
    assert guard.store.list() == [] and noop.applied == []


def test_the_rule_files_bake_is_validated_with_file_line_and_field():
    from guardian.errors import RuleError

    rf = parse_text(RULES.replace("bake: 20s", "bake: 10 m"), "x.yaml")
    assert rf.bake == 600 and rf.bake_before == 600
    with pytest.raises(RuleError) as e:
        parse_text(RULES.replace("bake: 20s", "bake: soon\nbake_before: -3m"), "x.yaml")
    said = str(e.value).splitlines()
    assert said[0].startswith("x.yaml:3: bake: bad duration 'soon'")
    assert said[1].startswith("x.yaml:4: bake_before: bad duration '-3m'")


def _ev(canary_k, canary_n, base_k, base_n, from_tick, before=None) -> Evidence:
    ev = Evidence(step_seconds=STEP, counters=frozenset({"errors", "requests"}))
    for t in range(len(canary_k)):
        ev.append({"errors": {"canary": canary_k[t], "baseline": base_k[t]},
                   "requests": {"canary": canary_n[t], "baseline": base_n[t]}})
    ev.bake = {"from_tick": from_tick, "before": before or {}}
    return ev


PASSING = Verdict("errors-vs-baseline", Result.PASS, "no evidence")


def test_bake_rate_needs_a_reference_and_says_so():
    n = 12
    ev = _ev([0] * n, [50] * n, [0] * 6 + [None] * 6, [0] * 6 + [None] * 6, from_tick=6)
    v = bake_rate(PASSING, ev, n - 1, "errors", "requests", tolerance=1.0, alpha=0.01)
    assert v.result is Result.INCONCLUSIVE and "nothing to compare with" in v.reason


def test_bake_rate_uses_the_pre_rollout_window():
    n = 12
    ev = _ev([0] * 6 + [10] * 6, [50] * n, [None] * n, [None] * n, from_tick=6,
             before={"errors": 3.0, "requests": 30000.0})
    v = bake_rate(PASSING, ev, n - 1, "errors", "requests", tolerance=1.0, alpha=0.01)
    assert v.result is Result.FAIL and "3/30000" in v.reason


def test_a_bursty_reference_needs_more_evidence():
    steady = [1] * 20
    bursty = [0, 0, 0, 0, 5] * 4  # the same total, in bursts
    fails = {}
    for name, ref in (("steady", steady), ("bursty", bursty)):
        k_c = [0] * 20 + [6] * 6
        ev = _ev(k_c, [100] * 26, ref + [None] * 6, [100] * 20 + [0] * 6, from_tick=20)
        fails[name] = bake_rate(PASSING, ev, 25, "errors", "requests", tolerance=1.0, alpha=0.01).result
    assert fails == {"steady": Result.FAIL, "bursty": Result.PASS}


def test_bake_sign_compares_p99_with_the_upper_quartile_before():
    ev = Evidence(step_seconds=STEP)
    for t in range(30):
        ev.append({"p99_seconds": {"canary": 0.2 if t < 10 else 2.0, "baseline": 0.2 if t < 10 else None}})
    ev.bake = {"from_tick": 10, "before": {}}
    v = bake_sign(Verdict("p99", Result.PASS, "ok"), ev, 29, "p99_seconds", margin=0.2, alpha=0.01)
    assert v.result is Result.FAIL and "upper quartile 0.2" in v.reason


def test_a_store_made_before_bakes_counts_a_baking_rollout_as_in_flight(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE rollouts (id TEXT PRIMARY KEY, service TEXT NOT NULL, phase TEXT NOT NULL, "
                     "state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);"
                     "CREATE UNIQUE INDEX one_in_flight_per_service ON rollouts(service) "
                     "WHERE phase IN ('progressing', 'paused');")
    db.close()
    store = SQLiteStore(path)
    guard = Guard(store, RecordingSource(recording(4)), RuleBook([]), lambda target: NoopActuator(), FakeClock(START))
    state = guard.start(spec())
    store.save(state.evolve(phase=Phase.BAKING, bake_tick=3))
    assert [s.id for s in store.list(active_only=True)] == [state.id]
    from guardian.errors import RolloutConflict
    with pytest.raises(RolloutConflict):
        guard.start(spec(image="v3"))


def _memory_ev(canary, baseline, from_tick):
    ev = Evidence(step_seconds=STEP)
    for c, b in zip(canary, baseline, strict=True):
        ev.append({"memory_bytes": {"canary": c, "baseline": b}})
    ev.bake = {"from_tick": from_tick, "before": {}, "ticks": 30}
    return ev


def test_the_leak_check_starts_again_after_the_flip_a_replica_count_change_is_no_leak():
    from guardian.judge.compare import evaluate
    from guardian.rules.models import CompareCheck

    leak = CompareCheck(name="memory-leak", signal="memory_bytes", test="trend", tolerance=0.1)
    # one canary replica for 20 ticks, then the BAKE starts the second: the arm's summed memory doubles
    canary = [100.0] * 20 + [200.0 + (t % 2) for t in range(40)]
    ev = _memory_ev(canary, [200.0] * 60, from_tick=20)
    verdicts = [evaluate(leak, ev, t) for t in range(60)]
    assert all(v.result is not Result.FAIL for v in verdicts)
    assert verdicts[-1].result is Result.PASS
    assert any(v.result is Result.INCONCLUSIVE and v.warming_up for v in verdicts[20:32])  # the bake re-warms it
    # a real leak in the bake is still caught
    leaking = [100.0] * 20 + [200.0 * (1 + 0.02 * t) for t in range(40)]
    ev = _memory_ev(leaking, [200.0] * 60, from_tick=20)
    assert evaluate(leak, ev, 59).result is Result.FAIL
