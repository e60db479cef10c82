"""The seasonal forecast model ("the 3σ forecast") of one signal of one service. Pure: numpy, no I/O.

When a release has no concurrent baseline arm to compare with, the signal is compared with what the
same service did at the same time of the week before (docs/rules.md, "The 3σ forecast"):

    forecast(t) = profile[bucket(t)] + slope · (t − fitted_at)          (the centre)
    sigma(t)    = max(scale[bucket(t)], floor.fraction · |centre|, floor.absolute)

`bucket(t)` is `((t − origin) mod period) // bucket` (Unix time, UTC). How the profile, the trend, the
scale and the floor are estimated from history is `guardian.forecast.fitting`; the streaming check on
top (standardized residuals, "`consecutive` periods beyond k·σ", CUSUM) is
`guardian.judge.forecast_monitor`. Units are the signal's own (requests/s, seconds, bytes, cores).

JSON (`SeasonalModel.to_json`, format "guardian-baseline/v1": the name the model files and recordings
have always carried)::

    {
      "format": "guardian-baseline/v1",
      "service": "checkout", "signal": "requests",
      "fitted_at": "2026-01-05T12:00:00Z",    # the end of the history (human readable)
      "fitted_at_unix": 1767614400.0,           # the same, authoritative
      "period_seconds": 604800, "bucket_seconds": 300, "buckets": 2016, "origin_unix": 0.0,
      "seasons": 3,                             # periods of history the profile is the median of
      "profile": [...],                         # `buckets` floats: the centre per bucket at fitted_at
      "scale": [...], "scale_mode": "bucket",   # `buckets` floats (> 0 or 0): robust σ per bucket
      "trend": {"slope_per_second": 0.0, "reference_unix": ...,   # = fitted_at_unix
                "valid_from_unix": ..., "valid_until_unix": ...},  # t is clamped into this range
      "floor": {"fraction": 0.02, "absolute": 0.12},
      "history": {"start_unix": ..., "end_unix": ..., "samples": 6048, "coverage": 1.0,
                  "seasons_observed": 3},
      "source": {...}                           # free-form: query, arm, unit, what the model models
    }

Readers must check "format" and ignore unknown keys; `SeasonalModel.from_json` does both.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from guardian.errors import ModelFormatError

FORMAT = "guardian-baseline/v1"
DAY = 24 * 3600
WEEK = 7 * DAY


def iso_utc(t: float) -> str:
    """Unix seconds as ISO 8601 in UTC with a Z: 2026-01-05T12:00:00Z."""
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, eq=False)
class SeasonalModel:
    """A fitted seasonal model; `forecast(t) -> (centre, sigma)`. Build with `forecast.fitting.fit` or `from_json`."""

    period: float
    bucket: float
    profile: np.ndarray
    scale: np.ndarray
    fitted_at: float
    slope: float = 0.0
    trend_from: float = -math.inf
    trend_until: float = math.inf
    floor_fraction: float = 0.02
    min_sigma: float = 1e-9
    seasons: int = 3
    origin: float = 0.0
    scale_mode: str = "bucket"
    service: str = ""
    signal: str = ""
    history: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.period / self.bucket
        if self.period <= 0 or self.bucket <= 0 or abs(n - round(n)) > 1e-9 * n:
            raise ValueError(f"the period ({self.period}s) must be a whole number of buckets ({self.bucket}s)")
        for name in ("profile", "scale"):
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.shape != (round(n),):
                raise ValueError(f"{name} has {arr.size} values, expected {round(n)} (period / bucket)")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} has non-finite values")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if np.any(self.scale < 0) or self.floor_fraction < 0 or not self.min_sigma > 0:
            raise ValueError("scale and floor.fraction must be >= 0 and floor.absolute > 0")
        if not (math.isfinite(self.slope) and math.isfinite(self.fitted_at)):
            raise ValueError("slope and fitted_at must be finite")

    # -- forecasting -------------------------------------------------------------------------------
    @property
    def buckets(self) -> int:
        return self.profile.size

    def bucket_of(self, t: float | np.ndarray) -> np.ndarray:
        """Bucket index of time(s) t; a time on a bucket boundary belongs to the bucket it starts."""
        phase = np.mod(np.asarray(t, dtype=float) - self.origin, self.period) / self.bucket
        return np.floor(phase + 1e-9).astype(np.int64) % self.buckets

    def trend(self, t: float | np.ndarray) -> np.ndarray:
        """The trend term at t (0 at fitted_at), clamped to the range it was fitted for."""
        return self.slope * (np.clip(np.asarray(t, dtype=float), self.trend_from, self.trend_until) - self.fitted_at)

    def forecast_many(self, t: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = self.bucket_of(t)
        centre = self.profile[b] + self.trend(t)
        sigma = np.maximum(np.maximum(self.scale[b], self.floor_fraction * np.abs(centre)), self.min_sigma)
        return centre, sigma

    def forecast(self, t: float) -> tuple[float, float]:
        """(centre, sigma) for one time t (Unix seconds)."""
        centre, sigma = self.forecast_many(float(t))
        return float(centre), float(sigma)

    def floor(self, t: float) -> float:
        """The smallest sigma the model allows at t."""
        centre, _ = self.forecast(t)
        return max(self.floor_fraction * abs(centre), self.min_sigma)

    def with_metadata(self, **changes: Any) -> SeasonalModel:
        """A copy with service / signal / source changed."""
        return replace(self, **changes)

    # -- JSON --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "service": self.service,
            "signal": self.signal,
            "fitted_at": iso_utc(self.fitted_at),
            "fitted_at_unix": self.fitted_at,
            "period_seconds": self.period,
            "bucket_seconds": self.bucket,
            "buckets": self.buckets,
            "origin_unix": self.origin,
            "seasons": self.seasons,
            "profile": [float(x) for x in self.profile],
            "scale": [float(x) for x in self.scale],
            "scale_mode": self.scale_mode,
            "trend": {
                "slope_per_second": self.slope,
                "reference_unix": self.fitted_at,
                "valid_from_unix": None if math.isinf(self.trend_from) else self.trend_from,
                "valid_until_unix": None if math.isinf(self.trend_until) else self.trend_until,
            },
            "floor": {"fraction": self.floor_fraction, "absolute": self.min_sigma},
            "history": dict(self.history),
            "source": dict(self.source),
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, doc: str | bytes | dict[str, Any]) -> SeasonalModel:
        """Parse a guardian-baseline/v1 document (text or already-parsed dict); ModelFormatError if invalid."""
        try:
            data = json.loads(doc) if isinstance(doc, str | bytes) else doc
        except ValueError as exc:
            raise ModelFormatError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ModelFormatError("a baseline model is a JSON object")
        if data.get("format") != FORMAT:
            raise ModelFormatError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        try:
            trend = data.get("trend") or {}
            floor = data.get("floor") or {}
            fitted = data.get("fitted_at_unix")
            if fitted is None:
                fitted = datetime.fromisoformat(str(data["fitted_at"]).replace("Z", "+00:00")).timestamp()
            lo, hi = trend.get("valid_from_unix"), trend.get("valid_until_unix")
            model = cls(
                period=float(data["period_seconds"]),
                bucket=float(data["bucket_seconds"]),
                profile=np.asarray(data["profile"], dtype=float),
                scale=np.asarray(data["scale"], dtype=float),
                fitted_at=float(fitted),
                slope=float(trend.get("slope_per_second", 0.0)),
                trend_from=-math.inf if lo is None else float(lo),
                trend_until=math.inf if hi is None else float(hi),
                floor_fraction=float(floor.get("fraction", 0.0)),
                min_sigma=float(floor["absolute"]),
                seasons=int(data.get("seasons", 0)),
                origin=float(data.get("origin_unix", 0.0)),
                scale_mode=str(data.get("scale_mode", "bucket")),
                service=str(data.get("service", "")),
                signal=str(data.get("signal", "")),
                history=dict(data.get("history") or {}),
                source=dict(data.get("source") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ModelFormatError(f"invalid {FORMAT} model: {what}") from None
        if "buckets" in data and data["buckets"] != model.buckets:
            raise ModelFormatError(f"'buckets' is {data['buckets']} but the profile has {model.buckets} values")
        return model
