"""The Grafana notifier in process: the annotation texts and tags, and the queue (httpx MockTransport
in place of Grafana; the HTTP path is tested against the stub in tests/integration)."""
from __future__ import annotations

import threading
import time

import httpx

from guardian.metrics import GuardianMetrics
from guardian.notifiers.grafana import GrafanaNotifier, point_text, region_text, tags_for

PASS = {"check": "p99-latency", "result": "pass", "value": 0.12, "threshold": 1.0, "sample_size": 300,
        "statistic": "p99 0.12s"}
FAIL = {"check": "error-rate", "result": "fail", "value": 0.3, "threshold": 0.05, "sample_size": 300,
        "statistic": "wilson_lower(0.95)=0.2584"}


def event(action: str = "rollback", phase: str = "rolled_back", verdicts=(PASS, FAIL), **more) -> dict:
    return {"rollout_id": "r1", "service": "checkout", "image": "registry:5000/checkout:v2", "phase": phase,
            "started_at": 1000.0, "weight": 0, "action": action, "reason": "error-rate above 5% for 2m",
            "source": "guardian", "tick": 12, "at": 1140.0, "verdicts": list(verdicts),
            "outcome": {"ok": True, "action": action, "detail": "done"}, **more}


def test_a_rollback_point_names_the_failing_check_first_with_its_evidence():
    lines = point_text(event()).splitlines()
    assert lines[0].startswith("rollback: checkout registry:5000/checkout:v2 at 0% (rolled back by the guardian")
    assert lines[1] == "reason: error-rate above 5% for 2m"
    assert lines[2] == "- error-rate FAILED: value 0.3 vs threshold 0.05, 300 samples, wilson_lower(0.95)=0.2584"
    assert len(lines) == 3  # a passing check did not drive a rollback


def test_an_advance_lists_every_passing_check():
    text = point_text(event("advance", "progressing", verdicts=(PASS,), weight=25))
    assert "at 25%" in text and "- p99-latency passed: value 0.12 vs threshold 1, 300 samples, p99 0.12s" in text


def test_tags_and_region_text():
    assert tags_for(event(), "rollback") == ["guardian", "checkout", "v2", "rollback"]
    assert region_text(event(), ended=True).startswith("rollout r1 of checkout to registry:5000/checkout:v2: "
                                                       "rolled back after 140s")


class Recorder:
    def __init__(self, status: int = 200):
        self.status, self.seen = status, []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.seen.append((request.method, request.url.path, request.headers.get("authorization"),
                              request.content))
            n = len(self.seen)
        return httpx.Response(self.status, json={"message": "Annotation added", "id": n})


def test_a_rollout_is_a_region_posted_then_patched_with_points_between():
    rec = Recorder()
    g = GrafanaNotifier("http://grafana.invalid", "tok", dashboard_uid="d1", panel_id=3,
                        transport=httpx.MockTransport(rec))
    g.notify(event("start", "progressing", verdicts=(), at=1000.0))
    g.notify(event())
    g.close(2)
    assert [(m, p) for m, p, _, _ in rec.seen] == [("POST", "/api/annotations")] * 3 + [("PATCH", "/api/annotations/1")]
    assert {a for _, _, a, _ in rec.seen} == {"Bearer tok"}
    assert b'"dashboardUID":"d1"' in rec.seen[0][3].replace(b" ", b"") and b'"panelId":3' in rec.seen[0][3].replace(
        b" ", b"")
    assert b'"timeEnd":1140000' in rec.seen[3][3].replace(b" ", b"")


def test_beyond_the_queue_bound_the_oldest_are_dropped_and_counted():
    metrics = GuardianMetrics()
    g = GrafanaNotifier("http://grafana.invalid", "tok", metrics=metrics, max_queue=5, retry_base=0.05,
                        retry_cap=0.05, transport=httpx.MockTransport(Recorder(503)))
    began = time.perf_counter()
    for i in range(20):
        g.notify(event("advance", "progressing", at=1000.0 + i))
    assert time.perf_counter() - began < 0.5  # never waits for Grafana
    assert g.pending() <= 6
    dropped = metrics.registry.get_sample_value("guardian_annotations_total", {"result": "dropped"})
    assert dropped >= 14
    began = time.perf_counter()
    g.close(0.3)
    assert time.perf_counter() - began < 2.0  # close gives up at its timeout
    assert metrics.registry.get_sample_value("guardian_annotations_total", {"result": "sent"}) is None


def test_notify_never_raises():
    g = GrafanaNotifier("http://grafana.invalid", None, transport=httpx.MockTransport(Recorder()))
    g.notify({"at": "not a time"})  # garbage in: logged, not raised
    g.close(1)


def test_a_rollback_point_carries_the_log_evidence():
    logs = [{"template": "ERROR checkout: inventory reservation failed: upstream timeout after <NUM>ms",
             "canary_count": 20, "baseline_count": 0, "example": "…"}]
    lines = point_text(event(logs=logs)).splitlines()
    assert lines[-1] == ("- log: 20x in canary vs 0x in baseline: ERROR checkout: inventory reservation failed: "
                         "upstream timeout after <NUM>ms")
