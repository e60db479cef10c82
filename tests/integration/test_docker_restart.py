"""The Docker daemon restarted in the middle of a guarded rollout (a real dockerd, stopped with SIGTERM
and started again by scripts/docker-up.sh), with the canary at 50%:

- while the daemon is down its containers are stopped, Prometheus loses the arms, the guardian pauses
  (missing data: never promoted nor rolled back for it) and its actuator calls fail without harm;
- the daemon starts the containers again (restart policy `unless-stopped`, as a compose `restart:`),
  on new host ports; the guardian sees the addresses no longer match what nginx and Prometheus were
  told, publishes them again (recorded as a decision), resumes when the data is back, and promotes;
- at the end: the new version only, nothing left behind, every operation done once.

It stops the daemon every other test uses, so it is marked `serial`: scripts/test.sh runs it alone
after the parallel pass (and a parallel worker skips it).
"""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")

from demo.stack import wait_until  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.serial]


def _daemon_up() -> bool:
    try:
        return docker.from_env(timeout=3).ping()
    except Exception:  # noqa: BLE001
        return False


def restart_dockerd(down_seconds: float = 3.0) -> float:
    """Stop dockerd (SIGTERM: it stops its containers), wait `down_seconds`, start it again; seconds
    the daemon did not answer."""
    pids = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    assert pids, "no dockerd process to restart"
    began = time.monotonic()
    subprocess.run(["kill", "-TERM", *pids], check=True)
    wait_until(lambda: not subprocess.run(["pidof", "dockerd"], capture_output=True).stdout, 60, 0.2,
               "dockerd to exit")
    time.sleep(down_seconds)
    subprocess.run(["bash", str(REPO / "scripts" / "docker-up.sh")], check=True, capture_output=True, timeout=180)
    wait_until(_daemon_up, 60, 0.2, "dockerd to answer")
    return time.monotonic() - began


def test_a_docker_daemon_restart_mid_rollout_pauses_then_republishes_and_promotes(tmp_path):
    from demo.dockerstack import GuardedStack

    if not _daemon_up():
        pytest.skip("no Docker engine; bash scripts/docker-up.sh starts one")
    with GuardedStack(tmp_path, f"grst-{uuid.uuid4().hex[:6]}", rps=20) as g:
        rid = g.start_rollout("guardian-demo:v3", steps=[50, 100], analysis_seconds=8)
        wait_until(lambda: g.guardian.rollout(rid)["weight"] == 50, 90, 0.2, "the canary at 50%")
        before = sorted(r.address for r in g.stack.containers().replicas(g.service))
        down = restart_dockerd()
        state = g.wait(rid, timeout=240)
        assert state["phase"] == "promoted", state
        decisions = state["decisions"]
        reasons = [d["reason"] for d in decisions]
        assert any("addresses changed" in r for r in reasons), reasons  # the fault is recorded
        assert "rollback" not in [d["action"] for d in decisions]
        after = g.stack.containers().replicas(g.service)
        addresses = sorted(r.address for r in after)
        assert sorted(r.image for r in after) == ["guardian-demo:v3", "guardian-demo:v3"]
        assert addresses != before  # new host ports: the republish was needed
        everything = docker.from_env().containers.list(all=True, filters={"label": f"guardian.service={g.service}"})
        assert [c.status for c in everything] == ["running", "running"]  # nothing left behind
        upstream = g.stack.nginx.upstream_file.read_text()
        assert sorted(re.findall(r"^\s*server (\S+) ", upstream, re.M)) == addresses
        sd = json.loads((g.stack.targets_dir / f"{g.service}.json").read_text())
        assert sorted(t for e in sd for t in e["targets"]) == addresses
        db = sqlite3.connect(f"file:{g.guardian.workdir / 'guardian.db'}?mode=ro", uri=True)
        try:
            ops = db.execute("SELECT key, status FROM ops WHERE rollout_id = ?", (rid,)).fetchall()
        finally:
            db.close()
        assert ops and all(status == "done" for _, status in ops), ops  # every operation done, once (keys unique)
        print(f"dockerd down for {down:.1f} s; {len(ops)} operations; requests dropped {g.load.dropped}")
