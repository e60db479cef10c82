"""BAKE with the swarm actuator against the real Docker engine in swarm mode (as test_swarm_actuator.py:
its own two-replica services of the local guardian-demo images, removed after; nothing mocked).

A bake completes Swarm's update to 100% and keeps the previous spec where ROLLBACK finds it: Swarm's
PreviousSpec, so that a rollback during the bake is Swarm's own `rollback=previous`, start-first.
"""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import docker
import pytest

from guardian.actuators.swarm import SwarmActuator
from guardian.domain import Action
from tests.integration.test_swarm_actuator import (
    FAST,
    V1,
    V3,
    Keys,
    Sampler,
    client,  # noqa: F401  (the module's engine, a swarm manager)
    create_service,
    serving,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PREFIX = f"gtest-swarmbake-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def service(client: docker.DockerClient) -> Iterator[Callable[[], tuple[str, str]]]:  # noqa: F811
    """Factory: `service()` -> (name, id) of a fresh service with two tasks of v1 running; removed after."""
    made: list[str] = []

    def make() -> tuple[str, str]:
        name = f"{PREFIX}-{len(made)}"
        sid = create_service(client, name)
        made.append(sid)
        wait_for(lambda: serving(client, sid) == {V1: 2}, what=f"2 tasks of {V1} in {name}")
        return name, sid

    yield make
    for sid in made:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_service(sid)


def test_bake_completes_the_update_and_a_rollback_during_it_is_swarms_own(client, service):  # noqa: F811
    name, sid = service()
    actuator, req = SwarmActuator(client=client, settings=FAST), Keys()
    assert actuator.apply(req(name, V3, Action.START)).ok
    bake = req(name, V3, Action.BAKE)
    out = actuator.apply(bake)
    assert out.ok, out.detail
    assert serving(client, sid) == {V3: 2}  # all traffic on the new version: the update completed
    assert client.api.inspect_service(sid)["UpdateStatus"]["State"] == "completed"
    assert out.data["warm"] == {"previous_image": V1, "rollback": "Swarm's rollback=previous (PreviousSpec)",
                                "running": 0}
    assert f"{V1} kept for a rollback during the bake by Swarm's rollback=previous" in out.detail, out.detail
    assert actuator.verify(bake).ok
    assert actuator.apply(bake) is out

    # PAUSE / RESUME during the bake post no spec: PreviousSpec is still v1
    version = client.api.inspect_service(sid)["Version"]["Index"]
    assert actuator.apply(req(name, V3, Action.PAUSE)).ok and actuator.apply(req(name, V3, Action.RESUME)).ok
    assert client.api.inspect_service(sid)["Version"]["Index"] == version

    with Sampler(client, sid) as sampler:
        rollback = actuator.apply(req(name, V3, Action.ROLLBACK))
    assert rollback.ok and "rollback=previous" in rollback.detail, rollback.detail
    assert serving(client, sid) == {V1: 2}
    assert min(sum(s.values()) for s in sampler.samples) >= 2  # start-first: never below the replicas


def test_promote_after_the_bake_keeps_the_new_version_and_a_fresh_actuator_still_knows_the_previous(
        client, service):  # noqa: F811
    name, sid = service()
    req = Keys()
    assert SwarmActuator(client=client, settings=FAST).apply(req(name, V3, Action.START)).ok
    restarted = SwarmActuator(client=client, settings=FAST)  # the guardian restarted: nothing in memory
    bake = req(name, V3, Action.BAKE)
    out = restarted.apply(bake)
    assert out.ok and out.data["warm"]["previous_image"] == V1, out.detail  # from the service's label
    promote = req(name, V3, Action.PROMOTE)
    assert restarted.apply(promote).ok and restarted.verify(promote).ok
    assert serving(client, sid) == {V3: 2}


def test_bake_without_anything_to_go_back_to_is_refused_before_waiting(client, service):  # noqa: F811
    name, sid = service()
    out = SwarmActuator(client=client, settings=FAST).apply(Keys("never-started")(name, V3, Action.BAKE))
    assert not out.ok and "nothing to go back to during a bake" in out.detail, out.detail
    assert serving(client, sid) == {V1: 2}
