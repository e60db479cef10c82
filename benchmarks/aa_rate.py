"""Monte Carlo A/A of the rate test: how often does a healthy canary get rolled back, checked every tick?

    .venv/bin/python benchmarks/aa_rate.py [--runs 2000] [--alpha 0.01] [--ticks 180] [--cap 3] [--seed 7]

Each run is one A/A rollout of `--ticks` 10 s ticks: traffic 0.5-100 requests/s, a canary share of 5-50%,
a base error rate of 0.05%, 0.2%, 1% or 3%, the same for both arms. The error rate per tick and arm is
binomial, or overdispersed: multiplied by a gamma factor of coefficient of variation cv (each arm its own:
bursts the baseline cannot cancel; or one factor for both: a dependency outage). The rate test runs as the
default policy runs it (guardian.judge.sequential: the conditional-binomial mixture, staggered starts every
6 ticks, no warm-up for errors, per-tick cap `--cap`), tempered by the baseline's dispersion and, for
comparison, untempered. The target: every rate at or below alpha.
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guardian.judge.sequential import baseline_dispersion, first_rejection, rate_log_lr  # noqa: E402
from tests.fixtures.aa_counts import aa_rollout  # noqa: E402

SCENARIOS = {"binomial": (0.0, False), "gamma cv 0.3, per arm": (0.3, False), "gamma cv 1, per arm": (1.0, False),
             "gamma cv 2, per arm": (2.0, False), "gamma cv 2, both arms at once": (2.0, True)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--ticks", type=int, default=180)
    p.add_argument("--cap", type=float, default=3.0, help="the most one tick may multiply the evidence by")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    began, rows = time.perf_counter(), {}
    print(f"{'scenario':<32}{'tempered':>10}{'untempered':>12}   (alpha {a.alpha:g}, {a.runs} runs, cap {a.cap:g})")
    for name, (cv, shared) in SCENARIOS.items():
        rng = np.random.default_rng(a.seed)
        hits = {"tempered": 0, "untempered": 0}
        for _ in range(a.runs):
            k_c, n_c, k_b, n_b = aa_rollout(rng, a.ticks, cv, shared=shared)
            for mode, phi in (("tempered", baseline_dispersion(k_b, n_b)), ("untempered", None)):
                lr = rate_log_lr(k_c, n_c, k_b, n_b, burst_cap=a.cap, dispersion=phi)
                hits[mode] += first_rejection(lr, a.alpha, warmup=0, every=6) is not None
        rows[name] = {mode: round(n / a.runs, 4) for mode, n in hits.items()}
        print(f"{name:<32}{rows[name]['tempered']:>10.4f}{rows[name]['untempered']:>12.4f}", flush=True)
    ok = all(r["tempered"] <= a.alpha for r in rows.values())
    print(json.dumps({"benchmark": "aa_rate", "command": "benchmarks/aa_rate.py " + " ".join(argv or sys.argv[1:]),
                      "alpha": a.alpha, "runs": a.runs, "ticks": a.ticks, "cap": a.cap, "false_rollback_rate": rows,
                      "within_alpha": ok, "seconds": round(time.perf_counter() - began, 1)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
