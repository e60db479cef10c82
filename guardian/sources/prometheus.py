"""PrometheusSource: one signal of one arm over one tick window, read from a Prometheus server.

Why it reads the way it does:

- COUNTER signals are read as two instant values, at the window's start and at its end, with one
  `query_range` whose step is the window. Their difference is exactly "what happened within the
  tick" as the recordings define it: unlike `increase()` it neither extrapolates nor needs two
  samples inside the window, and consecutive ticks add up to the total without gaps or overlap.
  Resets and series born within the window are handled by `counter_increase` (pure, unit tested).
- GAUGE signals are one instant query at the window's end. A template that yields several series is
  a rule bug (it must aggregate), reported as NoData with the labels that split it, never summed.
- Missing data and a missing source are different facts: an empty answer raises `NoData`; anything
  that keeps the question from being answered (refused, timeout, HTTP 4xx/5xx, garbage) raises
  `SourceUnavailable`. Neither is ever turned into a zero here.
- The client never retries: a tick is short and the engine decides what a failed fetch means, so a
  dead Prometheus must be reported at once instead of after urllib3's back-off.
"""
from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from guardian.domain import SignalType
from guardian.errors import NoData, SourceUnavailable
from guardian.rules.promql import render
from guardian.sources import ArmSelector, SignalQuery

Pair = tuple[float | None, float | None]  # one series' (value at start, value at end)


def counter_increase(series_points: Iterable[Pair]) -> float:
    """Sum of per-series increments over a window, from each series' (start, end) values.

    end < start means the counter reset within the window: everything since the reset (the end
    value) is the best lower bound, as `increase()` assumes too. A series with no start value was
    born within the window, so all of its end value happened inside it. A series with no end value
    vanished and contributes nothing. Non-finite values count as missing. If no series has an end
    value the source had nothing to say: NoData, never 0.
    """
    total, seen = 0.0, False
    for start, end in series_points:
        if end is None or not math.isfinite(end):
            continue
        seen = True
        if start is None or not math.isfinite(start) or end < start:
            total += end
        else:
            total += end - start
    if not seen:
        raise NoData("no series has a value at the end of the window")
    return total


def window_pair(values: Sequence[Sequence[object]], start: float, end: float) -> Pair:
    """Map a range-query series' `[[ts, "value"], ...]` onto (value at start, value at end).

    With step = end - start Prometheus evaluates at most those two instants; each point goes to the
    nearer one, which tolerates the millisecond rounding of timestamps.
    """
    first = last = None
    for ts, raw in values:
        v = float(raw)  # type: ignore[arg-type]
        if abs(float(ts) - start) < abs(float(ts) - end):  # type: ignore[arg-type]
            first = v
        else:
            last = v
    return first, last


