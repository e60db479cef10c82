"""`guardian detect IN.csv [--output OUT.csv] [--model FILE]`: the streaming anomaly detector over one series.

IN.csv has a header with (at least) the columns `timestamp` and `value`; other columns are ignored.
Timestamps are ISO-8601 as NAB writes them (`2014-02-14 14:30:00`, naive = UTC) or epoch seconds.
Rows are streamed in file order (real exports repeat an hour now and then; that is accepted).
An empty value (or NaN / null / NA) is a missing sample: the row is kept in OUT.csv (value empty, score 0,
anomaly 0), is not fed to the detector, and is named on standard error (`IN.csv:LINE: empty value ...`).
OUT.csv has one row per input row, `timestamp,value,score,anomaly`: `score` in [0, 1], `anomaly`
the detector's own production alarm (0 or 1), from `guardian.anomaly.detector.AnomalyDetector` --
row i depends only on rows <= i.

`--model FILE` is an optional JSON object of detector parameters overriding the defaults, e.g.
`{"threshold": 0.7, "suppress": 300}`; the keys are the fields of `guardian.anomaly.detector.Params`
(unknown keys are refused). Bad input raises `DetectInputError` (a ValueError) naming the file,
and the line for a bad row; the CLI prints it and exits 2.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from guardian.anomaly.detector import AnomalyDetector, Params
from guardian.errors import DetectInputError

MISSING = {"", "nan", "null", "none", "na", "n/a"}  # a value written as one of these is a missing sample


@dataclass(frozen=True)
class Series:
    stamps: list[str]        # as written in the file, echoed to the output
    times: np.ndarray        # epoch seconds
    values: np.ndarray       # NaN where the file has no value (a missing sample)
    missing_lines: tuple[int, ...] = ()  # the file's lines whose value is missing


def _shown(text: str, width: int = 80) -> str:
    """`text` on one line, cut to `width` characters: an error shows what it found, not a whole file."""
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text.strip())
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def read_series(path: Path | str) -> Series:
    """Read `timestamp,value` rows; raises DetectInputError naming the file (and line) on bad input."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DetectInputError(f"{path}: cannot read: {e}") from None
    expected = "a CSV file whose first line is a header with timestamp,value (e.g. `2014-02-14 14:30:00,12.5` below it)"
    if text.lstrip()[:1] in ("{", "["):
        raise DetectInputError(f"{path}: this looks like JSON ({_shown(text.lstrip(), 40)!r}), not CSV: "
                               f"expected {expected}")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise DetectInputError(f"{path}: empty file (expected a header with timestamp,value)")
    names = [h.strip().lower() for h in header]
    if "timestamp" not in names or "value" not in names:
        first = text.splitlines()[0] if text.strip() else ""
        raise DetectInputError(f"{path}: the header must have columns timestamp and value, found "
                               f"{_shown(first)!r}; expected {expected}")
    it, iv = names.index("timestamp"), names.index("value")
    stamps: list[str] = []
    times: list[float] = []
    values: list[float] = []
    missing: list[int] = []
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(it, iv):
            raise DetectInputError(f"{path}:{line}: expected a timestamp and a value, got {row}")
        try:
            t = _parse_time(row[it])
        except ValueError:
            raise DetectInputError(f"{path}:{line}: timestamp {row[it]!r} is neither ISO-8601 nor epoch seconds") \
                from None
        if row[iv].strip().lower() in MISSING:
            v = math.nan
            missing.append(line)
        else:
            try:
                v = float(row[iv])
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                raise DetectInputError(f"{path}:{line}: value {_shown(row[iv])!r} is not a finite number")
        stamps.append(row[it])
        times.append(t)
        values.append(v)
    if not values:
        raise DetectInputError(f"{path}: no data rows")
    if len(missing) == len(values):
        raise DetectInputError(f"{path}: no values: every row's value is empty")
    return Series(stamps, np.array(times), np.array(values), tuple(missing))


def load_params(model: Path | str | None = None, overrides: Mapping[str, Any] | None = None) -> Params:
    """Default detector parameters, overridden by a JSON model file and then by `overrides`."""
    values: dict[str, Any] = {}
    if model is not None:
        try:
            loaded = json.loads(Path(model).read_text())
        except (OSError, ValueError) as e:
            raise DetectInputError(f"{model}: cannot read the model as JSON: {e}") from None
        if not isinstance(loaded, dict):
            raise DetectInputError(f"{model}: the model must be a JSON object of detector parameters")
        values.update(loaded)
    values.update(overrides or {})
    known = {f.name for f in fields(Params)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise DetectInputError(f"{model or 'parameters'}: unknown detector parameters {unknown}; "
                               f"known: {sorted(known)}")
    try:
        return Params(**values)
    except (TypeError, ValueError) as e:
        raise DetectInputError(f"{model or 'parameters'}: {e}") from None


def detect_series(times: np.ndarray, values: np.ndarray,
                  params: Params | Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stream (times, values) through a fresh detector: (scores, alarms) arrays, one per row. A NaN value is
    a missing sample: not fed to the detector, scored 0 and never an alarm."""
    p = params if isinstance(params, Params) else load_params(overrides=params)
    det = AnomalyDetector(p)
    scores = np.zeros(len(values))
    alarms = np.zeros(len(values), dtype=bool)
    for i, (t, v) in enumerate(zip(times.tolist(), values.tolist(), strict=True)):
        if v != v:  # NaN: missing
            continue
        scores[i], alarms[i] = det.update(t, v)
    return scores, alarms


def _warn_missing(path: Path | str, lines: tuple[int, ...], out: TextIO, most: int = 10) -> None:
    for line in lines[:most]:
        out.write(f"{path}:{line}: empty value: a missing sample, kept in the output with score 0 and not fed "
                  "to the detector\n")
    if len(lines) > most:
        out.write(f"{path}: {len(lines) - most} more rows with an empty value (lines {lines[most]}…{lines[-1]})\n")


def write_result(series: Series, scores: np.ndarray, alarms: np.ndarray, out: TextIO) -> None:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["timestamp", "value", "score", "anomaly"])
    for stamp, v, s, a in zip(series.stamps, series.values.tolist(), scores.tolist(), alarms.tolist(), strict=True):
        w.writerow([stamp, "" if v != v else f"{v:.15g}", f"{s:.6f}", int(a)])


def detect_file(path: Path | str, output: Path | str | None = None, model: Path | str | None = None,
                warn: TextIO | None = None) -> int:
    """Run the detector over IN.csv and write OUT.csv (stdout when `output` is None); returns the alarm count.
    Rows with an empty value are named on `warn` (standard error by default)."""
    params = load_params(model)
    series = read_series(path)
    _warn_missing(path, series.missing_lines, warn or sys.stderr)
    scores, alarms = detect_series(series.times, series.values, params)
    if output is None:
        write_result(series, scores, alarms, sys.stdout)
    else:
        try:
            with open(output, "w", newline="") as f:
                write_result(series, scores, alarms, f)
        except OSError as e:
            raise DetectInputError(f"{output}: cannot write: {e}") from None
    return int(alarms.sum())
