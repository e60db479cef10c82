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

A signal's value is computed from "reads" — one measurement's series at one instant (`reads`) — by `signal_value`,
whoever asked for them: `fetch` asks for one rollout arm's series, the batching source (sources/influxdb_batching.py)
for all planned services and arms at once, and both hand `signal_value` the same series.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import httpx

from guardian.errors import NoData, SourceUnavailable
from guardian.rules.defaults import SLOW_OBJECTIVE_LE
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.prometheus import _safe_url, counter_increase

REQUESTS, DURATION = "http_requests_total", "http_request_duration_seconds"
CPU, MEMORY = "process_cpu_seconds_total", "process_resident_memory_bytes"
STANDARD = ("requests", "errors", "slow", "p99_seconds", "cpu_seconds", "memory_bytes")
NOT_EXECUTED = "not executed"  # InfluxDB's answer to the statements after one that failed

Tags = tuple[tuple[str, str], ...]
Series = dict[Tags, dict[str, float]]  # each series' tags (sorted pairs) -> its fields' last values
Reader = Callable[[str, float], Series]  # (measurement, instant) -> one rollout arm's series there


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


def reads(signal: str, start: float, end: float, min_window: float) -> tuple[tuple[str, float], ...]:
    """The (measurement, instant) reads a standard signal's value over [start, end] is computed from (none for
    a signal that is not one of them)."""
    return {"requests": ((REQUESTS, start), (REQUESTS, end)), "errors": ((REQUESTS, start), (REQUESTS, end)),
            "slow": ((DURATION, start), (DURATION, end)), "cpu_seconds": ((CPU, start), (CPU, end)),
            "memory_bytes": ((MEMORY, end),),
            # rate()'s window in the PromQL sources: at least min_window
            "p99_seconds": ((DURATION, min(start, end - min_window)), (DURATION, end))}.get(signal, ())


def increase(before: Series, after: Series, field: str, keep: Callable[[Tags], bool] = lambda tags: True) -> float:
    """A field's increase between two reads, summed over the series `keep` accepts (`counter_increase`)."""
    return counter_increase([(before.get(k, {}).get(field), v.get(field)) for k, v in after.items() if keep(k)])


def is_5xx(tags: Tags) -> bool:
    """The series of answers with a 5xx code (InfluxQL's `"code" =~ /^5/`)."""
    return dict(tags).get("code", "").startswith("5")


def last_statement(measurement: str, where: str, at: float, lookback: float) -> str:
    """Each series' last point before `at` (within the lookback), one row per series (`GROUP BY *`)."""
    end_ns, start_ns = int(at * 1e9), int((at - lookback) * 1e9)
    return (f"SELECT last(*) FROM {identifier(measurement)} WHERE {where} AND time <= {end_ns} "
            f"AND time > {start_ns} GROUP BY *")


def series_of(rows: list[dict[str, Any]]) -> Series:
    """A statement's answer (`last(*)` … `GROUP BY *`) as {tags: {field: value}}."""
    out: Series = {}
    for s in rows:
        columns, values = s.get("columns") or [], (s.get("values") or [[]])[0]
        fields = {c.removeprefix("last_"): v for c, v in zip(columns, values, strict=False)
                  if c != "time" and isinstance(v, int | float)}
        out[tuple(sorted((s.get("tags") or {}).items()))] = fields
    return out


