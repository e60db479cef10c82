"""Crash harness: SIGKILL `guardian serve` at random points of real Docker rollouts, restart it, and
check that every rollout still ends right, with no action done twice and none lost.

    bash scripts/docker-up.sh && .venv/bin/python benchmarks/crash_harness.py --kills 50 --seed 7

The stack is the demo's (demo/dockerstack.py GuardedStack): two containers of
guardian-demo:v1 behind a real nginx, a real Prometheus scraping each second, `--rps` requests/s of
load through nginx, and `guardian serve` (2 s ticks, built-in policy) with the docker actuator.
Rollouts alternate a bad version (v2, 5xx on 20% of requests: must end rolled back, the previous
image still serving) and a good one (v3, then v1: must end promoted), canary steps 25/50/100.

During each rollout the guardian is killed again and again, by one of two kinds of kill point:
- `timer`: SIGKILL after a random 0.5-5 s (lands anywhere: in a tick, a Docker call, an HTTP request);
- `point`: the restarted guardian gets GUARDIAN_CRASH_AT=<point>[:N] (guardian/crashpoints.py)
  and kills itself the Nth time it passes that point: after_record_tick, after_begin_op, mid_apply,
  after_apply, after_finish_op. A point not reached before the rollout ends is not counted.
After each kill it is restarted (same database, same port) and left alone until the next kill.

When a rollout has ended, its checks:
- phase: rolled_back for the bad version, promoted for the good one;
- ops: no operation left pending, every operation finished exactly once (one decision-log entry
  each), and every decision a tick stored that acts (start, advance, promote, rollback, pause,
  resume, scale) has its operation: none lost;
- Docker: exactly two running replicas, all of the image that must be serving; no other container
  of the service in any state (no leftover canary); containers created for the rollout, from
  Docker's event stream: 1 for a rollback (the canary), 2 for a promotion (the canary and one more):
  more means an action was done twice;
- nginx: its upstream file lists exactly the running replicas, none `down`; requests through nginx
  are answered by the expected version; Prometheus' file_sd lists the same replicas;
- traffic: requests that got no answer at all (dropped) during the rollout, at most `--max-dropped`.
Prints kill points tried and survived, and writes every figure as JSON (`--json`).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import signal
import sqlite3
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: its demo/ and tests/ packages

from demo.dockerstack import GuardedStack  # noqa: E402
from demo.images import ensure_images  # noqa: E402
from demo.loadgen import LoadGenerator  # noqa: E402
from demo.stack import wait_until  # noqa: E402
from guardian.actuators.containers import SERVICE_LABEL  # noqa: E402
from guardian.actuators.docker import API_VERSION  # noqa: E402
from guardian.crashpoints import ENV as CRASH_ENV  # noqa: E402
from guardian.crashpoints import POINTS  # noqa: E402

ACTING = {"start", "advance", "promote", "rollback", "pause", "resume", "scale"}
PLAN = [("guardian-demo:v2", "rolled_back"), ("guardian-demo:v3", "promoted"),
        ("guardian-demo:v2", "rolled_back"), ("guardian-demo:v1", "promoted")]
STEPS = [25, 50, 100]


@dataclass
class Kill:
    kind: str  # timer | point
    point: str | None
    at_s: float  # seconds into the rollout
    phase_before: str | None = None


@dataclass
class RolloutRun:
    image: str
    expected: str
    id: str | None = None
    phase: str | None = None
    seconds: float = 0.0
    kills: list[Kill] = field(default_factory=list)
    unreached_points: list[str] = field(default_factory=list)
    dropped: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# -- the guardian process ---------------------------------------------------------------------------------
def kill_guardian(g: GuardedStack) -> None:
    proc = g.guardian.proc
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    if proc is not None:
        proc.wait(10)


def restart_guardian(g: GuardedStack, crash_at: str | None) -> None:
    """Start `guardian serve` again on the same database and port; crash_at sets GUARDIAN_CRASH_AT."""
    g.guardian.env.pop(CRASH_ENV, None)
    if crash_at:
        g.guardian.env[CRASH_ENV] = crash_at
    for attempt in range(3):
        try:
            g.guardian.start()
            return
        except (RuntimeError, TimeoutError):
            # the crash point may fire before /readyz answers (a pending op resumed at the first tick)
            if crash_at and g.guardian.proc is not None and g.guardian.proc.poll() == -signal.SIGKILL:
                return
            if attempt == 2:
                raise
            kill_guardian(g)
            time.sleep(0.5)


def alive(g: GuardedStack) -> bool:
    return g.guardian.proc is not None and g.guardian.proc.poll() is None


def phase_of(g: GuardedStack, rollout_id: str) -> str | None:
    try:
        return g.guardian.rollout(rollout_id)["phase"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def find_rollout(g: GuardedStack, since: float) -> str | None:
    """The rollout of the stack's service created at or after `since` (a start killed mid-request)."""
    rows = g.guardian.api("GET", "/v1/rollouts").raise_for_status().json()
    mine = [r for r in rows if r["service"] == g.service and r["created_at"] >= since - 1]
    return mine[-1]["id"] if mine else None


