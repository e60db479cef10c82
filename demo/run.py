"""The demo: a guarded rollout of real containers, end to end, on embedded defaults.

It runs the `checkout` service as two containers of guardian-demo:v1 behind a real nginx, a real
Prometheus scraping every container each second (the arms come from file_sd files the docker
actuator writes), a load generator sending 50 requests/s through nginx, and the guardian (2 s
ticks) with its built-in policy — no rule file. Then it rolls out v2, which answers 5xx to one
request in five: the guardian sees the canary worse than the baseline and rolls it back. Then v3,
which is healthy: the guardian promotes it step by step (10, 25, 50, 100%), replacing the v1
containers start-first. Then v4 with a 60 s bake: v4 passes its steps, then degrades by itself (5xx
on 10% of requests from 90 s after its containers started) while it bakes at 100% with v3 kept warm
out of rotation: the guardian rolls it back, one nginx reload back to the warm v3. It prints what
happened and why, and leaves the state, the recordings and every log in var/demo/.

    bash scripts/demo.sh            (or, with dockerd up: .venv/bin/python -m demo.run)
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker

from demo.dockerstack import GuardedStack
from demo.images import V4_FAIL_AFTER, V4_FAIL_RATIO, ensure_images
from demo.stack import GuardianServer
from demo.steady import run_surge
from guardian.actuators.docker import API_VERSION

SERVICE = "checkout"
STEPS = "10,25,50,100"
V4_BAKE = "60s"  # v4's bake; it degrades V4_FAIL_AFTER seconds after its containers start, in the bake
V4_STRATEGY = "blue-green"  # both v4 containers start at its first step, so both degrade at the same moment


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m", flush=True)


def rollout(guardian: GuardianServer, image: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """Run `guardian rollout start --wait` as a user would (its live progress goes to the console)."""
    args = ["rollout", "start", SERVICE, "--image", image, "--steps", STEPS, *extra, "--wait", "--timeout", "400"]
    print("$ guardian " + " ".join(args), flush=True)
    proc = subprocess.run([sys.executable, "-m", "guardian", *args, "--api", guardian.url],
                          stdout=subprocess.PIPE, text=True)
    print(proc.stdout, end="", flush=True)
    rollout_id = proc.stdout.split("started rollout ")[1].split()[0] if "started rollout " in proc.stdout else None
    state = guardian.rollout(rollout_id) if rollout_id else {}
    return proc.returncode, state


def explain(guardian: GuardianServer, state: dict[str, Any], work: Path, name: str) -> Path | None:
    """Print why the rollout ended as it did (`guardian rollout explain`) and draw it (`guardian report`)."""
    if not state:
        print("    (no rollout state: see the guardian log)")
        return None
    from guardian.reporting.explain import render_text
    from guardian.reporting.report import render

    explanation = guardian.api("GET", f"/v1/rollouts/{state['id']}/explain").raise_for_status().json()
    print("$ guardian rollout explain " + state["id"], flush=True)
    print("\n".join("    " + line for line in render_text(explanation).splitlines()), flush=True)
    recording = guardian.api("GET", f"/v1/rollouts/{state['id']}/recording").raise_for_status().json()
    path = render(recording, explanation, work / f"report-{name}.html")
    print(f"    report: {path}", flush=True)
    return path


def decision(state: dict[str, Any], action: str) -> dict[str, Any] | None:
    """The rollout's first decision of `action` (bake, rollback, ...), if any."""
    return next((d for d in state.get("decisions", []) if d.get("action") == action), None)


