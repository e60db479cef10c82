"""InfluxDB 1.x as a metric source: InfluxQL over its HTTP API, for services whose metrics Telegraf writes there.

The six standard signals are built in, read from the layout of Telegraf's `inputs.prometheus` plugin (metric_version
1, its default) scraping a service's Prometheus exposition: measurement = the metric's name, its labels and the
scrape's tags as tags, a counter's value in field `counter`, a gauge's in `gauge`, a histogram as one point of fields
named by each bucket's `le` plus `count` and `sum` (docs/sources.md). Rule files that name `source: influxdb` read the
standard signals only (their PromQL `queries:` are refused at start).

A value "at" an instant is each series' last point in the `lookback` before it (as Prometheus's instant queries);
a counter's increase within a window is the difference of those at its start and end, summed over series, resets and
series born within the window handled as for Prometheus (`counter_increase`). No series is NoData; an answer that is
not one (an error in the result, a refused credential, no connection) is SourceUnavailable, never "no data".
"""
from __future__ import annotations

import math
from typing import Any

import httpx

from guardian.errors import NoData, SourceUnavailable
from guardian.rules.defaults import SLOW_OBJECTIVE_LE
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.prometheus import _safe_url, counter_increase

REQUESTS, DURATION = "http_requests_total", "http_request_duration_seconds"
CPU, MEMORY = "process_cpu_seconds_total", "process_resident_memory_bytes"
STANDARD = ("requests", "errors", "slow", "p99_seconds", "cpu_seconds", "memory_bytes")


def literal(value: str) -> str:
    """An InfluxQL string literal: backslashes and single quotes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def identifier(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus's histogram_quantile over cumulative bucket counts {le: count} (linear within a bucket)."""
    les = sorted(buckets)
    if not les or not math.isinf(les[-1]):
        return math.nan
    total = buckets[les[-1]]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le in les:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return prev_le  # the highest finite bound, as Prometheus answers
            width = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / width if width > 0 else 1.0)
        prev_le, prev_count = le, count
    return prev_le


