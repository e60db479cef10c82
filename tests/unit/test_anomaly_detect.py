"""`guardian detect`: the streaming anomaly detector, its CSV front end, the CLI command, and the NAB scorer."""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from guardian.anomaly.detect import DetectInputError, detect_file, detect_series, load_params, read_series
from guardian.anomaly.detector import AnomalyDetector, Params
from guardian.cli import app

REPO = Path(__file__).resolve().parents[2]
STEP = 300.0  # 5-minute rows, as NAB: a daily period of 288 rows


def _load_scorer():
    spec = importlib.util.spec_from_file_location("nab_score", REPO / "benchmarks" / "nab_score.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("nab_score", module)   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


nab = _load_scorer()


def times(n: int) -> np.ndarray:
    return 1.4e9 + STEP * np.arange(n)


def noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(10.0, 1.0, n)


def write_csv(path: Path, rows: list[list[object]], header=("timestamp", "value")) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# -- the detector -----------------------------------------------------------------------------------
def test_causal_changing_the_future_never_changes_the_past():
    # small windows and a daily period (288 rows) so that every piece, seasonal included, is active
    p = Params(window=200, min_history=50, suppress=20)
    n, cut = 1300, 1000
    v = noise(n, seed=1)
    v[600:640] += 4.0
    base = detect_series(times(n), v, p)
    changed = v.copy()
    changed[cut:] = np.random.default_rng(7).normal(50.0, 20.0, n - cut)  # a wild future
    later = detect_series(times(n), changed, p)
    assert base[1][:cut].any(), "the test should exercise alarms before the cut"
    np.testing.assert_array_equal(base[0][:cut], later[0][:cut])
    np.testing.assert_array_equal(base[1][:cut], later[1][:cut])
    assert not np.array_equal(base[0][cut:], later[0][cut:])


def test_scores_are_in_the_unit_interval_and_alarms_need_score_over_threshold():
    n = 1500
    v = np.exp(np.random.default_rng(2).normal(0, 1.0, n))
    v[900:] *= 5
    scores, alarms = detect_series(times(n), v)
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.all(scores[alarms] >= Params().threshold)


def test_a_clear_level_shift_is_alarmed_at_once_and_once():
    n, onset = 1200, 700
    v = noise(n, seed=3)
    v[onset:] += 5.0
    _, alarms = detect_series(times(n), v)
    hits = np.flatnonzero(alarms)
    assert len(hits) >= 1 and onset <= hits[0] <= onset + 5
    assert len(hits) <= 2          # suppression: one incident, not a page per row


def test_a_small_sustained_shift_is_caught_by_the_short_median():
    n, onset = 1200, 700
    v = noise(n, seed=4)
    v[onset:] += 3.0               # within the spike tails most of the time, but sustained
    _, alarms = detect_series(times(n), v)
    hits = np.flatnonzero(alarms)
    assert len(hits) and onset <= hits[0] <= onset + 10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_without_anomaly_stays_mostly_quiet(seed):
    n = 3000
    gauss = detect_series(times(n), noise(n, seed))[1]
    skewed = detect_series(times(n), np.exp(np.random.default_rng(seed).normal(0, 0.5, n)))[1]
    daily = 10 + 5 * np.sin(2 * np.pi * np.arange(n) / 288) + np.random.default_rng(seed).normal(0, 0.5, n)
    assert gauss.sum() <= 1 and skewed.sum() <= 5 and detect_series(times(n), daily)[1].sum() <= 1


def test_flat_series_is_quiet_and_a_step_on_it_is_not():
    n = 1000
    v = np.full(n, 3.0)
    assert not detect_series(times(n), v)[1].any()
    v[800:] = 3.5
    assert np.flatnonzero(detect_series(times(n), v)[1]).tolist() == [800]


def test_recurring_daily_spikes_are_partly_explained_by_the_seasonal_view():
    n = 288 * 10
    daily = np.arange(100, n, 288)          # a batch job at the same time every day
    recurring = {"daily rows": 0, "one row a day": 0}
    for seed in range(5):
        rng = np.random.default_rng(seed)
        v = rng.normal(10.0, 1.0, n)
        v[daily] = rng.uniform(25, 45, len(daily))
        v[2000] = 60.0                      # once, higher than ever, at another time of day
        for label, step in (("daily rows", STEP), ("one row a day", 86400.0)):   # the latter: no period
            alarms = detect_series(1.4e9 + step * np.arange(n), v)[1]
            assert alarms[2000]
            recurring[label] += int(alarms[daily].sum())
    assert recurring["daily rows"] < recurring["one row a day"]


def test_warm_up_rows_never_alarm():
    v = noise(500)
    v[100] = 1e6
    _, alarms = detect_series(times(500), v)
    assert not alarms[: Params().min_history].any()


def test_non_finite_value_is_refused():
    with pytest.raises(ValueError):
        AnomalyDetector().update(0.0, float("nan"))


# -- CSV front end ----------------------------------------------------------------------------------
def test_read_nab_style_and_epoch_timestamps(tmp_path):
    a = read_series(write_csv(tmp_path / "a.csv", [["2014-02-14 14:30:00", 1.5], ["2014-02-14 14:35:00", 2]]))
    b = read_series(write_csv(tmp_path / "b.csv", [[1392388200, 1.5, "x"], [1392388500, 2, "y"]],
                              header=("timestamp", "value", "extra")))
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.values, [1.5, 2.0])


