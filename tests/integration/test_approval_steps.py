"""Approval steps end to end: the real app, store, rules and guard, rollouts driven through real guard ticks (a
recording as the metric source, a fake clock, the noop actuator). A step followed by `approve` waits for a human
"go" (POST /v1/rollouts/{id}/approve); its checks keep running while it waits; an approval timeout pauses it."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from guardian.api.app import create_app
from guardian.api.components import Components, build
from guardian.clock import FakeClock
from guardian.engine.replay import replay_recording
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from tests.fixtures.env import clean_guardian_env  # noqa: F401 - the fixture
from tests.unit.recordings import late_regression_recording, steady_recording

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("clean_guardian_env")


class App:
    def __init__(self, client: TestClient, c: Components, clock: FakeClock) -> None:
        self.client, self.c, self.clock = client, c, clock

    def start(self, **body: Any) -> str:
        r = self.client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:v2",
                                                   "steps": [50, "approve", 100], "analysis_seconds": 20, **body})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def ticks(self, rid: str, n: int) -> dict:
        for _ in range(n):
            self.clock.advance(10)
            self.c.guard.tick(rid)
        return self.view(rid)

    def view(self, rid: str) -> dict:
        return self.client.get(f"/v1/rollouts/{rid}").json()

    def actions(self, rid: str) -> list[tuple[str, str]]:
        return [(d["action"], d["source"]) for d in self.view(rid)["decisions"]]


@contextlib.contextmanager
def app(tmp_path: Path, recording: dict, rules: Path = REPO / "rules") -> Iterator[App]:
    clock = FakeClock()
    s = Settings(db_path=str(tmp_path / "guardian.db"), rules=[str(rules)], recordings_dir="")
    c = build(s, source=RecordingSource(recording), clock=clock)
    with TestClient(create_app(c, run_scheduler=False)) as client:
        yield App(client, c, clock)


def test_a_step_waits_for_approval_with_its_checks_running_then_goes_on(tmp_path):
    with app(tmp_path, steady_recording(80)) as a:
        rid = a.start()
        assert a.client.post(f"/v1/rollouts/{rid}/approve").status_code == 409  # not waiting yet
        view = a.ticks(rid, 6)
        assert (view["phase"], view["weight"], view["approvals"], view["approved"]) == ("progressing", 50, [0], [])
        assert view["awaiting_since"] is not None
        approval = [d for d in view["decisions"] if d["action"] == "approval"]
        assert len(approval) == 1 and approval[0]["reason"].startswith("waiting for approval at 50% before 100%")
        view = a.ticks(rid, 10)  # it keeps waiting, judged every tick
        assert (view["phase"], view["weight"]) == ("progressing", 50)
        assert view["last_tick"] >= 14 and [d["action"] for d in view["decisions"]].count("approval") == 1
        r = a.client.post(f"/v1/rollouts/{rid}/approve")
        assert r.status_code == 200 and r.json()["approved"] == [0]
        assert a.client.post(f"/v1/rollouts/{rid}/approve").status_code == 409  # once is enough
        view = a.ticks(rid, 1)
        assert view["weight"] == 100
        view = a.ticks(rid, 4)
        assert view["phase"] == "promoted"
        assert [x for x in a.actions(rid) if x[0] != "continue"] == [
            ("start", "user"), ("approval", "guardian"), ("approve", "user"), ("advance", "guardian"),
            ("promote", "guardian")]
        recording = a.client.get(f"/v1/rollouts/{rid}/recording").json()
    (given,) = recording["approvals"]  # who gave the go, after which tick
    assert given["by"] == "user" and given["tick"] == 14
    replayed = replay_recording(recording, "approved.json")
    assert replayed.decision == "promote"
    approve = [d for d in replayed.decisions if d["action"] == "approve"]
    assert [(d["tick"], d["source"]) for d in approve] == [(14, "user")]  # shown where it was given
    ticks = [d.get("tick") for d in replayed.decisions if d.get("tick") is not None]
    assert ticks == sorted(ticks)


def test_a_failing_check_rolls_back_a_rollout_that_waits_for_approval(tmp_path):
    with app(tmp_path, late_regression_recording(80, bad_from=12)) as a:
        rid = a.start()
        assert a.ticks(rid, 6)["awaiting_since"] is not None
        view = a.ticks(rid, 20)
        assert view["phase"] == "rolled_back"
        assert "approve" not in [d["action"] for d in view["decisions"]]
        assert a.client.post(f"/v1/rollouts/{rid}/approve").status_code == 409


def test_an_approval_timeout_pauses_until_approved(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    text = (REPO / "rules" / "checkout.yaml").read_text()
    (rules / "checkout.yaml").write_text(text + "\napproval_timeout: 30s\napprove_before: promote\n")
    with app(tmp_path, steady_recording(80), rules) as a:
        rid = a.start(steps=[50, 100])  # no `approve` in the steps: the rule file holds the promotion
        view = a.ticks(rid, 1)
        assert view["approvals"] == [1] and view["weight"] == 50  # the last step's end waits: not this one
        for _ in range(8):
            view = a.ticks(rid, 1)
            if view["awaiting_since"] is not None:
                break
        assert view["weight"] == 100 and view["phase"] == "progressing"
        view = a.ticks(rid, 5)
        assert view["phase"] == "paused" and view["paused_by"] == "guardian"
        assert view["reason"].startswith("approval timed out after")
        view = a.ticks(rid, 5)  # its checks pass, but it stays paused: only an approval sends it on
        assert view["phase"] == "paused"
        assert a.client.post(f"/v1/rollouts/{rid}/approve").status_code == 200
        assert a.view(rid)["phase"] == "progressing"
        assert a.ticks(rid, 1)["phase"] == "promoted"


@pytest.mark.parametrize(("steps", "says"), [
    (["approve", 10, 100], "`approve` must follow a traffic step"),
    ([10, "approve", "approve", 100], "`approve` twice in a row"),
    ([10, "aprove", 100], "expected a percentage or `approve`"),
    ([50, "approve", 25], "strictly rising"),
])
def test_bad_steps_are_refused_with_what_is_wrong(tmp_path, steps, says):
    with app(tmp_path, steady_recording(10)) as a:
        r = a.client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:v2", "steps": steps})
        assert r.status_code == 422 and says in r.text, r.text
        assert a.client.get("/v1/rollouts").json() == []  # nothing started
