"""Fitting a seasonal forecast model to history. Pure: numpy, no I/O.

`fit(timestamps, values, ...)` builds a `SeasonalModel` (guardian/forecast/model.py) from one series,
using only the `seasons` periods before `end` — which is why a model fitted up to a rollout's start can
never absorb the rollout:

- **Cells.** The period (a week by default) is cut into buckets (5 min by default). Each of the last
  `seasons` periods before `end` gives one value per bucket: the mean of its samples (season 0 is the
  most recent period).
- **Trend.** A robust linear trend: the median, over every bucket and every pair of seasons, of the
  slope between the two seasons' values in that bucket (a Theil–Sen estimate in which the seasonal
  shape cancels out exactly). The profile is stored with the trend removed, at the level of
  `fitted_at`; the trend is extrapolated at most one period beyond it.
- **Profile.** The median of the seasons' detrended values per bucket, pooled with `smooth`
  neighbouring buckets on each side; so the forecast for any time is the median of the values at the
  same time-of-period 1, 2 and 3 periods earlier. Empty buckets are interpolated.
- **Scale.** σ is the spread of the *forecast error*, not of the noise: every season is predicted
  from the other seasons alone (leave one season out), and σ is 1.4826 × the MAD of those errors,
  pooled over ±`scale_window` buckets (so a noisy daytime and a quiet night get their own σ) and
  shrunk towards the whole period's, or the whole period's alone (`scale_mode="global"`). With a
  single season the error is taken against the neighbouring buckets of the same season instead.
- **Floor.** A flat history would give σ ≈ 0 and turn every wiggle into a huge z: σ is never below
  `floor_fraction` of the forecast level nor below `min_sigma` (default 1% of the history's median
  absolute value).

The arithmetic is numpy's (`bincount` means, `nanmedian`), kept as it is so that a refit of the same
history writes the same model file, byte for byte.
"""
from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from guardian.errors import InsufficientHistory
from guardian.forecast.model import WEEK, SeasonalModel, iso_utc

MAD_TO_SIGMA = 1.4826
MIN_SCALE_RESIDUALS = 8  # fewer residuals in a bucket's pool than this: use the global scale there
SCALE_PRIOR_WEIGHT = 30  # pseudo-residuals with the global spread mixed into every bucket's σ


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
    ts, vs, end = _history(timestamps, values, end, period, K)
    cells, times, counts = _cells(ts, vs, end, period=period, step=step, seasons=K, buckets=B, origin=origin)

    seen = counts.sum(axis=0) > 0
    coverage = float(seen.mean())
    if coverage < min_coverage:
        have = ts.max() - ts.min()
        raise InsufficientHistory(
            f"the history covers {coverage:.0%} of the {period / 3600:g} h period "
            f"({ts.size} samples over {have / 3600:.1f} h); at least {min_coverage:.0%} is needed"
        )
    seasons_observed = int((counts.sum(axis=1) > 0).sum())

    slope = _trend(cells, times, B) if trend and seasons_observed >= 2 else 0.0
    detrended = cells - slope * (times - end)
    profile = _profile(detrended, smooth)
    residuals = _forecast_errors(detrended, smooth, seasons_observed)
    scale = _scale(residuals, scale_mode, max(1, round(scale_window / step / 2)), B)

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


