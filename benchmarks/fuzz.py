"""The fuzzing properties of tests/unit/test_fuzz.py, at length.

Targets (see tests/unit/fuzzing.py):
  api           schemathesis over the OpenAPI schema, with the operator token: no 5xx, a 4xx changes nothing
  api-no-token  the same without the token: every operator POST is a 401, nothing changes
  rules         the rule parser: a RuleFile or a RuleError naming file, line and field
  recordings    the recording reader and replay: a result or a RecordingError naming the file

`--examples N` is per target (for the API: per operation and generation mode, so far more requests).
Prints, per target, the cases run, the time and each distinct failure with an example; then one JSON
line. Exit status 1 when any failure was found.

    .venv/bin/python benchmarks/fuzz.py --examples 5000
    .venv/bin/python benchmarks/fuzz.py --examples 500 --only rules recordings
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loguru import logger  # noqa: E402

from tests.unit import fuzzing  # noqa: E402

TARGETS = ("api", "api-no-token", "rules", "recordings")


def run(target: str, examples: int) -> fuzzing.Report:
    if target == "rules":
        return fuzzing.rules_property(examples)
    if target == "recordings":
        return fuzzing.recordings_property(examples)
    with fuzzing.api_harness() as h:
        try:
            return fuzzing.api_property(h, examples, authenticated=target == "api")
        finally:
            h.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=5000, help="Hypothesis examples per target (API: per operation)")
    ap.add_argument("--only", nargs="+", choices=TARGETS, default=list(TARGETS))
    args = ap.parse_args()
    logger.disable("guardian")
    warnings.simplefilter("ignore")
    rows = []
    for target in args.only:
        t0 = time.perf_counter()
        report = run(target, args.examples)
        seconds = time.perf_counter() - t0
        rows.append({"target": target, "cases": report.cases, "failures": len(report.failures),
                     "seconds": round(seconds, 1), "found": report.failures})
        print(f"{target:14} {report.cases:8d} cases  {seconds:7.1f} s  {len(report.failures)} failure(s)", flush=True)
        for kind, example in report.failures.items():
            print(f"    {kind}\n        e.g. {example[:300]}")
    total = sum(r["cases"] for r in rows)
    failures = sum(r["failures"] for r in rows)
    print(f"{'total':14} {total:8d} cases  {failures} failure(s)")
    print(json.dumps({"examples": args.examples, "targets": rows, "cases": total, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
