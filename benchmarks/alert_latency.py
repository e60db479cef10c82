"""Alertmanager to rollback: how fast, and how many webhook posts the guardian takes in.

    .venv/bin/python benchmarks/alert_latency.py [--runs 5] [--posts 3000] [--concurrency 8]

1. `--runs` alert drills (guardian/demo/alert_drill.py): a real Prometheus (1 s scrape and rule
   evaluation) fires `CheckoutCanaryErrors` through a real Alertmanager (`group_wait: 0s`) into
   `guardian serve`; seconds from the alert rule's condition being true (the alert's activeAt) to
   the guardian's rollback decision, and from the errors being injected.
2. `--posts` webhook bodies (one alert each, a distinct fingerprint, about no rollout) posted to the
   guardian on loopback by `--concurrency` clients: posts per second, latency p50/p99, and whether
   every alert was stored (none lost).
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from guardian.demo.alert_drill import TOKEN, AlertDrill
from guardian.demo.stack import GuardianServer


def drills(runs: int) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory(prefix="guardian-alerts-") as tmp, AlertDrill(tmp) as drill:
        for i in range(runs):
            r = drill.run()
            out.append(r)
            print(f"drill {i + 1}: condition -> rollback {r['condition_to_decision_s']} s, errors injected -> "
                  f"rollback {r['injection_to_decision_s']} s ({r['source']})", flush=True)
    return out


def body(i: int) -> bytes:
    return json.dumps({
        "version": "4", "groupKey": f"bench-{i}", "truncatedAlerts": 0, "status": "firing", "receiver": "guardian",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "alerts": [{"status": "firing", "labels": {"alertname": "BenchAlert", "service": "bench-nothing",
                                                   "severity": "info", "n": str(i)},
                    "annotations": {"summary": "benchmark"}, "startsAt": "2026-11-28T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": f"bench{i:08d}"}],
    }).encode()


def intake(posts: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="guardian-intake-") as tmp:
        work = Path(tmp)
        (work / "rules").mkdir()
        g = GuardianServer(work, prometheus_url="http://127.0.0.1:9", rules=[str(work / "rules")],
                           alerts_token=TOKEN, log_level="WARNING").start()
        try:
            bodies = [body(i) for i in range(posts)]
            latencies: list[float] = []
            failures: list[str] = []
            lock = threading.Lock()
            nxt = iter(range(posts))

            def worker() -> None:
                headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
                with httpx.Client(base_url=g.url, headers=headers, timeout=10) as c:
                    while True:
                        with lock:
                            i = next(nxt, None)
                        if i is None:
                            return
                        t = time.perf_counter()
                        r = c.post("/v1/alerts", content=bodies[i])
                        dt = time.perf_counter() - t
                        with lock:
                            latencies.append(dt)
                            if r.status_code != 200:
                                failures.append(f"{r.status_code} {r.text[:100]}")

            began = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.perf_counter() - began
            stored = len(g.api("GET", "/v1/alerts", params={"all": True}).json())
        finally:
            g.stop()
    q = statistics.quantiles(latencies, n=100)
    return {"posts": posts, "concurrency": concurrency, "seconds": round(took, 2),
            "posts_per_second": round(posts / took), "p50_ms": round(q[49] * 1000, 1),
            "p99_ms": round(q[98] * 1000, 1), "refused": len(failures), "stored": stored,
            "lost": posts - stored, "first_failures": failures[:3]}


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
    w = intake(args.posts, args.concurrency)
    print(f"webhook intake: {w['posts_per_second']} posts/s, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, "
          f"{w['refused']} refused, {w['lost']} lost of {w['posts']}")
    print(json.dumps({"benchmark": "alert_latency", "drills": runs,
                      "condition_to_decision_s": {"median": statistics.median(lat), "max": max(lat)},
                      "injection_to_decision_s": {"median": statistics.median(inj), "max": max(inj)},
                      "intake": w}))
    return 0 if w["lost"] == 0 and all(r["source"] == "alertmanager" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
