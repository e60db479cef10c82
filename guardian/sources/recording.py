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
MIN_STEP_SECONDS, MAX_STEP_SECONDS = 0.001, 86400.0  # finer ticks vanish in a float timestamp; longer overflow


def _finite(v: int | float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond any float (10**400)
        return False


def parse_start(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def validate_recording(doc: Any, name: str) -> dict[str, Any]:
    """Check the structure; raise RecordingError naming the file and the field."""
    if not isinstance(doc, dict):
        raise RecordingError(f"{name}: not a JSON object")
    if doc.get("format") != FORMAT:
        raise RecordingError(f"{name}: format: expected {FORMAT!r}, got {doc.get('format')!r}")
    step = doc.get("step_seconds")
    if not isinstance(step, int | float) or isinstance(step, bool) or not _finite(step) \
            or not MIN_STEP_SECONDS <= step <= MAX_STEP_SECONDS:
        raise RecordingError(f"{name}: step_seconds: expected a number of seconds in [{MIN_STEP_SECONDS:g}, "
                             f"{MAX_STEP_SECONDS:g}], got {step!r}"[:300])
    service = doc.get("service")
    if service is not None and not isinstance(service, str):
        raise RecordingError(f"{name}: service: expected a string, got {service!r}"[:300])
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
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not _finite(v)):
                    raise RecordingError(f"{where}[{i}]: expected a number or null, got {v!r}"[:300])
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
    except ValueError as e:  # an integer literal of more than 4300 digits
        raise RecordingError(f"{p.name}: cannot read JSON: {e}") from None
    except RecursionError:  # thousands of nested [ or {
        raise RecordingError(f"{p.name}: cannot read JSON: nested too deeply") from None
    return validate_recording(doc, p.name)


class RecordingSource:
    """Answers fetches from a recording: the value of tick floor((start - rec_start) / step)."""

    def __init__(self, recording: dict[str, Any]):
        self.rec = recording
        self.start = parse_start(recording["start"])
        self.step = float(recording["step_seconds"])
        self.ticks = max((len(v) for arms in recording["series"].values() for v in arms.values()), default=0)

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
