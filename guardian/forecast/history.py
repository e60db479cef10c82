"""Fit seasonal forecast models (guardian/forecast/model.py) from Prometheus history.

    model = fit_from_prometheus("http://127.0.0.1:9090", "checkout", "requests",
                                query_template=FORECAST_SIGNALS["requests"].promql, arm="baseline")
    write_model(model, "models")          # -> models/checkout/requests.json (guardian/forecast/model_files.py)

How the history is read:

- One `query_range` per chunk of at most `max_points` (10,000) evaluations: Prometheus refuses a
  range query that would return more than 11,000 points per series, and three weeks at a 1-min
  step is 30,240. Evaluations are on a grid aligned to the step (`end` rounded down to it), so
  chunks neither overlap nor leave gaps.
- `{{window}}` is the step: a counter's template takes `rate(...[{{window}}])`, so each point is the
  per-second rate over the step that ends at its timestamp, and the points tile the history.
- Errors follow PrometheusSource: the client never retries; anything that keeps the question from
  being answered (refused, timeout, HTTP 4xx/5xx, garbage) is `SourceUnavailable`; an answer with no
  usable values, or too few to cover the period, is `NoData`. Each message names the service,
  signal, arm, time range and query.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from guardian.domain import SignalType
from guardian.errors import InsufficientHistory, NoData
from guardian.forecast.fitting import fit
from guardian.forecast.model import WEEK, SeasonalModel
from guardian.rules.defaults import SLOW_OBJECTIVE_LE
from guardian.rules.promql import render
from guardian.sources.prometheus import PrometheusSource, _dt, _ms, _ts, differing_labels

MAX_POINTS = 10_000  # per query_range; Prometheus's own cap is 11,000 points per series

_SEL = 'service="{{service}}",{{arm_label}}="{{arm}}"'


@dataclass(frozen=True)
class ForecastSignal:
    """A signal a forecast model can be fitted for: the PromQL that reads it as a per-step value."""

    name: str
    promql: str
    unit: str
    models: str  # what the model's values are, in words
    source_type: SignalType  # how the standard signal is recorded (counter: increments per tick)
    default: bool = True  # fitted by `guardian baseline fit SERVICE` without --signal
    floor_fraction: float = 0.02
    min_sigma: float | None = None  # None: 1% of the history's median absolute value

    @property
    def transform(self) -> str:
        """How to turn a recorded tick of this signal into the model's units."""
        if self.source_type == SignalType.COUNTER:
            return "rate_per_second"  # a counter tick is an increment: divide it by the tick length
        return "value"


FORECAST_SIGNALS: dict[str, ForecastSignal] = {
    s.name: s
    for s in (
        ForecastSignal(
            "requests", f"sum(rate(http_requests_total{{{_SEL}}}[{{{{window}}}}]))", "requests/s",
            "requests served per second, averaged over each step (all status codes)", SignalType.COUNTER,
        ),
        ForecastSignal(
            "errors",
            f'sum(rate(http_requests_total{{{_SEL},code=~"5.."}}[{{{{window}}}}]))'
            f" or (sum(rate(http_requests_total{{{_SEL}}}[{{{{window}}}}])) * 0)",
            "errors/s", "5xx answers per second, averaged over each step (0 when there were none)",
            SignalType.COUNTER, default=False, min_sigma=0.01,
        ),
        ForecastSignal(
            "slow",
            f"sum(rate(http_request_duration_seconds_count{{{_SEL}}}[{{{{window}}}}]))"
            f" - sum(rate(http_request_duration_seconds_bucket{{{_SEL},le=\"{SLOW_OBJECTIVE_LE}\"}}"
            "[{{window}}]))",
            "requests/s", f"requests slower than {SLOW_OBJECTIVE_LE}s per second, averaged over each step",
            SignalType.COUNTER, default=False, min_sigma=0.01,
        ),
        ForecastSignal(
            "p99_seconds",
            f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{_SEL}}}"
            "[{{window}}])))",
            "seconds", "the 99th percentile latency of the requests within each step (none: missing)",
            SignalType.GAUGE, floor_fraction=0.05,
        ),
        ForecastSignal(
            "cpu_seconds", f"sum(rate(process_cpu_seconds_total{{{_SEL}}}[{{{{window}}}}]))", "cores",
            "CPU seconds used per second (cores), averaged over each step", SignalType.COUNTER,
            floor_fraction=0.05,
        ),
        ForecastSignal(
            "memory_bytes", f"sum(avg_over_time(process_resident_memory_bytes{{{_SEL}}}[{{{{window}}}}]))",
            "bytes", "resident memory, averaged over each step and summed over the arm's instances",
            SignalType.GAUGE,
        ),
    )
}
SIGNAL_ALIASES = {"cpu": "cpu_seconds", "memory": "memory_bytes", "p99": "p99_seconds", "latency": "p99_seconds"}
DEFAULT_SIGNALS = tuple(name for name, s in FORECAST_SIGNALS.items() if s.default)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _unix(value: float | datetime | None) -> float:
    if value is None:
        return time.time()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("end must be timezone-aware (e.g. UTC)")
        return value.timestamp()
    return float(value)


