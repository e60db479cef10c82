"""The steady-state guard on real Docker + nginx + Prometheus: a ×3 surge met by a scale-out, a scale-in after it.

    bash scripts/docker-up.sh && .venv/bin/python benchmarks/steady_state.py [--runs 3] [--rps 50]
        [--surge-seconds 45] [--scale-in-after 20] [--cooldown 40] [--cusum] [--json PATH]

Each run starts from nothing (demo/dockerstack.py's GuardedStack, a service of its own): two guardian-demo:v1
containers behind a real nginx, a real Prometheus scraping them every second, `--rps` requests/s through nginx,
and `guardian serve` (2 s ticks). The service gets a rule file with a `watch:` section (min 2, max 4 replicas)
and a forecast check on `requests` (direction above, 3 consecutive periods of 10 s beyond 3σ, action scale,
replicas 1; `--cusum` turns on the check's CUSUM, the rule files' default); its model is fitted with the real
fitting code on a synthetic history of the normal rate (demo/steady.py says how) and written to the guardian's
models_dir (`<models_dir>/<service>/requests.json`, as `guardian baseline fit` writes it). Once the watch has
judged a period of normal traffic, and a further 0-10 s (run i waits random.Random(i).uniform(0, 10): where in
its 10 s period the surge begins decides whether that period already counts), `2 × --rps` more requests/s go
through nginx for `--surge-seconds` (×3 in all).

Measured per run, from the guardian's own decision log (the decision's time) and from outside (the docker
engine's container list and the new replica's own /metrics, polled every 0.2 s; the load generators' answers):
surge start -> the scale-out decision, -> the new replica serving its first request; surge end -> the scale-in
decision, -> the replica removed; failed requests (non-2xx, or no answer) from the scale-out decision until 5 s
after the new replica serves, and from the scale-in decision until 5 s after the replica is gone (target 0 for
both). Prints each run's decision log, a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: its demo/ package

from demo.dockerstack import GuardedStack  # noqa: E402
from demo.steady import WatchRules, install, short, surge  # noqa: E402


def one_run(i: int, args: argparse.Namespace, rules: WatchRules) -> dict:
    with tempfile.TemporaryDirectory(prefix="guardian-steady-") as tmp:
        work = Path(tmp)
        models = work / "models"
        service = f"gsteady-{uuid.uuid4().hex[:6]}"
        old = os.environ.get("GUARDIAN_MODELS_DIR")
        os.environ["GUARDIAN_MODELS_DIR"] = str(models)  # the guardian subprocess reads its models here
        try:
            with GuardedStack(work, service, replicas=2, rps=args.rps) as g:
                began = time.monotonic()
                info = install(work / "rules", service, args.rps, rules=rules, models_dir=models, seed=i)
                print(f"run {i + 1}: {service}: model {info['model']} (forecast {info['level']:.1f} req/s, "
                      f"σ {info['sigma']:.2f}, scale-out above {info['limit']:.1f}); rules {info['rule_file']}",
                      flush=True)
                figures = surge(g.guardian, g.stack.url, service, g.load, extra_rps=2 * args.rps,
                                surge_seconds=args.surge_seconds, timeout=args.timeout,
                                delay=random.Random(i).uniform(0, rules.period),  # anywhere in a period
                                say=lambda text: print("    " + text, flush=True))
                figures["seconds"] = round(time.monotonic() - began, 1)
                figures["model"] = {k: round(info[k], 3) for k in ("level", "sigma", "limit")}
                figures["guardian_log_watch_lines"] = [
                    line for line in g.guardian.log_tail(200_000).splitlines()
                    if "watch" in line and ("started" in line or "scale" in line or "refused" in line)][-10:]
        finally:
            if old is None:
                os.environ.pop("GUARDIAN_MODELS_DIR", None)
            else:
                os.environ["GUARDIAN_MODELS_DIR"] = old
    for d in figures["decisions"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(d["at"]))
        print(f"    {stamp} {d['action']:<6} {d['replicas']:+d} ok={d['ok']}  {short(d['reason'], 220)}", flush=True)
    if figures["no_answer"]:
        print(f"    no answer (s from the surge's start, why): {figures['no_answer']}", flush=True)
    return figures


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 1) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rps", type=float, default=50.0, help="the normal load; the surge is 3 times it")
    parser.add_argument("--surge-seconds", type=float, default=45.0)
    parser.add_argument("--scale-in-after", type=float, default=20.0)
    parser.add_argument("--cooldown", type=float, default=40.0)
    parser.add_argument("--cusum", action="store_true", help="the forecast check's CUSUM on (the rule default)")
    parser.add_argument("--timeout", type=float, default=240.0, help="longest wait for the scale-in after a surge")
    parser.add_argument("--json", type=Path, help="also write the JSON document here (e.g. benchmarks/results/)")
    args = parser.parse_args(argv)
    rules = WatchRules(scale_in_after=args.scale_in_after, cooldown=args.cooldown, cusum=args.cusum)
    runs = [one_run(i, args, rules) for i in range(args.runs)]

    head = (f"{'run':>4}{'out dec s':>11}{'serving s':>11}{'in dec s':>10}{'removed s':>11}{'all in s':>10}"
            f"{'fail out':>10}{'fail in':>9}{'fail all':>10}{'outs':>6}{'ins':>5}{'skipped':>9}")
    print(head, flush=True)
    for i, r in enumerate(runs):
        o, n, w = r.get("during_scale_out") or {}, r.get("during_scale_in") or {}, r["whole_run"]
        print(f"{i + 1:>4}{_s(r['scale_out_decided_s']):>11}{_s(r['new_replica_serving_s']):>11}"
              f"{_s(r['scale_in_decided_s']):>10}{_s(r['replica_removed_s']):>11}{_s(r['all_scaled_in_s']):>10}"
              f"{_fails(o):>10}{_fails(n):>9}{_fails(w):>10}{r['scale_outs']:>6}{r['scale_ins']:>5}{r['skipped']:>9}",
              flush=True)
    print("out dec / serving: seconds from the surge's start to the first scale-out decision / its replica's first "
          "answer; in dec / removed / all in: from the surge's end to the first scale-in decision / its replica gone / "
          "the last scale-in (every added replica taken back). fail: failed + dropped requests of all answered in "
          "the scalings' windows (decision -> 5 s after the replica serves or is gone), and over the whole run. "
          "skipped: surge requests the client could not send in time.")
    summary = {
        "runs": len(runs),
        "scaled_out": sum(r["scale_out_ok"] for r in runs), "scaled_in": sum(r["scale_in_ok"] for r in runs),
        "scale_out_decided_s_median": _median([r["scale_out_decided_s"] for r in runs]),
        "scale_out_decided_s_max": max((r["scale_out_decided_s"] for r in runs if r["scale_out_decided_s"] is not None),
                                       default=None),
        "new_replica_serving_s_median": _median([r["new_replica_serving_s"] for r in runs]),
        "scale_in_decided_s_median": _median([r["scale_in_decided_s"] for r in runs]),
        "replica_removed_s_median": _median([r["replica_removed_s"] for r in runs]),
        "all_scaled_in_s_median": _median([r["all_scaled_in_s"] for r in runs]),
        "scale_outs_per_surge": [r["scale_outs"] for r in runs],
        "failed_during_scale_out": sum(_bad(r.get("during_scale_out")) for r in runs),
        "failed_during_scale_in": sum(_bad(r.get("during_scale_in")) for r in runs),
        "failed_whole_runs": sum(_bad(r["whole_run"]) for r in runs),
    }
    print(f"scale-out decided {summary['scale_out_decided_s_median']} s after the surge began (median, max "
          f"{summary['scale_out_decided_s_max']}), new replica serving at {summary['new_replica_serving_s_median']} s; "
          f"scale-in decided {summary['scale_in_decided_s_median']} s after it ended; failed requests: "
          f"{summary['failed_during_scale_out']} during scale-outs, {summary['failed_during_scale_in']} during "
          f"scale-ins, {summary['failed_whole_runs']} in all ({summary['scaled_out']}/{len(runs)} scaled out, "
          f"{summary['scaled_in']}/{len(runs)} back in)", flush=True)
    doc = {"benchmark": "steady_state", "command": "benchmarks/steady_state.py " + " ".join(argv or sys.argv[1:]),
           "rps": args.rps, "surge_rps": 3 * args.rps, "surge_seconds": args.surge_seconds,
           "rules": rules.text("SERVICE"), "summary": summary, "runs_detail": runs}
    print(json.dumps(doc))
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    ok = (summary["scaled_out"] == summary["scaled_in"] == len(runs) and summary["failed_during_scale_out"] == 0
          and summary["failed_during_scale_in"] == 0)
    return 0 if ok else 1


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _bad(window: dict | None) -> int:
    return 0 if not window else window["failed"] + window["dropped"]


def _fails(window: dict) -> str:
    return "-" if not window else f"{window['failed'] + window['dropped']}/{window['requests']}"


if __name__ == "__main__":
    sys.exit(main())