class InfluxDBSource:
    """A `MetricSource` over InfluxDB 1.x's HTTP API (`/query`, `/ping`)."""

    product = "InfluxDB"

    def __init__(self, url: str, *, database: str = "telegraf", username: str | None = None,
                 password: str | None = None, timeout: float = 5.0, min_window: float = 15.0,
                 lookback: float = 300.0) -> None:
        self.url, self.safe_url = url.rstrip("/"), _safe_url(url.rstrip("/"))
        self.database, self.timeout, self.min_window, self.lookback = database, timeout, min_window, lookback
        self._auth = {"u": username, "p": password or ""} if username else {}
        self._http = httpx.Client(timeout=timeout)

    def __repr__(self) -> str:
        return f"InfluxDBSource({self.safe_url!r}, database={self.database!r})"

    def close(self) -> None:
        self._http.close()

    def ping(self) -> bool:
        try:
            return self._http.get(f"{self.url}/ping").status_code == 204
        except httpx.HTTPError:
            return False

    # -- reading -------------------------------------------------------------------------------------
    def _select(self, q: str) -> list[dict[str, Any]]:
        try:
            r = self._http.post(f"{self.url}/query", params={"db": self.database, "q": q, "epoch": "ms",
                                                             **self._auth})
        except httpx.TimeoutException:
            raise SourceUnavailable(f"InfluxDB at {self.safe_url} unavailable: timed out; query: {q}") from None
        except httpx.HTTPError as e:
            raise SourceUnavailable(
                f"InfluxDB at {self.safe_url} unavailable: {type(e).__name__}; query: {q}") from None
        if r.status_code in (401, 403):
            raise SourceUnavailable(f"InfluxDB at {self.safe_url} refused the credentials (HTTP {r.status_code}): "
                                    "set GUARDIAN_INFLUXDB_USERNAME and GUARDIAN_INFLUXDB_PASSWORD")
        try:
            body = r.json()
        except ValueError:
            body = {}
        error = body.get("error") or next((x.get("error") for x in body.get("results") or [] if x.get("error")), None)
        if r.status_code >= 400 or error:
            raise SourceUnavailable(f"InfluxDB at {self.safe_url} unavailable: HTTP {r.status_code} "
                                    f"{error or r.text[:200]}; query: {q}")
        return [s for x in body.get("results") or [] for s in x.get("series") or []]

    def last_values(self, measurement: str, where: str, at: float) -> dict[tuple, dict[str, float]]:
        """Each series' last point before `at` (within the lookback): {tags: {field: value}}."""
        end_ns, start_ns = int(at * 1e9), int((at - self.lookback) * 1e9)
        q = (f"SELECT last(*) FROM {identifier(measurement)} WHERE {where} AND time <= {end_ns} "
             f"AND time > {start_ns} GROUP BY *")
        out: dict[tuple, dict[str, float]] = {}
        for s in self._select(q):
            columns, values = s.get("columns") or [], (s.get("values") or [[]])[0]
            fields = {c.removeprefix("last_"): v for c, v in zip(columns, values, strict=False)
                      if c != "time" and isinstance(v, int | float)}
            out[tuple(sorted((s.get("tags") or {}).items()))] = fields
        return out

    def _where(self, service: str, arm: ArmSelector, extra: str = "") -> str:
        return (f"{identifier('service')} = {literal(service)} AND {identifier(arm.label)} = "
                f"{literal(arm.label_value)}{extra}")

    def _increase(self, measurement: str, where: str, start: float, end: float, *fields: str) -> list[float]:
        """Each field's increase within [start, end], summed over series (one read of the series at each end)."""
        before, after = self.last_values(measurement, where, start), self.last_values(measurement, where, end)
        return [counter_increase([(before.get(k, {}).get(f), v.get(f)) for k, v in after.items()]) for f in fields]

    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        if end <= start:
            raise ValueError(f"empty window: start={start} end={end}")
        where = f"{query.signal} of {service}/{arm.arm}"
        sel = self._where(service, arm)
        try:
            if query.signal == "requests":
                return self._increase(REQUESTS, sel, start, end, "counter")[0]
            if query.signal == "errors":
                try:
                    return self._increase(REQUESTS, self._where(service, arm, " AND \"code\" =~ /^5/"), start, end,
                                          "counter")[0]
                except NoData:  # no 5xx series: 0 errors if the service answered at all (PromQL's `or … * 0`)
                    return 0.0 * self._increase(REQUESTS, sel, start, end, "counter")[0]
            if query.signal == "slow":
                count, fast = self._increase(DURATION, sel, start, end, "count", SLOW_OBJECTIVE_LE)
                return count - fast
            if query.signal == "cpu_seconds":
                return self._increase(CPU, sel, start, end, "counter")[0]
            if query.signal == "memory_bytes":
                values = [v["gauge"] for v in self.last_values(MEMORY, sel, end).values() if "gauge" in v]
                if not values:
                    raise NoData("no series")
                return float(sum(values))
            if query.signal == "p99_seconds":
                return self._p99(sel, min(start, end - self.min_window), end)  # rate()'s window: at least min_window
        except NoData as e:
            raise NoData(f"no data for {where} in InfluxDB ({e})") from None
        raise SourceUnavailable(f"{query.signal}: an InfluxDB source reads the standard signals only "
                                f"({', '.join(STANDARD)}), not a rule file's PromQL")

    def _p99(self, sel: str, start: float, end: float) -> float:
        before, after = self.last_values(DURATION, sel, start), self.last_values(DURATION, sel, end)
        buckets: dict[float, float] = {}
        for key, fields in after.items():
            for name, value in fields.items():
                try:
                    le = float(name)
                except ValueError:
                    continue  # count, sum
                earlier = before.get(key, {}).get(name)
                grew = value - earlier if earlier is not None and value >= earlier else value
                buckets[le] = buckets.get(le, 0.0) + grew
        value = histogram_quantile(0.99, buckets)
        if not math.isfinite(value):
            raise NoData("no requests in the window")
        return value
