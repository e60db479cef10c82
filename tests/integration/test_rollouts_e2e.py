"""Whole rollouts through the guardian's HTTP API and CLI, on a real Prometheus (1 s scrape) scraping
real demo apps under real load, with a 2 s tick: healthy -> promoted; errors -> rolled back;
Prometheus stopped mid-rollout -> paused, and resumed when it returns."""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo.loadgen import LoadGenerator
from demo.stack import DemoApp, GuardianServer, PrometheusServer, start_demo_pair, wait_until
from guardian.engine.replay import replay_recording
from guardian.rules.loader import RuleSet, parse_text
from tests.integration.conftest import REPO, prometheus_binary

pytestmark = pytest.mark.integration

RULES = """\
service: checkout
checks:
  - name: error-rate
    kind: threshold
    ratio: errors / requests
    above: 5%
    window: 6s
    for: 4s
    min_samples: 30
    action: rollback
  - name: p99-latency
    kind: threshold
    signal: p99_seconds
    above: 1s
    for: 6s
    min_samples: 20
    action: rollback
"""


@dataclass
class Stack:
    baseline: DemoApp
    canary: DemoApp
    prometheus: PrometheusServer
    load: LoadGenerator
    control_port: int
    guardian: GuardianServer
    rules_file: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    prometheus_binary()
    work = tmp_path_factory.mktemp("e2e")
    started = []
    try:
        baseline, canary = start_demo_pair(started)
        (work / "prometheus").mkdir()
        prom = PrometheusServer(
            [(baseline.target, {"service": "checkout", "track": "baseline"}),
             (canary.target, {"service": "checkout", "track": "canary"}),
             # "payments" has no rule file: the built-in default policy judges it
             (baseline.target, {"service": "payments", "track": "baseline"}),
             (canary.target, {"service": "payments", "track": "canary"})],
            "1s", workdir=work / "prometheus").start()
        started.append(prom)
        load = LoadGenerator({baseline.url: 1, canary.url: 1}, rps=40, max_seconds=900).start()
        started.append(load)
        control_port = load.serve_control(0, canary=canary.url, baseline=baseline.url)
        rules = work / "rules"
        rules.mkdir()
        (rules / "checkout.yaml").write_text(RULES)
        prom.wait_for_series('http_requests_total{service="checkout",track="canary"}')
        (work / "guardian").mkdir()
        guardian = GuardianServer(work / "guardian", prometheus_url=prom.url, rules=[str(rules)], tick_seconds=2,
                                  evaluation_delay=1, min_window=4, analysis_seconds=6).start()
        started.append(guardian)
        yield Stack(baseline, canary, prom, load, control_port, guardian, rules / "checkout.yaml")
    finally:
        for thing in reversed(started):
            thing.stop()


@pytest.fixture
def fresh(stack):
    stack.canary.control(error_ratio=0.0, latency=0.005)
    stack.load.set_weights({stack.baseline.url: 1, stack.canary.url: 1})
    if not stack.prometheus.running:
        stack.prometheus.start()
    return stack


def _cli(stack, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "guardian", *args, "--api", stack.guardian.url], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_healthy_canary_is_promoted_step_by_step_through_a_webhook(fresh):
    target = f"webhook+http://127.0.0.1:{fresh.control_port}/weights"
    run = _cli(fresh, "rollout", "start", "checkout", "--image", "demo:v2", "--steps", "50,100",
               "--target", target, "--wait", "--timeout", "90")
    assert run.returncode == 0, run.stdout + run.stderr + fresh.guardian.log_tail()
    assert "promoted" in run.stdout and "step 1/2" in run.stdout
    rollout_id = run.stdout.split("started rollout ")[1].split()[0]
    r = fresh.guardian.rollout(rollout_id)
    assert r["phase"] == "promoted" and r["weight"] == 100
    actions = [d["action"] for d in r["decisions"]]
    assert actions[0] == "start" and actions[-1] == "promote" and "advance" in actions and "rollback" not in actions
    assert all(d["outcome"]["ok"] for d in r["decisions"] if d["outcome"])
    promote = r["decisions"][-1]
    error_rate = next(v for v in promote["verdicts"] if v["check"] == "error-rate")
    assert error_rate["result"] == "pass" and error_rate["sample_size"] >= 30 and error_rate["threshold"] == 0.05
    # the webhook really steered the traffic: the router now sends everything to the canary
    assert fresh.load.weights[fresh.canary.url] == 100
    rec = fresh.guardian.api("GET", f"/v1/rollouts/{rollout_id}/recording").json()
    assert rec["format"] == "guardian-recording/v1"
    assert sum(v for v in rec["series"]["requests"]["canary"] if v) > 100


