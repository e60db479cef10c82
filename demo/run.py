"""The demo: a guarded rollout of real containers, end to end, on embedded defaults.

It runs the `checkout` service as two containers of guardian-demo:v1 behind a real nginx, a real
Prometheus scraping every container each second (the arms come from file_sd files the docker
actuator writes), a load generator sending 50 requests/s through nginx, and the guardian (2 s
ticks) with its built-in policy — no rule file. Then it rolls out v2, which answers 5xx to one
request in five: the guardian sees the canary worse than the baseline and rolls it back. Then v3,
which is healthy: the guardian promotes it step by step (10, 25, 50, 100%), replacing the v1
containers start-first. It prints what happened and why, and leaves the state, the recordings and
every log in var/demo/.

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
from demo.images import ensure_images
from demo.stack import GuardianServer
from guardian.actuators.docker import API_VERSION

SERVICE = "checkout"
STEPS = "10,25,50,100"


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m", flush=True)


def rollout(guardian: GuardianServer, image: str) -> tuple[int, dict[str, Any]]:
    """Run `guardian rollout start --wait` as a user would (its live progress goes to the console)."""
    args = ["rollout", "start", SERVICE, "--image", image, "--steps", STEPS, "--wait", "--timeout", "300"]
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
        images = stack.images()
        print(f"    containers now: {', '.join(images)}", flush=True)
        time.sleep(2)  # a moment of load on v3 alone, so the traffic figures show it serving
        load.stop()

        stats = load.stats()
        wall = time.monotonic() - began
        v2_exposed = guarded.exposure("v2")
        say("summary")
        print(f"    v2: {v2.get('phase')} (exit {code_v2}; expected rolled_back / 1), {v2_seconds:.0f} s; "
              f"it answered clients for {v2_exposed} s from its first answer to its last")
        print(f"    v3: {v3.get('phase')} (exit {code_v3}; expected promoted / 0), {v3_seconds:.0f} s; "
              f"now running: {', '.join(images)}")
        answered = {k: int(v["count"]) for k, v in load.versions.items()}
        print(f"    traffic: {stats['ok']} ok, {stats['failed']} failed, {stats['dropped']} dropped "
              f"(no answer); answers by version {answered}. The failures are v2's own 5xx while it was a canary.")
        print(f"    log evidence on v2's rollback, top template: {top_template(v2)}")
        print(f"    reports: {report_v2}, {report_v3}")
        print(f"    recordings (guardian-recording/v1): {work / 'guardian' / 'recordings'}")
        print(f"    replay them: .venv/bin/guardian replay {work / 'guardian' / 'recordings'}")
        print(f"    demo took {wall:.0f} s")
        ok = (v2.get("phase") == "rolled_back" and v3.get("phase") == "promoted"
              and all(i.endswith(":v3") for i in images) and stats["dropped"] == 0)
        say("demo " + ("passed" if ok else "did NOT end as expected"))
        if args.json:
            print(json.dumps({"demo": "passed" if ok else "failed", "wall_seconds": round(wall, 1),
                              "v2_phase": v2.get("phase"), "v2_seconds": round(v2_seconds, 1),
                              "v2_answered_for_s": v2_exposed,
                              "v2_top_log_template": top_template(v2), "v3_phase": v3.get("phase"),
                              "v3_seconds": round(v3_seconds, 1), "requests": stats["ok"] + stats["failed"],
                              "failed": stats["failed"], "dropped": stats["dropped"],
                              "answers_by_version": answered, "final_images": images}))
        return 0 if ok else 1
    finally:
        for thing in reversed(started):
            thing.stop()


if __name__ == "__main__":
    sys.exit(main())
