"""The Grafana notifier in process: the annotation texts and tags, and the queue (httpx MockTransport
in place of Grafana; the HTTP path is tested against the stub in tests/integration)."""
from __future__ import annotations

import threading
import time

import httpx
from loguru import logger

from guardian.metrics import GuardianMetrics
from guardian.notifiers import grafana as notifier
from guardian.notifiers.grafana import GrafanaNotifier, point_text, region_text, tags_for
from tests.stubs.grafana_stub import TAG_COLUMN, parse_tags, tags_length

TAGS_LENGTH = 500  # Grafana's [annotations] tags_length: default, and the minimum it enforces

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


# -- tags within Grafana's limits (validateTagsLength: tags_length 500; tag.key/value VARCHAR(100)) ------------
def test_short_tags_are_kept_as_they_are():
    assert notifier.fit_tags(["guardian", "checkout", "v2", "advance"]) == ["guardian", "checkout", "v2", "advance"]


def test_fitted_tags_are_what_grafana_stores_and_within_its_limits():
    long = ["guardian", "s" * 253, "v" * 509, "rollout", "rolled_back"]
    assert tags_length(long) > TAGS_LENGTH
    tags = notifier.fit_tags(long)
    assert tags_length(tags) <= TAGS_LENGTH
    assert all(len(part) <= TAG_COLUMN for t in tags for part in t.split(":", 1))
    assert parse_tags(tags) == tags  # Grafana stores them unchanged
    assert tags[0] == "guardian" and tags[-2:] == ["rollout", "rolled_back"]  # the ones dashboards filter on
    assert tags[1].startswith("s" * 50) and tags[2].startswith("v" * 50)  # cut, not dropped


def test_fit_tags_trims_dedupes_keeps_multibyte_text_whole_and_colons_readable():
    assert notifier.fit_tags([" a ", "a", "", "k:v:w", "é" * 120]) == ["a", "k:v_w", "é" * TAG_COLUMN]
    many = notifier.fit_tags([f"tag-{i}" for i in range(200)])
    assert tags_length(many) <= TAGS_LENGTH and many[0] == "tag-0"


def test_tags_for_fits_every_annotation():
    e = event(service="s" * 253, image="r/app:" + "v" * 300)
    assert tags_length(tags_for(e, "rollback")) <= TAGS_LENGTH


# -- the start-up dashboard check ------------------------------------------------------------------------------
class Grafana:
    """Answers GET /api/dashboards/uid/:uid from a list of (status, body), the last one repeated."""

    def __init__(self, *answers: tuple[int, dict]):
        self.answers, self.paths = list(answers), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append((request.method, request.url.raw_path.decode()))
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if status == 0:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(status, json=body)


def checked(grafana: Grafana, metrics: GuardianMetrics | None = None, uid: str = "d1") -> GrafanaNotifier:
    g = GrafanaNotifier("http://grafana.invalid", "tok", dashboard_uid=uid, metrics=metrics, retry_base=0.01,
                        retry_cap=0.02, transport=httpx.MockTransport(grafana))
    g.start_dashboard_check()
    return g


def state(metrics: GuardianMetrics, value: str, uid: str = "d1") -> float | None:
    return metrics.registry.get_sample_value("guardian_grafana_dashboard", {"uid": uid, "state": value})


def test_a_dashboard_that_exists_is_found_once():
    metrics, grafana = GuardianMetrics(), Grafana((200, {"dashboard": {"uid": "d1", "title": "T"}, "meta": {}}))
    g = checked(grafana, metrics)
    assert g.wait_dashboard_check(2) and g.dashboard_state == "found"
    g.close(1)
    assert grafana.paths == [("GET", "/api/dashboards/uid/d1")]
    assert state(metrics, "found") == 1.0 and state(metrics, "missing") == 0.0


def test_a_missing_dashboard_is_reported():
    metrics = GuardianMetrics()
    g = checked(Grafana((404, {"message": "Dashboard not found"})), metrics)
    assert g.wait_dashboard_check(2) and g.dashboard_state == "missing"
    g.close(1)
    assert state(metrics, "missing") == 1.0


def test_a_token_that_may_not_read_dashboards_leaves_the_uid_unverified():
    body = {"title": "Access denied", "message": "You'll need additional permissions to perform this action. "
            "Permissions needed: dashboards:read", "accessErrorId": "ACE0123456789"}
    g = checked(Grafana((403, body)))
    assert g.wait_dashboard_check(2) and g.dashboard_state == "unverified"
    g.close(1)


def test_an_unreachable_grafana_is_retried_until_it_answers():
    grafana = Grafana((0, {}), (503, {"message": "down"}), (0, {}), (404, {"message": "Dashboard not found"}))
    g = checked(grafana)
    assert g.wait_dashboard_check(3) and g.dashboard_state == "missing"
    g.close(1)
    assert len(grafana.paths) == 4  # refused, 503, refused, then the answer


def test_the_check_never_blocks_and_close_stops_it():
    g = checked(Grafana((0, {})))
    began = time.perf_counter()
    assert not g.wait_dashboard_check(0.2) and g.dashboard_state == "unreachable"
    g.close(1)
    assert time.perf_counter() - began < 2


def test_a_uid_with_slashes_is_escaped_in_the_path():
    grafana = Grafana((404, {"message": "Dashboard not found"}))
    g = checked(grafana, uid="a/b")
    assert g.wait_dashboard_check(2)
    g.close(1)
    assert grafana.paths == [("GET", "/api/dashboards/uid/a%2Fb")]


def test_a_refusal_is_logged_with_grafanas_message():
    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(str(m)), level="DEBUG")
    body = {"title": "Access denied", "message": "You'll need additional permissions to perform this action. "
            "Permissions needed: annotations:create", "accessErrorId": "ACE0123456789"}
    try:
        g = GrafanaNotifier("http://grafana.invalid", "tok", transport=httpx.MockTransport(
            lambda r: httpx.Response(403, json=body)))
        g.notify(event("advance", "progressing"))
        assert g.flush(2)
        g.close(1)
    finally:
        logger.remove(sink)
    (line,) = [m for m in logs if "refused" in m]
    assert "HTTP 403" in line and "Permissions needed: annotations:create" in line


def test_grafana_down_is_retried_past_any_attempt_bound_and_counted_as_the_annotations_series_counts():
    metrics, answers = GuardianMetrics(), [503] * 12 + [200]
    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(str(m)), level="DEBUG")
    try:
        g = GrafanaNotifier("http://grafana.invalid", "tok", metrics=metrics, retry_base=0.001, retry_cap=0.001,
                            transport=httpx.MockTransport(lambda r: httpx.Response(answers.pop(0), json={"id": 1})))
        g.notify(event("advance", "progressing"))
        assert g.flush(5)
        g.close(1)
    finally:
        logger.remove(sink)
    assert answers == []  # 12 refusals, then sent
    sample = metrics.registry.get_sample_value
    assert sample("guardian_annotations_total", {"result": "sent"}) == 1.0
    assert sample("guardian_annotations_total", {"result": "retried"}) is None  # sent, failed, dropped only
    assert sample("guardian_notifications_total", {"route": "grafana", "result": "sent"}) is None
    assert any("grafana annotations: point of rollout r1 not sent (attempt 1): HTTP 503" in m for m in logs)