# -- one rollout under kills ---------------------------------------------------------------------------------
def run_rollout(g: GuardedStack, image: str, expected: str, rng: random.Random, *, point_share: float,
                timeout: float, kill_budget: int) -> RolloutRun:
    run = RolloutRun(image, expected)
    stable_image = g.stack.images()[0]
    began, wall0 = time.monotonic(), time.time()
    dropped0 = g.load.dropped
    answer: dict[str, Any] = {}

    def post() -> None:
        try:
            answer["id"] = g.start_rollout(image, steps=STEPS, analysis_seconds=4)
        except httpx.HTTPError as e:  # killed mid-request: the rollout may or may not exist
            answer["error"] = repr(e)

    poster = threading.Thread(target=post, daemon=True)
    poster.start()
    next_kill = began + rng.uniform(0.5, 4.0)  # the first kill is a timer, possibly inside the start request
    waiting_point: Kill | None = None
    while time.monotonic() - began < timeout:
        time.sleep(0.1)
        if run.id is None and not poster.is_alive():
            if "id" in answer:
                run.id = answer["id"]
            elif alive(g):
                try:
                    run.id = find_rollout(g, wall0)
                except httpx.HTTPError:  # it died (an armed point) as we asked: ask again once it is back
                    continue
                if run.id is None:  # killed before the rollout was stored: ask again, as a user would
                    answer.clear()
                    poster = threading.Thread(target=post, daemon=True)
                    poster.start()
        phase = phase_of(g, run.id) if run.id and alive(g) else None
        if phase in ("promoted", "rolled_back"):
            run.phase = phase
            if waiting_point is not None:
                run.unreached_points.append(waiting_point.point or "")
            break
        if waiting_point is not None:  # a restarted guardian armed with a crash point
            if not alive(g):
                waiting_point.at_s = round(time.monotonic() - began, 1)
                run.kills.append(waiting_point)
                waiting_point = None
                waiting_point = after_kill(g, run, rng, point_share, kill_budget)
                next_kill = time.monotonic() + rng.uniform(0.5, 5.0)
            elif time.monotonic() > next_kill + 20:  # not reached in 20 s: disarm (a restart, not a kill point)
                run.unreached_points.append(waiting_point.point or "")
                waiting_point = None
                kill_guardian(g)
                restart_guardian(g, None)
                next_kill = time.monotonic() + rng.uniform(0.5, 5.0)
            continue
        if time.monotonic() >= next_kill and len(run.kills) < kill_budget:
            run.kills.append(Kill("timer", None, round(time.monotonic() - began, 1), phase))
            kill_guardian(g)
            waiting_point = after_kill(g, run, rng, point_share, kill_budget)
            next_kill = time.monotonic() + rng.uniform(0.5, 5.0)
        elif not alive(g) and waiting_point is None:  # died on its own: a bug, not a kill point
            run.problems.append(f"guardian exited by itself ({g.guardian.proc.returncode}): {g.guardian.log_tail(800)}")
            restart_guardian(g, None)
    else:
        run.problems.append(f"did not end within {timeout:.0f} s (phase {phase_of(g, run.id) if run.id else None})")
    if not alive(g) or CRASH_ENV in g.guardian.env:  # never leave an armed guardian behind
        kill_guardian(g)
        restart_guardian(g, None)
    if run.id is None:
        run.problems.append("the rollout was never created")
        return run
    run.seconds = round(time.monotonic() - began, 1)
    run.dropped = g.load.dropped - dropped0
    check(g, run, stable_image, wall0)
    return run


def after_kill(g: GuardedStack, run: RolloutRun, rng: random.Random, point_share: float,
               kill_budget: int) -> Kill | None:
    """Restart after a kill; with probability `point_share`, armed with a crash point (returned)."""
    armed = None
    if rng.random() < point_share and len(run.kills) < kill_budget:
        armed = Kill("point", f"{rng.choice(POINTS)}:{rng.choice((1, 1, 2))}", 0.0)
    restart_guardian(g, armed.point if armed else None)
    return armed


