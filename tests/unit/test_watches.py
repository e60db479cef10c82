"""The steady-state guard through the engine (engine/watches.py, Guard._tick's watch branch): a watch is kept in
flight for a watched service, gives way to a rollout and comes back after it with the attribution, scales out and
in through the actuator and the operation log (a crash mid-scale finishes it once), rolls back the suspect, and
its recording replays to the same decisions. A fake clock and a recording-backed source, as tests/unit/test_guard.py.
"""
from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import generate_latest

from guardian.actuators.noop import NoopActuator
from guardian.clock import FakeClock
from guardian.domain import Action, Phase, Strategy
from guardian.engine.guard import Guard, GuardConfig, StartSpec
from guardian.engine.replay import replay_recording
from guardian.engine.store import SQLiteStore
from guardian.engine.watches import WatchKeeper
from guardian.errors import RolloutConflict
from guardian.forecast.model import SeasonalModel
from guardian.forecast.model_files import ModelDirectory
from guardian.rules.book import RuleBook
from guardian.rules.loader import RuleSet, parse_text
from guardian.sources.recording import RecordingSource
from tests.fixtures.driving import CrashOn, drive

START = 1_767_614_400.0
STEP = 10.0
RULES = """
service: shop
checks:
  - {name: error-rate, kind: threshold, ratio: errors / requests, arm: baseline, above: 5%, window: 20s, for: 20s,
     min_samples: 20, action: rollback}
  - {name: traffic-forecast, kind: baseline, signal: requests, arm: baseline, direction: above, consecutive: 2,
     cusum: false, action: scale, replicas: 1}
  - {name: errors-vs-baseline, kind: compare, ratio: errors / requests}
watch:
  min_replicas: 2
  max_replicas: 3
  cooldown: 60s
  scale_in_after: 1m
  attribution: 30m
"""
DEFAULTS = SimpleNamespace(default_target="noop", tick_seconds=STEP, watch_services=[])


def world(rates: list[float], error_ratio=lambda t: 0.0) -> dict:
    """What the service did, tick by tick from START: every replica is the baseline arm between rollouts."""
    return {
        "format": "guardian-recording/v1", "service": "shop", "step_seconds": STEP,
        "start": datetime.fromtimestamp(START, UTC).isoformat(),
        "series": {"requests": {"canary": [None] * len(rates), "baseline": [r * STEP for r in rates]},
                   "errors": {"canary": [None] * len(rates),
                              "baseline": [round(r * STEP * error_ratio(t)) for t, r in enumerate(rates)]}},
    }


@pytest.fixture
def dirs(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "shop.yaml").write_text(RULES)
    model = SeasonalModel(period=86400.0, bucket=60.0, profile=np.full(1440, 10.0), scale=np.full(1440, 1.0),
                          fitted_at=START - 3600, floor_fraction=0.0, min_sigma=0.01, service="shop",
                          signal="requests")
    (tmp_path / "models" / "shop").mkdir(parents=True)
    (tmp_path / "models" / "shop" / "requests.json").write_text(model.to_json())
    return tmp_path


def make(dirs, rec: dict, *, store=None, actuator=None, clock=None):
    clock = clock or FakeClock(START)
    actuator = actuator or NoopActuator()
    rulebook = RuleBook([dirs / "rules"])
    guard = Guard(store or SQLiteStore(":memory:"), RecordingSource(rec), rulebook, lambda target: actuator, clock,
                  GuardConfig(evaluation_delay=0.5), models=ModelDirectory(dirs / "models"))
    return guard, WatchKeeper(guard, rulebook, DEFAULTS), clock, actuator


def acted(decisions: list[dict]) -> list[tuple]:
    return [(d["tick"], d["action"], d.get("replicas", 0)) for d in decisions if d["action"] not in ("start",)]