def _iso(t: float) -> str:
    return _dt(t).isoformat().replace("+00:00", "Z")


def query_history(
    source: PrometheusSource,
    promql: str,
    start: float,
    end: float,
    step: float,
    *,
    where: str,
    max_points: int = MAX_POINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, values) of a one-series PromQL expression evaluated every `step` in [start, end].

    Long ranges are read in chunks of `max_points`. NaN/±Inf values are kept as NaN (missing).
    Raises SourceUnavailable when a chunk cannot be read, NoData when the expression yields more
    than one series (it must aggregate).
    """
    if step <= 0 or end < start:
        raise ValueError(f"bad range: start={start} end={end} step={step}")
    step_ms = _ms(step)
    n = int((_ms(end) - _ms(start)) // step_ms) + 1
    ts_out: list[float] = []
    vs_out: list[float] = []
    for first in range(0, n, max_points):
        last = min(first + max_points, n) - 1
        s_ms, e_ms = _ms(start) + first * step_ms, _ms(start) + last * step_ms
        params = {"start": _ts(s_ms), "end": _ts(e_ms)}  # exact ms; the client would round to seconds
        # the source's own no-retry client and error mapping (refused/timeout/HTTP -> SourceUnavailable)
        result = source._call(
            promql, source._client.custom_query_range, promql, _dt(s_ms / 1000), _dt(e_ms / 1000),
            f"{step_ms}ms", params,
        )
        if len(result) > 1:
            raise NoData(
                f"{where}: the query returned {len(result)} series (differing in {differing_labels(result)}); "
                f"it must aggregate to one series, e.g. with sum(): {promql}"
            )
        for ts, raw in result[0].get("values", []) if result else []:
            try:
                v = float(raw)
            except (TypeError, ValueError):
                v = math.nan
            ts_out.append(float(ts))
            vs_out.append(v if math.isfinite(v) else math.nan)
    return np.asarray(ts_out, dtype=float), np.asarray(vs_out, dtype=float)


def fit_from_prometheus(
    url: str,
    service: str,
    signal: str,
    *,
    query_template: str,
    arm: str,
    arm_label: str = "track",
    history: timedelta | float = timedelta(weeks=3),
    step: timedelta | float = 300,
    end: datetime | float | None = None,
    timeout: float = 30.0,
    period: timedelta | float = WEEK,
    seasons: int | None = None,
    headers: dict[str, str] | None = None,
    max_points: int = MAX_POINTS,
    source_info: dict[str, Any] | None = None,
    **fit_options: Any,
) -> SeasonalModel:
    """Read `history` of one signal of one arm of `service` from Prometheus and fit a seasonal model.

    The history ends at `end` (default now), rounded down to the step; the model is fitted as of
    that time and knows nothing after it (pass the rollout's start to freeze it there). `seasons`
    defaults to the number of whole periods in `history` (3 weeks -> 3). Extra keyword arguments
    go to `guardian.forecast.fitting.fit` (floor_fraction, min_sigma, smooth, ...).

    Raises SourceUnavailable (Prometheus cannot be asked) or NoData (no history, or too little).
    """
    step_s, history_s, period_s = _seconds(step), _seconds(history), _seconds(period)
    if step_s <= 0 or history_s < step_s:
        raise ValueError(f"need step > 0 and history >= step, got step={step_s}s, history={history_s}s")
    end_s = math.floor(_unix(end) / step_s) * step_s
    n = int(history_s // step_s)
    start_s = end_s - (n - 1) * step_s
    if seasons is None:
        seasons = max(1, int(history_s // period_s + 1e-9))
    promql = render(query_template, service=service, arm=arm, arm_label=arm_label, window=step_s)
    where = f"{signal} of {service} ({arm_label}={arm})"
    source = PrometheusSource(url, timeout=timeout, headers=headers)
    try:
        ts, vs = query_history(source, promql, start_s, end_s, step_s, where=where, max_points=max_points)
    finally:
        source.close()
    span = f"between {_iso(start_s)} and {_iso(end_s)}"
    if ts.size == 0:
        raise NoData(f"no history for {where} in Prometheus at {source.safe_url} {span}: the query returned "
                     f"no series (wrong service, arm or metric name?): {promql}")
    if not np.isfinite(vs).any():
        raise NoData(f"no usable history for {where} in Prometheus at {source.safe_url} {span}: "
                     f"{ts.size} points, all NaN (e.g. no requests): {promql}")
    info = {
        "query": promql,
        "arm": arm,
        "arm_label": arm_label,
        "prometheus": source.safe_url,
        "step_seconds": step_s,
        "history_seconds": history_s,
        **(source_info or {}),
    }
    try:
        return fit(ts, vs, period=period_s, step=step_s, seasons=seasons, end=end_s,
                   service=service, signal=signal, source=info, **fit_options)
    except InsufficientHistory as exc:
        raise NoData(f"too little history for {where} in Prometheus at {source.safe_url} {span}: {exc}") from None
