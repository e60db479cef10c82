"""Whole rollouts judged from VictoriaMetrics: a real `guardian serve` (GUARDIAN_SOURCE=victoriametrics) reading a
real single-node VictoriaMetrics that scrapes real demo apps under load (1 s), 2 s ticks with a 1.5 s evaluation
delay (VictoriaMetrics makes a sample searchable about a second after it is scraped), the built-in default policy:
a healthy canary is promoted; one answering 5xx to a fifth of its requests is rolled back."""
from __future__ import annotations

import pytest

from demo.loadgen import LoadGenerator
from demo.stack import GuardianServer, VictoriaMetricsServer, start_demo_pair, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("vm-e2e")
    started = []
    try:
        baseline, canary = start_demo_pair(started)
        vm = VictoriaMetricsServer([(baseline.target, {"service": "checkout", "track": "baseline"}),
                                    (canary.target, {"service": "checkout", "track": "canary"})], "1s",
                                   workdir=work / "vm").start()
        started.append(vm)
        load = LoadGenerator({baseline.url: 1, canary.url: 1}, rps=40, max_seconds=600).start()
        started.append(load)
        vm.wait_for_series('http_requests_total{service="checkout",track="canary"}', timeout=30)
        (work / "guardian").mkdir()
        guardian = GuardianServer(work / "guardian", prometheus_url="http://127.0.0.1:9", rules=[], tick_seconds=2,
                                  evaluation_delay=1.5, min_window=4, analysis_seconds=10, source="victoriametrics",
                                  victoriametrics_url=vm.url).start()
        started.append(guardian)
        yield canary, guardian
    finally:
        for thing in reversed(started):
            thing.stop()


def test_a_healthy_canary_is_promoted_and_a_failing_one_rolled_back(stack):
    canary, guardian = stack
    assert guardian.api("GET", "/readyz").status_code == 200  # VictoriaMetrics answers /health
    r = guardian.api("POST", "/v1/rollouts", json={"service": "checkout", "image": "demo:v2", "steps": [50, 100]})
    assert r.status_code == 201, r.text + guardian.log_tail()
    rid = r.json()["id"]
    done = wait_until(lambda: (x := guardian.rollout(rid))["phase"] in ("promoted", "rolled_back") and x,
                      120, 0.5, "the end of the healthy rollout")
    assert done["phase"] == "promoted", done["reason"] + guardian.log_tail()
    errors = next(v for v in done["decisions"][-1]["verdicts"] if v["check"] == "errors-vs-baseline")
    assert errors["sample_size"] > 100  # requests read from VictoriaMetrics

    canary.control(error_ratio=0.2)
    try:
        r = guardian.api("POST", "/v1/rollouts", json={"service": "checkout", "image": "demo:v3", "steps": [50, 100],
                                                       "analysis_seconds": 600})
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        done = wait_until(lambda: (x := guardian.rollout(rid))["phase"] in ("rolled_back", "promoted") and x,
                          90, 0.5, "the rollback")
        assert done["phase"] == "rolled_back"
        assert "errors-vs-baseline" in done["decisions"][-1]["reason"]
    finally:
        canary.control(error_ratio=0.0)
