"""Grafana annotations end to end: the real app, store, rules, guard and notifier, rollouts driven
through real guard ticks (a recording as the metric source, a fake clock, the noop actuator), sending
to a STUB of Grafana's HTTP API (tests/stubs/grafana_stub.py: a real HTTP server on loopback that answers
as Grafana's source does where the guardian depends on it; Grafana itself cannot run here). The stub's
own Grafana behaviours (403, tag limit, organisation-wide fallback, 404) are tested here too."""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from loguru import logger

from guardian.api.app import create_app
from guardian.api.components import Components, build
from guardian.clock import FakeClock
from guardian.notifiers.grafana import GrafanaNotifier
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from tests.stubs.grafana_stub import ALL_PERMISSIONS, TAG_COLUMN, TAG_LIMIT_BODY, GrafanaStub, tags_length
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


def notifier_of(c: Components) -> GrafanaNotifier:
    return next(n for n in c.notifier.notifiers if isinstance(n, GrafanaNotifier))


def annotation_requests(grafana: GrafanaStub) -> list[tuple[str, str, int]]:
    """The annotation POSTs and PATCHes (not the start-up dashboard check)."""
    return [r for r in grafana.requests if r[1].startswith("/api/annotations")]


class App:
    def __init__(self, client: TestClient, c: Components, clock: FakeClock):
        self.client, self.c, self.clock = client, c, clock
        self.grafana = notifier_of(c)

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
    notifier_of(components).retry_base, notifier_of(components).retry_cap = 0.05, 0.2  # quick retries in tests
    with TestClient(create_app(components, run_scheduler=False)) as client:
        yield App(client, components, clock)


@contextlib.contextmanager
def logs() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG")
    try:
        yield lines
    finally:
        logger.remove(sink)


def dashboard_state(a: App, uid: str, state: str) -> float | None:
    return a.c.metrics.registry.get_sample_value("guardian_grafana_dashboard", {"uid": uid, "state": state})


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
    assert region["dashboardId"] == grafana.dashboard_id("release-guardian")  # on the dashboard, not org-wide
    methods = [(m, p.split("/")[-1].isdigit()) for m, p, _ in annotation_requests(grafana)]
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
    assert failed == len(annotation_requests(grafana))
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


# -- the start-up dashboard check ----------------------------------------------------------------------------
def test_an_unknown_dashboard_uid_is_named_loudly_at_start_while_grafana_would_file_it_org_wide(tmp_path, grafana):
    with logs() as lines, app(tmp_path, grafana, grafana_dashboard_uid="release-guardain") as a:  # a typo
        assert a.grafana.wait_dashboard_check(5)
        assert a.grafana.dashboard_state == "missing"
        assert dashboard_state(a, "release-guardain", "missing") == 1.0
        assert dashboard_state(a, "release-guardain", "found") == 0.0
        rid = a.start()
        a.drive(rid)
        assert a.grafana.flush(10)
    (warning,) = [m for m in lines if "release-guardain" in m and "WARNING" in m]
    assert "organisation-wide" in warning and "GUARDIAN_GRAFANA_DASHBOARD_UID" in warning
    assert ("GET", "/api/dashboards/uid/release-guardain", 404) in grafana.requests
    # what Grafana does with it (PostAnnotation): 200, stored with dashboardId 0 -- organisation-wide
    (region,) = grafana.find("guardian", "rollout")
    assert (region["dashboardId"], region["dashboardUID"]) == (0, None)
    assert {s for _, _, s in annotation_requests(grafana)} == {200}


def test_a_configured_dashboard_that_exists_is_confirmed_once(tmp_path, grafana):
    with logs() as lines, app(tmp_path, grafana, grafana_dashboard_uid="release-guardian") as a:
        assert a.grafana.wait_dashboard_check(5)
        assert a.grafana.dashboard_state == "found"
        assert dashboard_state(a, "release-guardian", "found") == 1.0
    assert [r for r in grafana.requests if "/dashboards/" in r[1]] == [
        ("GET", "/api/dashboards/uid/release-guardian", 200)]
    assert any("dashboard release-guardian" in m and "Release Guardian" in m for m in lines)