def test_errors_injected_into_the_canary_are_rolled_back(fresh):
    created = fresh.guardian.api("POST", "/v1/rollouts", json={
        "service": "checkout", "image": "demo:v2", "steps": [50, 100], "target": "noop",
        "analysis_seconds": 600}).raise_for_status().json()
    rollout_id = created["id"]
    wait_until(lambda: any(v["result"] == "pass" for v in fresh.guardian.rollout(rollout_id)["verdicts"]), 30, 0.2,
               "a first passing verdict")
    fresh.canary.control(error_ratio=0.2)
    injected = time.time()
    r = wait_until(lambda: (x := fresh.guardian.rollout(rollout_id))["phase"] == "rolled_back" and x, 60, 0.2,
                   "the rollback")
    rollback = r["decisions"][-1]
    assert rollback["action"] == "rollback" and rollback["source"] == "guardian" and rollback["outcome"]["ok"]
    failed = [v for v in rollback["verdicts"] if v["result"] == "fail"]
    assert [v["check"] for v in failed] == ["error-rate"]
    assert 0.1 < failed[0]["value"] < 0.3 and failed[0]["sample_size"] >= 30
    assert "wilson_lower" in failed[0]["statistic"]
    latency = rollback["at"] - injected
    print(f"\nerror injection -> rollback decision: {latency:.1f} s")
    assert latency < 30
    # the live rollout was recorded; replaying the recording through the engine decides the same, at the same tick
    recording = fresh.guardian.api("GET", f"/v1/rollouts/{rollout_id}/recording").json()
    replayed = replay_recording(recording, "live.json", RuleSet.of(parse_text(RULES, "checkout.yaml"), "test"))
    assert (replayed.decision, replayed.tick) == ("rollback", rollback["tick"])


def test_prometheus_outage_pauses_and_the_rollout_resumes_when_it_returns(fresh):
    created = fresh.guardian.api("POST", "/v1/rollouts", json={
        "service": "checkout", "image": "demo:v2", "steps": [50, 100], "target": "noop",
        "analysis_seconds": 600}).raise_for_status().json()
    rollout_id = created["id"]
    wait_until(lambda: fresh.guardian.rollout(rollout_id)["last_tick"] >= 1, 30, 0.2, "two ticks")
    fresh.prometheus.stop()
    r = wait_until(lambda: (x := fresh.guardian.rollout(rollout_id))["phase"] == "paused" and x, 30, 0.2,
                   "the pause")
    assert r["paused_by"] == "guardian"
    assert "unavailable" in r["decisions"][-1]["reason"]
    assert all(v["result"] == "error" for v in r["verdicts"])
    fresh.prometheus.start()
    r = wait_until(lambda: (x := fresh.guardian.rollout(rollout_id))["phase"] == "progressing" and x, 60, 0.2,
                   "the resume")
    actions = [d["action"] for d in r["decisions"]]
    assert actions[-2:] == ["pause", "resume"]
    assert "promote" not in actions and "rollback" not in actions
    # clean up through the CLI: a manual rollback, exit 0
    done = _cli(fresh, "rollout", "rollback", rollout_id)
    assert done.returncode == 0, done.stderr
    assert fresh.guardian.rollout(rollout_id)["phase"] == "rolled_back"


def test_a_broken_rule_file_is_refused_live_and_the_last_good_rules_stay(fresh):
    before = fresh.guardian.api("GET", "/v1/rules").json()
    assert [c["name"] for c in before["checkout"]["checks"]] == ["error-rate", "p99-latency"]
    try:
        fresh.rules_file.write_text(RULES.replace("for: 4s", "for: four seconds"))
        after = wait_until(lambda: (x := fresh.guardian.api("GET", "/v1/rules").json())["last_reload_problems"]
                           and x, 20, 0.2, "the refused reload")
        assert "checkout.yaml:8: checks[0].for: bad duration 'four seconds'" in after["last_reload_problems"][0]
        assert after["checkout"] == before["checkout"]
    finally:
        fresh.rules_file.write_text(RULES)
    wait_until(lambda: not fresh.guardian.api("GET", "/v1/rules").json()["last_reload_problems"], 20, 0.2,
               "the good rules to be read again")


