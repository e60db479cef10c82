"""The `docker` actuator against the REAL Docker engine (started by scripts/docker-up.sh), with the
demo images built locally: guardian-demo:v1 (healthy), :v2 (20% 5xx), :v3 (healthy).

Every test runs its own service (a unique name) of two v1 replicas, found by label, and removes
every container it made. Traffic through nginx is tested in test_nginx_actuator.py and end to end
in test_docker_rollouts.py; here the containers themselves are checked.
"""
from __future__ import annotations

import contextlib
import io
import json
import tarfile
import uuid
from collections.abc import Iterator

import pytest

docker = pytest.importorskip("docker")

from guardian.actuators import ActionRequest, registry  # noqa: E402
from guardian.actuators.containers import SERVICE_LABEL, Containers  # noqa: E402
from guardian.actuators.docker import DockerActuator, TargetsFile  # noqa: E402
from guardian.domain import Action  # noqa: E402


def _image(docker_client, tag: str, dockerfile: str) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    docker_client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True)
    return tag


@pytest.fixture(scope="module")
def broken_images(docker_client):
    """Images that start but never get healthy, and that exit at once."""
    unhealthy = _image(docker_client, "guardian-demo:test-unhealthy", 'FROM guardian-demo:v1\n'
                       'HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD ["/bin/sh", "-c", "exit 1"]\n')
    crashing = _image(docker_client, "guardian-demo:test-crash", 'FROM guardian-demo:v1\n'
                      'ENTRYPOINT ["/bin/sh", "-c", "echo boom: missing config >&2; exit 3"]\n')
    return unhealthy, crashing


@pytest.fixture
def service(docker_client) -> Iterator[str]:
    """Two running v1 replicas of a fresh service; everything labelled with it is removed after."""
    name = f"gtest-{uuid.uuid4().hex[:8]}"
    for i in range(2):
        docker_client.containers.run("guardian-demo:v1", name=f"{name}-v1-{i}", detach=True,
                              labels={SERVICE_LABEL: name, "app.owner": "tests"}, environment={"APP_MODE": "prod"},
                              ports={"8000/tcp": ("127.0.0.1", None)})
    yield name
    for c in docker_client.containers.list(all=True, filters={"label": f"{SERVICE_LABEL}={name}"}):
        c.remove(force=True)


@pytest.fixture
def actuator(docker_client, tmp_path) -> DockerActuator:
    return DockerActuator(Containers(docker_client, health_timeout=20, drain_seconds=0.2, stop_timeout=2),
                          targets=TargetsFile(tmp_path / "targets"))


def req(service: str, action: Action, image: str = "guardian-demo:v3", *, weight: int = 10,
        strategy: str = "canary", key: str | None = None, replicas: int = 0, rollout: str = "r1") -> ActionRequest:
    return ActionRequest(rollout_id=rollout, service=service, image=image, action=action, weight=weight,
                         key=key or f"{rollout}:{uuid.uuid4().hex[:6]}:{action.value}", strategy=strategy,
                         replicas=replicas)


def images_running(docker_client, service: str) -> list[str]:
    cs = docker_client.containers.list(filters={"label": f"{SERVICE_LABEL}={service}", "status": "running"})
    return sorted(c.labels.get("guardian.image") or c.attrs["Config"]["Image"] for c in cs)


def test_canary_start_then_promote_replaces_every_replica(docker_client, service, actuator, tmp_path):
    out = actuator.apply(req(service, Action.START, weight=10))
    assert out.ok, out.detail
    assert images_running(docker_client, service) == ["guardian-demo:v1", "guardian-demo:v1", "guardian-demo:v3"]
    assert actuator.verify(req(service, Action.START)).ok
    canary = docker_client.containers.get(out.data["canary"][0])
    # the service's configuration, minus the old image's own: env, labels; a fresh loopback port
    assert "APP_MODE=prod" in canary.attrs["Config"]["Env"] and canary.labels["app.owner"] == "tests"
    assert "DEMO_VERSION=v3" in canary.attrs["Config"]["Env"]  # the new image's own ENV, not v1's
    assert canary.labels["guardian.previous-image"] == "guardian-demo:v1"
    assert canary.attrs["State"]["Health"]["Status"] == "healthy"
    arms = json.loads((tmp_path / "targets" / f"{service}.json").read_text())
    assert sorted(t["labels"]["track"] for t in arms) == ["baseline", "baseline", "canary"]
    assert all(t["targets"][0].startswith("127.0.0.1:") for t in arms)

    out = actuator.apply(req(service, Action.PROMOTE, weight=100))
    assert out.ok, out.detail
    assert images_running(docker_client, service) == ["guardian-demo:v3", "guardian-demo:v3"]
    assert actuator.verify(req(service, Action.PROMOTE)).ok
    arms = json.loads((tmp_path / "targets" / f"{service}.json").read_text())
    assert [t["labels"]["track"] for t in arms] == ["baseline", "baseline"]


def test_rollback_removes_the_canary_and_keeps_the_old_replicas(docker_client, service, actuator):
    assert actuator.apply(req(service, Action.START, "guardian-demo:v2")).ok
    out = actuator.apply(req(service, Action.ROLLBACK, "guardian-demo:v2", weight=0))
    assert out.ok, out.detail
    assert images_running(docker_client, service) == ["guardian-demo:v1", "guardian-demo:v1"]
    assert actuator.verify(req(service, Action.ROLLBACK, "guardian-demo:v2")).ok


