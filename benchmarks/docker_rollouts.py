"""Docker rollouts through a real nginx under steady load: failed requests, time to roll back, demo time.

    bash scripts/docker-up.sh && .venv/bin/python benchmarks/docker_rollouts.py [--rps 50] [--keepalive]
        [--guarded-runs 5] [--good-runs 5] [--history 90] [--no-scenarios] [--no-demo]

1. For each of a canary promote (10 → 50 → 100%), a rolling promote, a blue-green switch and a canary
   rollback, two v1 replicas behind nginx get `--rps` requests/s (a new connection per request
   unless `--keepalive`) while the docker actuator acts: failed and dropped requests per scenario.
2. `--guarded-runs` times, the guardian itself (built-in policy, 2 s ticks, Prometheus scraping every
   second) rolls out the bad v2 (5xx on 20% of requests) under the same load and decides alone:
   the seconds from the bad canary's first answer to a client to its last (all traffic back on
   stable), from the load generator's own clock. The service serves `--history` seconds of load first: the
   pre-rollout window the rate test's level test judges the canary against (as a service in production has).
   `--good-runs` times, the same with the good v3: promoted or not, and in how long.
3. The README's demo (`python -m demo.run --json`), timed whole.
Prints a table and one JSON line with every figure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: its demo/ and tests/ packages

from demo.dockerstack import DockerStack, GuardedStack  # noqa: E402
from demo.loadgen import LoadGenerator  # noqa: E402
from guardian.actuators import ActionRequest  # noqa: E402
from guardian.domain import Action  # noqa: E402

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


def guarded_rollback(rps: float, history: float) -> dict:
    """The guardian decides alone: seconds the bad canary answered clients, first answer to last."""
    with tempfile.TemporaryDirectory(prefix="guardian-bench-") as tmp, \
            GuardedStack(tmp, f"gbench-{uuid.uuid4().hex[:6]}", rps=rps) as g:
        time.sleep(history)  # the service's life before the rollout
        began = time.monotonic()
        state = g.wait(g.start_rollout("guardian-demo:v2"), timeout=180)
        time.sleep(2)  # load on the stable version after the rollback: the last v2 answer is behind us
        g.load.stop()
        stats, v2 = g.load.stats(), g.load.versions.get("v2")
        decision = next((d for d in state["decisions"] if d["action"] == "rollback"), {})
        return {"phase": state["phase"], "seconds": round(time.monotonic() - began, 1),
                "bad_canary_answered_for_s": g.exposure("v2"), "bad_answers": int(v2["count"]) if v2 else 0,
                "failed": stats["failed"], "dropped": stats["dropped"], "reason": decision.get("reason", "")[:200]}


def guarded_promote(rps: float, history: float) -> dict:
    """The good v3 under the guardian alone: its phase at the end, how long it took, failed requests."""
    with tempfile.TemporaryDirectory(prefix="guardian-bench-") as tmp, \
            GuardedStack(tmp, f"gbench-{uuid.uuid4().hex[:6]}", rps=rps) as g:
        time.sleep(history)
        began = time.monotonic()
        rollout = g.start_rollout("guardian-demo:v3")
        try:
            state = g.wait(rollout, timeout=300)
        except Exception:  # paused or stuck: say where it stood
            state = g.guardian.rollout(rollout)
        g.load.stop()
        stats = g.load.stats()
        last = state["decisions"][-1] if state.get("decisions") else {}
        return {"phase": state["phase"], "seconds": round(time.monotonic() - began, 1), "failed": stats["failed"],
                "dropped": stats["dropped"], "reason": (last.get("reason") or "")[:300]}


def demo() -> dict:
    """The README's demo, as a user runs it; its own JSON line, timed whole from outside too."""
    with tempfile.TemporaryDirectory(prefix="guardian-demo-") as tmp:
        began = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "demo.run", "--json", "--workdir", tmp],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
        took = time.monotonic() - began
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    try:
        figures = json.loads(last)
    except ValueError:
        figures = {"demo": "failed", "output": proc.stdout[-2000:]}
    return {**figures, "exit": proc.returncode, "process_seconds": round(took, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=50.0)
    parser.add_argument("--keepalive", action="store_true", help="reuse client connections")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds of load before, between and after actions")
    parser.add_argument("--guarded-runs", type=int, default=5, help="bad canaries the guardian rolls back alone")
    parser.add_argument("--good-runs", type=int, default=5, help="good releases (v3) the guardian judges alone")
    parser.add_argument("--history", type=float, default=90.0, help="seconds of load before each guarded rollout")
    parser.add_argument("--no-scenarios", action="store_true", help="skip the actuator-only scenarios")
    parser.add_argument("--no-demo", action="store_true", help="skip timing the README's demo")
    args = parser.parse_args(argv)
    results = [] if args.no_scenarios else [run(name, args.rps, args.keepalive, args.hold) for name in SCENARIOS]
    print(f"{'scenario':<20}{'requests':>10}{'failed':>8}{'dropped':>9}{'seconds':>9}  note", flush=True)
    for r in results:
        note = "failed = v2's own 5xx answers" if r["scenario"] == "rollback" else ""
        print(f"{r['scenario']:<20}{r['requests']:>10}{r['failed']:>8}{r['dropped']:>9}{r['seconds']:>9}  {note}",
              flush=True)
    guarded = []
    for i in range(args.guarded_runs):
        g = guarded_rollback(args.rps, args.history)
        guarded.append(g)
        print(f"guarded rollback {i + 1}: {g['phase']}, bad canary answered for {g['bad_canary_answered_for_s']} s "
              f"({g['bad_answers']} answers, {g['dropped']} dropped)", flush=True)
    exposure = [g["bad_canary_answered_for_s"] for g in guarded if g["bad_canary_answered_for_s"] is not None]
    summary = {"runs": len(guarded), "rolled_back": sum(g["phase"] == "rolled_back" for g in guarded),
               "median_s": statistics.median(exposure) if exposure else None,
               "max_s": max(exposure) if exposure else None}
    if guarded:
        print(f"bad canary first answer -> all traffic on stable: median {summary['median_s']} s, "
              f"max {summary['max_s']} s over {len(guarded)} runs (goal: median <= 6 s, max <= 10 s)", flush=True)
    good = []
    for i in range(args.good_runs):
        g = guarded_promote(args.rps, args.history)
        good.append(g)
        print(f"good release {i + 1}: {g['phase']} in {g['seconds']} s ({g['failed']} failed, {g['dropped']} dropped)"
              f"{'' if g['phase'] == 'promoted' else ': ' + g['reason']}", flush=True)
    good_summary = {"runs": len(good), "promoted": sum(g["phase"] == "promoted" for g in good), "runs_detail": good}
    demo_figures = None if args.no_demo else demo()
    if demo_figures is not None:
        print(f"demo: {demo_figures.get('demo')} in {demo_figures.get('wall_seconds')} s "
              f"({demo_figures['process_seconds']} s as a process)", flush=True)
    print(json.dumps({"benchmark": "docker_rollouts", "rps": args.rps, "keepalive": args.keepalive,
                      "history_seconds": args.history, "results": results,
                      "guarded_rollback": {**summary, "runs_detail": guarded}, "good_release": good_summary,
                      "demo": demo_figures}))
    ok = (all(r["dropped"] == 0 for r in results) and summary["rolled_back"] == len(guarded)
          and good_summary["promoted"] == len(good)
          and (demo_figures is None or demo_figures.get("demo") == "passed"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
