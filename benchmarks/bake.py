"""The bake on real Docker, nginx and Prometheus: a regression that starts in the bake, and good releases.

    bash scripts/docker-up.sh && .venv/bin/python benchmarks/bake.py [--runs 5] [--good-runs 10] [--bake 30]
        [--onset 8] [--error-ratio 0.1] [--rps 50] [--steps 50,100] [--strategy canary|blue-green|rolling]
        [--only regression|good]

Each run is a fresh GuardedStack (demo/dockerstack.py, as benchmarks/docker_rollouts.py and the demo run
it): two guardian-demo:v1 containers behind a real nginx, a real Prometheus scraping every container each
second, the guardian with its built-in policy (2 s ticks, 10 s of analysis per step) and `--rps` requests/s
through nginx, a new connection each. The guardian rolls out guardian-demo:v3 with `--steps` and a bake of
`--bake` seconds (`bake_seconds` in POST /v1/rollouts): after the last step all traffic goes to v3, the v1
replicas stay running as nginx `backup` servers, out of rotation.

1. regression (`--runs`): `--onset` seconds (plus a random part of a tick) into the bake, every v3
   replica starts answering 5xx to `--error-ratio` of its requests (switched on through each container's
   own /control endpoint, on its published port: the guardian is told nothing). Measured from the load
   generator's own records: the time from the first 5xx it got from v3 to the last answer it got from v3
   (all traffic back on the warm v1; target <= 10 s), split at the guardian's ROLLBACK decision; and the
   requests the flip cost: dropped (no answer) and failed answers from v1 (target 0: only v3's own 5xx).
   A run counts as caught when the error-rate check (errors-vs-baseline) rolled it back in the bake
   after the onset; the table marks the others with `!` and names the checks that failed.
2. good release (`--good-runs`, default twice `--runs`): v3 stays healthy. Never rolled back in its bake,
   and the bake adds no failed or dropped request (counted from the BAKE decision to 2 s after PROMOTE,
   which drains and removes the warm v1 replicas).
Prints a table and one JSON line with every figure; exit 0 when every target is met.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: its demo/ package

from demo.dockerstack import GuardedStack  # noqa: E402
from demo.stack import wait_until  # noqa: E402

PREVIOUS, NEW = "v1", "v3"
IMAGE = f"guardian-demo:{NEW}"
EXPOSURE_TARGET_S = 10.0
ERRORS_CHECK = "errors-vs-baseline"  # the built-in policy's check of the error rate: the one that should catch it


def _decision(state: dict[str, Any], action: str) -> dict[str, Any] | None:
    return next((d for d in state.get("decisions", []) if d.get("action") == action), None)


def _failed_checks(decision: dict[str, Any] | None) -> list[str]:
    return [v["check"] for v in (decision or {}).get("verdicts", []) if v.get("result") == "fail"]


def _wait_phase(g: GuardedStack, rollout_id: str, phases: tuple[str, ...], timeout: float) -> dict[str, Any]:
    return wait_until(lambda: (s := g.guardian.rollout(rollout_id))["phase"] in phases and s, timeout, 0.2,
                      f"rollout {rollout_id} to reach {'/'.join(phases)}")


def _new_replicas(g: GuardedStack) -> dict[str, str]:
    """The running replicas of the new version: name -> 127.0.0.1:PORT (their published app port)."""
    return {r.name: r.address for r in g.stack.containers().replicas(g.service) if r.image == IMAGE and r.address}


def _degrade(replicas: dict[str, str], ratio: float) -> list[str]:
    """Each replica answers 5xx to `ratio` of its requests from now on (its own /control endpoint)."""
    for address in replicas.values():
        httpx.post(f"http://{address}/control", json={"error_ratio": ratio}, timeout=5).raise_for_status()
    return sorted(replicas)


def _stack(tmp: str, rps: float) -> GuardedStack:
    return GuardedStack(tmp, f"gbkbench-{uuid.uuid4().hex[:6]}", rps=rps)


def regression_run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="guardian-bake-") as tmp, _stack(tmp, args.rps) as g:
        began = time.monotonic()
        rid = g.start_rollout(IMAGE, steps=args.steps, bake_seconds=args.bake, strategy=args.strategy)
        state = _wait_phase(g, rid, ("baking", "promoted", "rolled_back"), 240)
        degraded: list[str] = []
        injected_at = None
        if state["phase"] == "baking":
            replicas = _new_replicas(g)
            began_bake = (_decision(state, "bake") or {}).get("at") or time.time()
            time.sleep(max(0.0, args.onset + random.uniform(0, g.tick_seconds)  # not in step with the ticks
                           - (time.time() - began_bake)))
            injected_at = time.monotonic()
            degraded = _degrade(replicas, args.error_ratio)
        state = g.wait(rid, timeout=args.bake + 240)
        time.sleep(2)  # load on the previous version after the rollback: v3's last answer is behind us
        g.load.stop()
        took = time.monotonic() - began
        answers = list(g.load.answers or [])
        bake, rollback = _decision(state, "bake"), _decision(state, "rollback")
        bad = [t for t, v, code in answers if v == NEW and code is not None and code >= 500]
        new = [t for t, v, _ in answers if v == NEW]
        first_bad, last_new = (bad[0] if bad else None), (new[-1] if new else None)
        wall = g.load.wall
        return {
            "phase": state["phase"], "images": g.stack.images(), "degraded": degraded,
            "rolled_back_in_bake": bool(rollback and bake and rollback["tick"] > bake["tick"]),
            # rolled back in the bake by the error-rate check, after the regression began (anything else: not
            # caught by what it should be; a rollback before the onset would be a false one)
            "caught": bool(rollback and bake and rollback["tick"] > bake["tick"] and injected_at is not None
                           and rollback["at"] >= wall(injected_at) and ERRORS_CHECK in _failed_checks(rollback)),
            "failed_checks": _failed_checks(rollback),
            "onset_s": round(wall(injected_at) - bake["at"], 1) if injected_at is not None and bake else None,
            "bake_to_first_bad_s": round(wall(first_bad) - bake["at"], 1) if bake and first_bad else None,
            "first_bad_to_rollback_s": round(rollback["at"] - wall(first_bad), 1) if rollback and first_bad else None,
            "rollback_to_last_new_s": round(wall(last_new) - rollback["at"], 1) if rollback and last_new else None,
            "first_bad_to_all_on_previous_s": round(last_new - first_bad, 1) if first_bad and last_new else None,
            "bad_5xx": len(bad),
            "dropped": sum(1 for _, v, _ in answers if v is None),
            "failed_previous": sum(1 for _, v, code in answers if v == PREVIOUS and code is not None and code >= 400),
            "requests": len(answers), "seconds": round(took, 1),
            "reason": (rollback or {}).get("reason", "")[:240],
        }


def good_run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="guardian-bake-") as tmp, _stack(tmp, args.rps) as g:
        began = time.monotonic()
        rid = g.start_rollout(IMAGE, steps=args.steps, bake_seconds=args.bake, strategy=args.strategy)
        state = g.wait(rid, timeout=args.bake + 300)
        time.sleep(2)  # the promote drains and removes the warm replicas: keep the load on through it
        g.load.stop()
        took = time.monotonic() - began
        answers = list(g.load.answers or [])
        bake, promote, rollback = (_decision(state, a) for a in ("bake", "promote", "rollback"))
        wall = g.load.wall
        end = (promote or {}).get("at", float("inf")) + 2.0
        in_bake = [(t, v, code) for t, v, code in answers if bake and bake["at"] <= wall(t) <= end]
        return {
            "phase": state["phase"], "images": g.stack.images(), "baked": bool(bake),
            "rolled_back": rollback is not None, "failed_checks": _failed_checks(rollback),
            "bake_s": round(promote["at"] - bake["at"], 1) if bake and promote else None,
            "bake_requests": len(in_bake),
            "bake_failed": sum(1 for _, v, code in in_bake if v is not None and code >= 400),
            "bake_dropped": sum(1 for _, v, _ in in_bake if v is None),
            "failed": sum(1 for _, v, code in answers if v is not None and code >= 400),
            "dropped": sum(1 for _, v, _ in answers if v is None),
            "requests": len(answers), "seconds": round(took, 1),
            "reason": (rollback or {}).get("reason", "")[:240],
        }


def _summary_regression(runs: list[dict[str, Any]]) -> dict[str, Any]:
    exposure = [r["first_bad_to_all_on_previous_s"] for r in runs if r["first_bad_to_all_on_previous_s"] is not None]
    detect = [r["first_bad_to_rollback_s"] for r in runs if r["first_bad_to_rollback_s"] is not None]
    return {"runs": len(runs), "rolled_back_in_bake": sum(r["rolled_back_in_bake"] for r in runs),
            "caught": sum(r["caught"] for r in runs),
            "back_on_previous": sum(r["images"] == [f"guardian-demo:{PREVIOUS}"] * 2 for r in runs),
            "first_bad_to_all_on_previous_s": {"median": statistics.median(exposure) if exposure else None,
                                               "max": max(exposure) if exposure else None,
                                               "target_max": EXPOSURE_TARGET_S},
            "first_bad_to_rollback_s": {"median": statistics.median(detect) if detect else None,
                                        "max": max(detect) if detect else None},
            "bad_5xx": sum(r["bad_5xx"] for r in runs), "dropped": sum(r["dropped"] for r in runs),
            "failed_previous": sum(r["failed_previous"] for r in runs),
            "requests": sum(r["requests"] for r in runs)}


def _summary_good(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"runs": len(runs), "promoted": sum(r["phase"] == "promoted" for r in runs),
            "baked": sum(r["baked"] for r in runs), "rolled_back": sum(r["rolled_back"] for r in runs),
            "bake_requests": sum(r["bake_requests"] for r in runs),
            "bake_failed": sum(r["bake_failed"] for r in runs), "bake_dropped": sum(r["bake_dropped"] for r in runs),
            "failed": sum(r["failed"] for r in runs), "dropped": sum(r["dropped"] for r in runs),
            "requests": sum(r["requests"] for r in runs)}


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="regressions that start in the bake")
    parser.add_argument("--good-runs", type=int, default=None, help="good releases (default: twice --runs)")
    parser.add_argument("--bake", type=float, default=30.0, help="bake seconds of every rollout")
    parser.add_argument("--onset", type=float, default=8.0,
                        help="seconds into the bake the regression starts (plus a random part of a tick)")
    parser.add_argument("--error-ratio", type=float, default=0.1, help="the regression's share of 5xx answers")
    parser.add_argument("--rps", type=float, default=50.0, help="requests/s through nginx")
    parser.add_argument("--steps", default="50,100", help="canary steps before the bake")
    parser.add_argument("--strategy", default="canary", choices=("canary", "blue-green", "rolling"),
                        help="the docker actuator's strategy for the steps")
    parser.add_argument("--only", choices=("regression", "good"), help="run one scenario only")
    args = parser.parse_args(argv)
    args.steps = [int(s) for s in args.steps.split(",")]
    good_runs = 2 * args.runs if args.good_runs is None else args.good_runs
    began = time.monotonic()

    regression: list[dict[str, Any]] = []
    if args.only != "good":
        print(f"regression in the bake: {args.error_ratio:.0%} 5xx from {args.onset:g} s into a {args.bake:g} s bake; "
              f"{args.runs} runs", flush=True)
        print(f"{'run':>4}  {'phase':<13}{'onset':>7}{'bad->rollback':>15}{'rollback->last':>16}"
              f"{'bad->all on prev':>18}{'bad 5xx':>9}{'dropped':>9}{'v1 failed':>11}  failed checks", flush=True)
        for i in range(args.runs):
            r = regression_run(args)
            regression.append(r)
            phase = r["phase"] + ("" if r["caught"] else " !")  # !: not rolled back by the error check in the bake
            print(f"{i + 1:>4}  {phase:<13}{_fmt(r['onset_s']):>7}{_fmt(r['first_bad_to_rollback_s']):>15}"
                  f"{_fmt(r['rollback_to_last_new_s']):>16}{_fmt(r['first_bad_to_all_on_previous_s']):>18}"
                  f"{r['bad_5xx']:>9}{r['dropped']:>9}{r['failed_previous']:>11}  "
                  f"{', '.join(r['failed_checks']) or '-'}", flush=True)
    good: list[dict[str, Any]] = []
    if args.only != "regression":
        print(f"good release with a {args.bake:g} s bake; {good_runs} runs", flush=True)
        print(f"{'run':>4}  {'phase':<13}{'bake s':>8}{'bake requests':>15}{'bake failed':>13}{'bake dropped':>14}"
              f"{'run failed':>12}{'run dropped':>13}  failed checks", flush=True)
        for i in range(good_runs):
            r = good_run(args)
            good.append(r)
            print(f"{i + 1:>4}  {r['phase']:<13}{_fmt(r['bake_s']):>8}{r['bake_requests']:>15}{r['bake_failed']:>13}"
                  f"{r['bake_dropped']:>14}{r['failed']:>12}{r['dropped']:>13}  {', '.join(r['failed_checks']) or '-'}",
                  flush=True)

    summary: dict[str, Any] = {"benchmark": "bake", "strategy": args.strategy, "rps": args.rps,
                               "bake_seconds": args.bake, "steps": args.steps,
                               "tick_seconds": 2.0, "scrape_interval": "1s", "onset_s": args.onset,
                               "error_ratio": args.error_ratio, "wall_seconds": None}
    ok = True
    if regression:
        s = _summary_regression(regression)
        e = s["first_bad_to_all_on_previous_s"]
        print(f"regression: rolled back in the bake by {ERRORS_CHECK} {s['caught']}/{s['runs']}; first bad answer "
              f"-> all traffic on the warm previous version: median {e['median']} s, max {e['max']} s "
              f"(target <= {EXPOSURE_TARGET_S:g} s); dropped {s['dropped']}, failed answers from v1 "
              f"{s['failed_previous']} (target 0; v3's own 5xx: {s['bad_5xx']})", flush=True)
        ok &= (s["caught"] == s["runs"] and s["back_on_previous"] == s["runs"]
               and e["max"] is not None and e["max"] <= EXPOSURE_TARGET_S
               and s["dropped"] == 0 and s["failed_previous"] == 0)
        summary["regression"] = {**s, "runs_detail": regression}
    if good:
        s = _summary_good(good)
        print(f"good release: promoted {s['promoted']}/{s['runs']}, rolled back {s['rolled_back']}; the bake: "
              f"{s['bake_requests']} requests, {s['bake_failed']} failed, {s['bake_dropped']} dropped (target 0)",
              flush=True)
        ok &= (s["promoted"] == s["runs"] == s["baked"] and s["rolled_back"] == 0 and s["bake_failed"] == 0
               and s["bake_dropped"] == 0)
        summary["good"] = {**s, "runs_detail": good}
    summary["wall_seconds"] = round(time.monotonic() - began, 1)
    summary["targets_met"] = bool(ok)
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
