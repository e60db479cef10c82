"""The Swarm watcher's plan (pure), its poll against a real Guard (Docker's answers stubbed), arms that
follow the release ({version}, {previous_version}): resolution per rollout, inconclusive when they
cannot be resolved, validation at load time; and previous_image kept backward compatible."""
from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import orjson
import pytest
import requests
from fastapi.testclient import TestClient

from guardian.actuators.noop import NoopActuator
from guardian.actuators.swarm import UpdateInfo
from guardian.api.app import create_app
from guardian.api.components import build
from guardian.clock import FakeClock
from guardian.domain import Action, Phase, Result, RolloutState, Strategy
from guardian.engine.arms import arm_selectors
from guardian.engine.guard import Guard, GuardConfig, StartSpec
from guardian.engine.replay import replay_recording
from guardian.engine.store import SQLiteStore
from guardian.errors import RuleError
from guardian.rules.book import RuleBook
from guardian.rules.loader import RuleSet, parse_text
from guardian.rules.models import Arms
from guardian.settings import Settings, load_settings
from guardian.sources.recording import RecordingSource
from guardian.watchers.swarm import SwarmWatcher, active_services, plan
from tests.fixtures.driving import drive
from tests.unit.recordings import steady_recording

V1, V2 = "app:v1", "app:v2"
START = 1_767_614_400.0  # 2026-01-05T12:00:00Z, the recordings' start


def update(state: str = "updating", *, service: str = "checkout", new: str = V2, old: str | None = V1,
           held: bool = False, rollout: str | None = None, started_at: str | None = "2026-01-05T12:00:00Z"
           ) -> UpdateInfo:
    return UpdateInfo(service=service, service_id=f"id-{service}", state=state, message="", old_image=old,
                      new_image=new, running={old or "?": 1, new: 1}, replicas=2, started_at=started_at,
                      held=held, rollout=rollout)


# -- plan ---------------------------------------------------------------------------------------------------
def test_an_update_in_progress_starts_an_observe_rollout():
    [start] = plan({"checkout": update()}, {})
    assert (start.service, start.image, start.previous_image) == ("checkout", V2, V1)
    assert (start.strategy, start.target, start.steps) == (Strategy.OBSERVE, "swarm:checkout", (100,))
    assert start.reason.startswith("docker service update of checkout to app:v2 detected (Swarm UpdateStatus "
                                   "updating); guarding it")
    assert "replacing app:v1" in start.reason


def test_a_service_with_an_active_rollout_starts_nothing():
    assert plan({"checkout": update()}, {"checkout": "r1"}) == []


def test_an_update_the_guardian_started_itself_starts_nothing():
    # its rollout is under another name (target swarm:checkout_web), the service label names it
    assert plan({"checkout_web": update(service="checkout_web", rollout="r7")}, {"checkout": "r7"}) == []
    # the label of a rollout that has ended is someone else's update now
    [start] = plan({"checkout_web": update(service="checkout_web", rollout="r6")}, {"checkout": "r7"})
    assert start.service == "checkout_web"


@pytest.mark.parametrize("state", ["rollback_started", "rollback_completed", "completed", "paused",
                                   "rollback_paused"])
def test_rollbacks_finished_and_swarm_paused_updates_start_nothing(state):
    # paused (a task failed, failure_action pause): nothing moves; it is guarded once pushed on (updating)
    assert plan({"checkout": update(state)}, {}) == []


def test_no_update_and_a_held_update_start_nothing():
    assert plan({"checkout": None, "web": update(service="web", held=True)}, {}) == []


def test_an_update_guarded_once_is_not_guarded_again_but_the_next_one_is():
    [first] = plan({"checkout": update()}, {})
    assert plan({"checkout": update()}, {}, {first.key}) == []
    [later] = plan({"checkout": update(new="app:v3", old=V2, started_at="2026-01-05T13:00:00Z")}, {}, {first.key})
    assert (later.image, later.previous_image) == ("app:v3", V2)


def test_several_services_are_planned_in_order_and_an_unknown_previous_image_is_said():
    planned = plan({"web": update(service="web", old=None), "api": update(service="api"), "db": None}, {})
    assert [p.service for p in planned] == ["api", "web"]
    assert planned[1].previous_image is None and "the image it replaces is unknown" in planned[1].reason


