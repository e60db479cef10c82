"""Seasonal robust baseline ("the 3σ forecast") for one signal of one service. Pure: numpy, no I/O.

When a release has no concurrent baseline arm to compare with, the signal is compared with what the
same service did at the same time of the week before (STATS.md, "Seasonal robust baseline"):

    forecast(t) = profile[bucket(t)] + slope · (t − fitted_at)          (the centre)
    sigma(t)    = max(scale[bucket(t)], floor.fraction · |centre|, floor.absolute)

- **Profile.** The period (a week by default) is cut into buckets (5 min by default; `bucket(t)` is
  `((t − origin) mod period) // bucket`, Unix time, UTC). Each of the last `seasons` periods before
  `end` gives one value per bucket (the mean of its samples); the profile is the median of those,
  pooled with `smooth` neighbouring buckets on each side. So the forecast for any time is the
  median of the values at the same time-of-period 1, 2 and 3 periods earlier — all of them taken
  before `end`, which is why a model fitted up to a rollout's start can never absorb the rollout.
- **Trend.** A robust linear trend: the median, over every bucket and every pair of seasons, of
  the slope between the two seasons' values in that bucket (a Theil–Sen estimate in which the
  seasonal shape cancels out exactly). The profile is stored with the trend removed, at the level
  of `fitted_at`; the trend is extrapolated at most `horizon` (one period) beyond it.
- **Scale.** σ is the spread of the *forecast error*, not of the noise: every season is predicted
  from the other seasons alone (leave one season out), and σ is 1.4826 × the MAD of those errors,
  pooled over ±`scale_window` buckets (so a noisy daytime and a quiet night get their own σ) or
  over the whole period (`scale_mode="global"`). With a single season the error is taken against
  the neighbouring buckets of the same season instead.
- **Floor.** A flat history would give σ ≈ 0 and turn every wiggle into a huge z: σ is never below
  `floor_fraction` of the forecast level nor below `min_sigma` (default 1% of the history's median
  absolute value). Units are the signal's own (requests/s, seconds, bytes, cores).

`BaselineMonitor` is the streaming check on top: standardized residuals, a persistence rule
("`consecutive` periods beyond k·σ"), and an optional one-sided CUSUM for small sustained shifts.

JSON (`SeasonalModel.to_json`, format "guardian-baseline/v1")::

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
import warnings
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from guardian.judge.cusum import Cusum

FORMAT = "guardian-baseline/v1"
DAY = 24 * 3600
WEEK = 7 * DAY
MAD_TO_SIGMA = 1.4826
MIN_SCALE_RESIDUALS = 8  # fewer residuals in a bucket's pool than this: use the global scale there
SCALE_PRIOR_WEIGHT = 30  # pseudo-residuals with the global spread mixed into every bucket's σ


class InsufficientHistory(ValueError):
    """The history cannot support a model: no finite values, or too little of the period covered."""


class ModelFormatError(ValueError):
    """A document is not a valid guardian-baseline/v1 model."""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _nanmedian(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    """np.nanmedian without the 'All-NaN slice' warning (an empty slice is NaN, which we handle)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=axis)


def _pooled(cells: np.ndarray, width: int, *, skip_centre: bool = False) -> np.ndarray:
    """(K, B) -> (K·(2w+1), B): each bucket's column joined by its ±width circular neighbours."""
    shifts = [j for j in range(-width, width + 1) if not (skip_centre and j == 0)]
    return np.concatenate([np.roll(cells, -j, axis=1) for j in shifts], axis=0)


@dataclass(frozen=True, eq=False)
class SeasonalModel:
    """A fitted seasonal model; `forecast(t) -> (centre, sigma)`. Build with `fit` or `from_json`."""

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
            "fitted_at": _iso(self.fitted_at),
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


