"""BAKE with the `docker` actuator against the REAL Docker engine and, for traffic, a real nginx under
steady load (scripts/docker-up.sh starts the engine and builds guardian-demo:v1/v2/v3).

A bake keeps the previous version RUNNING and WARM, out of rotation: its replicas stay up, in nginx as
`backup` servers (nginx has no weight 0), so that a ROLLBACK during the bake is one reload back to them,
and a PROMOTE after it removes them as PROMOTE always does.
"""
from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest

docker = pytest.importorskip("docker")

from demo.loadgen import LoadGenerator  # noqa: E402
from guardian.actuators import ActionRequest  # noqa: E402
from guardian.actuators.containers import SERVICE_LABEL, Containers  # noqa: E402
from guardian.actuators.docker import DockerActuator, TargetsFile  # noqa: E402
from guardian.domain import Action  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

V1, V3 = "guardian-demo:v1", "guardian-demo:v3"


@pytest.fixture
def service(docker_client) -> Iterator[str]:
    """Two running v1 replicas of a fresh service (no nginx); everything labelled with it is removed after."""
    name = f"gbake-{uuid.uuid4().hex[:8]}"
    for i in range(2):
        docker_client.containers.run(V1, name=f"{name}-v1-{i}", detach=True, labels={SERVICE_LABEL: name},
                              ports={"8000/tcp": ("127.0.0.1", None)})
    yield name
    for c in docker_client.containers.list(all=True, filters={"label": f"{SERVICE_LABEL}={name}"}):
        c.remove(force=True)


def make_actuator(docker_client, tmp_path) -> DockerActuator:
    return DockerActuator(Containers(docker_client, health_timeout=20, drain_seconds=0.2, stop_timeout=2),
                          targets=TargetsFile(tmp_path / "targets"))


class Keys:
    """Requests of one rollout, each with the next sequence number in its key (as the engine makes them)."""

    def __init__(self, service: str, strategy: str = "canary", rollout: str = "r1") -> None:
        self.service, self.strategy, self.rollout, self.seq = service, strategy, rollout, 0

    def __call__(self, action: Action, weight: int, image: str = V3) -> ActionRequest:
        self.seq += 1
        return ActionRequest(rollout_id=self.rollout, service=self.service, image=image, action=action,
                             weight=weight, key=f"{self.rollout}:{self.seq}:{action.value}", strategy=self.strategy)


def running(docker_client, service: str) -> list[str]:
    cs = docker_client.containers.list(filters={"label": f"{SERVICE_LABEL}={service}", "status": "running"})
    return sorted(c.labels.get("guardian.image") or c.attrs["Config"]["Image"] for c in cs)


def test_canary_bake_brings_the_new_version_to_capacity_and_keeps_every_old_replica(docker_client, service, tmp_path):
    actuator, req = make_actuator(docker_client, tmp_path), Keys(service)
    assert actuator.apply(req(Action.START, 25)).ok
    assert actuator.apply(req(Action.ADVANCE, 100)).ok
    assert running(docker_client, service) == [V1, V1, V3]  # a step at 100%: one canary replica, the old ones idle
    bake = req(Action.BAKE, 100)
    out = actuator.apply(bake)
    assert out.ok, out.detail
    assert running(docker_client, service) == [V1, V1, V3, V3]  # N new, and the N old kept running
    assert f"all traffic on {V3} (2 replica(s)); {V1} kept warm out of rotation: 2 replica(s) at weight 0" \
        in out.detail, out.detail
    assert out.data["warm"]["image"] == V1 and len(out.data["warm"]["replicas"]) == 2
    assert out.data["warm"]["weight"] == 0
    assert actuator.verify(bake).ok

    # idempotent: the same key again, and after a crash a fresh actuator with the same key, start nothing
    assert actuator.apply(bake) is out
    again = make_actuator(docker_client, tmp_path).apply(bake)
    assert again.ok and again.data["warm"] == out.data["warm"], again.detail
    assert running(docker_client, service) == [V1, V1, V3, V3]

    # PAUSE / RESUME during the bake change nothing
    assert actuator.apply(req(Action.PAUSE, 100)).ok and actuator.apply(req(Action.RESUME, 100)).ok
    assert running(docker_client, service) == [V1, V1, V3, V3]

    promote = req(Action.PROMOTE, 100)
    assert actuator.apply(promote).ok
    assert running(docker_client, service) == [V3, V3]  # the warm ones are removed by PROMOTE
    assert actuator.verify(promote).ok
    assert not actuator.verify(bake).ok  # nothing is kept warm any more


