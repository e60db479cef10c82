"""An alert drill: a real Prometheus alert rule fires through a real Alertmanager into the guardian,
which rolls the rollout back. The integration test and benchmarks/alert_latency.py run it.

    with AlertDrill(workdir) as drill:
        figures = drill.run()        # one rollout: errors injected -> alert -> rollback; then healed

The canary (a demo app answering 5xx on demand) and the stable version get 40 requests/s between
them; Prometheus scrapes and evaluates every second; the alert rule fires when the canary's error
ratio over 3 s exceeds 5% (`for: 0s`); Alertmanager sends at once (`group_wait: 0s`). The guardian's
rule file holds a check that always passes and a long analysis, so only the alert can end the
rollout. The figures: seconds from the alert rule's condition being true (its `activeAt`, the
evaluation that first saw it: the alert's `startsAt`) to the guardian's rollback decision, and from
the moment errors were injected.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from guardian.demo.alertmanager import AlertmanagerServer
from guardian.demo.loadgen import LoadGenerator
from guardian.demo.stack import DemoApp, GuardianServer, PrometheusServer, wait_until

TOKEN = "drill-alert-token"
ALERT_RULES = """\
groups:
  - name: checkout-canary
    interval: 1s
    rules:
      - alert: CheckoutCanaryErrors
        expr: >
          sum by (service) (rate(http_requests_total{service="checkout",track="canary",code=~"5.."}[3s]))
          / sum by (service) (rate(http_requests_total{service="checkout",track="canary"}[3s])) > 0.05
        for: 0s
        labels: {severity: critical, track: canary}
        annotations:
          summary: the canary answers 5xx to more than 5% of requests
          value: "{{ $value }}"
          threshold: "0.05"
"""
GUARDIAN_RULES = """\
service: checkout
checks:
  - {name: p99-sanity, kind: threshold, signal: p99_seconds, above: 5s, min_samples: 1, action: rollback}
alerts:
  - {match: {severity: critical}, action: rollback}
"""


class AlertDrill:
    def __init__(self, workdir: str | Path, *, rps: float = 40.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.rps = rps
        self._started: list[Any] = []

    def start(self) -> AlertDrill:
        w = self.workdir
        (w / "rules").mkdir(parents=True, exist_ok=True)
        (w / "rules" / "checkout.yaml").write_text(GUARDIAN_RULES)
        (w / "guardian").mkdir(exist_ok=True)
        try:
            self.stable = self._up(DemoApp("stable", version="v1", latency=0.01).start())
            self.canary = self._up(DemoApp("canary", version="v2", latency=0.01).start())
            self.guardian = GuardianServer(w / "guardian", prometheus_url="http://127.0.0.1:9",
                                           rules=[str(w / "rules")], tick_seconds=2, evaluation_delay=1,
                                           min_window=3, analysis_seconds=3600,
                                           alerts_token=TOKEN)
            self.alertmanager = self._up(AlertmanagerServer(w / "alertmanager", webhook_url=self.guardian.url
                                                            + "/v1/alerts", token=TOKEN).start())
            self.prometheus = self._up(PrometheusServer(
                [(self.stable.target, {"service": "checkout", "track": "baseline"}),
                 (self.canary.target, {"service": "checkout", "track": "canary"})],
                "1s", workdir=w / "prometheus", rules=ALERT_RULES, alertmanager=self.alertmanager.address).start())
            self.guardian.env["GUARDIAN_PROMETHEUS_URL"] = self.prometheus.url
            self._up(self.guardian.start())
            self.load = self._up(LoadGenerator({self.stable.url: 50, self.canary.url: 50}, rps=self.rps,
                                               max_seconds=3600).start())
            self.prometheus.wait_for_series('http_requests_total{service="checkout",track="canary"}', timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    def _up(self, thing: Any) -> Any:
        self._started.append(thing)
        return thing

    def run(self, timeout: float = 60.0) -> dict[str, Any]:
        """One rollout: start it, inject errors, wait for the rollback, heal, wait for the resolution."""
        g = self.guardian
        rollout = g.api("POST", "/v1/rollouts", json={"service": "checkout", "image": "checkout:v2",
                                                      "target": "noop"}).raise_for_status().json()["id"]
        wait_until(lambda: g.rollout(rollout)["last_tick"] >= 1, 30, 0.2, "the rollout's first tick")
        injected = time.time()
        self.canary.control(error_ratio=0.5)
        try:
            state = wait_until(lambda: (s := g.rollout(rollout))["phase"] == "rolled_back" and s, timeout, 0.1,
                               "the rollback")
        finally:
            self.canary.control(error_ratio=0.0)
        decision = next(d for d in state["decisions"] if d["action"] == "rollback")
        alert = next(a for a in g.api("GET", "/v1/alerts", params={"all": True}).json()
                     if a["name"] == "CheckoutCanaryErrors" and a["status"] == "firing")
        healed = time.time()
        wait_until(lambda: not g.api("GET", "/v1/alerts").json(), 60, 0.2, "the alert to resolve")
        return {"rollout": rollout, "source": decision["source"], "decided_at": decision["at"],
                "alert_starts_at": alert["starts_at"],
                "condition_to_decision_s": round(decision["at"] - alert["starts_at"], 2),
                "injection_to_decision_s": round(decision["at"] - injected, 2),
                "resolved_after_heal_s": round(time.time() - healed, 1),
                "reason": decision["reason"]}

    def stop(self) -> None:
        for thing in reversed(self._started):
            with contextlib.suppress(Exception):  # stop everything else anyway
                thing.stop()
        self._started = []

    def __enter__(self) -> AlertDrill:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
