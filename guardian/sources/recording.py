"""A MetricSource backed by a guardian-recording/v1 file: replay runs the live engine on it."""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from guardian.domain import ARMS
from guardian.errors import NoData, RecordingError
from guardian.sources import ArmSelector, SignalQuery

FORMAT = "guardian-recording/v1"


def parse_start(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def validate_recording(doc: Any, name: str) -> dict[str, Any]:
    """Check the structure; raise RecordingError naming the file and the field."""
    if not isinstance(doc, dict):
        raise RecordingError(f"{name}: not a JSON object")
    if doc.get("format") != FORMAT:
        raise RecordingError(f"{name}: format: expected {FORMAT!r}, got {doc.get('format')!r}")
    step = doc.get("step_seconds")
    if not isinstance(step, int | float) or isinstance(step, bool) or step <= 0:
        raise RecordingError(f"{name}: step_seconds: expected a positive number, got {step!r}")
    try:
        parse_start(doc.get("start", ""))
    except (TypeError, ValueError, AttributeError):
        raise RecordingError(f"{name}: start: expected an ISO 8601 time, got {doc.get('start')!r}") from None
    series = doc.get("series")
    if not isinstance(series, dict) or not series:
        raise RecordingError(f"{name}: series: expected an object of signals")
    length = None
    for signal, arms in series.items():
        if not isinstance(arms, dict):
            raise RecordingError(f"{name}: series.{signal}: expected an object with canary and baseline arrays")
        for arm, values in arms.items():
            where = f"{name}: series.{signal}.{arm}"
            if not isinstance(values, list):
                raise RecordingError(f"{where}: expected an array")
            for i, v in enumerate(values):
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
                    raise RecordingError(f"{where}[{i}]: expected a number or null, got {v!r}")
            if length is None:
                length = len(values)
            elif len(values) != length:
                raise RecordingError(f"{where}: has {len(values)} values, other arrays have {length}")
    return doc


def load_recording(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordingError(f"{p.name}: cannot read JSON: {e}") from None
    return validate_recording(doc, p.name)


class RecordingSource:
    """Answers fetches from a recording: the value of tick floor((start - rec_start) / step)."""

    def __init__(self, recording: dict[str, Any]):
        self.rec = recording
        self.start = parse_start(recording["start"])
        self.step = float(recording["step_seconds"])
        self.ticks = max(len(v) for arms in recording["series"].values() for v in arms.values())

    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        t = int(round((start - self.start) / self.step))
        values = self.rec["series"].get(query.signal, {}).get(arm.arm)
        if values is None or not 0 <= t < len(values) or values[t] is None:
            raise NoData(f"{query.signal}/{arm.arm} has no value at tick {t}")
        return float(values[t])

    @property
    def signals(self) -> list[str]:
        return list(self.rec["series"])

    def arms(self) -> tuple[str, ...]:
        return ARMS
