"""Outages of the real components around a guarded Docker rollout (GuardedStack: real containers,
nginx, Prometheus and `guardian serve`), each ending the rollout correctly with the fault recorded:

- Prometheus stopped mid-rollout: every verdict is an error (missing data), the guardian pauses
  (paused_by guardian: never promoted nor rolled back for lack of data, the containers untouched)
  and resumes by itself when Prometheus is back;
- nginx refusing its configuration (`nginx -t` failing) mid-rollout: the step fails, is recorded as
  a failed decision and counted, traffic stays where it was; once nginx is repaired the next tick
  does the step again and the release is promoted;
- Grafana down (a closed port): the rollout is promoted without waiting, the failed sends are logged;
- a webhook actuator whose receiver is down (a closed port): the start fails with the reason, the
  rollout is recorded rolled back and the failure counted.
(The Docker daemon restart is not here: it would take down every other test's containers.)
"""
from __future__ import annotations

import re
import time
import uuid

import pytest

docker = pytest.importorskip("docker")

from benchmarks import crash_harness as harness  # noqa: E402
from demo.stack import free_port, wait_until  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from demo.dockerstack import GuardedStack

    try:
        docker.from_env().ping()
    except docker.errors.DockerException as e:
        pytest.skip(f"no Docker engine ({e}); bash scripts/docker-up.sh starts one")
    with GuardedStack(tmp_path_factory.mktemp("outages"), f"gout-{uuid.uuid4().hex[:6]}", rps=20) as g:
        yield g


def metric(g, name: str, **labels: str) -> float:
    """The sum of the guardian's series `name` whose labels include `labels`."""
    total = 0.0
    text = g.guardian.api("GET", "/metrics").text
    for series, value in re.findall(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+]+)$", text, re.M):
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def test_prometheus_stopped_mid_rollout_pauses_and_resumes_without_touching_the_containers(guarded):
    g = guarded
    rid = g.start_rollout("guardian-demo:v3", steps=[50, 100], analysis_seconds=600)
    wait_until(lambda: g.guardian.rollout(rid)["last_tick"] >= 2, 60, 0.2, "two ticks")
    running = g.stack.images()
    g.prometheus.stop()
    try:
        r = wait_until(lambda: (x := g.guardian.rollout(rid))["phase"] == "paused" and x, 60, 0.2, "the pause")
        assert r["paused_by"] == "guardian" and "unavailable" in r["decisions"][-1]["reason"]
        time.sleep(4)  # two more ticks without data: still paused, nothing done to the containers
        r = g.guardian.rollout(rid)
        assert r["phase"] == "paused" and g.stack.images() == running
        assert metric(g, "guardian_source_errors_total") >= 1
    finally:
        g.prometheus.start()  # same port and data: the outage is over
    r = wait_until(lambda: (x := g.guardian.rollout(rid))["phase"] == "progressing" and x, 90, 0.2, "the resume")
    actions = [d["action"] for d in r["decisions"]]
    assert actions[-2:] == ["pause", "resume"] and "promote" not in actions and "rollback" not in actions
    g.guardian.api("POST", f"/v1/rollouts/{rid}/promote").raise_for_status()
    assert g.stack.images() == ["guardian-demo:v3", "guardian-demo:v3"]
    assert g.load.dropped == 0


def test_nginx_refusing_its_config_mid_rollout_fails_the_step_then_it_is_promoted_once_repaired(guarded):
    g = guarded
    before = metric(g, "guardian_actuator_failures_total")
    rid = g.start_rollout("guardian-demo:v1", steps=[50, 100], analysis_seconds=2)
    wait_until(lambda: g.guardian.rollout(rid)["weight"] == 50, 60, 0.2, "the canary at 50%")
    conf = g.stack.nginx.conf_file
    good = conf.read_text()
    conf.write_text(good.replace("http {", "http {\n    no_such_directive on;", 1))
    try:
        failed = wait_until(lambda: [d for d in g.guardian.rollout(rid)["decisions"]
                                     if d["outcome"] and not d["outcome"]["ok"]], 90, 0.3, "a failed step")
        detail = failed[0]["outcome"]["detail"]
        assert "nginx refused" in detail and "no_such_directive" in detail
        assert g.guardian.rollout(rid)["phase"] == "progressing"
        assert sorted(g.stack.images()) == ["guardian-demo:v1", "guardian-demo:v3", "guardian-demo:v3"]
    finally:
        conf.write_text(good)
    state = g.wait(rid, timeout=120)
    assert state["phase"] == "promoted"
    assert metric(g, "guardian_actuator_failures_total") > before
    assert g.stack.images() == ["guardian-demo:v1", "guardian-demo:v1"]
    assert g.load.dropped == 0


def test_grafana_and_a_webhook_receiver_down_do_not_hold_or_corrupt_a_rollout(guarded):
    g = guarded
    harness.kill_guardian(g)
    g.guardian.env["GUARDIAN_GRAFANA_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    harness.restart_guardian(g, None)
    try:
        rid = g.start_rollout("guardian-demo:v3", steps=[50, 100], analysis_seconds=2)
        assert g.wait(rid, timeout=150)["phase"] == "promoted"
        assert g.stack.images() == ["guardian-demo:v3", "guardian-demo:v3"]
        assert re.search(r"grafana annotations: \w+ of rollout \w+ not sent", g.guardian.log_tail(200_000))
        # the webhook actuator's receiver is down: the start fails with why, nothing is left in flight
        r = g.guardian.api("POST", "/v1/rollouts", json={  # (no metrics for "hooked": past the preflight)
            "service": "hooked", "image": "hooked:v2", "target": f"webhook+http://127.0.0.1:{free_port()}/hook",
            "allow_missing": True})
        assert r.status_code == 502 and "actuator_failed" in r.text
        (hooked,) = [x for x in g.guardian.api("GET", "/v1/rollouts").json() if x["service"] == "hooked"]
        assert hooked["phase"] == "rolled_back" and "start failed" in hooked["reason"]
        assert metric(g, "guardian_actuator_failures_total", action="start") >= 1
    finally:
        harness.kill_guardian(g)
        g.guardian.env.pop("GUARDIAN_GRAFANA_URL", None)
        harness.restart_guardian(g, None)
