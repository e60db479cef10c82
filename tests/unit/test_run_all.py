"""benchmarks/run_all.py: rows, targets, the text and markdown tables and the JSON, from made-up
section results (nothing heavy runs)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all_under_test", BENCHMARKS / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INTAKE = {"posts": 20000, "clients": 16, "posts_per_s": 1990, "p50_ms": 7.7, "p99_ms": 18.6, "lost": 0,
          "client": "raw sockets"}
BENCH = {"recordings": 300, "replay_seconds": 20.5, "recordings_per_second": 14.63,
         "guardian": {"false_rollback_rate": 0.013, "detection_rate": 0.81, "ttd_median_s": 170.0},
         "peers": {"kayenta": {"false_rollback_rate": 0.048, "detection_rate": 0.5, "ttd_median_s": 385.0}}}
SCALE = {"available": True, "rollouts": 500, "signals": 6, "tick_seconds": 10.0,
         "batched": {"tick_lag_p50_s": 0.2, "tick_lag_p99_s": 1.5, "prom_queries_per_s": 0.6, "queries_per_tick": 6,
                     "guardian_cpu_percent": 40.0, "guardian_peak_rss_mb": 180.0},
         "per_rollout": {"tick_lag_p99_s": 12.0, "prom_queries_per_s": 300.0, "queries_per_tick": 3000,
                         "guardian_cpu_percent": 95.0, "guardian_peak_rss_mb": 320.0}}


def by_metric(rows):
    return {r["metric"]: r for r in rows}


def test_intake_rows_carry_the_targets(run_all):
    rows = by_metric(run_all.intake_rows(INTAKE))
    assert rows["webhook posts/s"]["met"] is True and rows["webhook posts/s"]["target"] == ">= 1000"
    assert rows["webhook p99 (ms)"]["met"] is True and rows["webhook posts lost"]["met"] is True
    slow = by_metric(run_all.intake_rows({**INTAKE, "posts_per_s": 900, "p99_ms": 51.0, "lost": 2}))
    assert [slow[m]["met"] for m in ("webhook posts/s", "webhook p99 (ms)", "webhook posts lost")] == [False] * 3


def test_scale_rows_show_the_ratio_and_peak_memory_of_both_modes(run_all):
    rows = by_metric(run_all.scale_rows(SCALE))
    assert rows["queries per tick: per-rollout / batched"]["value"] == 500.0
    assert rows["queries per tick: per-rollout / batched"]["met"] is True
    assert rows["queries per tick: rollouts x signals / batched"]["value"] == 500.0
    assert rows["tick lag p99 (s), batched"]["met"] is True
    assert rows["guardian peak memory (MB)"]["value"] == 320.0 and rows["guardian peak memory (MB)"]["met"] is False


def test_a_missing_scale_module_is_not_available_not_a_failure(run_all, monkeypatch):
    monkeypatch.setitem(sys.modules, "scale", None)  # import fails as when the file is missing
    result = run_all.run_scale(quick=True)
    assert result["available"] is False and "scale.py" in result["reason"]
    rows = run_all.scale_rows(result)
    assert rows and all(r["value"] == run_all.NOT_AVAILABLE and r["met"] is None for r in rows)


def test_tables_and_json(run_all, tmp_path):
    rows = (run_all.scale_rows({"available": False, "reason": "missing"}) + run_all.intake_rows(INTAKE)
            + run_all.replay_rows(BENCH) + run_all.quality_rows(BENCH))
    text = run_all.text_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["section", "metric", "value", "target", "met"] and set(lines[1]) <= {"-", " "}
    assert len(lines) == len(rows) + 2 and "not available" in text and "1990" in text and "met" in text
    md = run_all.markdown_table(rows).splitlines()
    assert md[0].startswith("| section | metric |") and len(md) == len(rows) + 2
    assert all(line.count("|") == md[0].count("|") for line in md)  # no cell breaks the columns
    quality = by_metric(run_all.quality_rows(BENCH))
    assert quality["guardian false_rollback_rate"]["met"] is True and "kayenta 0.048" in quality[
        "guardian false_rollback_rate"]["note"]
    out = run_all.report({"intake": INTAKE}, rows, command="python benchmarks/run_all.py --quick", quick=True)
    again = json.loads(json.dumps(out))
    assert again["rows"] == rows and again["quick"] is True and again["machine"]["cpus"] >= 1


def test_main_writes_json_and_markdown_without_running_anything_heavy(run_all, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_all, "run_intake", lambda quick: INTAKE)
    monkeypatch.setattr(run_all, "run_bench", lambda: BENCH)
    code = run_all.main(["--only", "intake,replay,quality", "--quick", "--json", str(tmp_path / "r" / "x.json")])
    assert code == 0
    data = json.loads((tmp_path / "r" / "x.json").read_text())
    assert {r["section"] for r in data["rows"]} == {"intake", "replay", "quality"}
    assert (tmp_path / "r" / "x.md").read_text().count("\n| intake |") == 4
    assert "webhook posts/s" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run_all.parse_sections("intake,nope")
