"""Monte Carlo A/A of the rate test: how often does a healthy canary get rolled back, checked every tick?

    .venv/bin/python benchmarks/aa_rate.py [--runs 2000] [--alpha 0.01] [--ticks 180] [--history 30] [--seed 7]

Each run is one A/A rollout of `--ticks` 10 s ticks: traffic 0.5-100 requests/s, a canary share of 5-50%,
a base error rate of 0.05%, 0.2%, 1% or 3%, the same for both arms. The error rate per tick and arm is
binomial, or overdispersed: multiplied by a gamma factor of coefficient of variation cv (each arm its own:
bursts the baseline cannot cancel; or one factor for both: a dependency outage). The same process runs
`--history` ticks before the rollout: the service's pre-rollout window that the guard fetches.

Two columns, the two ways the default policy runs the rate test (`rate_test_first_rejection`, as
judge/compare.py runs it: staggered starts every 6 ticks, no warm-up for errors): the share test (the
conditional-binomial share, tempered by the baseline's dispersion, capped at ×3 per tick) at α·(1 −
LEVEL_ALPHA_SHARE) and the level test (the fast path: each tick's canary count against the service's own
rate, negative binomial) at the rest,
- "no window": the level test's reference is the baseline's own ticks (a recording without `#before`);
- "with window": it is also the service's `--history` ticks before the rollout.
The target: every rate at or below alpha. Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guardian.judge.sequential import rate_test_first_rejection  # noqa: E402
from tests.fixtures.aa_counts import aa_rollout  # noqa: E402

SCENARIOS = {"binomial": (0.0, False), "gamma cv 0.3, per arm": (0.3, False), "gamma cv 1, per arm": (1.0, False),
             "gamma cv 2, per arm": (2.0, False), "gamma cv 2, both arms at once": (2.0, True)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--ticks", type=int, default=180)
    p.add_argument("--history", type=int, default=30, help="ticks of the service before the rollout (the reference)")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    began, rows, h = time.perf_counter(), {}, a.history
    print(f"{'scenario':<32}{'no window':>12}{'with window':>15}   (alpha {a.alpha:g}, {a.runs} runs, "
          f"{a.ticks} ticks, {h} ticks before)")
    for name, (cv, shared) in SCENARIOS.items():
        rng = np.random.default_rng(a.seed)
        hits = {"no window": 0, "with window": 0}
        for _ in range(a.runs):
            k_c, n_c, k_b, n_b = aa_rollout(rng, a.ticks + h, cv, shared=shared)
            reference = (k_c[:h].sum() + k_b[:h].sum(), n_c[:h].sum() + n_b[:h].sum(), float(h))
            path = (k_c[h:], n_c[h:], k_b[h:], n_b[h:])
            hits["no window"] += rate_test_first_rejection(*path, alpha=a.alpha) is not None
            with_window = rate_test_first_rejection(*path, alpha=a.alpha, reference=reference if h else None)
            hits["with window"] += with_window is not None
        rows[name] = {mode: round(n / a.runs, 4) for mode, n in hits.items()}
        print(f"{name:<32}{rows[name]['no window']:>12.4f}{rows[name]['with window']:>15.4f}", flush=True)
    ok = all(v <= a.alpha for r in rows.values() for v in r.values())
    print(json.dumps({"benchmark": "aa_rate", "command": "benchmarks/aa_rate.py " + " ".join(argv or sys.argv[1:]),
                      "alpha": a.alpha, "runs": a.runs, "ticks": a.ticks, "history_ticks": h,
                      "false_rollback_rate": rows, "within_alpha": ok,
                      "seconds": round(time.perf_counter() - began, 1)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
