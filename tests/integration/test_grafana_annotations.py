"""Grafana annotations end to end: the real app, store, rules, guard and notifier, rollouts driven
through real guard ticks (a recording as the metric source, a fake clock, the noop actuator), sending
to a STUB of Grafana's annotation API (tests/stubs/grafana_stub.py: a real HTTP server on loopback;
Grafana itself cannot run here)."""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from loguru import logger

from guardian.api.app import Components, build, create_app
from guardian.clock import FakeClock
from guardian.notifiers.grafana import GrafanaNotifier
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from tests.stubs.grafana_stub import GrafanaStub
from tests.unit.recordings import steady_recording

REPO = Path(__file__).resolve().parents[2]
TOKEN = "glsa_stub-service-account-token"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("GUARDIAN_"):
            monkeypatch.delenv(name)


@pytest.fixture
def grafana() -> Iterator[GrafanaStub]:
    with GrafanaStub(TOKEN) as stub:
        yield stub


class App:
    def __init__(self, client: TestClient, c: Components, clock: FakeClock):
        self.client, self.c, self.clock = client, c, clock
        self.grafana: GrafanaNotifier = next(n for n in c.notifier.notifiers if isinstance(n, GrafanaNotifier))
        self.grafana.retry_base, self.grafana.retry_cap = 0.05, 0.2  # quick retries in tests

    def start(self, **body) -> str:
        r = self.client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:v2", "steps": [50, 100],
                                                   "analysis_seconds": 20, **body})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def drive(self, rid: str, ticks: int = 40) -> dict:
        """Tick the rollout through the real guard until it ends."""
        for _ in range(ticks):
            self.clock.advance(10)
            self.c.guard.tick(rid)
            view = self.client.get(f"/v1/rollouts/{rid}").json()
            if view["phase"] in ("promoted", "rolled_back"):
                return view
        raise AssertionError(f"rollout {rid} did not end: {view['phase']}")


@contextlib.contextmanager
def app(tmp_path: Path, grafana: GrafanaStub, *, token: str = TOKEN, canary_errors: int = 0,
        **settings) -> Iterator[App]:
    clock = FakeClock()
    s = Settings(db_path=str(tmp_path / "guardian.db"), rules=[str(REPO / "rules")], recordings_dir="",
                 grafana_url=grafana.url, grafana_token=token, **settings)
    components = build(s, source=RecordingSource(steady_recording(60, canary_errors=canary_errors)), clock=clock)
    with TestClient(create_app(components, run_scheduler=False)) as client:
        yield App(client, components, clock)


def test_a_promoted_rollout_is_a_region_with_a_point_per_decision(tmp_path, grafana):
    with app(tmp_path, grafana, grafana_dashboard_uid="release-guardian", grafana_panel_id=4) as a:
        rid = a.start()
        view = a.drive(rid)
        assert view["phase"] == "promoted"
        assert a.grafana.flush(10)
        decisions = a.client.get(f"/v1/rollouts/{rid}").json()["decisions"]

    (region,) = grafana.find("guardian", "rollout")
    assert {"checkout", "v2", "promoted"} <= set(region["tags"])
    assert region["timeEnd"] > region["time"]  # PATCHed at the end
    assert region["timeEnd"] - region["time"] == pytest.approx((decisions[-1]["at"] - decisions[0]["at"]) * 1000)
    assert f"rollout {rid}" in region["text"] and "promoted" in region["text"]
    assert (region["dashboardUID"], region["panelId"]) == ("release-guardian", 4)
    methods = [(m, p.split("/")[-1].isdigit()) for m, p, _ in grafana.requests]
    assert methods[0] == ("POST", False) and ("PATCH", True) in methods  # the region's POST, then its PATCH
    assert methods.index(("PATCH", True)) > 0

    points = [p for p in grafana.find("guardian") if "rollout" not in p["tags"]]
    assert sorted(p["tags"][-1] for p in points) == sorted(d["action"] for d in decisions)
    (advance,) = grafana.find("guardian", "checkout", "v2", "advance")
    assert advance["time"] == advance["timeEnd"]  # a point
    assert "reason:" in advance["text"]
    assert "error-rate passed: value" in advance["text"] and "vs threshold 0.05" in advance["text"]
    assert "samples" in advance["text"]