def test_grafana_unreachable_at_start_neither_blocks_start_nor_hides_the_check(tmp_path, grafana):
    grafana.down = True
    began = time.perf_counter()
    with logs() as lines, app(tmp_path, grafana, grafana_dashboard_uid="release-guardain") as a:
        assert time.perf_counter() - began < 3  # the app started without waiting for Grafana
        assert a.client.get("/healthz").status_code == 200
        time.sleep(0.3)
        assert a.grafana.dashboard_state == "unreachable"
        assert dashboard_state(a, "release-guardain", "unreachable") == 1.0
        grafana.down = False  # Grafana comes back: the check, retried, now answers
        assert a.grafana.wait_dashboard_check(10)
        assert a.grafana.dashboard_state == "missing"
    assert any("could not check" in m and "release-guardain" in m for m in lines)
    assert any("organisation-wide" in m for m in lines)


def test_no_dashboard_uid_means_no_check(tmp_path, grafana):
    with app(tmp_path, grafana) as a:
        assert a.grafana.dashboard_state == "unconfigured"
        rid = a.start()
        a.drive(rid)
        assert a.grafana.flush(10)
    assert not [r for r in grafana.requests if "/dashboards/" in r[1]]


# -- 403: a token without the permission ---------------------------------------------------------------------
def test_a_token_without_annotations_write_gets_grafanas_403_on_patch_logged_and_not_retried(tmp_path):
    grafana = GrafanaStub(TOKEN, permissions=ALL_PERMISSIONS - {"annotations:write"})
    with grafana, logs() as lines, app(tmp_path, grafana) as a:
        rid = a.start()
        assert a.drive(rid)["phase"] == "promoted"  # the rollout does not wait for Grafana
        assert a.grafana.flush(10)
        failed = a.c.metrics.registry.get_sample_value("guardian_annotations_total", {"result": "failed"})
    patches = [r for r in grafana.requests if r[0] == "PATCH"]
    assert patches == [("PATCH", "/api/annotations/1", 403)]  # refused once, not retried
    assert failed == 1.0
    (region,) = grafana.find("guardian", "rollout")
    assert "promoted" not in region["tags"]  # the region's end was refused, its start stays
    refused = [m for m in lines if "refused" in m and "403" in m]
    assert refused and "Permissions needed: annotations:write" in refused[0]


# -- tags within Grafana's limits ----------------------------------------------------------------------------
def test_long_service_names_and_versions_still_annotate_within_grafanas_tag_limits(tmp_path, grafana):
    service = "s" * 253  # the longest service name the guardian accepts
    image = "registry.local/app:" + "v" * 120  # an OCI tag may be 128 characters
    with app(tmp_path, grafana) as a:
        rid = a.start(service=service, image=image)
        a.drive(rid)
        assert a.grafana.flush(10)
        decisions = a.client.get(f"/v1/rollouts/{rid}").json()["decisions"]
    assert {s for _, _, s in annotation_requests(grafana)} == {200}  # nothing refused (400) or failed (500)
    stored = grafana.find("guardian")
    assert len(stored) == len(decisions) + 1
    for annotation in stored:
        assert tags_length(annotation["tags"]) <= grafana.tags_length
        assert all(len(part) <= TAG_COLUMN for t in annotation["tags"] for part in t.split(":", 1))
        assert annotation["tags"][0] == "guardian"
    (region,) = grafana.find("guardian", "rollout")
    assert region["tags"][-1] == "promoted" and service in region["text"]


