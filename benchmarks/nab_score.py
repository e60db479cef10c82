"""NAB standard-profile score of `guardian detect` on four NAB folders. Prints one JSON line.

    .venv/bin/python benchmarks/nab_score.py [--nab DIR] [--model FILE] [--per-file]

Our own implementation of the Numenta Anomaly Benchmark scoring (Lavin & Ahmad 2015; Ahmad et al.,
Neurocomputing 262, 2017), standard profile, applied to the detector's *production alarms* (the
`anomaly` column: one fixed threshold, no per-file or per-corpus threshold sweep):

- windows: the labelled windows of `labels/combined_windows.json` (NAB built them as 10% of the file
  length / number of anomalies, centred on each label); a row is inside a window when its timestamp
  lies in [start, end];
- probation: the first min(floor(0.15 n), 750) rows are not scored at all;
- in a window, only the earliest alarm counts: weight A_tp * S(-(right - i + 1) / width) / S(-1),
  with S(x) = 2 sigmoid(-5x) - 1, so an alarm at the first row of a window scores exactly A_tp = 1;
  a window without an alarm costs A_fn = 1;
- an alarm outside every window costs A_fp = 0.11 times -S(distance past the preceding window's right
  edge / (its width - 1)) -- alarms shortly after a window cost little, far ones (or ones before any
  window) the full 0.11;
- normalized over the whole folder set: 100 (raw - null) / (perfect - null), where the null
  detector (never alarms) scores -A_fn per window and the perfect one A_tp per window.

Defaults to the NAB subset at ../shared/nab relative to the repository root. Tune on
realAWSCloudwatch + the artificial folders; realKnownCause is the held-out validation split.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_NAB = REPO.parent / "shared" / "nab"
FOLDERS = ("realAWSCloudwatch", "realKnownCause", "artificialWithAnomaly", "artificialNoAnomaly")
TUNING = ("realAWSCloudwatch", "artificialWithAnomaly", "artificialNoAnomaly")
VALIDATION = ("realKnownCause",)


@dataclass(frozen=True)
class Profile:
    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0
    probation_fraction: float = 0.15


STANDARD = Profile()


@dataclass
class FileScore:
    """Raw NAB score of one file and the null/perfect raw scores it contributes."""

    name: str
    raw: float
    null: float
    perfect: float
    windows: int
    detected: int
    false_positives: int


def scaled_sigmoid(x: float) -> float:
    """NAB's S(x): +0.987 at the left edge of a window (x = -1), 0 at its right edge, -> -1 after it."""
    if x >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def probation_length(n: int, profile: Profile = STANDARD) -> int:
    return int(min(math.floor(profile.probation_fraction * n), profile.probation_fraction * 5000))


def _row_of(times: np.ndarray, t: float, first: bool) -> int | None:
    """The row of a window edge: the first row stamped exactly `t` (as NAB looks it up), else the first
    row after it (left edge) or the last row before it (right edge). Real files repeat an hour now
    and then, so times are not assumed sorted."""
    exact = np.flatnonzero(times == t)
    if len(exact):
        return int(exact[0])
    cand = np.flatnonzero(times >= t) if first else np.flatnonzero(times <= t)
    if not len(cand):
        return None
    return int(cand[0] if first else cand[-1])