def test_a_rollback_point_carries_the_failing_evidence_first(tmp_path, grafana):
    with app(tmp_path, grafana, canary_errors=30) as a:
        rid = a.start()
        assert a.drive(rid)["phase"] == "rolled_back"
        assert a.grafana.flush(10)
    (region,) = grafana.find("guardian", "rollout")
    assert "rolled_back" in region["tags"] and "rolled back" in region["text"]
    (rollback,) = grafana.find("guardian", "rollback")
    lines = rollback["text"].splitlines()
    assert lines[0].startswith("rollback: checkout checkout:v2")
    assert lines[1].startswith("reason: ")
    assert lines[2].startswith("- error-rate FAILED: value") and "vs threshold 0.05" in lines[2]
    assert "samples" in lines[2] and "wilson" in lines[2].lower()


def test_grafana_down_for_a_while_loses_nothing_and_never_holds_the_rollout(tmp_path, grafana):
    with app(tmp_path, grafana) as a:
        took: list[float] = []
        notify = a.grafana.notify

        def timed(event):
            began = time.perf_counter()
            notify(event)
            took.append(time.perf_counter() - began)

        a.grafana.notify = timed
        grafana.down = True
        rid = a.start()
        began = time.perf_counter()
        assert a.drive(rid)["phase"] == "promoted"
        assert time.perf_counter() - began < 5  # ticks did not wait for Grafana
        time.sleep(1.0)  # down for a while: the worker retries
        assert grafana.find() == [] and a.grafana.pending() > 0
        assert any(status == 503 for _, _, status in grafana.requests)
        grafana.down = False
        assert a.grafana.flush(10)
        decisions = a.client.get(f"/v1/rollouts/{rid}").json()["decisions"]
        sent = a.c.metrics.registry.get_sample_value("guardian_annotations_total", {"result": "sent"})

    assert max(took) < 0.05, took  # notify only enqueues
    assert len(took) == len(decisions)
    (region,) = grafana.find("guardian", "rollout")
    assert "promoted" in region["tags"] and region["timeEnd"] > region["time"]
    assert len(grafana.find("guardian")) == len(decisions) + 1
    assert sent == len(decisions) + 2  # the points, the region's POST and its PATCH


def test_a_wrong_token_is_logged_without_the_token_and_the_rollout_goes_on(tmp_path, grafana):
    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(str(m) + repr(m.record["extra"])), level="DEBUG")
    wrong = "glsa_wrong-token-must-not-leak"
    try:
        with app(tmp_path, grafana, token=wrong) as a:
            rid = a.start()
            assert a.drive(rid)["phase"] == "promoted"
            assert a.grafana.flush(10)
            failed = a.c.metrics.registry.get_sample_value("guardian_annotations_total", {"result": "failed"})
    finally:
        logger.remove(sink)
    assert grafana.find() == [] and grafana.requests and {s for _, _, s in grafana.requests} == {401}
    assert failed == len(grafana.requests)
    refused = [m for m in logs if "grafana annotations" in m and "401" in m]
    assert refused
    assert not any(wrong in m for m in logs)


def test_metrics_expose_the_guardians_own_series_after_a_rollout(tmp_path, grafana):
    with app(tmp_path, grafana) as a:
        rid = a.start()
        during = a.client.get("/metrics").text
        assert f'guardian_rollout_canary_weight{{rollout="{rid}",service="checkout"}} 50.0' in during
        a.drive(rid)
        assert a.grafana.flush(10)
        text = a.client.get("/metrics").text
    assert "guardian_rollout_canary_weight{" not in text  # removed when the rollout ended
    assert "# TYPE guardian_rollout_canary_weight gauge" in text
    for line in ('guardian_rollouts{phase="promoted"} 1.0', 'guardian_rollouts{phase="progressing"} 0.0',
                 'guardian_decisions_total{action="start"} 1.0', 'guardian_decisions_total{action="promote"} 1.0',
                 'guardian_verdicts_total{check="error-rate",result="pass"}', "guardian_tick_duration_seconds_count",
                 "guardian_source_errors_total 0.0", "# TYPE guardian_actuator_failures_total counter",
                 'guardian_annotations_total{result="sent"}'):
        assert line in text, line