def test_a_service_without_rules_is_judged_by_the_sequential_default_policy(fresh):
    created = fresh.guardian.api("POST", "/v1/rollouts", json={
        "service": "payments", "image": "demo:v2", "steps": [50, 100], "target": "noop",
        "analysis_seconds": 600}).raise_for_status().json()
    rollout_id = created["id"]
    assert created["rules"] == "built-in default"
    wait_until(lambda: any(v["check"] == "errors-vs-baseline" and v["result"] == "pass"
                           for v in fresh.guardian.rollout(rollout_id)["verdicts"]), 60, 0.2,
               "the errors-vs-baseline check to pass once warmed up")
    fresh.canary.control(error_ratio=0.2)
    injected = time.time()
    r = wait_until(lambda: (x := fresh.guardian.rollout(rollout_id))["phase"] == "rolled_back" and x, 60, 0.2,
                   "the rollback")
    rollback = r["decisions"][-1]
    failed = {v["check"]: v for v in rollback["verdicts"] if v["result"] == "fail"}
    assert "errors-vs-baseline" in failed
    v = failed["errors-vs-baseline"]
    assert v["value"] > 5 and "e_value" in v["statistic"] and v["sample_size"] > 0
    print(f"\ndefault policy: error injection -> rollback decision: {rollback['at'] - injected:.1f} s")
    assert rollback["at"] - injected < 30


def test_a_regression_in_the_bake_rolls_back_to_the_warm_previous_version(fresh):
    """payments (the built-in default policy) with a 60 s bake: the canary walks 50% -> 100%, bakes with the
    baseline warm at weight 0, then turns bad; the bake's before/after test rolls it back and the webhook router
    sends all traffic back to the baseline."""
    target = f"webhook+http://127.0.0.1:{fresh.control_port}/weights"
    created = fresh.guardian.api("POST", "/v1/rollouts", json={
        "service": "payments", "image": "demo:v4", "steps": [50, 100], "target": target,
        "bake_seconds": 60}).raise_for_status().json()
    rollout_id = created["id"]
    r = wait_until(lambda: (x := fresh.guardian.rollout(rollout_id))["phase"] == "baking" and x, 120, 0.2,
                   "the bake")
    assert r["weight"] == 100 and r["bake_left"] is not None and r["bake_left"] <= 60
    bake = next(d for d in r["decisions"] if d["action"] == "bake")
    assert bake["outcome"]["ok"] and "baking at 100% for 60s" in bake["reason"]
    assert fresh.load.weights[fresh.canary.url] == 100
    try:
        wait_until(lambda: fresh.guardian.rollout(rollout_id)["baked_ticks"] >= 3, 30, 0.2, "three baked ticks")
    except TimeoutError:
        r = fresh.guardian.rollout(rollout_id)
        raise AssertionError(f"{r['phase']}: {r['reason']}; " + "; ".join(
            f"{v['check']} {v['result']}: {v['reason']}" for v in r["verdicts"])) from None
    fresh.canary.control(error_ratio=0.1)
    injected = time.time()
    r = wait_until(lambda: (x := fresh.guardian.rollout(rollout_id))["phase"] == "rolled_back" and x, 60, 0.2,
                   "the rollback in the bake")
    rollback = r["decisions"][-1]
    assert rollback["action"] == "rollback" and rollback["outcome"]["ok"]
    failed = [v for v in rollback["verdicts"] if v["result"] == "fail"]
    assert "errors-vs-baseline" in [v["check"] for v in failed]
    errors = next(v for v in failed if v["check"] == "errors-vs-baseline")
    assert "the service before the rollout" in errors["reason"] and errors["sample_size"] > 0
    print(f"\nerrors in the bake -> rollback decision: {rollback['at'] - injected:.1f} s")
    assert rollback["at"] - injected < 20
    assert fresh.load.weights[fresh.canary.url] == 0  # all traffic back on the warm previous version
    recording = fresh.guardian.api("GET", f"/v1/rollouts/{rollout_id}/recording").json()
    assert recording["models"]["#bake"]["from_tick"] == r["bake_tick"]
    from guardian.rules.loader import DEFAULT_RULESET
    replayed = replay_recording(recording, "baked.json", DEFAULT_RULESET)
    assert (replayed.decision, replayed.tick) == ("rollback", rollback["tick"])