# -- fitting -----------------------------------------------------------------------------------------
def fit(
    timestamps: np.ndarray | list[float],
    values: np.ndarray | list[float | None],
    *,
    period: float = WEEK,
    step: float = 300.0,
    seasons: int = 3,
    end: float | None = None,
    smooth: int = 1,
    scale_mode: Literal["bucket", "global"] = "bucket",
    scale_window: float = 3 * 3600.0,
    floor_fraction: float = 0.02,
    min_sigma: float | None = None,
    min_coverage: float = 0.5,
    trend: bool = True,
    origin: float = 0.0,
    service: str = "",
    signal: str = "",
    source: dict[str, Any] | None = None,
) -> SeasonalModel:
    """Fit a seasonal model to one series (Unix-second timestamps, values; NaN/None = missing).

    Only samples with end − seasons·period < t <= end are used (`end` defaults to the last
    timestamp): that is the freeze. `step` is the bucket width; `smooth` pools that many neighbouring
    buckets on each side into each bucket's median; `scale_window` is the span (seconds, total)
    of buckets pooled for each bucket's σ. Raises InsufficientHistory when less than `min_coverage`
    of the period's buckets have any value.
    """
    if seasons < 1:
        raise ValueError("seasons must be at least 1")
    if smooth < 0:
        raise ValueError("smooth must be >= 0")
    nb = period / step
    if period <= 0 or step <= 0 or abs(nb - round(nb)) > 1e-9 * nb:
        raise ValueError(f"the period ({period}s) must be a whole number of steps ({step}s)")
    B, K = round(nb), seasons
    ts = np.asarray(timestamps, dtype=float).ravel()
    vs = np.asarray([np.nan if v is None else v for v in values], dtype=float).ravel()
    if ts.shape != vs.shape:
        raise ValueError(f"{ts.size} timestamps but {vs.size} values")
    if end is None:
        finite_ts = ts[np.isfinite(ts)]
        if finite_ts.size == 0:
            raise InsufficientHistory("no samples at all")
        end = float(finite_ts.max())
    end = float(end)
    keep = np.isfinite(ts) & np.isfinite(vs) & (ts <= end) & (ts > end - K * period)
    ts, vs = ts[keep], vs[keep]
    if ts.size == 0:
        raise InsufficientHistory(
            f"no finite values between {_iso(end - K * period)} and {_iso(end)} ({K} periods of {period:g}s)"
        )

    # cells: one mean (value, time) per (season k, bucket b); season 0 is the most recent period
    k = np.minimum(np.floor((end - ts) / period).astype(np.int64), K - 1)
    b = np.floor(np.mod(ts - origin, period) / step + 1e-9).astype(np.int64) % B
    flat = k * B + b
    counts = np.bincount(flat, minlength=K * B).reshape(K, B)
    with np.errstate(invalid="ignore", divide="ignore"):
        cells = (np.bincount(flat, weights=vs, minlength=K * B).reshape(K, B)) / counts
        times = (np.bincount(flat, weights=ts, minlength=K * B).reshape(K, B)) / counts
    cells[counts == 0] = np.nan

    seen = counts.sum(axis=0) > 0
    coverage = float(seen.mean())
    if coverage < min_coverage:
        have = ts.max() - ts.min()
        raise InsufficientHistory(
            f"the history covers {coverage:.0%} of the {period / 3600:g} h period "
            f"({ts.size} samples over {have / 3600:.1f} h); at least {min_coverage:.0%} is needed"
        )
    seasons_observed = int((counts.sum(axis=1) > 0).sum())

    # robust trend: median slope between two seasons' values of the same bucket
    slope = 0.0
    if trend and seasons_observed >= 2:
        slopes = []
        for i in range(K):
            for j in range(i + 1, K):
                both = np.isfinite(cells[i]) & np.isfinite(cells[j])
                dt = times[i, both] - times[j, both]
                slopes.append((cells[i, both] - cells[j, both]) / dt)
        all_slopes = np.concatenate(slopes)
        if all_slopes.size >= max(3, B // 4):
            slope = float(np.median(all_slopes))
    detrended = cells - slope * (times - end)

    # profile: median over seasons (and ±smooth neighbouring buckets); empty buckets interpolated
    profile = _nanmedian(_pooled(detrended, smooth), axis=0)
    holes = ~np.isfinite(profile)
    if holes.any():
        idx = np.arange(B)
        profile[holes] = np.interp(idx[holes], idx[~holes], profile[~holes], period=B)

    # forecast errors, each season predicted without itself
    if K >= 2 and seasons_observed >= 2:
        residuals = np.full_like(detrended, np.nan)
        for i in range(K):
            others = np.delete(detrended, i, axis=0)
            residuals[i] = detrended[i] - _nanmedian(_pooled(others, smooth), axis=0)
    else:
        residuals = detrended - _nanmedian(_pooled(detrended, max(smooth, 2), skip_centre=True), axis=0)
    finite = residuals[np.isfinite(residuals)]
    if finite.size:
        global_scale = MAD_TO_SIGMA * float(np.median(np.abs(finite - np.median(finite))))
    else:
        global_scale = 0.0
    if scale_mode == "global":
        scale = np.full(B, global_scale)
    elif scale_mode == "bucket":
        w = max(1, round(scale_window / step / 2))
        pool = _pooled(residuals, w)
        centre = _nanmedian(pool, axis=0)
        scale = MAD_TO_SIGMA * _nanmedian(np.abs(pool - centre), axis=0)
        n = np.isfinite(pool).sum(axis=0)
        scale = np.where((n >= MIN_SCALE_RESIDUALS) & np.isfinite(scale), scale, global_scale)
        # shrink towards the global scale (as if SCALE_PRIOR_WEIGHT residuals had the global spread):
        # a MAD of a few dozen residuals is itself noisy, and an underestimated σ means false alarms
        scale = np.sqrt((n * scale**2 + SCALE_PRIOR_WEIGHT * global_scale**2) / (n + SCALE_PRIOR_WEIGHT))
    else:
        raise ValueError(f"scale_mode must be 'bucket' or 'global', got {scale_mode!r}")

    if min_sigma is None:
        min_sigma = max(1e-9, 0.01 * float(np.median(np.abs(vs))))
    if not min_sigma > 0:
        raise ValueError("min_sigma must be > 0")
    return SeasonalModel(
        period=float(period),
        bucket=float(step),
        profile=profile,
        scale=scale,
        fitted_at=end,
        slope=slope,
        trend_from=end - K * period,
        trend_until=end + period,
        floor_fraction=floor_fraction,
        min_sigma=float(min_sigma),
        seasons=K,
        origin=float(origin),
        scale_mode=scale_mode,
        service=service,
        signal=signal,
        history={
            "start_unix": float(ts.min()),
            "end_unix": end,
            "samples": int(ts.size),
            "coverage": coverage,
            "seasons_observed": seasons_observed,
        },
        source=dict(source or {}),
    )


# -- streaming check ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Observation:
    """Everything `BaselineMonitor.observe` knows about one sample."""

    t: float
    value: float | None
    centre: float
    sigma: float
    z: float  # NaN when the value is missing
    beyond: bool  # this sample is beyond k·σ (in the watched direction)
    run_length: int  # consecutive samples beyond k·σ on the same side, ending here
    breached: bool  # run_length >= consecutive
    learning: bool  # t < frozen_at: used to recalibrate, never counted as a breach
    cusum_upper: float = 0.0
    cusum_lower: float = 0.0
    cusum_alarm: bool = False


class BaselineMonitor:
    """The streaming "k consecutive periods beyond the kσ forecast" check. Pure; one sample at a time.

    `update(t, value) -> (z, breached, run_length)` with z = (value − centre − offset) / σ.

    Frozen at `frozen_at` (the rollout's start; default the model's `fitted_at`): samples before it
    are *learning* — with `recalibrate` = n > 0 the median residual of the last n of them becomes a
    level `offset` (the level may have drifted since the model was fitted), and σ is widened by
    √(1 + π/2m) for the uncertainty of that median of m residuals; they never count as breaches.
    From `frozen_at` on nothing is learned any more: offset, σ and the model stay as they were, so
    a regression that starts with the rollout is never absorbed. A model fitted after `frozen_at`
    is refused (it may have seen the rollout).

    `direction`: "above" (e.g. traffic above forecast -> scale out), "below" or "both" (a run
    counts consecutive samples beyond k·σ on the same side). A missing value (None/NaN) gives
    z = NaN and leaves the run and the CUSUM as they are. With `cusum_h` set, one-sided CUSUMs
    (k = `cusum_k`, h = `cusum_h`, z clipped at `cusum_clip`) run on z in the watched direction(s);
    `last.cusum_alarm` reports them (they do not change `breached`).
    """

    def __init__(
        self,
        model: SeasonalModel,
        k: float = 3.0,
        consecutive: int = 3,
        frozen_at: float | None = None,
        *,
        direction: Literal["above", "below", "both"] = "both",
        recalibrate: int = 12,
        cusum_k: float = 0.5,
        cusum_h: float | None = 5.0,
        cusum_clip: float | None = 2.5,
    ) -> None:
        if k <= 0 or consecutive < 1:
            raise ValueError("k must be > 0 and consecutive >= 1")
        if direction not in ("above", "below", "both"):
            raise ValueError(f"direction must be above, below or both, got {direction!r}")
        frozen_at = model.fitted_at if frozen_at is None else float(frozen_at)
        if model.fitted_at > frozen_at:
            raise ValueError(
                f"the model was fitted up to {_iso(model.fitted_at)}, after the freeze at {_iso(frozen_at)}: "
                "it may have learned from the rollout; fit it with history ending at the rollout's start"
            )
        self.model, self.k, self.consecutive, self.frozen_at = model, k, consecutive, frozen_at
        self.direction = direction
        self._learned: deque[float] = deque(maxlen=max(recalibrate, 0) or None)
        self.recalibrate = max(recalibrate, 0)
        self.run_length, self._run_sign = 0, 0
        self.upper = Cusum(cusum_k, cusum_h, cusum_clip) if cusum_h and direction != "below" else None
        self.lower = Cusum(cusum_k, cusum_h, cusum_clip) if cusum_h and direction != "above" else None
        self.last: Observation | None = None

    @property
    def offset(self) -> float:
        """The level correction learned before the freeze (0 until at least 3 residuals were seen)."""
        if not self.recalibrate or len(self._learned) < 3:
            return 0.0
        return float(np.median(np.fromiter(self._learned, float)))

    @property
    def inflation(self) -> float:
        m = len(self._learned) if self.recalibrate else 0
        return math.sqrt(1 + math.pi / (2 * m)) if m >= 3 else 1.0

    @property
    def cusum_alarm(self) -> bool:
        return bool((self.upper and self.upper.alarm) or (self.lower and self.lower.alarm))

    def update(self, t: float, value: float | None) -> tuple[float, bool, int]:
        obs = self.observe(t, value)
        return obs.z, obs.breached, obs.run_length

    def observe(self, t: float, value: float | None) -> Observation:
        """Like `update`, with everything the monitor knows about the sample."""
        t = float(t)
        x = math.nan if value is None else float(value)
        missing = not math.isfinite(x)
        centre, sigma = self.model.forecast(t)
        if t < self.frozen_at and not missing and self.recalibrate:  # before the rollout: learn the level
            self._learned.append(x - centre)
        centre += self.offset
        sigma *= self.inflation
        z = math.nan if missing else (x - centre) / sigma
        if t < self.frozen_at:  # learning samples are reported, never counted
            obs = Observation(t, None if missing else x, centre, sigma, z, False, 0, False, True)
            self.last = obs
            return obs

        beyond = False
        if not missing:
            sign = 1 if z > self.k else -1 if z < -self.k else 0
            if (self.direction == "above" and sign < 0) or (self.direction == "below" and sign > 0):
                sign = 0
            beyond = sign != 0
            self.run_length = (self.run_length + 1 if sign == self._run_sign else 1) if beyond else 0
            self._run_sign = sign
            if self.upper:
                self.upper.update(z)
            if self.lower:
                self.lower.update(-z)
        obs = Observation(
            t=t,
            value=None if missing else x,
            centre=centre,
            sigma=sigma,
            z=z,
            beyond=beyond,
            run_length=self.run_length,
            breached=self.run_length >= self.consecutive,
            learning=False,
            cusum_upper=self.upper.statistic if self.upper else 0.0,
            cusum_lower=self.lower.statistic if self.lower else 0.0,
            cusum_alarm=self.cusum_alarm,
        )
        self.last = obs
        return obs
