"""The seasonal forecast (guardian/forecast/model.py, fitting.py, model_files.py; judge/forecast_monitor.py) and CUSUM
(guardian/judge/cusum.py): pure, fast."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from guardian.errors import InsufficientHistory, ModelFormatError
from guardian.forecast.fitting import fit
from guardian.forecast.model import DAY, FORMAT, WEEK, SeasonalModel
from guardian.forecast.model_files import model_path, read_model, write_model
from guardian.judge.cusum import Cusum
from guardian.judge.forecast_monitor import ForecastMonitor as BaselineMonitor

END = 1_767_225_600.0  # 2026-01-01T00:00:00Z, on a 5-min boundary
STEP = 300.0
NOISE = 3.0


def truth(t: np.ndarray | float) -> np.ndarray:
    """A daily and a weekly cycle around 100 (e.g. requests/s)."""
    t = np.asarray(t, dtype=float)
    return 100 + 30 * np.sin(2 * np.pi * t / DAY) + 15 * np.sin(2 * np.pi * t / WEEK + 1.0)


def history(weeks: int = 3, seed: int = 1, step: float = STEP, noise: float = NOISE) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = np.arange(END - weeks * WEEK + step, END + 1, step)
    return ts, truth(ts) + rng.normal(0, noise, ts.size)


@pytest.fixture(scope="module")
def model() -> SeasonalModel:
    ts, vs = history()
    return fit(ts, vs, end=END, service="checkout", signal="requests")


def test_forecast_follows_the_weekly_pattern(model: SeasonalModel) -> None:
    future = np.arange(END + STEP, END + WEEK, STEP)
    centre, sigma = model.forecast_many(future)
    err = centre - truth(future)
    # the median of 3 noisy weeks (pooled with the neighbouring buckets) is close to the truth
    assert np.sqrt(np.mean(err**2)) < 0.6 * NOISE
    assert np.max(np.abs(err)) < 2.5 * NOISE
    assert np.corrcoef(centre, truth(future))[0, 1] > 0.99
    assert model.seasons == 3 and model.buckets == WEEK / STEP and model.history["seasons_observed"] == 3
    # σ is the forecast error's spread: noise plus the median's own error (≈ 1.1 × noise here)
    assert NOISE < np.median(sigma) < 1.4 * NOISE
    # new data from the same process is mostly within 3σ, and z has about unit spread
    rng = np.random.default_rng(7)
    z = (truth(future) + rng.normal(0, NOISE, future.size) - centre) / sigma
    assert 0.85 < z.std() < 1.15
    assert np.mean(np.abs(z) > 3) < 0.01
    # scalar and array forms agree
    c0, s0 = model.forecast(future[100])
    assert (c0, s0) == (float(centre[100]), float(sigma[100]))


def test_trend_is_robust_and_extrapolated() -> None:
    ts, vs = history(seed=3)
    slope = 20 / WEEK  # +20 per week
    vs = vs + slope * (ts - END)
    vs[::97] += 500  # outliers do not move a median
    m = fit(ts, vs, end=END)
    assert m.slope == pytest.approx(slope, rel=0.1)
    future = np.arange(END + STEP, END + WEEK, STEP)
    centre, _ = m.forecast_many(future)
    expected = truth(future) + slope * (future - END)
    assert np.sqrt(np.mean((centre - expected) ** 2)) < 0.7 * NOISE
    # the trend is not extrapolated beyond one period past the fit
    far = END + 10 * WEEK
    assert m.forecast(far)[0] == pytest.approx(m.forecast(far - 9 * WEEK)[0])


def test_sigma_never_below_the_floor() -> None:
    ts = np.arange(END - 3 * WEEK + STEP, END + 1, STEP)
    flat = fit(ts, np.full(ts.size, 100.0), end=END)
    assert np.all(flat.scale == 0)  # a flat history has no spread at all ...
    for t in np.linspace(END, END + WEEK, 50):
        centre, sigma = flat.forecast(t)
        assert centre == pytest.approx(100.0)
        assert sigma >= flat.floor_fraction * 100 > 0  # ... but σ keeps the floor
        assert sigma == flat.floor(t)
    zeros = fit(ts, np.zeros(ts.size), end=END, min_sigma=0.01)
    assert zeros.forecast(END + 60) == (0.0, 0.01)
    tiny = fit(ts, np.zeros(ts.size), end=END)  # default absolute floor is positive even for zeros
    assert tiny.forecast(END + 60)[1] > 0
    # floors hold for a noisy model too
    noisy = fit(*history(seed=5), end=END, floor_fraction=0.1)
    centre, sigma = noisy.forecast_many(np.arange(END, END + WEEK, 1234.0))
    assert np.all(sigma >= 0.1 * np.abs(centre) - 1e-12)
    assert np.all(sigma >= noisy.min_sigma)


def test_a_spike_gives_a_large_z(model: SeasonalModel) -> None:
    mon = BaselineMonitor(model, recalibrate=0)
    t = END + 3600
    centre, sigma = model.forecast(t)
    z, breached, run = mon.update(t, centre + 10 * sigma)
    assert z == pytest.approx(10.0)
    assert (breached, run) == (False, 1)  # one spike is not a breach
    z, _, run = mon.update(t + STEP, model.forecast(t + STEP)[0])
    assert abs(z) < 1e-9 and run == 0


def test_three_consecutive_periods_are_needed(model: SeasonalModel) -> None:
    mon = BaselineMonitor(model, k=3.0, consecutive=3, recalibrate=0)
    t = END + STEP

    def feed(zs: list[float | None]) -> list[tuple[float, bool, int]]:
        nonlocal t
        res = []
        for z in zs:
            c, s = model.forecast(t)
            res.append(mon.update(t, None if z is None else c + z * s))
            t += STEP
        return res

    assert [r[1:] for r in feed([0, 4, 4])] == [(False, 0), (False, 1), (False, 2)]
    assert feed([0])[-1][1:] == (False, 0)  # back inside: the run restarts
    assert [r[1:] for r in feed([5, 5, 5, 5])] == [(False, 1), (False, 2), (True, 3), (True, 4)]
    assert feed([2.9])[-1][1:] == (False, 0)
    assert [r[1:] for r in feed([4, -4, -4])] == [(False, 1), (False, 1), (False, 2)]  # sides do not mix
    z, breached, run = feed([None])[-1]  # a missing value neither extends nor breaks the run
    assert math.isnan(z) and (breached, run) == (False, 2)
    assert feed([-4])[-1][1:] == (True, 3)
    # direction="above": only high values count (traffic above forecast -> scale out)
    up = BaselineMonitor(model, direction="above", recalibrate=0, cusum_h=None)
    c, s = model.forecast(END + STEP)
    assert up.update(END + STEP, c - 10 * s)[2] == 0
    assert up.last is not None and up.last.z == pytest.approx(-10) and not up.last.beyond


def test_the_model_is_frozen_at_the_rollout_start() -> None:
    ts, vs = history(weeks=4, seed=11)
    rollout = END - WEEK  # the last week is "after the rollout": a +40 regression
    after = ts > rollout
    shifted = vs + np.where(after, 40.0, 0.0)
    frozen = fit(ts, shifted, end=rollout)
    clean = fit(ts[~after], vs[~after], end=rollout)
    # data after frozen_at is not used at all: same model as without it
    assert frozen.fitted_at == rollout
    assert np.array_equal(frozen.profile, clean.profile) and np.array_equal(frozen.scale, clean.scale)
    assert frozen.slope == clean.slope
    # a model fitted with the regression inside absorbs part of it (what the freeze prevents)
    absorbed = fit(ts, shifted, end=END)
    assert absorbed.forecast(END + DAY)[0] > frozen.forecast(END + DAY)[0] + 5

    # the monitor: learns a level offset before the freeze, nothing after it
    mon = BaselineMonitor(frozen, frozen_at=rollout + 3600, recalibrate=12)
    t = rollout + STEP
    while t < rollout + 3600:  # the hour before the rollout runs +1σ above the forecast
        c, s = frozen.forecast(t)
        z, breached, run = mon.update(t, c + s)
        assert not breached and run == 0 and mon.last is not None and mon.last.learning
        t += STEP
    offset, inflation = mon.offset, mon.inflation
    assert offset == pytest.approx(frozen.forecast(t)[1], rel=0.3) and inflation > 1
    results = []
    for _ in range(100):  # after the freeze: +8σ for 100 periods is never absorbed
        c, s = frozen.forecast(t)
        results.append(mon.update(t, c + 8 * s))
        t += STEP
    assert mon.offset == offset and mon.inflation == inflation
    zs = [r[0] for r in results]
    assert min(zs) > 5 and max(zs) - min(zs) < 1e-6 * max(zs) + 1.0
    assert all(r[1] for r in results[2:]) and results[-1][2] == 100
    # a model fitted after the freeze could have seen the rollout: refused
    with pytest.raises(ValueError, match="after the freeze"):
        BaselineMonitor(absorbed, frozen_at=rollout)


def test_json_round_trip(model: SeasonalModel, tmp_path) -> None:
    text = model.to_json()
    doc = json.loads(text)
    assert doc["format"] == FORMAT == "guardian-baseline/v1"
    assert {"service", "signal", "fitted_at", "fitted_at_unix", "period_seconds", "bucket_seconds", "buckets",
            "origin_unix", "seasons", "profile", "scale", "scale_mode", "trend", "floor", "history",
            "source"} <= set(doc)
    assert doc["fitted_at"] == "2026-01-01T00:00:00Z"
    assert doc["period_seconds"] == WEEK and doc["bucket_seconds"] == STEP and len(doc["profile"]) == 2016
    assert set(doc["floor"]) == {"fraction", "absolute"}
    back = SeasonalModel.from_json(text)
    assert back.to_json() == text
    ts = np.linspace(END - WEEK, END + 2 * WEEK, 999)
    for a, b in zip(model.forecast_many(ts), back.forecast_many(ts), strict=True):
        assert np.array_equal(a, b)
    # unknown keys are ignored; the ISO time is enough without fitted_at_unix
    doc["extra"] = 1
    del doc["fitted_at_unix"]
    assert SeasonalModel.from_json(doc).fitted_at == model.fitted_at
    # invalid documents
    for bad, match in [
        ({**doc, "format": "guardian-baseline/v0"}, "format"),
        ({**doc, "profile": doc["profile"][:-1]}, "profile has 2015 values"),
        ({k: v for k, v in doc.items() if k != "scale"}, "missing field 'scale'"),
        ({**doc, "scale": [-1.0] * 2016}, ">= 0"),
    ]:
        with pytest.raises(ModelFormatError, match=match):
            SeasonalModel.from_json(bad)
    with pytest.raises(ModelFormatError, match="not JSON"):
        SeasonalModel.from_json("{nope")
    # stored under models/<service>/<signal>.json, atomically (no temp file left behind)
    path = write_model(model, tmp_path / "models")
    assert path == tmp_path / "models" / "checkout" / "requests.json" == model_path(tmp_path / "models", "checkout",
                                                                                      "requests")
    assert read_model(path).to_json() == text
    write_model(model, tmp_path / "models")  # overwrite
    assert [p.name for p in path.parent.iterdir()] == ["requests.json"]
    with pytest.raises(ValueError, match="file name"):
        model_path(tmp_path, "../etc", "x")


def test_gaps_partial_history_and_finer_samples() -> None:
    ts, vs = history(seed=2, step=60.0)  # 1-min samples into 5-min buckets
    vs[(ts > END - 2 * DAY) & (ts < END - DAY)] = np.nan  # a day missing in one week only
    vs[::13] = np.nan
    m = fit(ts, list(vs), end=END, step=STEP)
    future = np.arange(END + STEP, END + WEEK, STEP)
    assert np.sqrt(np.mean((m.forecast_many(future)[0] - truth(future)) ** 2)) < 0.6 * NOISE
    # four days of history: fits one partial season, with the holes interpolated
    half = ts > END - 5 * DAY  # (one of those days is missing)
    partial = fit(ts[half], vs[half], end=END, step=STEP)
    assert partial.history["seasons_observed"] == 1 and partial.history["coverage"] == pytest.approx(4 / 7, abs=0.01)
    assert np.all(np.isfinite(partial.profile)) and np.all(partial.scale > 0)
    with pytest.raises(InsufficientHistory, match="covers 14% of the 168 h period"):
        fit(ts[ts > END - 2 * DAY], vs[ts > END - 2 * DAY], end=END)
    with pytest.raises(InsufficientHistory, match="no finite values"):
        fit(ts, np.full(ts.size, np.nan), end=END)
    with pytest.raises(ValueError, match="whole number"):
        fit(ts, vs, step=1000)


def test_cusum_catches_a_one_sigma_shift_that_3sigma_misses() -> None:
    rng = np.random.default_rng(42)
    runs, horizon = 400, 15
    shifted = rng.normal(1.0, 1.0, (runs, horizon))  # a sustained +1σ shift
    in_control = rng.normal(0.0, 1.0, (runs, horizon))

    def cusum_detects(zs: np.ndarray) -> bool:
        c = Cusum(k=0.5, h=5.0, clip=2.5)
        return any(c.update(float(z))[1] for z in zs)

    cusum_rate = np.mean([cusum_detects(r) for r in shifted])
    shewhart_rate = np.mean((shifted > 3).any(axis=1))  # a pure per-point 3σ rule
    persistent_rate = np.mean([any(r[i:i + 3].min() > 3 for i in range(horizon - 2)) for r in shifted])
    assert cusum_rate > 0.7, cusum_rate
    assert shewhart_rate < 0.4, shewhart_rate
    assert persistent_rate < 0.02, persistent_rate
    assert np.mean([cusum_detects(r) for r in in_control]) < 0.05

    # average run length to detect, unclipped (the textbook figure is ≈ 10 at h = 5)
    lengths = []
    for r in rng.normal(1.0, 1.0, (300, 200)):
        c = Cusum(0.5, 5.0)
        lengths.append(next(i + 1 for i, z in enumerate(r) if c.update(float(z))[1]))
    assert 8 < np.mean(lengths) < 13


def test_cusum_details() -> None:
    c = Cusum(k=0.5, h=5.0, clip=2.5)
    assert c.update(100.0) == (2.0, False)  # one spike adds at most clip - k
    assert c.update(float("nan")) == (2.0, False)
    assert c.update(None) == (2.0, False)
    assert c.update(100.0) == (4.0, False)
    assert c.update(100.0) == (6.0, True) and c.alarm and c.since == 3
    c.update(-10.0)
    assert c.statistic == 0 and not c.alarm and c.since == 0
    with pytest.raises(ValueError):
        Cusum(k=0.5, h=5, clip=0.4)


def test_monitor_reports_cusum(model: SeasonalModel) -> None:
    rng = np.random.default_rng(3)
    mon = BaselineMonitor(model, recalibrate=0)
    t, detected_at, alarms, after_alarm = END + STEP, None, [], []
    for i in range(60):
        c, s = model.forecast(t)
        z, breached, _ = mon.update(t, c + (1.2 + rng.normal()) * s)
        assert mon.last is not None and mon.last.z == z
        if alarms and alarms[-1][0] == i - 1:
            after_alarm.append(mon.last.cusum_upper)
        if mon.last.cusum_alarm:
            alarms.append((i, mon.last.cusum_upper))
            detected_at = detected_at or i + 1
        t += STEP
    assert detected_at is not None and detected_at <= 30
    assert all(upper >= 5 for _, upper in alarms) and mon.last.cusum_lower == 0
    # said once per crossing, then started again from 0: a shift that goes on crosses again
    assert len(alarms) >= 2 and all(upper < 5 for upper in after_alarm)
    assert BaselineMonitor(model, cusum_h=None).upper is None