def state(id: str, service: str, target: str, phase: Phase = Phase.PROGRESSING) -> RolloutState:
    return RolloutState(id=id, service=service, image=V2, strategy=Strategy.CANARY, steps=(100,), target=target,
                        step_seconds=10, analysis_seconds=60, created_at=START, phase=phase)


def test_active_services_names_rollouts_and_the_swarm_services_they_act_on():
    states = [state("a", "checkout", "swarm:checkout_web"), state("b", "payments", "noop"),
              state("c", "web", "swarm:"), state("d", "old", "swarm:old_web", Phase.PROMOTED)]
    assert active_services(states) == {"checkout": "a", "checkout_web": "a", "payments": "b", "web": "c"}


# -- the watcher's poll, on a real guard --------------------------------------------------------------------
class FakeAPI:
    """docker-py's low-level client, as much of it as the watcher asks before detect_update."""

    def __init__(self) -> None:
        self.services_listed: list[dict] = []
        self.error: Exception | None = None
        self.filters: list[dict] = []

    def services(self, filters: dict) -> list[dict]:
        self.filters.append(filters)
        if self.error:
            raise self.error
        return self.services_listed


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeAPI()

    def close(self) -> None:
        pass


@pytest.fixture
def watched(tmp_path):
    clock = FakeClock(START)
    noop = NoopActuator()
    guard = Guard(SQLiteStore(":memory:"), RecordingSource(steady_recording(30)), RuleBook([tmp_path]),
                  lambda target: noop, clock, GuardConfig(evaluation_delay=0.5))
    client = FakeClient()
    watcher = SwarmWatcher(guard, Settings(), client=client, clock=clock)
    seen: dict[str, UpdateInfo | None] = {}
    watcher.actuator.detect_update = lambda name: seen[name]  # Docker's answer, per service
    return watcher, client.api, seen, noop


def listed(*names: str, **labels: str) -> list[dict]:
    return [{"ID": f"id-{n}", "Spec": {"Name": n, "Labels": {"guardian.watch": "true", **labels}}} for n in names]


def test_poll_starts_one_observe_rollout_through_the_guard_and_a_second_poll_none(watched):
    watcher, api, seen, noop = watched
    api.services_listed = listed("checkout", "idle")
    seen.update(checkout=update(), idle=None)
    [started] = watcher.poll()
    assert api.filters == [{"label": "guardian.watch"}]
    assert (started.service, started.image, started.previous_image) == ("checkout", V2, V1)
    assert (started.strategy, started.target, started.steps) == (Strategy.OBSERVE, "swarm:checkout", (100,))
    assert (started.step_seconds, started.analysis_seconds) == (10.0, 60.0)  # the settings' defaults
    [decision] = watcher.guard.store.decisions(started.id)
    assert decision["action"] == "start" and decision["source"] == "guardian"
    assert decision["reason"].startswith("docker service update of checkout to app:v2 detected")
    assert watcher.guard.store.get(started.id).reason == decision["reason"]
    assert [(r.action, r.strategy) for r in noop.applied] == [(Action.START, "observe")]
    assert watcher.poll() == []  # active now
    watcher.guard.override(started.id, Action.ROLLBACK)
    assert watcher.poll() == []  # ended, but that update was guarded once already


def test_docker_errors_are_logged_once_and_the_next_poll_tries_again(watched, caplog_loguru):
    watcher, api, seen, _ = watched
    api.error = requests.exceptions.ConnectionError("connection refused")
    assert watcher.poll() == [] and watcher.poll() == []
    assert len([m for m in caplog_loguru if "cannot list the services labelled guardian.watch" in m]) == 1
    watcher.clock.advance(61)
    watcher.poll()
    assert len([m for m in caplog_loguru if "cannot list" in m]) == 2  # repeated at most once a minute
    api.error = None
    api.services_listed = listed("checkout")
    seen["checkout"] = update()
    assert len(watcher.poll()) == 1
    assert any("Docker answers again" in m for m in caplog_loguru)


def test_a_service_labelled_false_is_not_watched(watched):
    watcher, api, seen, _ = watched
    api.services_listed = listed("checkout", **{"guardian.watch": "false"})
    seen["checkout"] = update()
    assert watcher.poll() == []


@pytest.fixture
def caplog_loguru():
    from loguru import logger

    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="INFO")
    yield messages
    logger.remove(sink)


