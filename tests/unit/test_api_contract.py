"""The HTTP API contract (SPEC.md §2, outside this repository), in process: the real app, store, rules and
guard, with a recording as the metric source, a fake clock and the noop actuator. No server, no sleeps."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from guardian.actuators import ActionRequest, registry
from guardian.api.app import create_app
from guardian.api.components import Components, build
from guardian.clock import FakeClock
from guardian.domain import Action, Outcome
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from tests.unit.recordings import steady_recording

REPO = Path(__file__).resolve().parents[2]
TICKS = 30
TOKEN = "s3cret-token"


def recording(ticks: int = TICKS) -> dict:
    """A healthy rollout of checkout: no errors, fast, plenty of requests on both arms."""
    return steady_recording(ticks)


class Harness:
    def __init__(self, client: TestClient, components: Components, clock: FakeClock):
        self.client, self.c, self.clock = client, components, clock

    def start(self, **body) -> dict:
        r = self.client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:2", **body},
                             headers=self.auth)
        assert r.status_code == 201, r.text
        return r.json()

    @property
    def auth(self) -> dict[str, str]:
        token = self.c.settings.token
        return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}

    def rollouts(self) -> list[dict]:
        r = self.client.get("/v1/rollouts")
        assert r.status_code == 200
        return r.json()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("GUARDIAN_"):
            monkeypatch.delenv(name)


def make_harness(tmp_path: Path, **settings) -> Iterator[Harness]:
    clock = FakeClock()
    s = Settings(db_path=str(tmp_path / "guardian.db"), rules=[str(REPO / "rules")],
                 recordings_dir=str(tmp_path / "recordings"), **settings)
    components = build(s, source=RecordingSource(recording()), clock=clock)
    with TestClient(create_app(components, run_scheduler=False)) as client:
        yield Harness(client, components, clock)


@pytest.fixture
def api(tmp_path) -> Iterator[Harness]:
    yield from make_harness(tmp_path)


@pytest.fixture
def secured(tmp_path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, token=TOKEN)


@pytest.fixture(scope="module")
def empty_api(tmp_path_factory) -> Iterator[Harness]:
    """One app shared by the tests of refused requests: each checks that it stays empty."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.upper().startswith("GUARDIAN_"):
                mp.delenv(name)
        yield from make_harness(tmp_path_factory.mktemp("empty"))


def assert_error(r, status: int, code: str) -> object:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == code
    return body["detail"]


# -- starting -------------------------------------------------------------------------------------------
def test_start_returns_201_with_id_and_state(api):
    r = api.client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:2"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"]
    assert body["service"] == "checkout" and body["image"] == "checkout:2"
    assert body["phase"] == "progressing"
    assert body["strategy"] == "canary"
    assert body["steps"] == [10, 25, 50, 100]
    assert body["weight"] == 10
    assert body["step_index"] == 0
    assert body["target"] == "noop"
    assert body["rules"].endswith("checkout.yaml")
    assert [d["action"] for d in body["decisions"]] == ["start"]

    [applied] = api.c.actuators("noop").applied
    assert (applied.action, applied.weight, applied.rollout_id, applied.image) == (
        Action.START, 10, body["id"], "checkout:2")

    assert api.client.get(f"/v1/rollouts/{body['id']}").json()["phase"] == "progressing"
    assert [r["id"] for r in api.rollouts()] == [body["id"]]


def test_start_with_custom_steps_begins_at_the_first_step(api):
    body = api.start(steps=[5, 50, 100], step_seconds=5, analysis_seconds=30)
    assert body["weight"] == 5
    assert (body["step_seconds"], body["analysis_seconds"]) == (5.0, 30.0)
    assert api.c.actuators("noop").applied[-1].weight == 5