def _history(timestamps: np.ndarray | list[float], values: np.ndarray | list[float | None], end: float | None,
             period: float, seasons: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The finite samples with end − seasons·period < t <= end, and `end` (default: the last timestamp)."""
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
    keep = np.isfinite(ts) & np.isfinite(vs) & (ts <= end) & (ts > end - seasons * period)
    ts, vs = ts[keep], vs[keep]
    if ts.size == 0:
        raise InsufficientHistory(
            f"no finite values between {iso_utc(end - seasons * period)} and {iso_utc(end)} "
            f"({seasons} periods of {period:g}s)"
        )
    return ts, vs, end


def _cells(ts: np.ndarray, vs: np.ndarray, end: float, *, period: float, step: float, seasons: int, buckets: int,
           origin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, times, counts), each (seasons, buckets): the mean value and mean time of every season's
    bucket (NaN where it has no sample) and its number of samples. Season 0 is the most recent period."""
    K, B = seasons, buckets
    k = np.minimum(np.floor((end - ts) / period).astype(np.int64), K - 1)
    b = np.floor(np.mod(ts - origin, period) / step + 1e-9).astype(np.int64) % B
    flat = k * B + b
    counts = np.bincount(flat, minlength=K * B).reshape(K, B)
    with np.errstate(invalid="ignore", divide="ignore"):
        cells = (np.bincount(flat, weights=vs, minlength=K * B).reshape(K, B)) / counts
        times = (np.bincount(flat, weights=ts, minlength=K * B).reshape(K, B)) / counts
    cells[counts == 0] = np.nan
    return cells, times, counts


def _trend(cells: np.ndarray, times: np.ndarray, buckets: int) -> float:
    """The robust trend: the median slope between two seasons' values of the same bucket (0 when there are
    fewer than max(3, buckets/4) such slopes)."""
    K = cells.shape[0]
    slopes = []
    for i in range(K):
        for j in range(i + 1, K):
            both = np.isfinite(cells[i]) & np.isfinite(cells[j])
            dt = times[i, both] - times[j, both]
            slopes.append((cells[i, both] - cells[j, both]) / dt)
    all_slopes = np.concatenate(slopes)
    if all_slopes.size >= max(3, buckets // 4):
        return float(np.median(all_slopes))
    return 0.0


def _profile(detrended: np.ndarray, smooth: int) -> np.ndarray:
    """The median over seasons (and ±smooth neighbouring buckets) per bucket; empty buckets interpolated."""
    profile = _nanmedian(_pooled(detrended, smooth), axis=0)
    holes = ~np.isfinite(profile)
    if holes.any():
        B = profile.size
        idx = np.arange(B)
        profile[holes] = np.interp(idx[holes], idx[~holes], profile[~holes], period=B)
    return profile


def _forecast_errors(detrended: np.ndarray, smooth: int, seasons_observed: int) -> np.ndarray:
    """Every season's values minus their forecast from the other seasons alone (leave one season out); with a
    single season, minus the median of the neighbouring buckets of the same season."""
    K = detrended.shape[0]
    if K >= 2 and seasons_observed >= 2:
        residuals = np.full_like(detrended, np.nan)
        for i in range(K):
            others = np.delete(detrended, i, axis=0)
            residuals[i] = detrended[i] - _nanmedian(_pooled(others, smooth), axis=0)
        return residuals
    return detrended - _nanmedian(_pooled(detrended, max(smooth, 2), skip_centre=True), axis=0)


def _scale(residuals: np.ndarray, scale_mode: str, width: int, buckets: int) -> np.ndarray:
    """Robust σ per bucket: 1.4826 × the MAD of the forecast errors, pooled over ±`width` buckets and shrunk
    towards the whole period's (`bucket`), or the whole period's alone (`global`)."""
    finite = residuals[np.isfinite(residuals)]
    if finite.size:
        global_scale = MAD_TO_SIGMA * float(np.median(np.abs(finite - np.median(finite))))
    else:
        global_scale = 0.0
    if scale_mode == "global":
        return np.full(buckets, global_scale)
    if scale_mode != "bucket":
        raise ValueError(f"scale_mode must be 'bucket' or 'global', got {scale_mode!r}")
    pool = _pooled(residuals, width)
    centre = _nanmedian(pool, axis=0)
    scale = MAD_TO_SIGMA * _nanmedian(np.abs(pool - centre), axis=0)
    n = np.isfinite(pool).sum(axis=0)
    scale = np.where((n >= MIN_SCALE_RESIDUALS) & np.isfinite(scale), scale, global_scale)
    # shrink towards the global scale (as if SCALE_PRIOR_WEIGHT residuals had the global spread):
    # a MAD of a few dozen residuals is itself noisy, and an underestimated σ means false alarms
    return np.sqrt((n * scale**2 + SCALE_PRIOR_WEIGHT * global_scale**2) / (n + SCALE_PRIOR_WEIGHT))


def _nanmedian(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    """np.nanmedian without the 'All-NaN slice' warning (an empty slice is NaN, which we handle)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=axis)


def _pooled(cells: np.ndarray, width: int, *, skip_centre: bool = False) -> np.ndarray:
    """(K, B) -> (K·(2w+1), B): each bucket's column joined by its ±width circular neighbours."""
    shifts = [j for j in range(-width, width + 1) if not (skip_centre and j == 0)]
    return np.concatenate([np.roll(cells, -j, axis=1) for j in shifts], axis=0)