def test_a_watch_gives_way_to_a_rollout_and_comes_back_with_its_attribution_then_rolls_it_back(dirs):
    rec = world([10.0] * 80, error_ratio=lambda t: 0.25 if t >= 30 else 0.0)
    guard, keeper, clock, noop = make(dirs, rec)
    [w1] = keeper.run_once()
    assert w1.id.startswith("watch-shop-") and w1.strategy is Strategy.WATCH and w1.steps == (100,)
    assert keeper.run_once() == []  # one in flight is enough
    start = guard.store.decisions(w1.id)[0]
    assert start["action"] == "start" and "judging error-rate, traffic-forecast" in start["reason"]
    assert "replicas 2 (min_replicas; tracked until the actuator reports them)" in start["reason"]
    assert (noop.applied[0].action, noop.applied[0].strategy, noop.applied[0].image) == (Action.START, "observe", "")
    decisions = drive(guard, clock, w1.id, 4, STEP)
    assert {v.check for v in decisions[-1].verdicts} == {"error-rate", "traffic-forecast"}  # no compare check
    assert all(d.action is Action.CONTINUE for d in decisions)

    rollout = guard.start(StartSpec(service="shop", image="shop:v2", previous_image="shop:v1", steps=(100,),
                                    step_seconds=STEP, analysis_seconds=1000))
    ended = guard.store.get(w1.id)
    assert ended.phase is Phase.ENDED and ended.reason == f"ended: rollout {rollout.id} started"
    assert guard.store.decisions(w1.id)[-1]["reason"] == f"ended: rollout {rollout.id} started"
    assert keeper.run_once() == []  # the rollout is in flight
    clock.advance(30)
    guard.override(rollout.id, Action.PROMOTE)
    promoted_at = clock.now()

    [w2] = keeper.run_once()
    assert (w2.image, w2.previous_image, w2.suspect, w2.promoted_at) == ("shop:v2", "shop:v1", rollout.id, promoted_at)
    assert f"promoted by rollout {rollout.id}" in guard.store.decisions(w2.id)[0]["reason"]
    decisions = drive(guard, clock, w2.id, 40, STEP)
    rollback = decisions[-1]
    assert rollback.action is Action.ROLLBACK
    assert f"suspect: rollout {rollout.id} (shop:v2)" in rollback.reason and "back to shop:v1" in rollback.reason
    assert guard.store.get(w2.id).phase is Phase.ROLLED_BACK
    request = noop.applied[-1]
    assert (request.action, request.strategy, request.image) == (Action.ROLLBACK, "observe", "shop:v2")

    [w3] = keeper.run_once()  # what runs now is the version the watch restored, and nobody is to blame
    assert (w3.image, w3.previous_image, w3.suspect) == ("shop:v1", None, None)


def test_a_rollout_cannot_start_while_a_foreign_row_is_in_flight_but_a_watch_always_gives_way(dirs):
    guard, keeper, clock, _ = make(dirs, world([10.0] * 20))
    keeper.run_once()
    first = guard.start(StartSpec(service="shop", image="shop:v2", steps=(100,), step_seconds=STEP))
    with pytest.raises(RolloutConflict):
        guard.start(StartSpec(service="shop", image="shop:v3", steps=(100,), step_seconds=STEP))
    assert guard.store.get(first.id).phase is Phase.PROGRESSING


RATES = [10.0] * 6 + [16.0] * 24 + [10.0] * 20  # two periods above the forecast from tick 6, back at tick 30


