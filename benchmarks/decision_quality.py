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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", type=Path, default=REPO.parent / "shared" / "bench")
    p.add_argument("--rules", type=Path, help="a rule file (default: the built-in default policy)")
    a = p.parse_args()
    bench = load_bench(a.bench)
    recordings = a.bench / "recordings"
    files = sorted(recordings.glob("*.json"))
    ruleset = next(iter(load_paths([a.rules]).values())) if a.rules else DEFAULT_RULESET
    began = time.perf_counter()
    results = list(replay_many(files, ruleset))
    elapsed = time.perf_counter() - began
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
        for r in results:
            fh.write(json.dumps(r.to_json()) + "\n")
    ours = bench.score_file(str(recordings), fh.name)
    table = {"guardian": ours, **bench.peers(str(recordings))}
    width = max(map(len, table))
    print(f"{'policy':<{width}}  " + "  ".join(f"{c:>26}" for c in COLUMNS))
    for name, row in table.items():
        print(f"{name:<{width}}  " + "  ".join(f"{str(row.get(c)):>26}" for c in COLUMNS))
    print(f"replay: {len(files)} recordings in {elapsed:.1f} s = {len(files) / elapsed:.1f} recordings/s")
    print(json.dumps({"benchmark": "decision_quality", "rules": str(a.rules or "built-in default"),
                      "guardian": ours, "peers": {k: v for k, v in table.items() if k != "guardian"},
                      "replay_seconds": round(elapsed, 2), "recordings_per_second": round(len(files) / elapsed, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