# -- the checks -------------------------------------------------------------------------------------------------
def check(g: GuardedStack, run: RolloutRun, stable_image: str, since: float) -> None:
    p = run.problems
    if run.phase != run.expected:
        p.append(f"phase {run.phase}, expected {run.expected}")
    serving = run.image if run.expected == "promoted" else stable_image
    db = sqlite3.connect(f"file:{g.guardian.workdir / 'guardian.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        ops = db.execute("SELECT * FROM ops WHERE rollout_id = ? ORDER BY seq", (run.id,)).fetchall()
        decisions = [json.loads(r["decision"]) for r in db.execute(
            "SELECT decision FROM decisions WHERE rollout_id = ? ORDER BY seq", (run.id,))]
        ticks = [(r["tick"], json.loads(r["decision"])) for r in db.execute(
            "SELECT tick, decision FROM ticks WHERE rollout_id = ? AND decision IS NOT NULL ORDER BY tick", (run.id,))]
    finally:
        db.close()
    pending = [r["key"] for r in ops if r["status"] == "pending"]
    if pending:
        p.append(f"operations left pending: {pending}")
    logged = [d for d in decisions if d["action"] in ACTING]
    if len(logged) != len(ops):
        p.append(f"{len(ops)} operations but {len(logged)} acting decisions logged (each op must finish once)")
    op_decisions = [json.loads(r["decision"]) for r in ops]
    for tick, d in ticks:
        carried = any(o.get("tick") == tick and o["action"] == d["action"] for o in op_decisions)
        if d["action"] in ACTING and not carried:
            p.append(f"tick {tick} decided {d['action']} but no operation carries it out (lost)")
    starts = [r for r in ops if json.loads(r["request"])["action"] == "start"]
    if len(starts) != 1:
        p.append(f"{len(starts)} start operations")
    ends = [r for r in ops if r["status"] == "done" and json.loads(r["request"])["action"] in ("promote", "rollback")]
    if len(ends) != 1:
        p.append(f"{len(ends)} promote/rollback operations done")
    # Docker
    client = docker.from_env(version=API_VERSION)
    everything = client.containers.list(all=True, filters={"label": f"{SERVICE_LABEL}={g.service}"})
    [c for c in everything if c.status == "running"]
    others = [f"{c.name} ({c.status})" for c in everything if c.status != "running"]
    if others:
        p.append(f"leftover containers: {others}")
    images = sorted(g.stack.images())
    if images != [serving, serving]:
        p.append(f"running {images}, expected 2 x {serving}")
    created = CREATES.count(run.id)
    want = 2 if run.expected == "promoted" else 1
    if created != want:
        p.append(f"{created} containers created for the rollout, expected {want}")
    # nginx and file_sd
    addresses = sorted(r.address for r in g.stack.containers().replicas(g.service))
    upstream = g.stack.nginx.upstream_file.read_text()
    servers = re.findall(r"^\s*server (\S+) ([^;]+);", upstream, re.M)
    listed = sorted(a for a, _ in servers)
    if listed != addresses or any(s.strip() == "down" for _, s in servers):
        p.append(f"nginx upstream {servers} != running {addresses}")
    sd = json.loads((g.stack.targets_dir / f"{g.service}.json").read_text())
    sd_listed = sorted(t for e in sd for t in e["targets"])
    if sd_listed != addresses or any(e["labels"]["track"] != "baseline" for e in sd):
        p.append(f"file_sd {sd} != running {addresses} as baseline")
    version = serving.rsplit(":", 1)[1]
    seen = {LoadGenerator.version_of(g.stack.url) for _ in range(10)}
    if seen != {version}:
        p.append(f"nginx answered with {seen}, expected {version}")
    if run.dropped > MAX_DROPPED[0]:
        p.append(f"{run.dropped} requests dropped")


MAX_DROPPED = [0]


class CreateEvents:
    """Containers created per rollout (label guardian.rollout), from Docker's event stream, read live:
    dockerd keeps only its last 256 events, too few on a shared engine to ask afterwards."""

    def __init__(self, client: docker.DockerClient, service: str):
        self._stream = client.events(decode=True, filters={"type": "container", "event": "create",
                                                          "label": f"{SERVICE_LABEL}={service}"})
        self._ids: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True, name="docker-events").start()

    def _read(self) -> None:
        try:
            for e in self._stream:
                rollout = (e.get("Actor") or {}).get("Attributes", {}).get("guardian.rollout")
                if rollout:
                    with self._lock:
                        self._ids.setdefault(rollout, set()).add(e.get("id"))
        except Exception:  # noqa: BLE001 - closed at the end
            pass

    def count(self, rollout_id: str) -> int:
        time.sleep(0.5)  # the stream lags the engine a little
        with self._lock:
            return len(self._ids.get(rollout_id, ()))

    def close(self) -> None:
        self._stream.close()