def test_a_crash_mid_scale_finishes_it_once_then_max_is_refused_and_it_scales_back_in(dirs, tmp_path):
    db = tmp_path / "state.db"
    actuator = CrashOn(Action.SCALE)
    guard, keeper, clock, _ = make(dirs, world(RATES), store=SQLiteStore(db), actuator=actuator)
    [w] = keeper.run_once()
    with pytest.raises(KeyboardInterrupt):
        drive(guard, clock, w.id, 40, STEP)
    [pending] = guard.store.pending_ops(w.id)
    assert pending["request"]["action"] == "scale" and pending["request"]["strategy"] == "observe"
    crashed_at = clock.now()

    # a restart: a new guard on the same database file
    guard2, keeper2, _, _ = make(dirs, world(RATES), store=SQLiteStore(db), actuator=actuator, clock=clock)
    assert keeper2.run_once() == []  # the watch is still in flight
    drive(guard2, clock, w.id, 60, STEP)
    assert not guard2.store.pending_ops(w.id)
    scales = [r for r in actuator.applied if r.action is Action.SCALE]
    assert [r.replicas for r in scales] == [1, -1]  # the interrupted one carried out once, then back in
    assert scales[0].key == pending["key"]
    log = acted(guard2.store.decisions(w.id))
    assert log[0] == (17, "scale", 1)  # the second period above the forecast ends at tick 17
    assert (23, "notify", 0) in log  # after the 60 s cooldown: 4 replicas would be above max_replicas 3
    refusal = next(d for d in guard2.store.decisions(w.id) if d["action"] == "notify")
    assert "refused: 3 -> 4 replicas" in refusal["reason"] and "above max_replicas 3" in refusal["reason"]
    scale_in = next(d for d in guard2.store.decisions(w.id) if d["action"] == "scale" and d["replicas"] < 0)
    assert scale_in["tick"] >= 35 + 6  # back on the forecast from the period ending at tick 35, then 1 m
    final = guard2.store.get(w.id)
    assert (final.replicas, final.scaled_replicas, final.replicas_reported) == (2, 0, False)
    assert crashed_at < clock.now()


def test_a_watch_recording_replays_to_the_same_decisions(dirs):
    guard, keeper, clock, _ = make(dirs, world(RATES))
    [w] = keeper.run_once()
    drive(guard, clock, w.id, 49, STEP)
    live = acted(guard.store.decisions(w.id))
    assert [a for _, a, _ in live].count("scale") == 2 and "notify" in [a for _, a, _ in live]
    metrics = generate_latest(guard.metrics.registry).decode()
    assert f'guardian_watch_replicas{{service="shop",watch="{w.id}"}} 2.0' in metrics  # scaled out and back in
    assert 'guardian_rollouts{phase="progressing"} 0.0' in metrics  # a watch is no rollout there
    assert "guardian_rollout_canary_weight{" not in metrics
    rec = guard.store.recording(w.id)
    assert rec["watch"]["replicas"] == 2 and rec["watch"]["rules"]["max_replicas"] == 3
    assert "#watch" not in rec.get("models", {})
    replayed = replay_recording(rec, "watch.json", RuleSet.of(parse_text(RULES, "shop.yaml"), "shop.yaml"))
    assert replayed.decision == "watch"
    assert acted(list(replayed.decisions)) == live
    assert replayed.to_json()["actions"] == [{"tick": t, "action": a, "replicas": r} for t, a, r in live]
    # a rule file without a `watch:` section: the recording's own watch rules
    bare = RULES.split("watch:")[0]
    again = replay_recording(rec, "watch.json", RuleSet.of(parse_text(bare, "shop.yaml"), "shop.yaml"))
    assert acted(list(again.decisions)) == live


def test_a_gating_forecast_check_without_a_model_refuses_the_watch_and_says_so(dirs, caplog):
    (dirs / "models" / "shop" / "requests.json").unlink()
    gating = RULES.replace("action: scale, replicas: 1", "action: rollback")
    (dirs / "rules" / "shop.yaml").write_text(gating)
    guard, keeper, _, _ = make(dirs, world([10.0] * 10))
    assert keeper.run_once() == []
    assert guard.store.list() == []
    assert "gating forecast check has no model" in keeper.refused()["shop"]
    # advisory: the watch starts, the check abstains, visibly
    (dirs / "rules" / "shop.yaml").write_text(RULES)
    guard, keeper, clock, _ = make(dirs, world([10.0] * 10))
    [w] = keeper.run_once()
    assert "traffic-forecast abstains: no model at" in guard.store.decisions(w.id)[0]["reason"]
    [d] = drive(guard, clock, w.id, 2, STEP)
    forecast = next(v for v in d.verdicts if v.check == "traffic-forecast")
    assert forecast.abstained and "no model" in forecast.reason


