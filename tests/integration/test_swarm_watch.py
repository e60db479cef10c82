"""The Swarm watcher on the real Docker engine in swarm mode: someone runs `docker service update` with the
docker CLI, and the watcher starts an observe rollout for it through the guardian's own components (store,
rules, guard, actuator pool with the real swarm actuator). No mock of Docker; nothing is pulled (the
service runs the local guardian-demo images, whose healthcheck is built in)."""
from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import docker
import pytest

from guardian.actuators.pool import ActuatorPool
from guardian.api.components import Components, build
from guardian.clock import SystemClock
from guardian.domain import Phase, Strategy
from guardian.engine.arms import arm_selectors
from guardian.settings import Settings
from guardian.watchers.swarm import SwarmWatcher
from tests.integration.test_swarm_actuator import FAST, PREFIX, V1, V2, client, serving, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
__all__ = ["client"]  # the module-scoped fixture of test_swarm_actuator: a swarm manager, the demo images built

RULES = """\
service: {service}
arms: {{label: version, canary: "{{version}}", baseline: "{{previous_version}}"}}
checks:
  - {{name: errors-vs-baseline, kind: compare, ratio: errors / requests}}
"""


def docker_cli(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture
def watched_service(client: docker.DockerClient) -> Iterator[str]:
    """A two-replica service of v1 labelled guardian.watch=true, start-first updates, made with the CLI as a
    user would; removed after."""
    name = f"{PREFIX}-watch"
    sid = docker_cli("service", "create", "--detach", "--quiet", "--no-resolve-image", "--name", name,
                     "--label", "guardian.watch=true", "--replicas", "2", "--endpoint-mode", "dnsrr",
                     "--container-label", "guardian.version=v1", "--stop-grace-period", "2s",
                     "--update-order", "start-first", "--update-parallelism", "1", "--update-delay", "3s",
                     "--update-monitor", "1s", V1)
    try:
        wait_for(lambda: serving(client, sid) == {V1: 2}, what=f"2 tasks of {V1} in {name}")
        yield name
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_service(sid)


@pytest.fixture
def components(client: docker.DockerClient, tmp_path, watched_service: str) -> Iterator[Components]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "service.yaml").write_text(RULES.format(service=watched_service))
    settings = Settings(db_path=str(tmp_path / "guardian.db"), rules=[str(rules)],
                        recordings_dir=str(tmp_path / "recordings"), prometheus_url="http://127.0.0.1:9",
                        watch_swarm=True)  # nothing is fetched: no tick runs here
    c = build(settings, clock=SystemClock(), actuators=ActuatorPool(docker_client=client, swarm_settings=FAST))
    yield c
    c.actuators.close()
    c.store.close()


def test_a_docker_service_update_starts_one_observe_rollout(client, watched_service, components):
    name = watched_service
    watcher = SwarmWatcher(components.guard, components.settings, client=client, clock=components.clock,
                           label=components.settings.watch_label)
    assert watcher.poll() == []  # nothing is being updated yet

    docker_cli("service", "update", "--detach", "--no-resolve-image", "--image", V2,
               "--container-label-add", "guardian.version=v2", name)
    started = []
    deadline = time.monotonic() + 15
    while not started and time.monotonic() < deadline:
        started = watcher.poll()
        time.sleep(0.2)
    assert len(started) == 1, "no rollout started for the update"
    rollout = started[0]
    assert (rollout.service, rollout.strategy, rollout.target) == (name, Strategy.OBSERVE, f"swarm:{name}")
    assert (rollout.image, rollout.previous_image, rollout.steps) == (V2, V1, (100,))
    assert rollout.phase is Phase.PROGRESSING
    [start] = components.store.decisions(rollout.id)
    assert start["source"] == "guardian" and start["outcome"]["ok"], start
    assert start["reason"].startswith(f"docker service update of {name} to {V2} detected (Swarm UpdateStatus "
                                      "updating); guarding it")

    assert watcher.poll() == []  # the update is guarded already
    assert [s.id for s in components.store.list() if s.service == name] == [rollout.id]

    # the arms the guard will ask Prometheus for are the versions the tasks carry
    selectors, unresolved = arm_selectors(components.rulebook.for_service(name).rules.arms, rollout)
    assert unresolved == {} and {a: s.label_value for a, s in selectors.items()} == {"canary": "v2",
                                                                                    "baseline": "v1"}
    wait_for(lambda: V2 in serving(client, client.api.inspect_service(name)["ID"]), what="a task of v2")
    tasks = watcher.actuator.tasks_by_image(name)
    assert {t.version for t in tasks[V2]} == {"v2"} and {t.version for t in tasks.get(V1, [])} <= {"v1"}