def test_rolling_bake_starts_one_old_replica_again_and_rollback_restores_capacity(docker_client, service, tmp_path):
    actuator, req = make_actuator(docker_client, tmp_path), Keys(service, "rolling")
    assert actuator.apply(req(Action.START, 50)).ok
    assert actuator.apply(req(Action.ADVANCE, 100)).ok
    assert running(docker_client, service) == [V3, V3]  # rolling replaced every old replica
    bake = req(Action.BAKE, 100)
    assert not actuator.verify(bake).ok  # before the bake: nothing is warm
    out = actuator.apply(bake)
    assert out.ok, out.detail
    assert running(docker_client, service) == [V1, V3, V3]
    assert out.data["warm"]["image"] == V1 and len(out.data["warm"]["replicas"]) == 1
    assert actuator.verify(bake).ok
    # Prometheus sees the warm replica as the baseline arm
    arms = TargetsFile(tmp_path / "targets").read(service)
    assert sorted(track for _, track in arms) == ["baseline", "canary", "canary"]

    rollback = req(Action.ROLLBACK, 0)
    out = actuator.apply(rollback)
    assert out.ok, out.detail
    assert running(docker_client, service) == [V1, V1]  # the warm one, and one more to the capacity
    assert actuator.verify(rollback).ok


def test_a_compose_service_bakes_and_rolls_back_by_its_compose_labels(docker_client, tmp_path):
    project, name = f"gbakeproj{uuid.uuid4().hex[:6]}", "web"
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": name,
              "com.docker.compose.container-number": "1"}
    docker_client.containers.run(V1, detach=True, labels=labels, ports={"8000/tcp": ("127.0.0.1", None)})
    try:
        actuator = DockerActuator(Containers(docker_client, project=project, health_timeout=20, drain_seconds=0.1,
                                             stop_timeout=2))
        req = Keys(name, "blue-green")
        assert actuator.apply(req(Action.START, 100)).ok
        out = actuator.apply(req(Action.BAKE, 100))
        assert out.ok and out.data["warm"]["image"] == V1, out.detail
        out = actuator.apply(req(Action.ROLLBACK, 0))
        assert out.ok, out.detail
        kept = docker_client.containers.list(filters={"label": f"com.docker.compose.project={project}"})
        assert [c.attrs["Config"]["Image"] for c in kept] == [V1]
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)


# -- behind a real nginx, under load ---------------------------------------------------------------------
@pytest.fixture
def stack(docker_client, tmp_path):
    from demo.dockerstack import DockerStack

    s = DockerStack(tmp_path, f"gbaketraffic-{uuid.uuid4().hex[:6]}", replicas=2, drain_seconds=0.5).start()
    yield s
    s.stop()


def answered(load: LoadGenerator, version: str) -> int:
    return int(load.versions.get(version, {}).get("count", 0))


def bake_behind_nginx(stack, load: LoadGenerator) -> tuple[DockerActuator, Keys]:
    """START 25%, ADVANCE to 100%, BAKE; then, during 2 s of the bake, v1 answers nothing."""
    actuator, req = stack.actuator(), Keys(stack.service)
    for action, weight in ((Action.START, 25), (Action.ADVANCE, 100)):
        out = actuator.apply(req(action, weight))
        assert out.ok, out.detail
    bake = req(Action.BAKE, 100)
    out = actuator.apply(bake)
    assert out.ok and "(nginx `backup`" in out.detail, out.detail
    assert actuator.verify(bake).ok
    assert stack.images() == [V1, V1, V3, V3]
    upstream = stack.nginx.upstream_file.read_text()
    assert upstream.count(" backup;  # baseline") == 2 and upstream.count(" down;") == 0, upstream
    time.sleep(0.5)  # requests sent before the reload was confirmed are answered by now
    before = answered(load, "v1")
    time.sleep(2)
    assert answered(load, "v1") == before, "the warm old version got traffic during the bake"
    assert answered(load, "v3") > 50
    return actuator, req


def test_rollback_during_the_bake_drops_nothing_and_ends_all_traffic_on_the_warm_version(stack):
    load = LoadGenerator([stack.url], rps=50, keepalive=False, max_seconds=120).start()
    try:
        time.sleep(1)
        actuator, req = bake_behind_nginx(stack, load)
        warm = {r.id for r in actuator.containers.replicas(stack.service) if r.image == V1}
        rollback = req(Action.ROLLBACK, 0)
        out = actuator.apply(rollback)
        assert out.ok, out.detail
        rolled_back_at = time.monotonic()
        time.sleep(1.5)
    finally:
        load.stop()
    stats = load.stats()
    assert stats["failed"] == 0 and stats["dropped"] == 0, stats
    assert load.versions["v1"]["last"] > rolled_back_at + 1  # all traffic on v1 again
    assert load.versions["v3"]["last"] < rolled_back_at + 0.2
    assert stack.images() == [V1, V1]
    assert {r.id for r in actuator.containers.replicas(stack.service)} == warm  # the warm ones: no cold start
    assert actuator.verify(rollback).ok


def test_promote_after_the_bake_removes_the_old_replicas_and_drops_nothing(stack):
    load = LoadGenerator([stack.url], rps=50, keepalive=False, max_seconds=120).start()
    try:
        time.sleep(1)
        actuator, req = bake_behind_nginx(stack, load)
        out = actuator.apply(req(Action.PROMOTE, 100))
        assert out.ok, out.detail
        time.sleep(1)
    finally:
        load.stop()
    stats = load.stats()
    assert stats["failed"] == 0 and stats["dropped"] == 0, stats
    assert stack.images() == [V3, V3]
    assert "backup" not in stack.nginx.upstream_file.read_text()
