"""The swarm actuator against the real Docker engine in swarm mode: no mock of Docker anywhere.

Each test makes its own service (`gtest-swarm-<random>-<n>`, from the local guardian-demo images, two
replicas, no published port: `EndpointSpec` mode dnsrr) and removes it after. The engine is made a swarm
manager if it is not one yet (`docker swarm init --advertise-addr 127.0.0.1`), and the swarm is left
in place: other tests on the same engine may use it. Nothing is pulled; the only image built is a
throwaway one whose healthcheck never passes. Updates run with a 1 s delay and monitor.
"""
from __future__ import annotations

import contextlib
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
import requests

from guardian.actuators import ActionRequest, registry
from guardian.actuators.swarm import HOLD_CONSTRAINT, SwarmActuator, SwarmSettings
from guardian.domain import Action

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

V1, V2, V3 = "guardian-demo:v1", "guardian-demo:v2", "guardian-demo:v3"
FAST = SwarmSettings(update_delay=1.0, update_monitor=1.0, poll_interval=0.1, start_timeout=30, wait_timeout=40)
PREFIX = f"gtest-swarm-{uuid.uuid4().hex[:8]}"
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    try:
        c = docker.from_env(version="1.41", timeout=30)
        c.ping()
    except ENGINE_ERRORS as e:
        pytest.skip(f"no Docker engine answers ({e}); scripts/docker-up.sh starts one")
    from demo.images import ensure_images

    ensure_images(c, log=lambda *a, **k: None)  # builds whatever demo image is missing; pulls nothing
    swarm = c.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        try:
            c.swarm.init(advertise_addr="127.0.0.1")
        except docker.errors.APIError as e:
            if "already part of a swarm" not in str(e):  # someone else initialised it meanwhile: fine
                raise
    elif not swarm.get("ControlAvailable"):
        pytest.skip("this engine is a swarm worker, not a manager: services cannot be managed from it")
    yield c
    for s in c.api.services(filters={"name": PREFIX}):  # anything a failed test left behind
        if s["Spec"]["Name"].startswith(PREFIX):
            c.api.remove_service(s["ID"])
    c.close()  # the swarm stays: others may use it


def serving(client: docker.DockerClient, service_id: str) -> dict[str, int]:
    """Tasks running and meant to, per image."""
    out: dict[str, int] = {}
    for t in client.api.tasks(filters={"service": service_id}):
        if t["Status"]["State"] == "running" and t["DesiredState"] == "running":
            image = t["Spec"]["ContainerSpec"]["Image"]
            out[image] = out.get(image, 0) + 1
    return out


