"""Crash recovery at deterministic points of real Docker rollouts (the fast subset of
benchmarks/crash_harness.py): `guardian serve` is restarted armed with GUARDIAN_CRASH_AT, kills
itself (SIGKILL) at that point, and is restarted on the same database until the rollout ends. Then
the harness's checks: the right phase, no operation pending or done twice or lost, the right
containers and no leftover, nginx and file_sd listing exactly the running replicas, no dropped request.
"""
from __future__ import annotations

import contextlib
import signal
import time
import uuid

import httpx
import pytest

docker = pytest.importorskip("docker")

from benchmarks import crash_harness as harness  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from demo.dockerstack import GuardedStack
    from guardian.actuators.docker import API_VERSION

    try:
        client = docker.from_env(version=API_VERSION)
        client.ping()
    except docker.errors.DockerException as e:
        pytest.skip(f"no Docker engine ({e}); bash scripts/docker-up.sh starts one")
    service = f"gcrash-{uuid.uuid4().hex[:6]}"
    harness.CREATES = harness.CreateEvents(client, service)
    try:
        with GuardedStack(tmp_path_factory.mktemp("crash"), service, rps=20) as g:
            yield g
    finally:
        harness.CREATES.close()


def crash_through(g, points: list[str], run: harness.RolloutRun) -> None:
    """For each point: wait until the armed guardian kills itself there, then restart it armed with the next."""
    for i, point in enumerate(points):
        harness.wait_until(lambda: not harness.alive(g), 120, 0.1, f"the guardian to crash at {point}")
        assert g.guardian.proc.returncode == -signal.SIGKILL
        run.kills.append(harness.Kill("point", point, 0.0))
        harness.restart_guardian(g, points[i + 1] if i + 1 < len(points) else None)


def roll(g, image: str, expected: str, points: list[str]) -> harness.RolloutRun:
    run = harness.RolloutRun(image, expected)
    stable, since, dropped = g.stack.images()[0], time.time(), g.load.dropped
    harness.kill_guardian(g)
    harness.restart_guardian(g, points[0])
    with contextlib.suppress(httpx.HTTPError):  # killed while starting it
        run.id = g.start_rollout(image, steps=[50, 100], analysis_seconds=2)
    crash_through(g, points, run)
    run.id = run.id or harness.find_rollout(g, since)
    assert run.id, "the rollout was not stored"
    run.phase = g.wait(run.id, timeout=240)["phase"]
    run.dropped = g.load.dropped - dropped
    harness.check(g, run, stable, since)
    return run


def test_a_good_release_crashed_mid_start_after_apply_and_around_the_promote_is_promoted_once(guarded):
    run = roll(guarded, "guardian-demo:v3", "promoted",
               ["mid_apply@start", "after_apply@start", "after_begin_op@promote", "after_finish_op@promote"])
    assert run.problems == [] and len(run.kills) == 4


def test_a_bad_release_whose_rollback_decision_was_stored_but_never_begun_is_still_rolled_back(guarded):
    run = roll(guarded, "guardian-demo:v2", "rolled_back", ["after_record_tick@rollback", "after_apply@rollback"])
    assert run.problems == [] and len(run.kills) == 2
