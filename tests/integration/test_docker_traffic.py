"""Rollouts of real containers behind a real nginx under steady load (50 requests/s, a new connection
per request): no client request may fail during a canary promote, a rolling promote, a blue-green
switch or a rollback. The figures for the closing note come from benchmarks/docker_rollouts.py.
"""
from __future__ import annotations

import time
import uuid

import pytest

docker = pytest.importorskip("docker")

from demo.loadgen import LoadGenerator  # noqa: E402
from guardian.actuators import ActionRequest  # noqa: E402
from guardian.domain import Action  # noqa: E402


@pytest.fixture
def stack(tmp_path):
    from demo.dockerstack import DockerStack

    try:
        docker.from_env().ping()
    except docker.errors.DockerException as e:
        pytest.skip(f"no Docker engine ({e}); bash scripts/docker-up.sh starts one")
    s = DockerStack(tmp_path, f"gtraffic-{uuid.uuid4().hex[:6]}", replicas=2, drain_seconds=0.5).start()
    yield s
    s.stop()


def run(stack, strategy: str, image: str, actions: list[tuple[Action, int]]) -> dict:
    actuator = stack.actuator()
    load = LoadGenerator([stack.url], rps=50, keepalive=False, max_seconds=120).start()
    try:
        time.sleep(1)
        for i, (action, weight) in enumerate(actions):
            out = actuator.apply(ActionRequest(rollout_id="r1", service=stack.service, image=image, action=action,
                                               weight=weight, key=f"r1:{i}:{action.value}", strategy=strategy))
            assert out.ok, out.detail
            time.sleep(1)
    finally:
        load.stop()
    return load.stats() | {"versions": load.versions}


@pytest.mark.parametrize("strategy, actions", [
    ("canary", [(Action.START, 10), (Action.ADVANCE, 50), (Action.PROMOTE, 100)]),
    ("rolling", [(Action.START, 50), (Action.PROMOTE, 100)]),
    ("blue-green", [(Action.START, 100), (Action.PROMOTE, 100)]),
])
def test_promotes_drop_no_request(stack, strategy, actions):
    stats = run(stack, strategy, "guardian-demo:v3", actions)
    assert stats["dropped"] == 0 and stats["failed"] == 0, stats
    assert stats["versions"]["v3"]["count"] > 0
    assert stack.images() == ["guardian-demo:v3", "guardian-demo:v3"]


def test_rollback_drops_no_request_and_ends_all_traffic_on_stable(stack):
    stats = run(stack, "canary", "guardian-demo:v2", [(Action.START, 25), (Action.ROLLBACK, 0)])
    assert stats["dropped"] == 0, stats
    assert stats["versions"]["v2"]["count"] > 0  # it did get traffic, then none
    assert stats["versions"]["v1"]["last"] > stats["versions"]["v2"]["last"] + 0.9
    assert stack.images() == ["guardian-demo:v1", "guardian-demo:v1"]


def _break_nginx(stack) -> str:
    """Make `nginx -t` fail from now on (the running nginx keeps its configuration); returns the good one."""
    good = stack.nginx.conf_file.read_text()
    stack.nginx.conf_file.write_text(good.replace("http {", "http {\n    no_such_directive on;", 1))
    return good


def test_nginx_t_failing_at_start_leaves_traffic_and_containers_as_they_were(stack):
    """The canary container starts and gets healthy, nginx refuses the new upstream: the canary is
    removed (it never got traffic), nginx keeps serving v1 only, and the failure says why."""
    actuator = stack.actuator()
    good = _break_nginx(stack)
    load = LoadGenerator([stack.url], rps=50, keepalive=False, max_seconds=60).start()
    try:
        time.sleep(0.5)
        out = actuator.apply(ActionRequest(rollout_id="r1", service=stack.service, image="guardian-demo:v3",
                                           action=Action.START, weight=25, key="r1:1:start", strategy="canary"))
        time.sleep(1)
    finally:
        load.stop()
    assert not out.ok
    assert "nginx refused the new weights" in out.detail and "no_such_directive" in out.detail
    assert "removed 1 new replica(s) that never got traffic" in out.detail
    assert stack.images() == ["guardian-demo:v1", "guardian-demo:v1"]
    stats = load.stats()
    assert stats["failed"] == 0 and stats["dropped"] == 0 and set(load.versions) == {"v1"}, stats
    stack.nginx.conf_file.write_text(good)  # repaired: the same key is tried again and now works
    out = actuator.apply(ActionRequest(rollout_id="r1", service=stack.service, image="guardian-demo:v3",
                                       action=Action.START, weight=25, key="r1:1:start", strategy="canary"))
    assert out.ok, out.detail
    assert stack.images() == ["guardian-demo:v1", "guardian-demo:v1", "guardian-demo:v3"]


def test_nginx_t_failing_at_rollback_keeps_the_canary_serving_until_a_retry_succeeds(stack):
    actuator = stack.actuator()

    def apply(action: Action, weight: int, key: str):
        return actuator.apply(ActionRequest(rollout_id="r1", service=stack.service, image="guardian-demo:v3",
                                            action=action, weight=weight, key=key, strategy="canary"))

    assert apply(Action.START, 25, "r1:1:start").ok
    good = _break_nginx(stack)
    out = apply(Action.ROLLBACK, 0, "r1:2:rollback")
    assert not out.ok and "nginx refused" in out.detail
    # not half-applied: the canary still runs and still gets its share (nginx kept its weights)
    assert stack.images() == ["guardian-demo:v1", "guardian-demo:v1", "guardian-demo:v3"]
    seen = {LoadGenerator.version_of(stack.url) for _ in range(40)}
    assert seen == {"v1", "v3"}
    stack.nginx.conf_file.write_text(good)
    out = apply(Action.ROLLBACK, 0, "r1:2:rollback")
    assert out.ok, out.detail
    assert stack.images() == ["guardian-demo:v1", "guardian-demo:v1"]


def test_fixed_host_ports_do_not_clash(tmp_path):
    """A service published on a fixed host port: the canary gets a free loopback port of its own
    instead of failing on 'port is already allocated', and the old replica keeps its port."""
    from demo.stack import free_port
    from guardian.actuators.containers import SERVICE_LABEL, Containers
    from guardian.actuators.docker import DockerActuator

    client = docker.from_env()
    name, port = f"gport-{uuid.uuid4().hex[:6]}", free_port()
    client.containers.run("guardian-demo:v1", name=f"{name}-0", detach=True, labels={SERVICE_LABEL: name},
                          ports={"8000/tcp": ("127.0.0.1", port)})
    try:
        actuator = DockerActuator(Containers(client, health_timeout=20, drain_seconds=0.1, stop_timeout=2))
        out = actuator.apply(ActionRequest(rollout_id="r1", service=name, image="guardian-demo:v3",
                                           action=Action.START, weight=10, key="r1:1:start", strategy="canary"))
        assert out.ok, out.detail
        canary = client.containers.get(out.data["canary"][0])
        bound = canary.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]
        assert bound["HostIp"] == "127.0.0.1" and int(bound["HostPort"]) != port
        assert LoadGenerator.version_of(f"http://127.0.0.1:{port}/") == "v1"
    finally:
        for c in client.containers.list(all=True, filters={"label": f"{SERVICE_LABEL}={name}"}):
            c.remove(force=True)
