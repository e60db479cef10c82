"""`examine` / `diagnose` (guardian/sources/doctor.py) against a real Prometheus scraping exporters built the
way new users build theirs: a histogram without the 0.5 s bucket, and a service label that is not the
rule file's service. Each finding must say what is wrong and what to change."""
from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from demo.stack import free_port
from guardian.rules.loader import DEFAULT_RULESET
from guardian.sources import ArmSelector
from guardian.sources.doctor import examine, needs
from guardian.sources.prometheus import PrometheusSource


class Exporter:
    """A service's own exporter: requests by code and a latency histogram with the buckets it was given."""

    def __init__(self, buckets: tuple[float, ...]):
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests", "requests", ["code"], registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "latency", buckets=buckets, registry=self.registry)
        self.port = free_port()
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        Thread(target=self.server.serve_forever, daemon=True).start()
        self.traffic = True
        Thread(target=self._serve_traffic, daemon=True).start()

    def _serve_traffic(self) -> None:
        while self.traffic:
            self.requests.labels("200").inc(5)
            self.latency.observe(0.02)
            time.sleep(0.2)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.traffic = False
        self.server.shutdown()


@pytest.fixture
def exporters() -> Iterator:
    started: list[Exporter] = []

    def start(buckets: tuple[float, ...]) -> Exporter:
        e = Exporter(buckets)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()


ARMS = {"canary": ArmSelector("canary", "track", "canary"), "baseline": ArmSelector("baseline", "track", "baseline")}


def by_key(findings) -> dict[tuple[str, str], object]:
    return {(f.signal, f.arm): f for f in findings}


def test_a_histogram_without_the_objectives_bucket_is_named_with_its_buckets(exporters, prometheus):
    canary, baseline = exporters((0.1, 0.3, 1.0)), exporters((0.1, 0.3, 1.0))
    prom = prometheus([(canary.target, {"service": "checkout", "track": "canary"}),
                       (baseline.target, {"service": "checkout", "track": "baseline"})])
    prom.wait_for_series('count(http_requests_total{service="checkout"}) == 2')  # both arms scraped
    time.sleep(2.5)  # a few scrapes: the counters move
    findings = examine(PrometheusSource(prom.url), DEFAULT_RULESET, "checkout", ARMS, time.time(), window=5)
    f = by_key(findings)
    slow = f[("slow", "canary")]
    assert slow.status == "missing" and slow.blocking, slow
    assert 'no le="0.5" bucket' in slow.detail and '"0.1", "0.3", "1.0"' in slow.detail, slow.detail
    assert 'le="0.3"' in slow.detail  # the nearest bucket it has, to override the objective with
    assert f[("requests", "canary")].status == "ok" and f[("errors", "baseline")].status == "ok"
    assert f[("memory_bytes", "canary")].status == "abstains"  # an optional check's signal: shown, not blocking
    assert not f[("memory_bytes", "canary")].blocking


def test_a_wrong_service_label_lists_the_services_that_exist(exporters, prometheus):
    app = exporters((0.1, 0.5, 1.0))
    prom = prometheus([(app.target, {"service": "checkout-svc", "track": "canary"})])
    prom.wait_for_series('http_requests_total{service="checkout-svc"}')
    findings = examine(PrometheusSource(prom.url), DEFAULT_RULESET, "checkout", ARMS, time.time(), window=5)
    requests = by_key(findings)[("requests", "canary")]
    assert requests.blocking
    assert 'no http_requests_total series has service="checkout"' in requests.detail
    assert '"checkout-svc"' in requests.detail, requests.detail