def test_settings_watch_services_and_enabled_false(dirs):
    (dirs / "rules" / "shop.yaml").write_text(RULES.replace("watch:\n", "watch:\n  enabled: false\n"))
    (dirs / "rules" / "cart.yaml").write_text(RULES.split("watch:")[0].replace("service: shop", "service: cart"))
    guard, _, _, _ = make(dirs, world([10.0] * 10))
    keeper = WatchKeeper(guard, guard.rulebook, SimpleNamespace(**{**vars(DEFAULTS),
                                                                   "watch_services": ["shop", "cart"]}))
    assert [s.service for s in keeper.run_once()] == ["cart"]  # shop's file opts out


def test_a_watch_ends_when_its_service_is_no_longer_watched(dirs):
    guard, keeper, _, _ = make(dirs, world([10.0] * 10))
    [w] = keeper.run_once()
    (dirs / "rules" / "shop.yaml").write_text(RULES.split("watch:")[0])
    guard.rulebook.reload()
    keeper.run_once()
    assert guard.store.get(w.id).phase is Phase.ENDED and "no longer watched" in guard.store.get(w.id).reason


# -- over the API ------------------------------------------------------------------------------------------------
def test_the_api_refuses_a_watch_lists_one_explains_it_and_will_not_promote_it(tmp_path):
    from tests.unit.test_api_contract import assert_error, make_harness

    for api in make_harness(tmp_path, watch_services=["checkout"]):
        r = api.client.post("/v1/rollouts", json={"service": "checkout", "image": "x", "strategy": "watch"})
        [detail] = assert_error(r, 422, "invalid_request")
        assert detail["field"] == "strategy" and "watch:" in detail["message"] and "watch_services" in detail["message"]
        keeper = WatchKeeper(api.c.guard, api.c.rulebook, api.c.settings)
        [w] = keeper.run_once()
        [listed] = api.rollouts()
        assert listed["id"] == w.id and listed["strategy"] == "watch" and listed["replicas"] == 1
        explained = api.client.get(f"/v1/rollouts/{w.id}/explain").json()
        assert explained["summary"].startswith(f"Watch {w.id} of checkout (running a version not known)")
        assert "is watching with 1 replica(s) (tracked" in explained["summary"]
        assert_error(api.client.post(f"/v1/rollouts/{w.id}/promote"), 409, "conflict")
        started = api.start()  # a rollout of the service: the watch gives way
        assert api.client.get(f"/v1/rollouts/{w.id}").json()["phase"] == "ended"
        assert f"ended: rollout {started['id']} started" in api.client.get(f"/v1/rollouts/{w.id}/explain").json()[
            "summary"]


# -- the rule file -------------------------------------------------------------------------------------------------
BAD_WATCH = """service: shop
checks:
  - {name: error-rate, kind: threshold, ratio: errors / requests, above: 5%}
  - {name: errors-vs-baseline, kind: compare, ratio: errors / requests}
watch:
  min_replicas: 0
  cooldwn: 2m
  checks:
    - error-rate
    - errors-vs-baseline
    - nope
  attribution: soon
"""