def bake_figures(state: dict[str, Any], load: Any, new: str, previous: str) -> dict[str, Any]:
    """What the load generator saw of a rollout rolled back in its bake: when the new version first answered
    5xx (seconds into the bake), when the guardian decided, when the new version answered last (all traffic
    back on the warm previous version), and what the flip cost: requests with no answer, failed answers
    from the previous version."""
    bake, back = decision(state, "bake"), decision(state, "rollback")
    answers = list(load.answers or [])
    bad = [t for t, v, code in answers if v == new and code is not None and code >= 500]
    served = [t for t, v, _ in answers if v == new]
    first_bad, last_new = (load.wall(bad[0]) if bad else None), (load.wall(served[-1]) if served else None)

    def since_bake(at: float | None) -> float | None:
        return None if at is None or bake is None else round(at - bake["at"], 1)

    flip = [(t, v, code) for t, v, code in answers if back and back["at"] - 5 <= load.wall(t) <= back["at"] + 5]
    return {
        "bake_s": state.get("bake_seconds"), "baked": bake is not None,
        "in_bake": bool(bake and back and back["tick"] > bake["tick"]),
        "first_5xx_into_bake_s": since_bake(first_bad), "rollback_into_bake_s": since_bake(back and back["at"]),
        "first_5xx_to_rollback_s": round(back["at"] - first_bad, 1) if back and first_bad else None,
        "first_5xx_to_all_on_previous_s": round(last_new - first_bad, 1) if first_bad and last_new else None,
        "bad_5xx": len(bad),
        "flip_requests": len(flip), "flip_dropped": sum(1 for _, v, _ in flip if v is None),
        "flip_failed_previous": sum(1 for _, v, code in flip if v == previous and code is not None and code >= 400),
        "reason": (back or {}).get("reason", ""),
    }


