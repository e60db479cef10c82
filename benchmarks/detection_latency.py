"""Live detection latency: seconds from error injection to the guardian's rollback decision.

A real Prometheus (1 s scrape) scrapes a baseline and a canary demo app, each under 20 requests/s;
the guardian runs as `guardian serve` with a 2 s tick. Each run starts a rollout, waits for a
passing verdict, switches the canary's error ratio from 0% to 20%, and times the rollback decision
(its `at`, written by the guardian) from the moment of the switch. Prints one JSON line.

    .venv/bin/python benchmarks/detection_latency.py --policy seed --runs 5
    .venv/bin/python benchmarks/detection_latency.py --policy immediate --runs 5

`seed` is the shipped rules/checkout.yaml (error rate > 5% for 2 minutes, 30 s window);
`immediate` is the same check with `for: 0s` and a 10 s window: the detection latency itself.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: its demo/ and tests/ packages

from demo.loadgen import LoadGenerator  # noqa: E402
from demo.stack import DemoApp, GuardianServer, PrometheusServer, wait_until  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMMEDIATE = """\
service: checkout
checks:
  - {name: error-rate, kind: threshold, ratio: errors / requests, above: 5%, window: 10s, for: 0s,
     min_samples: 50, action: rollback}
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", choices=["seed", "immediate"], default="immediate")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--rps", type=float, default=20.0, help="requests/s to each arm")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="detection-"))
    rules = work / "rules"
    rules.mkdir()
    if a.policy == "seed":
        (rules / "checkout.yaml").write_text((REPO / "rules" / "checkout.yaml").read_text())
    else:
        (rules / "checkout.yaml").write_text(IMMEDIATE)
    (work / "prometheus").mkdir()
    (work / "guardian").mkdir()
    started: list = []
    latencies: list[float] = []
    try:
        baseline = DemoApp("baseline", latency=0.005).start()
        started.append(baseline)
        canary = DemoApp("canary", latency=0.005).start()
        started.append(canary)
        prom = PrometheusServer([(baseline.target, {"service": "checkout", "track": "baseline"}),
                                 (canary.target, {"service": "checkout", "track": "canary"})], "1s",
                                workdir=work / "prometheus").start()
        started.append(prom)
        load = LoadGenerator({baseline.url: 1, canary.url: 1}, rps=2 * a.rps, max_seconds=3600).start()
        started.append(load)
        prom.wait_for_series('http_requests_total{service="checkout",track="canary"}', timeout=30)
        guardian = GuardianServer(work / "guardian", prometheus_url=prom.url, rules=[str(rules)], tick_seconds=2,
                                  evaluation_delay=1, min_window=4, analysis_seconds=3600).start()
        started.append(guardian)
        for run in range(a.runs):
            canary.control(error_ratio=0.0)
            rid = guardian.api("POST", "/v1/rollouts", json={"service": "checkout", "image": f"run{run}",
                                                              "target": "noop"}).raise_for_status().json()["id"]
            wait_until(lambda rid=rid: guardian.rollout(rid)["verdicts"]
                       and all(v["result"] == "pass" for v in guardian.rollout(rid)["verdicts"]),
                       120, 0.2, "passing verdicts")
            canary.control(error_ratio=0.2)
            injected = time.time()
            r = wait_until(lambda rid=rid: (x := guardian.rollout(rid))["phase"] == "rolled_back" and x,
                           600, 0.2, "the rollback")
            latency = r["decisions"][-1]["at"] - injected
            latencies.append(latency)
            print(f"run {run + 1}: {latency:.1f} s  ({r['decisions'][-1]['reason'][:120]})", file=sys.stderr)
    finally:
        for thing in reversed(started):
            thing.stop()
    print(json.dumps({
        "benchmark": "detection_latency", "policy": a.policy, "scrape_interval_s": 1, "tick_s": 2,
        "canary_rps": a.rps, "error_ratio": "0 -> 0.2", "runs": len(latencies),
        "seconds": [round(x, 2) for x in latencies],
        "median_s": round(statistics.median(latencies), 2), "min_s": round(min(latencies), 2),
        "max_s": round(max(latencies), 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