def test_a_missing_arm_label_and_an_absent_arm_are_told_apart(exporters, prometheus):
    a, b = exporters((0.5,)), exporters((0.5,))
    prom = prometheus([(a.target, {"service": "checkout"}), (b.target, {"service": "shop", "track": "stable"})])
    prom.wait_for_series('http_requests_total{service="shop"}')
    prom.wait_for_series('http_requests_total{service="checkout"}')  # both targets scraped
    src = PrometheusSource(prom.url)
    f = by_key(examine(src, DEFAULT_RULESET, "checkout", ARMS, time.time(), values=False))
    assert "has no `track` label" in f[("requests", "canary")].detail, f[("requests", "canary")].detail
    f = by_key(examine(src, DEFAULT_RULESET, "shop", ARMS, time.time(), values=False))
    assert 'no http_requests_total{service="shop"} series has track="canary"' in f[("requests", "canary")].detail
    assert '"stable"' in f[("requests", "canary")].detail
    pending = by_key(examine(src, DEFAULT_RULESET, "shop", ARMS, time.time(), values=False, canary_deployed=False))
    assert pending[("requests", "canary")].status == "pending" and not pending[("requests", "canary")].blocking


def test_needs_follow_the_policy():
    got = {n.signal: n for n in needs(DEFAULT_RULESET)}
    assert set(got) == {"errors", "requests", "slow", "p99_seconds", "memory_bytes"}
    assert got["slow"].gating and got["requests"].denominator and not got["memory_bytes"].gating
    assert got["requests"].arms == ("canary", "baseline")


# -- the preflight of POST /v1/rollouts and `guardian doctor`, through the real app and CLI --------------------
def api_for(prom_url: str, tmp_path):
    from fastapi.testclient import TestClient

    from guardian.api.app import create_app
    from guardian.api.components import build
    from guardian.settings import Settings

    s = Settings(db_path=str(tmp_path / "g.db"), rules=[], recordings_dir="", prometheus_url=prom_url)
    c = build(s)
    return c, TestClient(create_app(c, run_scheduler=False))


def test_a_start_whose_metrics_are_missing_is_refused_naming_why_or_starts_paused(exporters, prometheus, tmp_path):
    canary, baseline = exporters((0.1, 0.3, 1.0)), exporters((0.1, 0.3, 1.0))
    prom = prometheus([(canary.target, {"service": "checkout", "track": "canary"}),
                       (baseline.target, {"service": "checkout", "track": "baseline"})])
    prom.wait_for_series('http_requests_total{service="checkout",track="baseline"}')
    c, client = api_for(prom.url, tmp_path)
    with client:
        r = client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:v2"})
        assert r.status_code == 422 and r.json()["error"] == "missing_metrics", r.text
        fields = {d["field"]: d["message"] for d in r.json()["detail"]}
        assert 'no le="0.5" bucket' in fields["slow (baseline)"], fields
        assert "slow (canary)" not in fields  # a canary not deployed yet is pending, not missing
        assert c.store.list() == []  # refused: nothing started
        r = client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:v2", "allow_missing": True})
        assert r.status_code == 201, r.text
        state = r.json()
        assert state["phase"] == "paused" and state["paused_by"] == "guardian" and "le=" in state["reason"]
        r = client.get("/v1/services/checkout/doctor", params={"window": 5})
        assert r.status_code == 200 and r.json()["blocking"] is True


def test_a_start_with_its_metrics_in_place_goes_ahead(exporters, prometheus, tmp_path):
    baseline = exporters((0.1, 0.5, 1.0))
    prom = prometheus([(baseline.target, {"service": "checkout", "track": "baseline"})])
    prom.wait_for_series('http_requests_total{service="checkout",track="baseline"}')
    c, client = api_for(prom.url, tmp_path)
    with client:
        r = client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:v2"})
        assert r.status_code == 201 and r.json()["phase"] == "progressing", r.text


def test_the_doctor_command_without_a_guardian(exporters, prometheus, tmp_path):
    from typer.testing import CliRunner

    from guardian.cli import app

    app_ = exporters((0.1, 0.5, 1.0))
    prom = prometheus([(app_.target, {"service": "checkout-svc", "track": "canary"})])
    prom.wait_for_series('http_requests_total{service="checkout-svc"}')
    rules = str(Path(__file__).resolve().parents[2] / "rules")  # the seed's checkout.yaml
    result = CliRunner().invoke(app, ["doctor", "checkout", "--prometheus-url", prom.url, "--rules", rules,
                                      "--window", "5"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "checkout-svc" in result.output and "would be refused" in result.output
