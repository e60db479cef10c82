"""Flagger's and Argo Rollouts' real call sequences (tests/peers: order, checksums, weights, intervals and
their decision logic, rebuilt from their source) against `guardian serve`, a real Prometheus scraping two
demo apps and real traffic moved by the simulated controller. In both the canary is good for a while — longer
than `analysis_seconds`, after which a gate used to promote itself and answer "pass" for ever — then turns
to 30% server errors: the gate must fail it and the controller roll it back.

Run with -s to see the calls one by one (the tables quoted in the README and the issue's closing note)."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.loadgen import LoadGenerator
from demo.stack import DemoApp, GuardianServer, PrometheusServer
from tests.integration.conftest import prometheus_binary
from tests.peers.argo import ArgoRollout
from tests.peers.flagger import FlaggerCanary

TOKEN = "replay-gate-token"
CHECKS = """\
checks:
  - {name: errors-vs-baseline, kind: compare, ratio: errors / requests, alpha: 0.01}
  - {name: canary-traffic, kind: compare, signal: requests, test: collapse, alpha: 0.01}
"""
# Flagger's primary pods are <app>-primary, its canary pods <app>: the label Prometheus keeps from the pod's
# `app` label tells the arms apart (Flagger's checksum is no pod label)
FLAGGER_RULES = "service: checkout\narms: {label: app, canary: checkout, baseline: checkout-primary}\n" + CHECKS
# Argo's canary and stable pods differ by rollouts-pod-template-hash, which the gate gets as revision/previous
ARGO_RULES = ("service: checkout\narms: {label: rollouts_pod_template_hash, canary: '{version}', "
              "baseline: '{previous_version}'}\n" + CHECKS)
STABLE_HASH, CANARY_HASH = "5f7d9c4b8", "6c9bd8675b"


class Stack:
    def __init__(self, workdir: Path, rules: str, labels: dict[str, dict[str, str]]):
        self.workdir, self.started = workdir, []
        (workdir / "rules").mkdir(parents=True, exist_ok=True)
        (workdir / "rules" / "checkout.yaml").write_text(rules)
        self.primary = self._up(DemoApp("primary", version="v1", latency=0.005).start())
        self.canary = self._up(DemoApp("canary", version="v2", latency=0.005).start())
        self.prometheus = self._up(PrometheusServer(
            [(self.primary.target, labels["primary"]), (self.canary.target, labels["canary"])], "1s",
            workdir=workdir / "prometheus", binary=prometheus_binary()).start())
        (workdir / "guardian").mkdir(exist_ok=True)
        self.guardian = self._up(GuardianServer(
            workdir / "guardian", prometheus_url=self.prometheus.url, rules=[str(workdir / "rules")], tick_seconds=1,
            evaluation_delay=0.5, min_window=3, analysis_seconds=5, gate_token=TOKEN).start())
        self.load = self._up(LoadGenerator({self.primary.url: 100, self.canary.url: 0}, rps=50,
                                           max_seconds=600).start())
        self.prometheus.wait_for_series('http_requests_total{service="checkout"}', timeout=30)

    def _up(self, thing):
        self.started.append(thing)
        return thing

    def route(self, canary_weight: int) -> None:
        self.load.set_weights({self.primary.url: 100 - canary_weight, self.canary.url: canary_weight})

    def stop(self) -> None:
        for thing in reversed(self.started):
            with contextlib.suppress(Exception):  # stop the rest anyway
                thing.stop()


@pytest.fixture
def stack(tmp_path) -> Iterator:
    stacks: list[Stack] = []

    def start(rules: str, labels: dict[str, dict[str, str]]) -> Stack:
        s = Stack(tmp_path, rules, labels)
        stacks.append(s)
        return s

    yield start
    for s in stacks:
        s.stop()


def test_flagger_call_sequence_with_a_canary_that_turns_bad_late(stack):
    s = stack(FLAGGER_RULES, {"primary": {"service": "checkout", "app": "checkout-primary"},
                              "canary": {"service": "checkout", "app": "checkout"}})
    flagger = FlaggerCanary(f"{s.guardian.url}/v1/gates/flagger", "checkout", "shop", s.route,
                            metadata={"service": "checkout", "token": TOKEN}, interval=4.0, threshold=5,
                            step_weight=10, max_weight=50)  # an interval of 4 ticks, as 1m is of 15 s ticks
    flagger.deploy("v2")
    turned_bad: list[float] = []

    def turn_bad_at_20(f: FlaggerCanary) -> bool:
        if f.weight >= 20 and not turned_bad:
            s.canary.control(error_ratio=0.3)
            turned_bad.append(time.time())
        return False

    flagger.run(until=turn_bad_at_20, timeout=150)
    print_calls("Flagger", flagger.calls, turned_bad[0] if turned_bad else None)
    print("events:", "; ".join(flagger.events))
    hooks = [c.hook for c in flagger.calls]
    first_gate = next(c for c in flagger.calls if c.hook == "pre-rollout")
    assert flagger.calls[0].hook == "confirm-rollout" and flagger.calls[0].checksum != first_gate.checksum
    at_zero = hooks.index("pre-rollout")
    assert hooks[at_zero + 1] == "confirm-traffic-increase" and flagger.calls[at_zero + 1].status == 200  # weight 0
    assert turned_bad, f"the canary never reached 20%: {flagger.events}"
    assert turned_bad[0] - first_gate.at > 5 * 2, "it must have been judged for longer than analysis_seconds"
    assert flagger.phase == "Failed", flagger.events
    assert "promoting" not in flagger.events
    rollouts = s.guardian.api("GET", "/v1/rollouts").json()
    assert [(r["image"], r["phase"]) for r in rollouts] == [(f"checkout:{first_gate.checksum}", "rolled_back")]
    decisions = s.guardian.rollout(rollouts[0]["id"])["decisions"]
    failed_at = next(d["at"] for d in decisions if d["action"] == "rollback")
    assert any("first traffic step" in d["reason"] for d in decisions)
    print(f"bad at {turned_bad[0]:.1f}; gate failed it {failed_at - turned_bad[0]:.1f}s later; Flagger rolled "
          f"back at its next pass")
    assert failed_at - turned_bad[0] < 30


@pytest.mark.parametrize("body_form", ["body", "query"])  # POST `body:` (no Content-Type), GET
def test_argo_analysis_with_a_canary_that_turns_bad_late(stack, body_form):
    s = stack(ARGO_RULES, {"primary": {"service": "checkout", "rollouts_pod_template_hash": STABLE_HASH},
                           "canary": {"service": "checkout", "rollouts_pod_template_hash": CANARY_HASH}})
    argo = ArgoRollout(f"{s.guardian.url}/v1/gates/argo/checkout", s.route, CANARY_HASH, STABLE_HASH, TOKEN,
                       steps=(("setWeight", 20), ("pause", 14), ("setWeight", 50), ("pause", 40)),
                       interval=2.0, failure_limit=0, inconclusive_limit=10, method="POST", body_form=body_form)
    turned_bad: list[float] = []

    def turn_bad_at_50(a: ArgoRollout) -> None:
        if a.weight >= 50 and not turned_bad:
            s.canary.control(error_ratio=0.3)
            turned_bad.append(time.time())

    phase = argo.run(during=turn_bad_at_50, timeout=150)
    print_calls("Argo", argo.measurements, turned_bad[0] if turned_bad else None)
    print("events:", "; ".join(argo.events))
    assert turned_bad, argo.events
    passed = [m for m in argo.measurements if m.phase == "Successful"]
    assert passed and turned_bad[0] - argo.measurements[0].at > 5 * 2, "judged for longer than analysis_seconds"
    assert phase == "Degraded", argo.events  # aborted: the AnalysisRun Failed
    assert all(m.status == 200 for m in argo.measurements)  # `body:` without a Content-Type is understood
    rollouts = s.guardian.api("GET", "/v1/rollouts").json()
    assert [(r["image"], r["previous_image"], r["phase"]) for r in rollouts] == [
        (f"checkout:{CANARY_HASH}", f"checkout:{STABLE_HASH}", "rolled_back")]
    failed = next(m for m in argo.measurements if m.phase == "Failed")
    print(f"bad at {turned_bad[0]:.1f}; first Failed measurement {failed.at - turned_bad[0]:.1f}s later")
    assert failed.at - turned_bad[0] < 30


def print_calls(who: str, calls: list, bad_at: float | None) -> None:
    t0 = calls[0].at if calls else 0.0
    print(f"\n{who}: t(s) | call | weight | status | verdict | reason")
    for c in calls:
        name = getattr(c, "hook", None) or f"measurement ({c.phase})"
        mark = " <- canary turned bad before this call" if bad_at and c.at >= bad_at > c.at - 2.5 else ""
        checksum = f" checksum={c.checksum}" if hasattr(c, "checksum") else ""
        print(f"{c.at - t0:6.1f} | {name}{checksum} | {c.weight}% | {c.status} | {c.verdict} | {c.reason[:90]}{mark}")