def wait_for(predicate: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def create_service(client: docker.DockerClient, name: str, replicas: int = 2, image: str = V1) -> str:
    spec = {
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {"Image": image, "Labels": {"guardian.version": image.rsplit(":", 1)[1]},
                              "StopGracePeriod": 2_000_000_000},
            "RestartPolicy": {"Condition": "any", "Delay": 500_000_000},
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "EndpointSpec": {"Mode": "dnsrr"},  # no VIP, no published port: nothing can clash
        # what someone else's deploy uses (observe): start-first, a 1 s monitor (Swarm's default: stop-first, 5 s)
        "UpdateConfig": {"Parallelism": 1, "Monitor": 1_000_000_000, "Order": "start-first"},
        "RollbackConfig": {"Parallelism": 1, "Monitor": 1_000_000_000, "Order": "start-first"},
    }
    api = client.api
    return api._result(api._post_json(api._url("/services/create"), data=spec), True)["ID"]


POOLED = 9  # the tests below that take a fresh two-replica v1 service


@pytest.fixture(scope="module")
def pool(client: docker.DockerClient) -> list[tuple[str, str]]:
    """Fresh services made all at once (Swarm starts their tasks in parallel), handed out one per test:
    a second or two per test saved. Whatever is left is removed with the module."""
    made = []
    for n in range(POOLED):
        name = f"{PREFIX}-{n}"
        made.append((name, create_service(client, name)))
    return made


@pytest.fixture
def service(client: docker.DockerClient, pool: list[tuple[str, str]]) -> Iterator[Callable[..., tuple[str, str]]]:
    """Factory: `service()` -> (name, id) of a service with two tasks of v1 running; removed after."""
    taken: list[str] = []

    def make() -> tuple[str, str]:
        if pool:
            name, sid = pool.pop()
        else:
            name = f"{PREFIX}-x{uuid.uuid4().hex[:4]}"
            sid = create_service(client, name)
        taken.append(sid)
        wait_for(lambda: serving(client, sid) == {V1: 2}, what=f"2 tasks of {V1} in {name}")
        return name, sid

    yield make
    for sid in taken:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_service(sid)


@pytest.fixture
def actuator(client: docker.DockerClient) -> SwarmActuator:
    return SwarmActuator(client=client, settings=FAST)


class Keys:
    def __init__(self, rollout: str = "r1") -> None:
        self.rollout, self.seq = rollout, 0

    def __call__(self, service: str, image: str, action: Action, **kw: Any) -> ActionRequest:
        self.seq += 1
        return ActionRequest(rollout_id=self.rollout, service=service, image=image, action=action, weight=0,
                             key=f"{self.rollout}:{self.seq}:{action.value}", strategy=kw.pop("strategy", "rolling"),
                             **kw)


class Sampler:
    """Counts the serving tasks every 50 ms in a thread, to catch any dip below the capacity."""

    def __init__(self, client: docker.DockerClient, service_id: str) -> None:
        self.client, self.sid = client, service_id
        self.samples: list[dict[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(serving(self.client, self.sid))
            time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_start_start_first_never_drops_below_capacity_and_promote_completes(client, service, actuator):
    name, sid = service()
    req = Keys()
    with Sampler(client, sid) as sampler:
        start = actuator.apply(req(name, V3, Action.START))
        assert start.ok, start.detail
        assert start.data["tasks"].get(V3, 0) >= 1
        assert actuator.verify(req(name, V3, Action.START)).ok
        promote = actuator.apply(req(name, V3, Action.PROMOTE))
        assert promote.ok, promote.detail
    assert serving(client, sid) == {V3: 2}
    assert any(len(s) == 2 for s in sampler.samples), "never saw both images running at once"
    totals = [sum(s.values()) for s in sampler.samples]
    assert len(totals) > 20 and min(totals) >= 2, f"capacity dipped: {min(totals)} running tasks"
    spec = client.api.inspect_service(sid)
    assert spec["UpdateStatus"]["State"] == "completed"
    update = spec["Spec"]["UpdateConfig"]
    assert (update["Order"], update["Parallelism"], update["FailureAction"]) == ("start-first", 1, "pause")
    # per-task version labels, for Prometheus (old tasks keep the old value)
    assert {t.version for t in actuator.tasks_by_image(name)[V3]} == {"v3"}
    assert promote.data["progress"][-1]["tasks"] == {V3: 2}
    assert actuator.verify(req(name, V3, Action.PROMOTE)).ok


def test_start_v2_then_rollback_returns_every_task_to_v1(client, service, actuator):
    name, sid = service()
    req = Keys()
    assert actuator.apply(req(name, V2, Action.START)).ok
    assert serving(client, sid).get(V2, 0) >= 1
    rollback = req(name, V2, Action.ROLLBACK)
    outcome = actuator.apply(rollback)
    assert outcome.ok, outcome.detail
    assert "rollback=previous" in outcome.detail  # Swarm's own rollback: PreviousSpec was START's
    assert serving(client, sid) == {V1: 2}
    assert client.api.inspect_service(sid)["UpdateStatus"]["State"] == "rollback_completed"
    assert actuator.verify(rollback).ok
    version = client.api.inspect_service(sid)["Version"]["Index"]
    assert actuator.apply(rollback) is outcome  # same key: nothing done again
    assert client.api.inspect_service(sid)["Version"]["Index"] == version


def test_detect_update_reports_both_images_while_updating(client, service):
    name, sid = service()
    slow = SwarmActuator(client=client, settings=SwarmSettings(update_delay=5, update_monitor=1, poll_interval=0.1,
                                                               start_timeout=30, wait_timeout=30))
    assert slow.detect_update(name) is None  # a fresh service: no update to report
    assert slow.apply(Keys()(name, V3, Action.START)).ok
    info = slow.detect_update(name)
    assert info is not None and info.in_progress and not info.paused
    assert (info.state, info.old_image, info.new_image, info.replicas) == ("updating", V1, V3, 2)
    assert info.running == {V1: 1, V3: 1}
    per_image = slow.tasks_by_image(name)
    assert {image: len(tasks) for image, tasks in per_image.items()} == {V1: 1, V3: 1}
    task = per_image[V3][0]
    assert task.state == "running" and task.node and task.id and task.version == "v3"
    assert per_image[V1][0].version == "v1"


def test_scale_adds_a_replica_once_per_key(client, service, actuator):
    name, sid = service()
    req = Keys()
    scale = req(name, V1, Action.SCALE, replicas=1)
    outcome = actuator.apply(scale)
    assert outcome.ok, outcome.detail
    assert (outcome.data["from"], outcome.data["to"]) == (2, 3)
    assert serving(client, sid) == {V1: 3}
    assert client.api.inspect_service(sid)["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
    assert actuator.verify(scale).ok
    assert actuator.apply(scale) is outcome  # applied twice: still 3
    assert serving(client, sid) == {V1: 3}
    down = actuator.apply(req(name, V1, Action.SCALE, replicas=-10))  # never below one
    assert down.ok and down.data["to"] == 1, down.detail


def test_image_not_present_locally_fails_and_leaves_the_service_on_v1(client, service, actuator):
    name, sid = service()
    before = client.api.inspect_service(sid)["Version"]["Index"]
    req = Keys()
    start = actuator.apply(req(name, "guardian-demo:nope", Action.START))
    assert not start.ok
    assert "'guardian-demo:nope' is not present locally" in start.detail
    assert client.api.inspect_service(sid)["Version"]["Index"] == before  # never changed
    # what the engine does after a failed START: roll back, which has nothing to undo
    rollback = actuator.apply(req(name, "guardian-demo:nope", Action.ROLLBACK))
    assert rollback.ok and "nothing to roll back" in rollback.detail
    assert serving(client, sid) == {V1: 2}


def test_healthcheck_never_passing_fails_start_with_the_reason_and_rollback_restores_v1(client, service, actuator):
    bad = f"{PREFIX}-unhealthy:1"
    dockerfile = (f"FROM {V3}\nHEALTHCHECK --interval=1s --timeout=1s --retries=2 "
                  'CMD ["/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9/"]\n')
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=bad, rm=True)
    try:
        name, sid = service()
        req = Keys()
        start = actuator.apply(req(name, bad, Action.START))
        assert not start.ok
        assert "Swarm paused the update" in start.detail and "healthcheck never passed" in start.detail, start.detail
        assert serving(client, sid) == {V1: 2}  # start-first: the old tasks never stopped
        rollback = actuator.apply(req(name, bad, Action.ROLLBACK))
        assert rollback.ok, rollback.detail
        assert serving(client, sid) == {V1: 2}
        assert client.api.inspect_service(sid)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == V1
    finally:
        for s in client.api.services(filters={"name": PREFIX}):
            if s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == bad:
                client.api.remove_service(s["ID"])
        client.images.remove(bad, force=True)


def test_pause_holds_the_mix_and_resume_continues_without_redeploying(client, service):
    name, sid = service()
    act = SwarmActuator(client=client, settings=SwarmSettings(update_delay=1.5, update_monitor=1,
                                                              poll_interval=0.1, start_timeout=30, wait_timeout=40))
    req = Keys()
    assert act.apply(req(name, V3, Action.START)).ok
    pause = act.apply(req(name, V3, Action.PAUSE))
    assert pause.ok, pause.detail
    held_at = serving(client, sid)
    assert held_at == {V1: 1, V3: 1}
    first_v3 = {t.id for t in act.tasks_by_image(name)[V3]}
    time.sleep(3.5)  # without the hold, the 1.5 s delay + ~1.5 s start would have replaced the last v1 task
    assert serving(client, sid) == held_at
    info = act.detect_update(name)
    assert info is not None and info.held and info.paused and (info.old_image, info.new_image) == (V1, V3)
    waiting = [t for t in act.tasks_by_image(name, running_only=False).get(V3, []) if t.state == "pending"]
    assert waiting and "no suitable node" in waiting[0].error  # the next task, parked by the hold
    assert act.verify(req(name, V3, Action.PAUSE)).ok

    resume = act.apply(req(name, V3, Action.RESUME))
    assert resume.ok, resume.detail
    promote = act.apply(req(name, V3, Action.PROMOTE))
    assert promote.ok, promote.detail
    assert serving(client, sid) == {V3: 2}
    assert first_v3 <= {t.id for t in act.tasks_by_image(name)[V3]}  # the task updated before the hold stayed
    spec = client.api.inspect_service(sid)["Spec"]
    assert HOLD_CONSTRAINT not in str(spec) and "guardian.hold" not in spec.get("Labels", {})


def test_rollback_after_a_hold_goes_back_to_the_kept_template(client, service, actuator):
    """After a PAUSE, Swarm's PreviousSpec is the *new* image: rollback=previous would not go back."""
    name, sid = service()
    req = Keys()
    assert actuator.apply(req(name, V2, Action.START)).ok
    assert actuator.apply(req(name, V2, Action.PAUSE)).ok
    outcome = actuator.apply(req(name, V2, Action.ROLLBACK))
    assert outcome.ok, outcome.detail
    assert "previous template" in outcome.detail
    assert serving(client, sid) == {V1: 2}
    spec = client.api.inspect_service(sid)["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == V1 and HOLD_CONSTRAINT not in str(spec)


def test_observe_start_only_reports_and_rollback_is_swarms_own(client, service, actuator):
    name, sid = service()
    before = client.api.inspect_service(sid)
    req = Keys()
    outcome = actuator.apply(req(name, V3, Action.START, strategy="observe"))
    assert outcome.ok and outcome.data["tasks"] == {V1: 2}, outcome.detail
    assert client.api.inspect_service(sid)["Version"]["Index"] == before["Version"]["Index"]
    # someone else deploys v3, the way `docker service update --image` does
    spec = before["Spec"]
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = V3
    api = client.api
    api._result(api._post_json(api._url("/services/{0}/update", sid), data=spec,
                               params={"version": before["Version"]["Index"]}), True)
    wait_for(lambda: serving(client, sid).get(V3, 0) >= 1, what="their first v3 task")
    rollback = actuator.apply(req(name, V3, Action.ROLLBACK, strategy="observe"))
    assert rollback.ok and "rollback=previous" in rollback.detail, rollback.detail
    assert serving(client, sid) == {V1: 2}


def test_unknown_service_is_a_clear_failure(client, actuator):
    missing = f"{PREFIX}-missing"
    req = Keys()
    for action in (Action.START, Action.ROLLBACK, Action.SCALE, Action.PROMOTE):
        outcome = actuator.apply(req(missing, V3, action, replicas=1))
        assert not outcome.ok and f"service '{missing}' not found" in outcome.detail, outcome.detail
    assert not actuator.verify(req(missing, V3, Action.START)).ok
    with pytest.raises(Exception, match="not found"):
        actuator.detect_update(missing)


def test_unreachable_daemon_is_a_clear_failure(tmp_path):
    act = SwarmActuator(base_url=f"unix://{tmp_path}/no-docker.sock")
    outcome = act.apply(Keys()("checkout", V3, Action.START))
    assert not outcome.ok and "Docker daemon unreachable" in outcome.detail, outcome.detail


def test_registry_builds_swarm_targets(client):
    assert "swarm" in registry.names()
    default = registry.create("swarm:", docker_client=client, swarm_settings=FAST, timeout=5, retries=1)
    assert isinstance(default, SwarmActuator) and default.service is None and default.settings is FAST
    named = registry.create("swarm:shop_web", docker_client=client)
    assert isinstance(named, SwarmActuator) and named.service == "shop_web"
    assert registry.validate_target("swarm:shop_web") is None
    assert "not a Swarm service name" in (registry.validate_target("swarm:bad name!") or "")
