"""Failed client requests during Docker rollouts through a real nginx, under steady load.

    bash scripts/docker-up.sh && .venv/bin/python benchmarks/docker_rollouts.py [--rps 50] [--keepalive]

For each of a canary promote (10 → 50 → 100%), a rolling promote, a blue-green switch and a canary
rollback, two v1 replicas behind nginx get `--rps` requests/s (a new connection per request unless
`--keepalive`) while the docker actuator acts; prints a table and one JSON line with the failed and
dropped requests per scenario, the seconds each took, and for the rollback the seconds from the bad
canary's first answer to its last.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from guardian.actuators import ActionRequest
from guardian.demo.dockerstack import DockerStack
from guardian.demo.loadgen import LoadGenerator
from guardian.domain import Action

SCENARIOS = {
    "canary_promote": ("canary", "guardian-demo:v3", [(Action.START, 10), (Action.ADVANCE, 50), (Action.PROMOTE, 100)]),
    "rolling_promote": ("rolling", "guardian-demo:v3", [(Action.START, 50), (Action.PROMOTE, 100)]),
    "blue_green_switch": ("blue-green", "guardian-demo:v3", [(Action.START, 100), (Action.PROMOTE, 100)]),
    "rollback": ("canary", "guardian-demo:v2", [(Action.START, 25), (Action.ROLLBACK, 0)]),
}


def run(name: str, rps: float, keepalive: bool, hold: float) -> dict:
    strategy, image, actions = SCENARIOS[name]
    with tempfile.TemporaryDirectory(prefix="guardian-bench-") as tmp:
        stack = DockerStack(Path(tmp), f"gbench-{uuid.uuid4().hex[:6]}", replicas=2, drain_seconds=1.0).start()
        try:
            actuator = stack.actuator()
            load = LoadGenerator([stack.url], rps=rps, keepalive=keepalive, max_seconds=600).start()
            began = time.monotonic()
            try:
                time.sleep(hold)
                for i, (action, weight) in enumerate(actions):
                    out = actuator.apply(ActionRequest(rollout_id="b1", service=stack.service, image=image,
                                                       action=action, weight=weight, key=f"b1:{i}:{action.value}",
                                                       strategy=strategy))
                    if not out.ok:
                        raise RuntimeError(f"{name}: {action.value} failed: {out.detail}")
                    time.sleep(hold)
            finally:
                load.stop()
            took = time.monotonic() - began
            stats = load.stats()
            v2 = load.versions.get("v2")
            return {"scenario": name, "requests": stats["ok"] + stats["failed"], "failed": stats["failed"],
                    "dropped": stats["dropped"],
                    "answers_by_version": {k: int(v["count"]) for k, v in load.versions.items()},
                    "seconds": round(took, 1), "final_images": stack.images(),
                    **({"bad_canary_answered_for_s": round(v2["last"] - v2["first"], 1)} if v2 else {})}
        finally:
            stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=50.0)
    parser.add_argument("--keepalive", action="store_true", help="reuse client connections")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds of load before, between and after actions")
    args = parser.parse_args(argv)
    results = [run(name, args.rps, args.keepalive, args.hold) for name in SCENARIOS]
    print(f"{'scenario':<20}{'requests':>10}{'failed':>8}{'dropped':>9}{'seconds':>9}  note")
    for r in results:
        note = "failed = v2's own 5xx answers" if r["scenario"] == "rollback" else ""
        print(f"{r['scenario']:<20}{r['requests']:>10}{r['failed']:>8}{r['dropped']:>9}{r['seconds']:>9}  {note}")
    print(json.dumps({"benchmark": "docker_rollouts", "rps": args.rps, "keepalive": args.keepalive,
                      "results": results}))
    return 0 if all(r["dropped"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
