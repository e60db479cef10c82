"""Decision quality on the bench recordings, the guardian beside the reference policies.

    .venv/bin/python benchmarks/decision_quality.py [--bench ../shared/bench] [--rules FILE]

Replays every recording through the real engine (`guardian replay`), scores the decisions with the
bench's own scorer (`bench.py score`), scores the peers' reference policies (`bench.py peers`), and
prints a table and one JSON line (with the replay speed in recordings per second).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

from guardian.engine.replay import replay_many
from guardian.rules.loader import DEFAULT_RULESET, load_paths

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("false_rollback_rate", "detection_rate", "ttd_median_s", "ttd_p90_s", "rolled_back_before_onset",
           "silent_canary_promoted_rate")


def load_bench(bench: Path):
    spec = importlib.util.spec_from_file_location("bench", bench / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DEFAULT_BENCH = REPO.parent / "shared" / "bench"


def evaluate(bench_dir: Path = DEFAULT_BENCH, rules: Path | None = None) -> dict:
    """Replay every bench recording through the real engine and score the decisions beside the peers':
    {"guardian": scores, "peers": {name: scores}, "recordings", "replay_seconds", "recordings_per_second"}."""
    bench = load_bench(bench_dir)
    recordings = bench_dir / "recordings"
    files = sorted(recordings.glob("*.json"))
    ruleset = next(iter(load_paths([rules]).values())) if rules else DEFAULT_RULESET
    began = time.perf_counter()
    results = list(replay_many(files, ruleset))
    elapsed = time.perf_counter() - began
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
        for r in results:
            fh.write(json.dumps(r.to_json()) + "\n")
    return {"rules": str(rules or "built-in default"), "guardian": bench.score_file(str(recordings), fh.name),
            "peers": bench.peers(str(recordings)), "recordings": len(files), "replay_seconds": round(elapsed, 2),
            "recordings_per_second": round(len(files) / elapsed, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", type=Path, default=DEFAULT_BENCH)
    p.add_argument("--rules", type=Path, help="a rule file (default: the built-in default policy)")
    a = p.parse_args()
    r = evaluate(a.bench, a.rules)
    table = {"guardian": r["guardian"], **r["peers"]}
    width = max(map(len, table))
    print(f"{'policy':<{width}}  " + "  ".join(f"{c:>26}" for c in COLUMNS))
    for name, row in table.items():
        print(f"{name:<{width}}  " + "  ".join(f"{str(row.get(c)):>26}" for c in COLUMNS))
    print(f"replay: {r['recordings']} recordings in {r['replay_seconds']:.1f} s = "
          f"{r['recordings_per_second']:.1f} recordings/s")
    print(json.dumps({"benchmark": "decision_quality", **r}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