@pytest.mark.parametrize("content, message", [
    ("", "empty file"),
    ("timestamp,value\n", "no data rows"),
    ("time,val\n2014-01-01 00:00:00,1\n", "timestamp and value"),
    ("timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,abc\n", ":3: value 'abc'"),
    ("timestamp,value\n2014-01-01 00:00:00,\n2014-01-01 00:05:00, \n", "no values"),  # every value empty
    ("timestamp,value\nyesterday,1\n", ":2: timestamp 'yesterday'"),
])
def test_bad_csv_raises_a_clear_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "in.csv"
    path.write_text(content)
    with pytest.raises(DetectInputError) as e:
        read_series(path)
    assert str(path) in str(e.value) and message in str(e.value)
    assert isinstance(e.value, ValueError)


def test_model_file_overrides_parameters_and_refuses_unknown_ones(tmp_path):
    good = tmp_path / "m.json"
    good.write_text(json.dumps({"suppress": 7, "threshold": 0.9}))
    assert load_params(good) == Params(suppress=7, threshold=0.9)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"supress": 7}))
    with pytest.raises(DetectInputError, match="supress"):
        load_params(bad)
    with pytest.raises(DetectInputError):
        load_params(overrides={"window": -1})


def test_detect_file_writes_one_row_per_input_row(tmp_path):
    n = 900
    v = noise(n)
    v[700:] += 6
    src = write_csv(tmp_path / "in.csv", [[int(t), x] for t, x in zip(times(n), v, strict=True)])
    assert detect_file(src, tmp_path / "out.csv") >= 1
    with open(tmp_path / "out.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n and list(rows[0]) == ["timestamp", "value", "score", "anomaly"]
    assert rows[700]["anomaly"] == "1" and {r["anomaly"] for r in rows} == {"0", "1"}


# -- CLI --------------------------------------------------------------------------------------------
def test_cli_detect_round_trip_and_exit_2_on_a_bad_csv(tmp_path):
    runner = CliRunner()
    n = 600
    src = write_csv(tmp_path / "in.csv", [[f"2014-04-01 {i // 12 % 24:02d}:{i % 12 * 5:02d}:00", x]
                                          for i, x in enumerate(noise(n))])
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["detect", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == n + 1

    to_stdout = runner.invoke(app, ["detect", str(src)])
    assert to_stdout.exit_code == 0
    assert to_stdout.stdout.splitlines()[0] == "timestamp,value,score,anomaly"
    assert len(to_stdout.stdout.splitlines()) == n + 1

    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,oops\n")
    result = runner.invoke(app, ["detect", str(bad)])
    assert result.exit_code == 2
    assert str(bad) in result.stderr and "oops" in result.stderr and ":3:" in result.stderr


# -- issue 17, defect 9: a JSON file, and empty values -------------------------------------------------
def test_a_json_file_is_named_as_such_and_not_dumped(tmp_path):
    path = tmp_path / "series.json"
    path.write_text(json.dumps([{"timestamp": 1392388200 + 300 * i, "value": i} for i in range(2000)]))
    with pytest.raises(DetectInputError) as e:
        read_series(path)
    message = str(e.value)
    assert str(path) in message and "JSON" in message and "timestamp,value" in message
    assert len(message) < 400, message  # says what it found in a few words, not the whole file


def test_a_long_wrong_header_is_shortened(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"column_{i}" for i in range(500)) + "\n1,2\n")
    with pytest.raises(DetectInputError) as e:
        read_series(path)
    assert "timestamp and value" in str(e.value) and "column_0" in str(e.value) and len(str(e.value)) < 400


def test_empty_values_are_missing_rows_kept_in_the_output(tmp_path, capsys):
    n = 600
    v = noise(n)
    rows = [[int(t), f"{x:.6f}"] for t, x in zip(times(n), v, strict=True)]
    rows[100][1] = ""
    rows[400][1] = "  "
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.csv"
    detect_file(src, out)
    err = capsys.readouterr().err
    assert f"{src}:102:" in err and f"{src}:402:" in err and "empty value" in err
    with open(out) as f:
        got = list(csv.DictReader(f))
    assert len(got) == n  # one row per input row (SPEC.md §1, outside this repository)
    assert got[100]["value"] == "" and got[100]["anomaly"] == "0" and 0.0 <= float(got[100]["score"]) <= 1.0
    # the missing row is not fed to the detector: the other rows score as if it were not there
    full_scores, _ = detect_series(times(n)[np.arange(n) != 100][:300], v[np.arange(n) != 100][:300])
    assert [float(r["score"]) for r in got[101:300]] == pytest.approx(full_scores[100:299].tolist(), abs=1e-6)


def test_cli_warns_about_empty_values_and_exits_0(tmp_path):
    src = write_csv(tmp_path / "in.csv", [[int(t), "" if i == 5 else x] for i, (t, x) in
                                          enumerate(zip(times(200), noise(200), strict=True))])
    result = CliRunner().invoke(app, ["detect", str(src)])
    assert result.exit_code == 0, result.output
    assert f"{src}:7: empty value" in result.stderr
    assert len(result.stdout.splitlines()) == 201


# -- NAB scorer -------------------------------------------------------------------------------------
def test_nab_scorer_null_is_0_and_perfect_is_100():
    n = 1000
    t = np.arange(n, dtype=float)
    files = {"a": [(400.0, 449.0), (700.0, 749.0)], "b": [(600.0, 699.0)], "quiet": []}

    def score(alarm_rows):
        out = []
        for name, wins in files.items():
            alarms = np.zeros(n, dtype=bool)
            alarms[alarm_rows(wins)] = True
            out.append(nab.score_file(t, alarms, wins, name))
        return nab.normalized(out)

    assert score(lambda wins: []) == pytest.approx(0.0)
    assert score(lambda wins: [int(a) for a, _ in wins]) == pytest.approx(100.0)
    late = score(lambda wins: [int(b) - 2 for _, b in wins])                 # detected, but at the end
    assert 50 < late < 60
    noisy = score(lambda wins: [int(a) for a, _ in wins] + [200, 900])     # two extra false positives
    assert noisy < 100


def test_nab_scorer_details():
    t = np.arange(100, dtype=float)
    wins = [(50.0, 59.0)]
    alarms = np.zeros(100, dtype=bool)
    alarms[[5, 30, 52, 55, 70]] = True   # 5 is in probation (15 rows); 30 before the window: -0.11
    s = nab.score_file(t, alarms, wins)
    assert (s.windows, s.detected, s.false_positives) == (1, 1, 2)
    tp = nab.scaled_sigmoid(-(59 - 52 + 1) / 10) / nab.scaled_sigmoid(-1.0)
    after = 0.11 * nab.scaled_sigmoid((70 - 59) / 9)
    assert s.raw == pytest.approx(tp - 0.11 + after)
    assert (s.null, s.perfect) == (-1.0, 1.0)
    assert nab.probation_length(10_000) == 750