def test_non_canary_strategy_goes_straight_to_100(api):
    body = api.start(strategy="blue-green")
    assert (body["strategy"], body["steps"], body["weight"]) == ("blue-green", [100], 100)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"service": "check out", "image": "x"}, "service"),
        ({"service": "", "image": "x"}, "service"),
        ({"service": "-checkout", "image": "x"}, "service"),
        ({"image": "x"}, "service"),
        ({"service": "checkout"}, "image"),
        ({"service": "checkout", "image": ""}, "image"),
        ({"service": "checkout", "image": "x", "steps": [50, 10, 100]}, "steps"),
        ({"service": "checkout", "image": "x", "steps": [10, 10, 100]}, "steps"),
        ({"service": "checkout", "image": "x", "steps": [0, 50, 100]}, "steps"),
        ({"service": "checkout", "image": "x", "steps": [10, 150]}, "steps"),
        ({"service": "checkout", "image": "x", "steps": []}, "steps"),
        ({"service": "checkout", "image": "x", "strategy": "yolo"}, "strategy"),
        ({"service": "checkout", "image": "x", "replicas": 3}, "replicas"),
        ({"service": "checkout", "image": "x", "step_seconds": 0}, "step_seconds"),
        ({"service": "checkout", "image": "x", "target": "foo://x"}, "target"),
        ({"service": "checkout", "image": "x", "target": "webhook+http://"}, "target"),
        ({"service": "checkout", "image": "x", "target": "webhook+http:///hook"}, "target"),
    ],
    ids=["service-with-space", "service-empty", "service-leading-dash", "service-missing", "image-missing",
         "image-empty", "steps-falling", "steps-repeated", "steps-zero", "steps-150", "steps-empty",
         "unknown-strategy", "extra-field", "step-seconds-zero", "unknown-actuator", "webhook-without-host",
         "webhook-without-host-with-path"],
)
def test_invalid_start_is_422_naming_the_field_and_stores_nothing(empty_api, body, field):
    api = empty_api
    r = api.client.post("/v1/rollouts", json=body)
    detail = assert_error(r, 422, "invalid_request")
    assert isinstance(detail, list) and detail
    assert [d["field"] for d in detail] == [field]
    assert all(d["message"] for d in detail)
    assert api.rollouts() == []
    assert api.c.actuators("noop").applied == []


def test_unknown_actuator_message_lists_the_known_ones(api):
    r = api.client.post("/v1/rollouts", json={"service": "checkout", "image": "x", "target": "foo://x"})
    [entry] = assert_error(r, 422, "invalid_request")
    assert entry["field"] == "target"
    assert "'foo'" in entry["message"]
    assert "known: docker, kubernetes, nginx, noop, swarm, webhook" in entry["message"]


def test_webhook_target_without_host_says_so(api):
    r = api.client.post("/v1/rollouts", json={"service": "checkout", "image": "x", "target": "webhook+http://"})
    [entry] = assert_error(r, 422, "invalid_request")
    assert entry["field"] == "target"
    assert "host" in entry["message"]


def test_malformed_json_is_422(api):
    r = api.client.post("/v1/rollouts", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 422, "invalid_request")
    assert api.rollouts() == []


# -- reading ----------------------------------------------------------------------------------------------
def test_unknown_id_is_404(api):
    for path in ("/v1/rollouts/nope", "/v1/rollouts/nope/ticks", "/v1/rollouts/nope/recording"):
        assert_error(api.client.get(path), 404, "not_found")
    for action in ("pause", "resume", "promote", "rollback"):
        assert_error(api.client.post(f"/v1/rollouts/nope/{action}"), 404, "not_found")


def test_unknown_path_is_a_json_404(api):
    assert_error(api.client.get("/v2/nothing"), 404, "not_found")


def test_list_active_only(api):
    first = api.start()
    api.client.post(f"/v1/rollouts/{first['id']}/rollback")
    second = api.start(image="checkout:3")
    assert [r["id"] for r in api.rollouts()] == [first["id"], second["id"]]
    active = api.client.get("/v1/rollouts", params={"active": "true"}).json()
    assert [r["id"] for r in active] == [second["id"]]


# -- one rollout per service ---------------------------------------------------------------------------
def test_second_rollout_of_a_service_in_flight_is_409(api):
    first = api.start()
    r = api.client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:3"})
    detail = assert_error(r, 409, "conflict")
    assert first["id"] in detail
    assert [x["id"] for x in api.rollouts()] == [first["id"]]
    assert len(api.c.actuators("noop").applied) == 1  # the refused start never reached the actuator


def test_another_service_may_roll_out_at_the_same_time(api):
    api.start()
    other = api.start(service="search")
    assert other["phase"] == "progressing"


def test_paused_rollout_still_blocks_a_second_one(api):
    first = api.start()
    api.client.post(f"/v1/rollouts/{first['id']}/pause")
    assert_error(api.client.post("/v1/rollouts", json={"service": "checkout", "image": "c:3"}), 409, "conflict")


def test_service_may_roll_out_again_after_a_rollback(api):
    first = api.start()
    r = api.client.post(f"/v1/rollouts/{first['id']}/rollback")
    assert r.status_code == 200 and r.json()["phase"] == "rolled_back"
    second = api.start(image="checkout:3")
    assert second["id"] != first["id"]
    assert second["phase"] == "progressing"


