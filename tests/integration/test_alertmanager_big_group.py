"""A real Alertmanager (Debian's prometheus-alertmanager) sends one group of 5,000 alerts to `guardian serve`
(a subprocess) with `max_alerts: 0`, as deploy/alertmanager.yml configures it: every alert is stored and a
critical one about the rollout in flight rolls it back. Alertmanager retries no 4xx, so a refusal for the
group's size would lose every alert in it."""
from __future__ import annotations

import shutil
import time

import httpx
import pytest

from demo.stack import GuardianServer, wait_until
from tests.fixtures.alertmanager import AlertmanagerServer

pytestmark = pytest.mark.skipif(
    not (shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")),
    reason="Alertmanager is not installed (scripts/test.sh installs prometheus-alertmanager)")
TOKEN = "big-group-alert-token"
RULES = """\
service: checkout
checks:
  - {name: p99-sanity, kind: threshold, signal: p99_seconds, above: 5s, min_samples: 1, action: rollback}
"""
COUNT = 5000


def alerts(count: int) -> list[dict]:
    """`count` alerts of one group (alertname and service alike), each its own instance, with the kind of
    generator URL and annotations Prometheus sends; the critical canary one is about the rollout."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = [{"labels": {"alertname": "CheckoutInstanceDown", "service": "checkout", "severity": "info",
                       "instance": f"10.1.{i // 250}.{i % 250}:8080", "job": "checkout", "track": "baseline"},
            "annotations": {"summary": f"instance 10.1.{i // 250}.{i % 250}:8080 of checkout is down",
                            "runbook_url": "https://runbooks.example/checkout/instance-down"},
            "startsAt": now,
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up%7Bjob%3D%22checkout%22%7D+%3D%3D+0&g0.tab=1"}
           for i in range(count - 1)]
    out.append({"labels": {"alertname": "CheckoutInstanceDown", "service": "checkout", "severity": "critical",
                           "instance": "10.9.9.9:8080", "job": "checkout", "track": "canary"},
                "annotations": {"summary": "the canary is down"}, "startsAt": now})
    return out


def test_a_group_of_5000_alerts_is_stored_whole_and_acted_on(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "checkout.yaml").write_text(RULES)
    (tmp_path / "guardian").mkdir()
    guardian = GuardianServer(tmp_path / "guardian", prometheus_url="http://127.0.0.1:9",
                              rules=[str(tmp_path / "rules")], tick_seconds=2, analysis_seconds=3600,
                              alerts_token=TOKEN)
    am = AlertmanagerServer(tmp_path / "alertmanager", webhook_url=guardian.url + "/v1/alerts", token=TOKEN)
    try:
        guardian.start()
        am.start()
        rollout = guardian.api("POST", "/v1/rollouts", json={"service": "checkout", "image": "checkout:v2",
                                                             "target": "noop"}).raise_for_status().json()["id"]
        sent = time.time()
        httpx.post(f"{am.url}/api/v2/alerts", json=alerts(COUNT), timeout=60).raise_for_status()

        def stored() -> int:
            return len(guardian.api("GET", "/v1/alerts", params={"all": True}).json())

        try:
            wait_until(lambda: stored() >= COUNT, 60, 0.5, f"{COUNT} alerts stored by the guardian")
        except TimeoutError:
            pytest.fail(f"the guardian stored {stored()} of {COUNT} alerts; Alertmanager: {am.log_tail()}\n"
                        f"guardian: {guardian.log_tail()}")
        took = time.time() - sent
        state = wait_until(lambda: (s := guardian.rollout(rollout))["phase"] == "rolled_back" and s, 30, 0.2,
                           "the rollback the critical alert asks for")
        assert any("CheckoutInstanceDown" in d["reason"] for d in state["decisions"] if d["action"] == "rollback")
        assert stored() == COUNT
        assert "status code 4" not in am.log_tail(10_000), am.log_tail()  # nothing refused
        print(f"{COUNT} alerts in one group: stored in {took:.1f} s")
    finally:
        am.stop()
        guardian.stop()