def test_rules_check_refuses_a_bad_watch_section_with_file_line_and_field(tmp_path):
    from typer.testing import CliRunner

    from guardian.cli import app

    bad = tmp_path / "shop.yaml"
    bad.write_text(BAD_WATCH)
    result = CliRunner().invoke(app, ["rules", "check", str(bad)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{bad}:6: watch.min_replicas: ") and "greater than or equal to 1" in lines[0]
    assert lines[1] == f"{bad}:7: watch.cooldwn: unknown field; did you mean 'cooldown'?"
    assert lines[2].startswith(f"{bad}:10: watch.checks[1]: check 'errors-vs-baseline' is a compare check")
    assert lines[3].startswith(f"{bad}:11: watch.checks[2]: unknown check 'nope'")
    assert lines[4].startswith(f"{bad}:12: watch.attribution: bad duration 'soon'")
    assert len(lines) == 5


def test_min_above_max_is_refused_on_the_watch_line(tmp_path):
    from guardian.errors import RuleError

    with pytest.raises(RuleError) as e:
        parse_text("service: shop\nchecks: []\nwatch:\n  min_replicas: 4\n  max_replicas: 2\n", "shop.yaml")
    assert [str(p) for p in e.value.problems] == [
        "shop.yaml:3: watch: min_replicas (4) is above max_replicas (2)"]


def test_an_old_watch_is_rotated_and_the_next_carries_on_from_it(dirs):
    guard, keeper, clock, _ = make(dirs, world(RATES))
    keeper.rotate_seconds = 200.0
    [w] = keeper.run_once()
    drive(guard, clock, w.id, 19, STEP)  # scaled out at tick 17
    scaled = guard.store.get(w.id)
    assert scaled.scaled_replicas == 1 and scaled.replicas == 3
    assert keeper.run_once() == []  # 190 s old
    clock.advance(STEP)
    [w2] = keeper.run_once()
    assert guard.store.get(w.id).phase is Phase.ENDED and guard.store.get(w.id).reason.startswith("ended: rotated")
    assert (w2.replicas, w2.scaled_replicas, w2.last_scale_at) == (3, 1, scaled.last_scale_at)
    assert guard.store.recording(w2.id)["watch"]["replicas"] == 3


@pytest.mark.parametrize("point", ["after_record_tick", "after_begin_op", "after_apply", "after_finish_op"])
def test_killed_at_any_point_of_a_scale_the_restarted_guardian_scales_once(dirs, tmp_path, monkeypatch, point):
    import guardian.engine.guard as guard_module

    fired = []

    def crash_point(name, action=None):
        if name == point and action == "scale" and not fired:
            fired.append(name)
            raise KeyboardInterrupt(f"killed at {name}")

    monkeypatch.setattr(guard_module, "crash_point", crash_point)
    db = tmp_path / "state.db"
    guard, keeper, clock, noop = make(dirs, world(RATES), store=SQLiteStore(db))
    [w] = keeper.run_once()
    with pytest.raises(KeyboardInterrupt):
        drive(guard, clock, w.id, 30, STEP)
    guard2, keeper2, _, _ = make(dirs, world(RATES), store=SQLiteStore(db), actuator=noop, clock=clock)
    assert keeper2.run_once() == []
    drive(guard2, clock, w.id, 3, STEP)
    assert [(r.action, r.replicas) for r in noop.applied if r.action is Action.SCALE] == [(Action.SCALE, 1)]
    assert [d["tick"] for d in guard2.store.decisions(w.id) if d["action"] == "scale"] == [17]
    state = guard2.store.get(w.id)
    assert (state.replicas, state.scaled_replicas) == (3, 1) and not guard2.store.pending_ops(w.id)


class SlipIn(SQLiteStore):
    """A store where, just before the first start's row is written, another guardian's start of the service gets
    in first (two replicas answering two starts at once)."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.other: Guard | None = None
        self.slipped: list[str] = []

    def create(self, state, ending=()):
        if self.other is not None and state.image == "shop:v2" and not self.slipped:
            self.slipped.append(self.other.start(StartSpec(service="shop", image="shop:v3", steps=(100,),
                                                           step_seconds=STEP)).id)
        super().create(state, *([ending] if ending else []))


def test_the_start_that_ends_a_watch_is_the_one_that_takes_its_place(dirs):
    store = SlipIn()
    guard, keeper, _, _ = make(dirs, world([10.0] * 20), store=store)
    [watch] = keeper.run_once()
    store.other = make(dirs, world([10.0] * 20), store=store)[0]
    with pytest.raises(RolloutConflict):  # the other start got in first: this one is refused, nothing half done
        guard.start(StartSpec(service="shop", image="shop:v2", steps=(100,), step_seconds=STEP))
    [winner] = store.slipped
    assert store.get(winner).phase is Phase.PROGRESSING
    ended = [d["reason"] for d in store.decisions(watch.id) if d["action"] == "notify"]
    assert ended == [f"ended: rollout {winner} started"]  # ended once, naming the rollout in its place
    assert store.get(watch.id).reason == f"ended: rollout {winner} started"