def score_file(times: np.ndarray, alarms: np.ndarray, windows: list[tuple[float, float]], name: str = "",
               profile: Profile = STANDARD) -> FileScore:
    """Score one file's alarms (one bool per row); `windows` are (start, end) in the unit of `times`."""
    times = np.asarray(times, dtype=float)
    alarms = np.asarray(alarms, dtype=bool)
    n = len(times)
    # window index of each row (-1 outside), with each window's row span
    spans = []
    for start, end in sorted(windows):
        left, right = _row_of(times, start, first=True), _row_of(times, end, first=False)
        if left is not None and right is not None and right >= left:
            spans.append((left, right))
    max_tp = scaled_sigmoid(-1.0)
    probation = probation_length(n, profile)
    best: dict[int, float] = {}     # window -> best (= earliest) alarm score
    scored_windows = set()          # windows with at least one row after probation
    fp_total, fp_count = 0.0, 0
    w, prev_right, prev_width = 0, None, None
    for i in range(n):
        while w < len(spans) and spans[w][1] < i:       # leave windows that ended
            prev_right, prev_width = spans[w][1], spans[w][1] - spans[w][0] + 1
            w += 1
        inside = w < len(spans) and spans[w][0] <= i <= spans[w][1]
        if i < probation:
            continue
        if inside:
            scored_windows.add(w)
        if not alarms[i]:
            continue
        if inside:
            left, right = spans[w]
            s = profile.tp * scaled_sigmoid(-(right - i + 1) / (right - left + 1)) / max_tp
            best[w] = max(best.get(w, -math.inf), s)
        else:
            past = 3.0 if prev_right is None else abs(i - prev_right) / max(prev_width - 1, 1)
            fp_total += profile.fp * scaled_sigmoid(past)
            fp_count += 1
    raw = fp_total + sum(best.get(k, -profile.fn) for k in scored_windows)
    k = len(scored_windows)
    return FileScore(name, raw, -profile.fn * k, profile.tp * k, k, len(best), fp_count)


def normalized(scores: list[FileScore]) -> float:
    raw = sum(s.raw for s in scores)
    null = sum(s.null for s in scores)
    perfect = sum(s.perfect for s in scores)
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else 100.0 + min(raw, 0.0)


def _epoch(stamp: str) -> float:
    dt = datetime.fromisoformat(stamp)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def load_windows(nab: Path) -> dict[str, list[tuple[float, float]]]:
    raw = json.loads((nab / "labels" / "combined_windows.json").read_text())
    return {name: [(_epoch(a), _epoch(b)) for a, b in wins] for name, wins in raw.items()}


def run(nab: Path, params: dict | None = None, folders=FOLDERS) -> list[FileScore]:
    from guardian.anomaly.detect import detect_series, read_series

    windows = load_windows(nab)
    scores = []
    for folder in folders:
        for path in sorted((nab / "data" / folder).glob("*.csv")):
            name = f"{folder}/{path.name}"
            series = read_series(path)
            _, alarms = detect_series(series.times, series.values, params)
            scores.append(score_file(series.times, alarms, windows.get(name, []), name))
    return scores


def summary(scores: list[FileScore]) -> dict:
    def part(folders):
        sel = [s for s in scores if s.name.split("/")[0] in folders]
        return round(normalized(sel), 2) if sel else None

    return {
        "profile": "standard",
        "score_all4": part(FOLDERS),
        "score_realKnownCause": part(VALIDATION),
        "score_tuning": part(TUNING),
        "raw": round(sum(s.raw for s in scores), 3),
        "null_raw": sum(s.null for s in scores),
        "perfect_raw": sum(s.perfect for s in scores),
        "windows": sum(s.windows for s in scores),
        "detected": sum(s.detected for s in scores),
        "false_positives": sum(s.false_positives for s in scores),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nab", type=Path, default=DEFAULT_NAB, help="NAB subset folder (data/, labels/)")
    p.add_argument("--model", type=Path, default=None, help="detector parameters (JSON), as guardian detect")
    p.add_argument("--per-file", action="store_true", help="also print one line per file (stderr)")
    args = p.parse_args()
    params = json.loads(args.model.read_text()) if args.model else None
    t0 = time.perf_counter()
    scores = run(args.nab, params)
    result = summary(scores)
    result["files"] = len(scores)
    result["wall_seconds"] = round(time.perf_counter() - t0, 2)
    if args.per_file:
        for s in scores:
            print(f"{s.name:62s} raw {s.raw:7.3f} windows {s.windows} detected {s.detected} fp {s.false_positives}",
                  file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