def merge_chunks(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chunked answer's results, one per statement: its chunks' series in order, "partial" as its last chunk says
    (a statement whose last chunk is partial was cut off)."""
    merged: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for result in chunk["results"]:
            into = merged.setdefault(result.get("statement_id", 0), {"statement_id": result.get("statement_id", 0),
                                                                     "series": []})
            into["series"] += result.get("series") or []
            into["partial"] = bool(result.get("partial"))
            if result.get("error"):
                into["error"] = result["error"]
    return list(merged.values())


def shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


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

    # -- asking --------------------------------------------------------------------------------------
    def answers(self, statements: list[str]) -> list[list[dict[str, Any]] | SourceUnavailable]:
        """Several statements in one request (InfluxQL's `;`-separated statements, each answered as its own
        result): each one's series, or the error it was answered with. SourceUnavailable when the request itself
        failed (no connection, timeout, refused credentials, an error for the whole query)."""
        status, results = self._post(";\n".join(statements))
        by_id = {x.get("statement_id", i): x for i, x in enumerate(results)}
        errors = [x["error"] for x in results if x.get("error")]
        # A statement's error stops the ones after it ("not executed"). For a database that does not exist InfluxDB
        # (1.6) answers only "not executed", for the first statement: then the first one, asked alone, says why.
        cause = next((e for e in errors if e != NOT_EXECUTED), "")
        if errors and not cause and len(statements) > 1:
            status, alone = self._post(statements[0])
            cause = next((x["error"] for x in alone if x.get("error")), "")
        out: list[list[dict[str, Any]] | SourceUnavailable] = []
        for i, statement in enumerate(statements):
            result = by_id.get(i)
            error = result.get("error") if result is not None else (NOT_EXECUTED if errors else "")
            if error:
                why = f"{error}: {cause}" if error == NOT_EXECUTED and cause else error
                out.append(SourceUnavailable(f"InfluxDB at {self.safe_url} unavailable: HTTP {status} {why}; "
                                             f"query: {shorten(statement)}"))
            elif result is None or result.get("partial") or any(s.get("partial") for s in result.get("series") or []):
                out.append(SourceUnavailable(  # InfluxDB's [http] max-row-limit cuts a non-chunked answer short
                    f"InfluxDB at {self.safe_url} answered only part of the query (its [http] max-row-limit?): "
                    f"{shorten(statement)}"))
            else:
                out.append(result.get("series") or [])
        return out

    def _post(self, q: str) -> tuple[int, list[dict[str, Any]]]:
        """One /query request: its status and results (one per statement answered), or SourceUnavailable naming why
        there are none. Asked chunked: InfluxDB's [http] max-row-limit cuts a non-chunked answer short, and not always
        saying so (1.6 drops series without "partial" when the limit falls between them); a chunked one is whole."""
        try:  # q in the form body: a batch of statements can be longer than a URL should be
            r = self._http.post(f"{self.url}/query", data={"q": q},
                                params={"db": self.database, "epoch": "ms", "chunked": "true", **self._auth})
        except httpx.TimeoutException:
            raise SourceUnavailable(
                f"InfluxDB at {self.safe_url} unavailable: timed out; query: {shorten(q)}") from None
        except httpx.HTTPError as e:
            raise SourceUnavailable(
                f"InfluxDB at {self.safe_url} unavailable: {type(e).__name__}; query: {shorten(q)}") from None
        if r.status_code in (401, 403):
            raise SourceUnavailable(f"InfluxDB at {self.safe_url} refused the credentials (HTTP {r.status_code}): "
                                    "set GUARDIAN_INFLUXDB_USERNAME and GUARDIAN_INFLUXDB_PASSWORD")
        try:
            chunks = [json.loads(line) for line in r.text.splitlines() if line.strip()]
        except ValueError:
            chunks = []
        error = next((c["error"] for c in chunks if isinstance(c, dict) and c.get("error")), None)
        if r.status_code >= 400 or error or not chunks or not all(
                isinstance(c, dict) and isinstance(c.get("results"), list) for c in chunks):
            raise SourceUnavailable(f"InfluxDB at {self.safe_url} unavailable: HTTP {r.status_code} "
                                    f"{error or r.text[:200]}; query: {shorten(q)}")
        return r.status_code, merge_chunks(chunks)

    def _select(self, q: str) -> list[dict[str, Any]]:
        (answer,) = self.answers([q])
        if isinstance(answer, SourceUnavailable):
            raise answer
        return answer

    def last_values(self, measurement: str, where: str, at: float) -> Series:
        """Each series' last point before `at` (within the lookback): {tags: {field: value}}."""
        return series_of(self._select(last_statement(measurement, where, at, self.lookback)))

    def _where(self, service: str, arm: ArmSelector) -> str:
        return f"{identifier('service')} = {literal(service)} AND {identifier(arm.label)} = {literal(arm.label_value)}"

    # -- reading -------------------------------------------------------------------------------------
    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        where = self._where(service, arm)
        return self.signal_value(query, service, arm, start, end,
                                 lambda measurement, at: self.last_values(measurement, where, at))

    def signal_value(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float,
                     read: Reader) -> float:
        """The signal's value for one rollout arm, from the series `read` gives for each of its `reads`."""
        if end <= start:
            raise ValueError(f"empty window: start={start} end={end}")
        if query.signal not in STANDARD:
            raise SourceUnavailable(f"{query.signal}: an InfluxDB source reads the standard signals only "
                                    f"({', '.join(STANDARD)}), not a rule file's PromQL")
        try:
            return self._value(query.signal, read, start, end)
        except NoData as e:
            raise NoData(f"no data for {query.signal} of {service}/{arm.arm} in InfluxDB ({e})") from None

    def _value(self, signal: str, read: Reader, start: float, end: float) -> float:
        (measurement, first), *rest = reads(signal, start, end, self.min_window)
        if signal == "memory_bytes":
            values = [v["gauge"] for v in read(MEMORY, end).values() if "gauge" in v]
            if not values:
                raise NoData("no series")
            return float(sum(values))
        before, after = read(measurement, first), read(measurement, rest[0][1])
        if signal in ("requests", "cpu_seconds"):
            return increase(before, after, "counter")
        if signal == "errors":
            try:
                return increase(before, after, "counter", is_5xx)
            except NoData:  # no 5xx series: 0 errors if the service answered at all (PromQL's `or … * 0`)
                return 0.0 * increase(before, after, "counter")
        if signal == "slow":
            return increase(before, after, "count") - increase(before, after, SLOW_OBJECTIVE_LE)
        return self._p99(before, after)

    @staticmethod
    def _p99(before: Series, after: Series) -> float:
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
