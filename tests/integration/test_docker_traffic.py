"""Rollouts of real containers behind a real nginx under steady load (50 requests/s, a new connection
per request): no client request may fail during a canary promote, a rolling promote, a blue-green
switch or a rollback. The figures for the closing note come from benchmarks/docker_rollouts.py.
"""
from __future__ import annotations

import time
import uuid

import pytest

docker = pytest.importorskip("docker")

from guardian.actuators import ActionRequest  # noqa: E402
from guardian.demo.loadgen import LoadGenerator  # noqa: E402
from guardian.domain import Action  # noqa: E402


@pytest.fixture
def stack(tmp_path):
    from guardian.demo.dockerstack import DockerStack

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