# -- arms that follow the release -----------------------------------------------------------------------------
TEMPLATED = """\
service: checkout
arms: {label: version, canary: "{version}", baseline: "{previous_version}"}
checks:
  - {name: errors-vs-baseline, kind: compare, ratio: errors / requests}
  - {name: canary-errors, kind: threshold, ratio: errors / requests, above: 5%, window: 20s, min_samples: 20}
"""


def test_arms_resolve_their_placeholders():
    arms = Arms(label="version", canary="{version}", baseline="rel-{previous_version}")
    assert arms.templated and not Arms().templated
    assert arms.resolve("canary", {"version": "v2"}) == "v2"
    assert arms.resolve("baseline", {"previous_version": "v1"}) == "rel-v1"
    assert arms.resolve("baseline", {"previous_version": None}) is None
    assert Arms().resolve("baseline", {}) == "baseline"


def test_arm_selectors_use_the_tags_of_the_rollout_images():
    arms = Arms(label="version", canary="{version}", baseline="{previous_version}")
    rollout = state("r1", "checkout", "swarm:").evolve(image="registry.local:5000/app:v2",
                                                      previous_image="docker.io/library/app:v1@sha256:abc")
    selectors, unresolved = arm_selectors(arms, rollout)
    assert unresolved == {}
    assert {a: (s.label, s.label_value) for a, s in selectors.items()} == {
        "canary": ("version", "v2"), "baseline": ("version", "v1")}
    selectors, unresolved = arm_selectors(arms, rollout.evolve(previous_image=None))
    assert set(selectors) == {"canary"} and set(unresolved) == {"baseline"}
    assert "{previous_version}" in unresolved["baseline"] and "does not know the image it replaces" in (
        unresolved["baseline"])


class Asking(RecordingSource):
    """A recording that also notes which label value each fetch selected."""

    def __init__(self, rec: dict) -> None:
        super().__init__(rec)
        self.asked: set[tuple[str, str, str]] = set()

    def fetch(self, query, service, arm, start, end):
        self.asked.add((arm.arm, arm.label, arm.label_value))
        return super().fetch(query, service, arm, start, end)


def templated_guard(tmp_path: Path) -> tuple[Guard, FakeClock, Asking]:
    (tmp_path / "checkout.yaml").write_text(TEMPLATED)
    clock = FakeClock(START)
    source = Asking(steady_recording(40))
    noop = NoopActuator()
    guard = Guard(SQLiteStore(":memory:"), source, RuleBook([tmp_path]), lambda t: noop, clock,
                  GuardConfig(evaluation_delay=0.5))
    return guard, clock, source


def observe(**kw) -> StartSpec:
    return StartSpec(**({"service": "checkout", "image": V2, "strategy": Strategy.OBSERVE, "steps": (100,),
                         "target": "swarm:checkout", "step_seconds": 10, "analysis_seconds": 30} | kw))


def test_a_rollout_knowing_its_previous_image_selects_both_versions_and_is_promoted(tmp_path):
    guard, clock, source = templated_guard(tmp_path)
    rollout = guard.start(observe(previous_image=V1))
    drive(guard, clock, rollout.id, 30, 10)
    assert guard.store.get(rollout.id).phase is Phase.PROMOTED
    assert {(arm, value) for arm, _, value in source.asked} == {("canary", "v2"), ("baseline", "v1")}


def test_an_unresolvable_placeholder_is_inconclusive_with_its_reason_never_a_pass(tmp_path):
    guard, clock, source = templated_guard(tmp_path)
    rollout = guard.start(observe())  # no previous image
    decisions = drive(guard, clock, rollout.id, 30, 10)
    assert guard.store.get(rollout.id).phase is Phase.PAUSED
    assert all(d.action is not Action.PROMOTE for d in decisions)
    assert {arm for arm, _, _ in source.asked} == {"canary"}  # the baseline is never asked for a made-up value
    verdicts = {v.check: v for v in decisions[-1].verdicts}
    compare = verdicts["errors-vs-baseline"]
    assert compare.result is Result.INCONCLUSIVE and not (compare.warming_up or compare.abstained)
    assert "{previous_version} has no value" in compare.reason
    assert verdicts["canary-errors"].result is Result.PASS  # it reads the canary only, which is known
    pause = next(d for d in decisions if d.action is Action.PAUSE)
    assert "{previous_version}" in pause.reason