CREATES: CreateEvents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/crash_harness.py", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="kill points to try in all (at least)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rps", type=float, default=20.0, help="load through nginx, requests per second")
    parser.add_argument("--point-share", type=float, default=0.5,
                        help="share of restarts armed with a GUARDIAN_CRASH_AT point (the rest: timer kills)")
    parser.add_argument("--per-rollout", type=int, default=6, help="the most kills in one rollout")
    parser.add_argument("--max-dropped", type=int, default=0, help="dropped requests tolerated per rollout")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds a rollout may take")
    parser.add_argument("--workdir", default="var/crash", help="logs, state and the stack's files")
    parser.add_argument("--json", default="var/crash/crash-harness.json", help="where the figures go")
    args = parser.parse_args(argv)
    MAX_DROPPED[0] = args.max_dropped
    rng = random.Random(args.seed)
    work = Path(args.workdir).resolve() / uuid.uuid4().hex[:6]
    client = docker.from_env(version=API_VERSION)
    ensure_images(client, log=lambda m: print(f"    {m}", flush=True))
    runs: list[RolloutRun] = []
    began = time.monotonic()
    global CREATES
    service = f"crash-{uuid.uuid4().hex[:6]}"
    CREATES = CreateEvents(client, service)
    with GuardedStack(work, service, rps=args.rps) as g:
        wait_until(lambda: g.guardian.api("GET", "/readyz").status_code == 200, 30)
        i = 0
        while sum(len(r.kills) for r in runs) < args.kills:
            image, expected = PLAN[i % len(PLAN)]
            i += 1
            left = args.kills - sum(len(r.kills) for r in runs)
            run = run_rollout(g, image, expected, rng, point_share=args.point_share, timeout=args.timeout,
                              kill_budget=min(args.per_rollout, max(1, left)))
            runs.append(run)
            kinds = ", ".join(k.point or f"timer@{k.at_s}s" for k in run.kills)
            print(f"rollout {run.id} {image}: {run.phase} (expected {expected}) in {run.seconds:.0f} s, "
                  f"{len(run.kills)} kills [{kinds}], dropped {run.dropped}"
                  + ("" if run.ok else f"\n    PROBLEMS: {run.problems}"), flush=True)
            if i > 4 * args.kills:  # kills that never land: do not loop forever
                break
        total_requests = g.load.stats()
    CREATES.close()
    tried = sum(len(r.kills) for r in runs)
    survived = sum(len(r.kills) for r in runs if r.ok)
    by_kind: dict[str, int] = {}
    for r in runs:
        for k in r.kills:
            name = "timer" if k.kind == "timer" else k.point.split(":")[0]
            by_kind[name] = by_kind.get(name, 0) + 1
    figures = {
        "seed": args.seed, "kill_points_tried": tried, "kill_points_survived": survived,
        "rollouts": len(runs), "rollouts_ok": sum(r.ok for r in runs), "kills_by_point": by_kind,
        "points_armed_not_reached": sum(len(r.unreached_points) for r in runs),
        "requests": total_requests["ok"] + total_requests["failed"], "dropped": total_requests["dropped"],
        "wall_seconds": round(time.monotonic() - began, 1),
        "runs": [{"id": r.id, "image": r.image, "expected": r.expected, "phase": r.phase, "seconds": r.seconds,
                  "kills": [k.__dict__ for k in r.kills], "dropped": r.dropped, "problems": r.problems}
                 for r in runs],
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1))
    print(f"kill points tried {tried}, survived {survived} (a kill point survives when its rollout ended right "
          f"on every check); rollouts {figures['rollouts_ok']}/{len(runs)} right; by point {by_kind}; "
          f"dropped {figures['dropped']} of {figures['requests']} requests; {figures['wall_seconds']:.0f} s; "
          f"figures in {out}")
    return 0 if survived == tried and all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
