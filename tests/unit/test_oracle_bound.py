"""benchmarks/oracle_bound.py: the oracle that bounds what any judge could catch on recordings with known truth."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
oracle = importlib.import_module("oracle_bound")


def _recording(kind: str, errors: list[float], requests: float = 100.0, onset: int = 2, rate: float = 0.01) -> dict:
    n = len(errors)
    return {"step_seconds": 10, "labels": {"truth": "bad", "kind": kind, "onset_tick": onset, "base_error_rate": rate},
            "series": {"requests": {"canary": [requests] * n}, "errors": {"canary": errors}}}


def test_a_blatant_step_is_caught_at_its_first_tick_and_chance_never() -> None:
    blatant = _recording("error_x20", [1, 1, 20, 20, 20, 20])
    assert oracle.first_rejection_seconds(blatant, 0.01) == 10.0
    assert oracle.sprt_seconds(blatant, 0.01) == 10.0
    at_base = _recording("error_x20", [1.0] * 30)  # the canary errs at the base rate: nothing to catch
    assert oracle.first_rejection_seconds(at_base, 0.01) is None
    assert oracle.sprt_seconds(at_base, 0.01) is None


def test_a_missing_scrape_carries_no_evidence_and_other_kinds_count_as_caught_at_once() -> None:
    gappy = _recording("error_x5", [1, 1, None, None, 6, 6])
    assert oracle.first_rejection_seconds(gappy, 0.01) == 30.0  # its first tick with data after the onset
    assert oracle.first_rejection_seconds(_recording("latency_x10", [0.0] * 6), 0.01) == 10.0
    assert oracle.sprt_seconds(_recording("error_flap", [0.0] * 6), 0.01) == "n/a"  # the labels give no multiplier


def test_the_report_counts_what_was_caught_within_each_window(tmp_path: Path) -> None:
    for i, errors in enumerate(([1, 1, 20, 20], [1, 1, 0, 2, 3, 3, 3, 3, 3, 3, 3, 3], [1, 1, 1, 1])):
        (tmp_path / f"{i}.json").write_text(json.dumps(_recording("error_x5", errors)))
    good = _recording("healthy", [1, 1])
    good["labels"]["truth"] = "good"
    (tmp_path / "good.json").write_text(json.dumps(good))
    r = oracle.report(str(tmp_path), 0.01, [10.0, 100.0])
    assert (r["bad"], r["caught"], r["within"]) == (3, 2, {"10": 1, "100": 2})
    assert oracle.main([str(tmp_path / "nowhere")]) == 2