def test_rolling_replaces_start_first_and_rolls_back_to_full_capacity(docker_client, service, actuator):
    out = actuator.apply(req(service, Action.START, strategy="rolling", weight=50))
    assert out.ok, out.detail
    assert images_running(docker_client, service) == ["guardian-demo:v1", "guardian-demo:v3"]
    out = actuator.apply(req(service, Action.ROLLBACK, strategy="rolling", weight=0))
    assert out.ok, out.detail
    assert images_running(docker_client, service) == ["guardian-demo:v1", "guardian-demo:v1"]


def test_blue_green_starts_a_full_green_set_beside_blue(docker_client, service, actuator):
    out = actuator.apply(req(service, Action.START, strategy="blue-green", weight=100))
    assert out.ok, out.detail
    assert images_running(docker_client, service).count("guardian-demo:v3") == 2
    assert actuator.apply(req(service, Action.PROMOTE, strategy="blue-green", weight=100)).ok
    assert images_running(docker_client, service) == ["guardian-demo:v3", "guardian-demo:v3"]


def test_the_same_key_twice_starts_one_canary(docker_client, service, actuator):
    r = req(service, Action.START, key="r1:1:start")
    assert actuator.apply(r).ok and actuator.apply(r).ok
    assert images_running(docker_client, service).count("guardian-demo:v3") == 1


def test_a_fresh_actuator_resumes_from_what_runs(docker_client, service, actuator, tmp_path):
    """After a crash the guardian re-applies the pending action with a new actuator: it converges."""
    assert actuator.apply(req(service, Action.START, key="r1:1:start")).ok
    again = DockerActuator(Containers(docker_client, health_timeout=20, drain_seconds=0.2, stop_timeout=2))
    assert again.apply(req(service, Action.START, key="r1:1:start")).ok
    assert images_running(docker_client, service).count("guardian-demo:v3") == 1


def test_scale_adds_and_removes_stable_replicas(docker_client, service, actuator):
    out = actuator.apply(req(service, Action.SCALE, "guardian-demo:v1", replicas=1))
    assert out.ok, out.detail
    assert images_running(docker_client, service) == ["guardian-demo:v1"] * 3
    assert actuator.apply(req(service, Action.SCALE, "guardian-demo:v1", replicas=-5)).ok
    assert images_running(docker_client, service) == ["guardian-demo:v1"]  # never below one


@pytest.mark.parametrize("image, reason", [
    ("guardian-demo:does-not-exist", "is not on this Docker host"),
    ("guardian-demo:test-unhealthy", "is unhealthy"),
    ("guardian-demo:test-crash", "exited with code 3: boom: missing config"),
])
def test_a_bad_image_fails_with_the_reason_and_leaves_nothing(docker_client, service, actuator, broken_images, image,
                                                               reason):
    out = actuator.apply(req(service, Action.START, image))
    assert not out.ok and reason in out.detail
    assert images_running(docker_client, service) == ["guardian-demo:v1", "guardian-demo:v1"]
    leftovers = docker_client.containers.list(all=True, filters={"label": f"{SERVICE_LABEL}={service}"})
    assert len(leftovers) == 2  # the failed replica was removed, not left exited


def test_an_unknown_service_and_an_unreachable_daemon_are_clear_errors(docker_client, tmp_path):
    out = DockerActuator(Containers(docker_client)).apply(req("gtest-nothing-here", Action.START))
    assert not out.ok and "no running containers of service 'gtest-nothing-here'" in out.detail
    dead = docker.DockerClient(base_url=f"unix://{tmp_path}/nothing.sock", version="1.41", timeout=2)
    out = DockerActuator(Containers(dead)).apply(req("x", Action.START))
    assert not out.ok and out.detail.startswith("Docker engine:")


def test_compose_services_are_found_by_compose_labels(docker_client, actuator):
    project, name = f"gtestproj{uuid.uuid4().hex[:6]}", "web"
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": name,
              "com.docker.compose.container-number": "1"}
    c = docker_client.containers.run("guardian-demo:v1", detach=True, labels=labels,
                                     ports={"8000/tcp": ("127.0.0.1", None)})
    try:
        scoped = DockerActuator(Containers(docker_client, project=project, health_timeout=20, drain_seconds=0.1,
                                           stop_timeout=2))
        out = scoped.apply(req(name, Action.START))
        assert out.ok, out.detail
        new = docker_client.containers.get(out.data["canary"][0])
        assert new.labels["com.docker.compose.project"] == project  # `docker-compose ps` still lists it
        assert "com.docker.compose.container-number" not in new.labels
        assert scoped.apply(req(name, Action.ROLLBACK, weight=0)).ok
    finally:
        for x in docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}):
            x.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)


def test_the_registry_builds_docker_targets_and_rejects_bad_options():
    assert registry.validate_target("docker:") is None
    assert registry.validate_target("docker:?project=shop&port=8000&drain_seconds=0.5") is None
    assert "unknown option 'colour'" in registry.validate_target("docker:?colour=red")
    assert "needs all of nginx_conf" in registry.validate_target("docker:?nginx_conf=/x.conf")
    assert "port must be a port number" in registry.validate_target("docker:?port=http")
