"""Alertmanager to rollback: how fast, and how many webhook posts the guardian takes in.

    .venv/bin/python benchmarks/alert_latency.py [--runs 5] [--posts 3000] [--concurrency 8]

1. `--runs` alert drills (tests/fixtures/alert_drill.py): a real Prometheus (1 s scrape and rule
   evaluation) fires `CheckoutCanaryErrors` through a real Alertmanager (`group_wait: 0s`) into
   `guardian serve`; seconds from the alert rule's condition being true (the alert's activeAt) to
   the guardian's rollback decision, and from the errors being injected.
2. `--posts` webhook bodies (one alert each, a distinct fingerprint, about no rollout) posted to the
   guardian on loopback by `--concurrency` clients (benchmarks/webhook_intake.py, its lean client):
   posts per second, latency p50/p99, and whether every alert was stored (none lost).
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import webhook_intake  # beside this file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: its demo/ and tests/ packages

from tests.fixtures.alert_drill import AlertDrill  # noqa: E402


def drills(runs: int) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory(prefix="guardian-alerts-") as tmp, AlertDrill(tmp) as drill:
        for i in range(runs):
            r = drill.run()
            out.append(r)
            print(f"drill {i + 1}: condition -> rollback {r['condition_to_decision_s']} s, errors injected -> "
                  f"rollback {r['injection_to_decision_s']} s ({r['source']})", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--posts", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    runs = drills(args.runs)
    lat = [r["condition_to_decision_s"] for r in runs] or [float("nan")]
    inj = [r["injection_to_decision_s"] for r in runs] or [float("nan")]
    if runs:
        print(f"alert condition true -> rollback decision: median {statistics.median(lat)} s, max {max(lat)} s over "
              f"{len(runs)} runs; errors injected -> rollback: median {statistics.median(inj)} s, max {max(inj)} s")
    w = webhook_intake.run(args.posts, args.concurrency)
    print(f"webhook intake: {w['posts_per_s']} posts/s, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, "
          f"{w['refused']} refused, {w['lost']} lost of {w['posts']}")
    print(json.dumps({"benchmark": "alert_latency", "drills": runs,
                      "condition_to_decision_s": {"median": statistics.median(lat), "max": max(lat)},
                      "injection_to_decision_s": {"median": statistics.median(inj), "max": max(inj)},
                      "intake": w}))
    return 0 if w["lost"] == 0 and all(r["source"] == "alertmanager" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