def _safe_url(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _ms(t: float) -> int:
    """Prometheus works in whole milliseconds; round once so start, end and step agree exactly."""
    return round(t * 1000)


def _ts(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _http_reason(exc: PrometheusApiClientException) -> str:
    """'HTTP 400: parse error ...' from the client's 'HTTP Status Code 400 (b'{json}')' message."""
    text = str(exc)
    m = re.match(r"HTTP Status Code (\d+) \((.*)\)$", text, re.DOTALL)
    if not m:
        return text[:200]
    detail = ""
    try:
        body = ast.literal_eval(m.group(2))
        detail = json.loads(body).get("error", "")
    except (ValueError, SyntaxError, TypeError, AttributeError):
        detail = m.group(2)[:200]
    return f"HTTP {m.group(1)}" + (f": {detail}" if detail else "")


def differing_labels(result: list[dict[str, Any]]) -> str:
    """The label names whose values differ between the series of one answer ("?" if none do)."""
    metrics = [r.get("metric", {}) for r in result]
    keys = sorted({k for m in metrics for k in m})
    return ", ".join(k for k in keys if len({m.get(k) for m in metrics}) > 1) or "?"


def counter_value(result: list[dict[str, Any]], where: str, promql: str, start: float, end: float) -> float:
    """A counter signal from a range answer's series: their increase within [start, end]."""
    pairs = [window_pair(s.get("values", []), start, end) for s in result]
    try:
        return counter_increase(pairs)
    except NoData:
        raise NoData(f"no data for {where} at the end of the window: {promql}") from None


def gauge_value(result: list[dict[str, Any]], where: str, promql: str) -> float:
    """A gauge signal from an instant answer: its one series' value (NoData if none, several or NaN)."""
    if not result:
        raise NoData(f"no series for {where}: {promql}")
    if len(result) > 1:
        raise NoData(
            f"gauge {where} returned {len(result)} series (differing in {differing_labels(result)}); "
            f"the query must aggregate to one series, e.g. with sum() or max(): {promql}"
        )
    value = float(result[0]["value"][1])
    if not math.isfinite(value):
        raise NoData(f"{where} is {value} (e.g. no requests in the window): {promql}")
    return value


class PrometheusSource:
    """A `MetricSource` backed by the Prometheus HTTP API (through `prometheus-api-client`)."""

    product = "Prometheus"  # how messages name the store
    extra_params: dict[str, str] = {}  # sent with every query (a PromQL-compatible store's own switches)
    ready_path = "/-/ready"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        min_window: float = 15.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.safe_url = _safe_url(self.url)
        self.timeout = timeout
        self.min_window = min_window  # floor for {{window}}: rate() over a too-short range is empty
        self._headers = dict(headers or {})
        self._session = requests.Session()
        no_retry = Retry(total=0, read=False, raise_on_status=False)
        self._session.mount(self.url, HTTPAdapter(max_retries=no_retry))
        self._client = PrometheusConnect(
            url=self.url, headers=self._headers, timeout=timeout, session=self._session, retry=no_retry
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.safe_url!r})"

    def close(self) -> None:
        self._session.close()

    def ping(self) -> bool:
        """True when the store answers its readiness path (`/-/ready`) with 200 (for the guardian's own readiness)."""
        try:
            r = self._session.get(f"{self.url}{self.ready_path}", headers=self._headers, timeout=self.timeout)
        except requests.RequestException:
            return False
        return r.status_code == 200

    def render(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> str:
        return render(
            query.promql,
            service=service,
            arm=arm.label_value,
            arm_label=arm.label,
            window=max(end - start, self.min_window),
        )

    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        if end <= start:
            raise ValueError(f"empty window: start={start} end={end}")
        promql = self.render(query, service, arm, start, end)
        where = f"{query.signal} of {service}/{arm.arm}"
        if query.type == SignalType.COUNTER:
            return self._counter(promql, where, start, end)
        return self._gauge(promql, where, end)

    def _counter(self, promql: str, where: str, start: float, end: float) -> float:
        return counter_value(self.range_result(promql, start, end), where, promql, start, end)

    def _gauge(self, promql: str, where: str, end: float) -> float:
        return gauge_value(self.instant_result(promql, end), where, promql)

    def range_result(self, promql: str, start: float, end: float) -> list[dict[str, Any]]:
        """The series of `promql` at exactly `start` and `end` (one range query, step = the window)."""
        # The client rounds start/end to whole seconds: these params override them. The step is given
        # in integer ms (a float step is truncated by Prometheus) so the second point lands on `end`.
        s_ms, e_ms = _ms(start), _ms(end)
        params = {"start": _ts(s_ms), "end": _ts(e_ms), **self.extra_params}
        step = f"{max(e_ms - s_ms, 1)}ms"
        return self._call(promql, self._client.custom_query_range, promql, _dt(start), _dt(end), step, params)

    def instant_result(self, promql: str, at: float) -> list[dict[str, Any]]:
        """The series of `promql` at `at` (a scalar answer as one series without labels)."""
        result = self._call(promql, self._client.custom_query, promql, {"time": _ts(_ms(at)), **self.extra_params})
        if result and not isinstance(result[0], dict):  # a scalar answer: [ts, "value"]
            result = [{"metric": {}, "value": result}]
        return result

    def _call(self, promql: str, method: Callable[..., Any], *args: Any) -> Any:
        """Run one client call, turning every way of not getting an answer into SourceUnavailable."""
        try:
            return method(*args)
        except (PrometheusApiClientException, requests.RequestException, ValueError, KeyError, TypeError) as exc:
            reason = self._reason(exc)
            raise SourceUnavailable(
                f"{self.product} at {self.safe_url} unavailable: {reason}; query: {promql}"
            ) from exc

    def _reason(self, exc: Exception) -> str:
        if isinstance(exc, PrometheusApiClientException):
            return _http_reason(exc)
        if isinstance(exc, requests.Timeout):
            return f"timed out after {self.timeout:g}s"
        if isinstance(exc, requests.ConnectionError):
            return "connection refused" if "refused" in str(exc).lower() else "connection failed"
        return f"bad response ({type(exc).__name__})"
