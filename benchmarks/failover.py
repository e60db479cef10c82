"""Failover between two guardian replicas on one PostgreSQL: how long a rollout goes unwatched.

    .venv/bin/python benchmarks/failover.py [--runs 5] [--lease-seconds 15] [--tick-seconds 2]

A real PostgreSQL 15, a real Prometheus (1 s scrape) over two demo apps under load, and two
`guardian serve` replicas (tests/fixtures/ha_stack.py). One rollout, held in its first step (long
analysis), is ticked by the replica holding its lease. Each run SIGKILLs that replica and measures
the seconds from the kill to the first tick written by the other (the first row of the `ticks` table
after the kill: only a survivor can write one), then starts a fresh replica so the next run again has
two. Expected: within lease_seconds (counted from the dead replica's last renewal, every lease/3) plus
up to one tick. Prints one line per run, a summary and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.stack import wait_until  # noqa: E402
from tests.fixtures.ha_stack import HAStack  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--lease-seconds", type=float, default=15.0)
    ap.add_argument("--tick-seconds", type=float, default=2.0)
    args = ap.parse_args()
    figures: list[float] = []
    with HAStack(lease_seconds=args.lease_seconds, tick_seconds=args.tick_seconds, analysis_seconds=3600) as ha:
        ha.replica("r0")
        ha.replica("r1")
        rid = ha.start_rollout(ha.replicas["r0"], steps="50,100")
        for run in range(1, args.runs + 1):
            # let the holder settle into its renewal rhythm and tick a few times before the kill
            last = ha.sql("SELECT coalesce(max(tick), -1) FROM ticks WHERE rollout_id = %s", rid)[0][0]
            wait_until(lambda last=last: ha.sql("SELECT max(tick) FROM ticks WHERE rollout_id = %s", rid)[0][0]
                       >= last + 2, 10 * args.tick_seconds + 30, 0.1, "two ticks")
            killed, killed_at = ha.kill_holder(rid)
            seconds, survivor = ha.wait_takeover(rid, killed_at, timeout=3 * args.lease_seconds + 30)
            figures.append(seconds)
            print(f"run {run}: killed {killed}, {survivor} ticked {seconds:.2f} s later", flush=True)
            ha.replica(f"r{len(ha.replicas)}")  # back to two replicas
            time.sleep(0.5)
        state = ha.replicas[survivor].rollout(rid)
    summary = {"benchmark": "failover", "runs": len(figures), "lease_seconds": args.lease_seconds,
               "tick_seconds": args.tick_seconds, "median_seconds": round(statistics.median(figures), 2),
               "max_seconds": round(max(figures), 2), "min_seconds": round(min(figures), 2),
               "seconds": [round(f, 2) for f in figures], "rollout_phase_after": state["phase"]}
    print(f"failover (kill of the active replica -> first tick by the other), lease {args.lease_seconds:g} s, "
          f"tick {args.tick_seconds:g} s: median {summary['median_seconds']} s, max {summary['max_seconds']} s "
          f"over {len(figures)} runs")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