# -- manual overrides --------------------------------------------------------------------------------------
def test_pause_resume_promote(api):
    rid = api.start()["id"]

    r = api.client.post(f"/v1/rollouts/{rid}/pause")
    assert r.status_code == 200
    assert (r.json()["phase"], r.json()["paused_by"]) == ("paused", "user")

    r = api.client.post(f"/v1/rollouts/{rid}/pause")  # pausing twice is harmless
    assert r.status_code == 200 and r.json()["phase"] == "paused"

    r = api.client.post(f"/v1/rollouts/{rid}/resume")
    assert r.status_code == 200
    assert (r.json()["phase"], r.json()["paused_by"]) == ("progressing", None)

    r = api.client.post(f"/v1/rollouts/{rid}/promote")
    assert r.status_code == 200
    assert (r.json()["phase"], r.json()["weight"]) == ("promoted", 100)

    actions = [(a.action, a.weight) for a in api.c.actuators("noop").applied]
    assert actions == [(Action.START, 10), (Action.PAUSE, 10), (Action.RESUME, 10), (Action.PROMOTE, 100)]
    decisions = api.client.get(f"/v1/rollouts/{rid}").json()["decisions"]
    assert [(d["action"], d["source"]) for d in decisions] == [
        ("start", "user"), ("pause", "user"), ("resume", "user"), ("promote", "user")]


def test_rollback(api):
    rid = api.start()["id"]
    r = api.client.post(f"/v1/rollouts/{rid}/rollback")
    assert r.status_code == 200
    assert (r.json()["phase"], r.json()["weight"]) == ("rolled_back", 0)
    assert api.c.actuators("noop").applied[-1].action is Action.ROLLBACK


def test_resume_when_not_paused_is_409(api):
    rid = api.start()["id"]
    assert_error(api.client.post(f"/v1/rollouts/{rid}/resume"), 409, "conflict")
    assert api.client.get(f"/v1/rollouts/{rid}").json()["phase"] == "progressing"
    assert len(api.c.actuators("noop").applied) == 1


@pytest.mark.parametrize("ending", ["promote", "rollback"])
def test_nothing_after_the_end(api, ending):
    rid = api.start()["id"]
    assert api.client.post(f"/v1/rollouts/{rid}/{ending}").status_code == 200
    before = api.client.get(f"/v1/rollouts/{rid}").json()
    applied = len(api.c.actuators("noop").applied)

    for action in ("pause", "resume", "promote", "rollback"):
        detail = assert_error(api.client.post(f"/v1/rollouts/{rid}/{action}"), 409, "conflict")
        assert "already" in detail, action

    after = api.client.get(f"/v1/rollouts/{rid}").json()
    assert (after["phase"], after["weight"], after["decisions"]) == (
        before["phase"], before["weight"], before["decisions"])
    assert len(api.c.actuators("noop").applied) == applied


# -- authentication ------------------------------------------------------------------------------------
MUTATIONS = ["pause", "resume", "promote", "rollback"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}],
                         ids=["none", "wrong", "no-scheme", "basic", "longer"])
def test_start_without_the_token_is_401_and_stores_nothing(secured, headers):
    r = secured.client.post("/v1/rollouts", json={"service": "checkout", "image": "x"}, headers=headers)
    assert_error(r, 401, "unauthorized")
    assert secured.rollouts() == []
    assert secured.c.actuators("noop").applied == []


@pytest.mark.parametrize("paused", [False, True], ids=["progressing", "paused"])
def test_overrides_without_the_token_are_401_and_change_nothing(secured, paused):
    rid = secured.start()["id"]
    if paused:  # so that resume would be allowed with the token
        secured.client.post(f"/v1/rollouts/{rid}/pause", headers=secured.auth)
    before = secured.client.get(f"/v1/rollouts/{rid}").json()
    applied = len(secured.c.actuators("noop").applied)

    for action in MUTATIONS:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = secured.client.post(f"/v1/rollouts/{rid}/{action}", headers=headers)
            assert_error(r, 401, "unauthorized")

    after = secured.client.get(f"/v1/rollouts/{rid}").json()
    assert (after["phase"], after["weight"], after["decisions"]) == (
        before["phase"], before["weight"], before["decisions"])
    assert len(secured.c.actuators("noop").applied) == applied


def test_rules_reload_needs_the_token(secured):
    assert_error(secured.client.post("/v1/rules/reload"), 401, "unauthorized")
    assert secured.client.post("/v1/rules/reload", headers=secured.auth).json() == {"services": ["checkout"]}