def test_an_unknown_placeholder_is_a_rule_error_naming_file_and_field():
    text = textwrap.dedent("""\
        service: checkout
        arms:
          label: version
          canary: "{version}"
          baseline: "{foo}"
        """)
    with pytest.raises(RuleError) as err:
        parse_text(text, "rules/checkout.yaml")
    [problem] = err.value.problems
    assert (problem.file, problem.line, problem.field) == ("rules/checkout.yaml", 5, "arms.baseline")
    assert "unknown placeholder {foo}" in problem.message and "{previous_version}" in problem.message
    assert str(problem).startswith("rules/checkout.yaml:5: arms.baseline: unknown placeholder {foo}")


def test_replay_reads_templated_arms_by_name(tmp_path):
    ruleset = RuleSet.of(parse_text(TEMPLATED, "t.yaml"), "t.yaml")
    assert replay_recording(steady_recording(40), "steady", ruleset).decision == "promote"


# -- previous_image: the start request, the state, the store, the recording ------------------------------------
@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("GUARDIAN_"):
            monkeypatch.delenv(name)


def test_the_api_takes_previous_image_and_the_recording_carries_it(tmp_path, clean_env):
    s = Settings(db_path=str(tmp_path / "g.db"), rules=[str(tmp_path / "none")], recordings_dir=str(tmp_path / "rec"))
    (tmp_path / "none").mkdir()
    components = build(s, source=RecordingSource(steady_recording(10)), clock=FakeClock(START))
    with TestClient(create_app(components, run_scheduler=False)) as client:
        with_prev = client.post("/v1/rollouts", json={"service": "a", "image": V2, "previous_image": V1,
                                                      "strategy": "observe"})
        without = client.post("/v1/rollouts", json={"service": "b", "image": V2})
        assert with_prev.status_code == 201 and without.status_code == 201, (with_prev.text, without.text)
        assert with_prev.json()["previous_image"] == V1 and with_prev.json()["steps"] == [100]
        assert without.json()["previous_image"] is None and without.json()["steps"] == [10, 25, 50, 100]
        assert client.post("/v1/rollouts", json={"service": "c", "image": V2, "previous_image": ""}).status_code == 422
        store = components.store
        assert store.recording(with_prev.json()["id"])["labels"]["previous_image"] == V1
        assert "previous_image" not in store.recording(without.json()["id"])["labels"]


def test_a_rollout_stored_before_previous_image_existed_still_loads(tmp_path):
    store = SQLiteStore(tmp_path / "old.db")
    old = state("r0", "checkout", "noop").to_dict()
    del old["previous_image"]
    store._db.execute("INSERT INTO rollouts (id, service, phase, state, created_at, updated_at) VALUES (?,?,?,?,?,?)",
                      ("r0", "checkout", "progressing", orjson.dumps(old).decode(), START, START))
    loaded = store.get("r0")
    assert loaded.previous_image is None and loaded.service == "checkout"
    recording = store.recording("r0")
    assert recording["format"] == "guardian-recording/v1" and "previous_image" not in recording["labels"]


def test_watch_settings_defaults_and_environment(monkeypatch, clean_env):
    s = load_settings()
    assert (s.watch_swarm, s.watch_label, s.watch_seconds) == (False, "guardian.watch", 2.0)
    monkeypatch.setenv("GUARDIAN_WATCH_SWARM", "true")
    monkeypatch.setenv("GUARDIAN_WATCH_LABEL", "team=shop")
    monkeypatch.setenv("GUARDIAN_WATCH_SECONDS", "0.5")
    s = load_settings()
    assert (s.watch_swarm, s.watch_label, s.watch_seconds) == (True, "team=shop", 0.5)


def test_the_app_runs_the_watcher_and_stops_it_cleanly_when_docker_is_unreachable(tmp_path, monkeypatch, clean_env,
                                                                                  caplog_loguru):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    (tmp_path / "none").mkdir()
    s = Settings(db_path=str(tmp_path / "g.db"), rules=[str(tmp_path / "none")], recordings_dir="",
                 watch_swarm=True, watch_seconds=0.05)
    components = build(s, source=RecordingSource(steady_recording(10)), clock=FakeClock(START))
    with TestClient(create_app(components)) as client:
        deadline = time.monotonic() + 10
        while not any("cannot list" in m for m in caplog_loguru) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # a few more failing polls
        assert client.get("/healthz").status_code == 200  # the failing watcher did not take the app down
    assert any("Swarm watcher started" in m for m in caplog_loguru)
    assert any("cannot list the services labelled guardian.watch" in m for m in caplog_loguru)
    assert any("Swarm watcher stopped" in m for m in caplog_loguru)