def top_template(state: dict[str, Any]) -> str | None:
    """The log template the guardian put first on the rollback of `state`, if any."""
    for d in state.get("decisions", []):
        if d.get("action") == "rollback" and d.get("logs"):
            return d["logs"][0].get("template")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="var/demo", help="where logs, state and recordings go")
    parser.add_argument("--rps", type=float, default=50.0, help="load through nginx, requests per second")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args(argv)
    work = Path(args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    began = time.monotonic()
    started: list[Any] = []
    try:
        try:
            client = docker.from_env(version=API_VERSION)
            client.ping()
        except docker.errors.DockerException as e:
            print(f"demo: no Docker engine answers ({e}); start one with: bash scripts/docker-up.sh",
                  file=sys.stderr)
            return 2
        ensure_images(client, log=lambda m: print(f"    {m}", flush=True))
        guarded = GuardedStack(work, SERVICE, replicas=2, rps=args.rps, say=say).start()
        started.append(guarded)
        stack, load, guardian = guarded.stack, guarded.load, guarded.guardian
        print(f"    nginx: {stack.url}   API: {guardian.url}/docs   Prometheus: {guarded.prometheus.url}   "
              f"logs: {work}", flush=True)

        say("rolling out v2 (answers 5xx to 20% of requests): canary steps " + STEPS)
        t = time.monotonic()
        code_v2, v2 = rollout(guardian, "guardian-demo:v2")
        v2_seconds = time.monotonic() - t
        report_v2 = explain(guardian, v2, work, "v2")
        print(f"    containers now: {', '.join(stack.images())}", flush=True)

        say("rolling out v3 (healthy): canary steps " + STEPS)
        t = time.monotonic()
        code_v3, v3 = rollout(guardian, "guardian-demo:v3")
        v3_seconds = time.monotonic() - t
        report_v3 = explain(guardian, v3, work, "v3")
        print(f"    containers now: {', '.join(stack.images())}", flush=True)

        say(f"rolling out v4 (healthy at first; each container answers 5xx to {V4_FAIL_RATIO:.0%} of requests "
            f"from {V4_FAIL_AFTER} s after it started): {V4_STRATEGY}, steps {STEPS}, then a {V4_BAKE} bake")
        t = time.monotonic()
        code_v4, v4 = rollout(guardian, "guardian-demo:v4", "--strategy", V4_STRATEGY, "--bake", V4_BAKE)
        v4_seconds = time.monotonic() - t
        report_v4 = explain(guardian, v4, work, "v4")
        images = stack.images()
        print(f"    containers now: {', '.join(images)}", flush=True)

        say(f"between rollouts: {SERVICE} is watched; a x3 traffic surge ({3 * args.rps:g} req/s for 45 s)")
        steady = run_surge(guarded, say=lambda text: print(text, flush=True))
        time.sleep(2)  # a moment of load on v3 alone, so the traffic figures show it serving
        load.stop()
        bake = bake_figures(v4, load, "v4", "v3")
        say("v4's bake, as the load generator saw it")
        if bake["baked"]:
            print("    v4 passed its steps, then baked: all traffic on v4, v3 kept warm out of rotation (nginx backup "
                  "servers)", flush=True)
        else:
            print("    v4 never reached its bake (see the decisions above)", flush=True)
        print(f"    v4's first 5xx: {bake['first_5xx_into_bake_s']} s into the bake; the guardian rolled it back "
              f"{bake['first_5xx_to_rollback_s']} s later, {bake['rollback_into_bake_s']} s into its "
              f"{V4_BAKE} bake", flush=True)
        print(f"    all traffic back on the warm v3 {bake['first_5xx_to_all_on_previous_s']} s after v4's first 5xx "
              f"(v4's last answer)", flush=True)
        print(f"    the flip, 5 s either side of the rollback: {bake['flip_requests']} requests, "
              f"{bake['flip_dropped']} dropped, {bake['flip_failed_previous']} failed from v3", flush=True)
        print(f"    why: {bake['reason'][:160]}", flush=True)

        stats = load.stats()
        wall = time.monotonic() - began
        v2_exposed = guarded.exposure("v2")
        v4_failed = int(load.versions.get("v4", {}).get("failed", 0))
        v2_failed = int(load.versions.get("v2", {}).get("failed", 0))
        say("summary")
        print(f"    v2: {v2.get('phase')} (exit {code_v2}; expected rolled_back / 1), {v2_seconds:.0f} s; "
              f"it answered clients for {v2_exposed} s from its first answer to its last")
        print(f"    v3: {v3.get('phase')} (exit {code_v3}; expected promoted / 0), {v3_seconds:.0f} s")
        where = " in its bake" if bake["in_bake"] else " (not in its bake)" if v4.get("phase") == "rolled_back" else ""
        print(f"    v4: {v4.get('phase')}{where} (exit {code_v4}; expected rolled_back / 1), "
              f"{v4_seconds:.0f} s; "
              f"back on the warm v3 {bake['first_5xx_to_all_on_previous_s']} s after v4's first 5xx, "
              f"{bake['flip_dropped']} dropped in the flip; now running: {', '.join(images)}")
        answered = {k: int(v["count"]) for k, v in load.versions.items()}
        print(f"    traffic: {stats['ok']} ok, {stats['failed']} failed, {stats['dropped']} dropped "
              f"(no answer); answers by version {answered}. The failures are v2's own 5xx while it was a canary "
              f"({v2_failed}) and v4's once it went bad in its bake ({v4_failed}).")
        verdict = "ok" if steady.get("ok") else "NOT as expected"
        print(f"    steady state: a x3 surge scaled out {steady.get('scale_out_decided_s')} s after it began and back "
              f"in {steady.get('scale_in_decided_s')} s after it ended ({verdict})")
        print(f"    log evidence on v2's rollback, top template: {top_template(v2)}")
        print(f"    log evidence on v4's rollback, top template: {top_template(v4)}")
        print(f"    reports: {report_v2}, {report_v3}, {report_v4}")
        print(f"    recordings (guardian-recording/v1): {work / 'guardian' / 'recordings'}")
        print(f"    replay them: .venv/bin/guardian replay {work / 'guardian' / 'recordings'}")
        print(f"    demo took {wall:.0f} s")
        ok = (v2.get("phase") == "rolled_back" and v3.get("phase") == "promoted"
              and v4.get("phase") == "rolled_back" and bake["in_bake"] and bool(steady.get("ok"))
              and all(i.endswith(":v3") for i in images) and stats["dropped"] == 0
              and stats["failed"] == v2_failed + v4_failed)
        say("demo " + ("passed" if ok else "did NOT end as expected"))
        if args.json:
            print(json.dumps({"demo": "passed" if ok else "failed", "wall_seconds": round(wall, 1),
                              "v2_phase": v2.get("phase"), "v2_seconds": round(v2_seconds, 1),
                              "v2_answered_for_s": v2_exposed,
                              "v2_top_log_template": top_template(v2), "v3_phase": v3.get("phase"),
                              "v3_seconds": round(v3_seconds, 1), "v4_phase": v4.get("phase"),
                              "v4_seconds": round(v4_seconds, 1),
                              "v4_bake": {k: v for k, v in bake.items() if k != "reason"},
                              "v4_top_log_template": top_template(v4),
                              "requests": stats["ok"] + stats["failed"],
                              "failed": stats["failed"], "dropped": stats["dropped"],
                              "answers_by_version": answered, "final_images": images,
                              "steady": {k: steady.get(k) for k in ("ok", "scale_out_decided_s",
                                                                    "new_replica_serving_s", "scale_in_decided_s")}}))
        return 0 if ok else 1
    finally:
        for thing in reversed(started):
            thing.stop()


if __name__ == "__main__":
    sys.exit(main())