def test_reads_stay_open_with_a_token(secured):
    rid = secured.start()["id"]
    for path in ("/v1/rollouts", f"/v1/rollouts/{rid}", f"/v1/rollouts/{rid}/ticks",
                 f"/v1/rollouts/{rid}/recording", "/v1/rules", "/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert secured.client.get(path).status_code == 200, path


def test_the_right_token_works(secured):
    rid = secured.start()["id"]
    r = secured.client.post(f"/v1/rollouts/{rid}/pause", headers=secured.auth)
    assert r.status_code == 200 and r.json()["phase"] == "paused"
    r = secured.client.post(f"/v1/rollouts/{rid}/rollback", headers=secured.auth)
    assert r.status_code == 200 and r.json()["phase"] == "rolled_back"


# -- operations endpoints -------------------------------------------------------------------------------
def test_healthz_and_readyz(api):
    assert api.client.get("/healthz").json() == {"status": "ok"}
    r = api.client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready" and r.json()["store"] is True


def test_metrics(api):
    api.start()
    r = api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "guardian_ticks_total" in r.text
    assert 'guardian_rollouts{phase="progressing"} 1.0' in r.text


def test_openapi(api):
    r = api.client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/v1/rollouts" in paths and "/v1/rollouts/{rollout_id}/pause" in paths
    assert api.client.get("/docs").status_code == 200


# -- a failing actuator -----------------------------------------------------------------------------------
class FailingActuator:
    name = "failing"
    supports = frozenset(Action)

    def __init__(self, fail: frozenset[Action]):
        self.fail = fail
        self.applied: list[ActionRequest] = []

    def apply(self, request: ActionRequest) -> Outcome:
        self.applied.append(request)
        if request.action in self.fail:
            return Outcome(ok=False, action=request.action.value, detail="backend said no")
        return Outcome(ok=True, action=request.action.value, detail="done")

    def verify(self, request: ActionRequest) -> Outcome:
        return Outcome(ok=True, action=request.action.value, detail="fine")


@pytest.fixture
def failing():
    """Registers `failing` (fails everything) and `flaky` (fails only the start), removed afterwards."""
    made: dict[str, FailingActuator] = {}

    def factory(fail: frozenset[Action]):
        def make(rest: str, **deps) -> FailingActuator:
            made[rest] = FailingActuator(fail)
            return made[rest]
        return make

    registry.register("failing", factory(frozenset(Action)), replace=True)
    registry.register("flaky", factory(frozenset({Action.START})), replace=True)
    yield made
    for name in ("failing", "flaky"):
        registry._REGISTRY.pop(name, None)


@pytest.mark.parametrize("target", ["failing:a", "flaky:b"])
def test_failing_start_is_502_and_recorded_as_rolled_back(api, failing, target):
    r = api.client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:2", "target": target})
    detail = assert_error(r, 502, "actuator_failed")
    assert "backend said no" in detail

    [rollout] = api.rollouts()
    assert rollout["phase"] == "rolled_back"
    assert rollout["weight"] == 0
    assert api.client.get("/v1/rollouts", params={"active": "true"}).json() == []
    actuator = failing[target.split(":", 1)[1]]
    assert [a.action for a in actuator.applied] == [Action.START, Action.ROLLBACK]

    # nothing is in flight, so the service can be rolled out again
    assert api.start(image="checkout:3")["phase"] == "progressing"


# -- ticks and recordings -----------------------------------------------------------------------------
def test_recording_after_a_tick(api):
    rid = api.start()["id"]
    settings = api.c.settings
    assert api.c.guard.tick(rid) is None  # nothing is due yet

    api.clock.advance(settings.tick_seconds + settings.evaluation_delay + 0.1)
    decision = api.c.guard.tick(rid)
    assert decision is not None and decision.tick == 0
    assert decision.action is Action.CONTINUE  # healthy, but the step has not been analysed long enough

    r = api.client.get(f"/v1/rollouts/{rid}/recording")
    assert r.status_code == 200
    rec = r.json()
    assert rec["format"] == "guardian-recording/v1"
    assert rec["service"] == "checkout"
    assert rec["step_seconds"] == 10
    assert rec["start"] == "2026-01-05T12:00:00Z"
    assert rec["series"]["requests"] == {"canary": [100], "baseline": [900]}
    assert rec["series"]["errors"] == {"canary": [0], "baseline": [1]}
    assert rec["series"]["slow"] == {"canary": [0], "baseline": [2]}
    assert rec["series"]["cpu_seconds"] == {"canary": [None], "baseline": [None]}  # not in the source: missing

    view = api.client.get(f"/v1/rollouts/{rid}").json()
    assert view["last_tick"] == 0
    assert {v["check"] for v in view["verdicts"]} == {"error-rate", "p99-latency"}
    ticks = api.client.get(f"/v1/rollouts/{rid}/ticks").json()
    assert [t["tick"] for t in ticks] == [0]

    written = Path(settings.recordings_dir) / f"{rid}.json"
    assert written.is_file()


def test_healthy_rollout_advances_through_the_steps(api):
    rid = api.start(steps=[50, 100], analysis_seconds=20)["id"]
    weights = []
    for _ in range(8):
        api.clock.advance(10)
        api.c.guard.tick(rid)
        weights.append(api.client.get(f"/v1/rollouts/{rid}").json()["weight"])
    assert weights[0] == 50
    assert 100 in weights
    final = api.client.get(f"/v1/rollouts/{rid}").json()
    assert final["phase"] == "promoted"
    assert [a.action for a in api.c.actuators("noop").applied] == [Action.START, Action.ADVANCE, Action.PROMOTE]