# -- the stub answers as Grafana does --------------------------------------------------------------------------
def _post(grafana: GrafanaStub, path: str, body: object, token: str = TOKEN, method: str = "POST") -> httpx.Response:
    return httpx.request(method, grafana.url + path, json=body, headers={"Authorization": f"Bearer {token}"})


def test_stub_posts_an_unknown_dashboard_uid_org_wide_with_200_as_grafana_does(grafana):
    r = _post(grafana, "/api/annotations", {"dashboardUID": "nope", "panelId": 2, "time": 1000, "text": "t"})
    assert r.status_code == 200 and r.json() == {"message": "Annotation added", "id": 1}
    assert grafana.annotations[1]["dashboardId"] == 0 and grafana.annotations[1]["dashboardUID"] is None
    r = _post(grafana, "/api/annotations", {"dashboardUID": "release-guardian", "time": 1000, "text": "t"})
    assert grafana.annotations[r.json()["id"]]["dashboardId"] == grafana.dashboard_id("release-guardian")


def test_stub_refuses_tags_beyond_tags_length_with_grafanas_body(grafana):
    at_limit = ["a" * 96, "b" * 96, "c" * 96, "d" * 96, "e" * 100]
    assert tags_length(at_limit) == 500
    assert _post(grafana, "/api/annotations", {"tags": at_limit, "text": "t"}).status_code == 200
    r = _post(grafana, "/api/annotations", {"tags": [*at_limit[:-1], "e" * 101], "text": "t"})
    assert (r.status_code, r.json()) == (400, TAG_LIMIT_BODY)
    r = _post(grafana, "/api/annotations/1", {"tags": [*at_limit, "f"]}, method="PATCH")
    assert (r.status_code, r.json()) == (400, TAG_LIMIT_BODY)
    many = [f"t{i}" for i in range(200)]  # no count limit of its own: the length limit counts them
    assert _post(grafana, "/api/annotations", {"tags": many, "text": "t"}).status_code == 400


def test_stub_parses_tags_as_grafana_and_fails_a_tag_key_over_100_like_mysql_and_postgres(grafana):
    r = _post(grafana, "/api/annotations", {"tags": [" a ", "a", "k:v:w", "", "x" * 100], "text": "t"})
    assert grafana.annotations[r.json()["id"]]["tags"] == ["a", "k:v", "x" * 100]
    r = _post(grafana, "/api/annotations", {"tags": ["x" * 101], "text": "t"})
    assert (r.status_code, r.json()) == (500, {"message": "Failed to save annotation"})


def test_stub_answers_403_with_grafanas_access_denied_body(tmp_path):
    with GrafanaStub(TOKEN, permissions={"annotations:write"}) as grafana:
        r = _post(grafana, "/api/annotations", {"text": "t"})
        d = _post(grafana, "/api/dashboards/uid/release-guardian", None, method="GET")
    assert r.status_code == 403
    body = r.json()
    assert body["title"] == "Access denied" and body["accessErrorId"].startswith("ACE")
    assert body["message"] == ("You'll need additional permissions to perform this action. "
                               "Permissions needed: annotations:create")
    assert d.status_code == 403 and d.json()["message"].endswith("Permissions needed: dashboards:read")


def test_stub_answers_bad_bodies_and_unknown_ids_as_grafana_does(grafana):
    assert _post(grafana, "/api/annotations", {"text": "t", "time": "soon"}).json() == {"message": "bad request data"}
    r = _post(grafana, "/api/annotations", {"text": ""})
    assert (r.status_code, r.json()) == (400, {"message": "Failed to save annotation"})
    r = _post(grafana, "/api/annotations/99", {"text": "t"}, method="PATCH")
    assert (r.status_code, r.json()) == (404, {"message": "Annotation not found"})
    r = _post(grafana, "/api/dashboards/uid/nope", None, method="GET")
    assert (r.status_code, r.json()) == (404, {"message": "Dashboard not found"})
    assert _post(grafana, "/api/annotations", {"text": "t"}, token="wrong").status_code == 401
