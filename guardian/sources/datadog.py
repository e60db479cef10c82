"""Datadog as a metric source: its metrics query API (v2, `POST /api/v2/query/timeseries`), for services whose metrics
the Datadog Agent collects.

Why v2 and not v1's `GET /api/v1/query`: one v2 request carries several queries (each answered as its own series, by
its formula's index), so a tick window costs one request for every signal of every rollout (v1 asks one query per
request); its window is in milliseconds, `from` inclusive and `to` exclusive, as a tick window is; `interval` asks for
the rollup explicitly (v1 picks it from the time span); application keys scoped to `timeseries_query` may call it.

The six standard signals are built in, read from what the Agent's OpenMetrics check (`openmetrics_endpoint`, its V2
implementation) makes of a service's Prometheus exposition, under the check's `namespace:` (docs/sources.md):

    signal        query (for the rollout arm: {service IN (…) AND track IN (…)})                        read as
    requests      sum:NS.http_requests.count{…} by {service,track}.as_count()                        summed
    errors        the same AND code:5*                                                              summed; 0 when the
                                                                                                    service answered
    slow          NS.http_request_duration_seconds.count less its .bucket{upper_bound:0.5}           summed
    p99_seconds   NS.http_request_duration_seconds.bucket by {…,upper_bound} and its .count,         histogram_quantile
                  over the window but at least min_window
    cpu_seconds   sum:NS.process_cpu_seconds.count{…}.as_count()                                    summed
    memory_bytes  sum:NS.process_resident_memory_bytes{…}, over the window but at least min_window   see below

The check sends a counter (`_total` dropped) as a monotonic count: the increase since its previous run, resets
handled by the Agent; so a counter's increase within a tick is the sum of the counts Datadog holds within it
(`.as_count()`, space-aggregated with `sum`). A request asks for one rollup interval spanning its whole span, so a
gauge's value is each instance's average within the span (at least min_window, which covers the check's 15 s runs),
summed over instances (the last rollup bucket's, should Datadog cut the span into several). The service and arm are
tags (`service:checkout`, `track:canary`: the check instance's `tags:`), lowercased by Datadog, so they are asked for
and matched in lower case.

No series for a rollout arm is NoData; an answer that is not one (refused keys, a rate limit, an error, no connection,
a timeout) is SourceUnavailable naming the cause, never "no data". After a 429 the source does not ask again before
the rate limit resets (X-RateLimit-Reset), every fetch until then unavailable with that reason. The keys travel in
the DD-API-KEY and DD-APPLICATION-KEY headers only: never in a URL, a message or a log line.

A signal's value is computed from "reads" — one query over one span of time (`NEEDS`) — by `signal_value`, whoever
asked for them: `fetch` asks for one rollout arm, the batching source (sources/datadog_batching.py) for every planned
service and arm at once, and both hand `signal_value` the same groups.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from guardian.errors import NoData, SourceUnavailable
from guardian.rules.defaults import SLOW_OBJECTIVE_LE
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.influxdb import histogram_quantile

STANDARD = ("requests", "errors", "slow", "p99_seconds", "cpu_seconds", "memory_bytes")
QUERY_PATH, VALIDATE_PATH = "/api/v2/query/timeseries", "/api/v1/validate"
TAG_VALUE = re.compile(r"[a-z0-9][a-z0-9_\-./]{0,199}")  # a tag value safe in an IN list: Datadog's charset, no ':'


@dataclass(frozen=True)
class Read:
    """One query the standard signals are computed from."""

    metric: str  # after the namespace
    where: str = ""  # one more filter term
    by: tuple[str, ...] = ()  # more group-by tags than service and arm
    counted: bool = True  # a count (`.as_count()`, summed over the span); else a gauge (its last point)


REQUESTS, ERRORS = Read("http_requests.count"), Read("http_requests.count", "code:5*")
DURATION_COUNT = Read("http_request_duration_seconds.count")
FAST = Read("http_request_duration_seconds.bucket", f"upper_bound:{SLOW_OBJECTIVE_LE}")
BUCKETS = Read("http_request_duration_seconds.bucket", by=("upper_bound",))
CPU, MEMORY = Read("process_cpu_seconds.count"), Read("process_resident_memory_bytes", counted=False)
TICK, TRAILING = "tick", "trailing"  # the tick window; the window but at least min_window, ending with it
NEEDS: dict[str, tuple[tuple[Read, str], ...]] = {
    "requests": ((REQUESTS, TICK),), "errors": ((ERRORS, TICK), (REQUESTS, TICK)),
    "slow": ((DURATION_COUNT, TICK), (FAST, TICK)), "cpu_seconds": ((CPU, TICK),),
    "memory_bytes": ((MEMORY, TRAILING),), "p99_seconds": ((BUCKETS, TRAILING), (DURATION_COUNT, TRAILING)),
}
READS_OF_SPAN = {kind: frozenset(r for needs in NEEDS.values() for r, k in needs if k == kind) for kind in (TICK,
                                                                                                      TRAILING)}

Series = list[tuple[dict[str, str], list[float]]]  # one group's series: (its other group tags, its points' values)
Groups = dict[tuple[str, str], Series]  # (service, arm value), lowercased -> its series
Lookup = Callable[[Read, str], Series]  # (read, span kind) -> one rollout arm's series


def span_ms(kind: str, start: float, end: float, min_window: float) -> tuple[int, int]:
    """The [from, to) a span kind covers for tick window [start, end), in whole milliseconds."""
    begin = start if kind == TICK else end - max(end - start, min_window)
    return round(begin * 1000), round(end * 1000)


def tag_value(value: str) -> str:
    """The value as Datadog stores a tag value (lowercased); SourceUnavailable if it cannot be asked for safely."""
    low = value.lower()
    if not TAG_VALUE.fullmatch(low):
        raise SourceUnavailable(f"{value!r} cannot be asked for as a Datadog tag value (letters, digits, '_', '-', "
                                "'.', '/'; starting with a letter or digit; at most 200)")
    return low


def query_text(read: Read, namespace: str, services: Iterable[str], arm_label: str, arms: Iterable[str]) -> str:
    """The classic metrics query of `read` for these services and arms, one series per (service, arm, `read.by`)."""
    terms = [f"service IN ({', '.join(sorted(services))})", f"{arm_label} IN ({', '.join(sorted(arms))})"]
    terms += [read.where] if read.where else []
    by = ",".join(("service", arm_label, *read.by))
    return f"sum:{namespace}.{read.metric}{{{' AND '.join(terms)}}} by {{{by}}}" + (".as_count()" if read.counted
                                                                                    else "")


def request_body(start_ms: int, end_ms: int, queries: Sequence[str]) -> dict[str, Any]:
    """A TimeseriesFormulaQueryRequest: each query named q<i> and returned by a formula of its own, in order, so that
    a series' query_index is its query's index; one rollup interval spanning the whole window."""
    return {"data": {"type": "timeseries_request", "attributes": {
        "from": start_ms, "to": end_ms, "interval": end_ms - start_ms,
        "queries": [{"data_source": "metrics", "name": f"q{i}", "query": q} for i, q in enumerate(queries)],
        "formulas": [{"formula": f"q{i}"} for i in range(len(queries))]}}}


def groups_of(body: Any, count: int, arm_label: str) -> list[Groups]:
    """A TimeseriesFormulaQueryResponse split into each query's groups; ValueError if it is not one."""
    attributes = body["data"]["attributes"] if body.get("data") else {}
    series, values, times = (attributes.get(k) or [] for k in ("series", "values", "times"))
    if len(series) != len(values) or any(len(v) != len(times) for v in values):
        raise ValueError(f"{len(series)} series, {len(values)} value lists, {len(times)} times")
    out: list[Groups] = [{} for _ in range(count)]
    for one, points in zip(series, values, strict=True):
        index = one.get("query_index")
        if not isinstance(index, int) or not 0 <= index < count:
            raise ValueError(f"query_index {index!r} of {count} queries")
        tags = dict(t.partition(":")[::2] for t in one.get("group_tags") or [])
        key = (tags.pop("service", ""), tags.pop(arm_label, ""))
        order = sorted(range(len(times)), key=times.__getitem__)
        kept = [float(points[i]) for i in order if isinstance(points[i], int | float)
                and math.isfinite(points[i])]
        out[index].setdefault(key, []).append((tags, kept))
    return out


def _total(series: Series) -> float | None:
    values = [v for _, points in series for v in points]
    return sum(values) if values else None


def _last(series: Series) -> float | None:
    lasts = [points[-1] for _, points in series if points]
    return sum(lasts) if lasts else None


def _errors(body: Any) -> str:
    found = body.get("errors") if isinstance(body, dict) else None
    return "; ".join(map(str, found)) if isinstance(found, list) else str(found or "")


class DatadogSource:
    """A `MetricSource` over Datadog's metrics query API (`/api/v2/query/timeseries`; readiness `/api/v1/validate`)."""

    product = "Datadog"

    def __init__(self, url: str, api_key: str, app_key: str, *, namespace: str = "app", timeout: float = 5.0,
                 min_window: float = 15.0) -> None:
        self.url, self.namespace, self.timeout, self.min_window = url.rstrip("/"), namespace, timeout, min_window
        self._http = httpx.Client(timeout=timeout, headers={
            "DD-API-KEY": api_key, "DD-APPLICATION-KEY": app_key, "Accept": "application/json"})
        self._resumes = 0.0  # monotonic time before which a rate-limited source does not ask
        self._limited = ""
        self.requests = 0  # query requests sent

    def __repr__(self) -> str:
        return f"DatadogSource({self.url!r}, namespace={self.namespace!r})"

    def close(self) -> None:
        self._http.close()

    def ping(self) -> bool:
        """Does Datadog accept the API key (GET /api/v1/validate checks that key only, not the application key)?"""
        try:
            r = self._http.get(f"{self.url}{VALIDATE_PATH}")
            return r.status_code == 200 and r.json().get("valid") is True
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    # -- asking --------------------------------------------------------------------------------------
    def ask(self, start_ms: int, end_ms: int, reads: Sequence[Read], services: Iterable[str], arm_label: str,
            arms: Iterable[str]) -> list[Groups]:
        """Every read over [start_ms, end_ms) for these services and arms, in one request: each read's groups.
        SourceUnavailable when it could not be asked or was not answered."""
        services, arms = list(services), list(arms)
        queries = [query_text(r, self.namespace, services, arm_label, arms) for r in reads]
        body = self.post_queries(start_ms, end_ms, queries)
        try:
            return groups_of(body, len(reads), arm_label)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SourceUnavailable(f"Datadog at {self.url} answered in a shape that is not a timeseries response: "
                                    f"{e}") from None

    def post_queries(self, start_ms: int, end_ms: int, queries: Sequence[str]) -> dict[str, Any]:
        """Classic metrics queries over [start_ms, end_ms), one request: the answer's body (`ask` reads it; `guardian
        doctor` sends its own queries: sources/doctor_datadog.py). SourceUnavailable when it could not be asked or was
        not answered."""
        if (wait := self._resumes - time.monotonic()) > 0:
            raise SourceUnavailable(f"Datadog rate-limited the guardian ({self._limited}): not asking again for "
                                    f"{wait:.0f} s, until the limit resets")
        where = f"Datadog at {self.url}"
        self.requests += 1
        try:
            r = self._http.post(f"{self.url}{QUERY_PATH}", json=request_body(start_ms, end_ms, queries))
        except httpx.TimeoutException:
            raise SourceUnavailable(f"{where} unavailable: no answer within {self.timeout:g} s") from None
        except httpx.HTTPError as e:
            raise SourceUnavailable(f"{where} unavailable: {type(e).__name__} (no connection?)") from None
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code in (401, 403):
            raise SourceUnavailable(
                f"Datadog refused the keys: HTTP {r.status_code} {r.reason_phrase} ({_errors(body) or 'no reason'}) "
                f"from {self.url}: check GUARDIAN_DATADOG_API_KEY and GUARDIAN_DATADOG_APP_KEY (the application key "
                "needs the timeseries_query permission) and that the keys belong to this site")
        if r.status_code == 429:
            raise self._rate_limited(r)
        if r.status_code >= 400 or not isinstance(body, dict) or _errors(body):
            raise SourceUnavailable(f"{where} unavailable: HTTP {r.status_code} "
                                    f"{_errors(body) or r.text[:200]}; first query: {queries[0]}")
        return body

    def _rate_limited(self, r: httpx.Response) -> SourceUnavailable:
        headers = r.headers
        try:
            reset = max(float(headers.get("X-RateLimit-Reset", "")), 0.0)
        except ValueError:
            reset = 60.0  # no reset time given: wait a minute rather than ask at every tick
        self._limited = (f"HTTP 429, {headers.get('X-RateLimit-Limit', '?')} requests per "
                         f"{headers.get('X-RateLimit-Period', '?')} s, limit {headers.get('X-RateLimit-Name', '?')}")
        self._resumes = time.monotonic() + reset
        return SourceUnavailable(f"Datadog rate-limited the guardian ({self._limited}): the limit resets in "
                                 f"{reset:.0f} s (X-RateLimit-Reset); fewer rollouts or longer ticks ask less")

    # -- reading -------------------------------------------------------------------------------------
    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        self.check(query, end - start)
        svc, label, value = tag_value(service), tag_value(arm.label), tag_value(arm.label_value)
        by_span: dict[str, list[Read]] = {}
        for read, kind in NEEDS[query.signal]:
            by_span.setdefault(kind, []).append(read)
        answers: dict[tuple[Read, str], Series] = {}
        for kind, reads in by_span.items():
            begin, stop = span_ms(kind, start, end, self.min_window)
            for read, groups in zip(reads, self.ask(begin, stop, reads, [svc], label, [value]), strict=True):
                answers[(read, kind)] = groups.get((svc, value), [])
        return self.signal_value(query, service, arm, lambda read, kind: answers[(read, kind)])

    @staticmethod
    def check(query: SignalQuery, length: float) -> None:
        if length <= 0:
            raise ValueError(f"empty window: {length} s")
        if query.signal not in STANDARD:
            raise SourceUnavailable(f"{query.signal}: a Datadog source reads the standard signals only "
                                    f"({', '.join(STANDARD)}), not a rule file's PromQL")

    def signal_value(self, query: SignalQuery, service: str, arm: ArmSelector, read: Lookup) -> float:
        """The signal's value for one rollout arm, from the series `read` gives for each of its reads."""
        try:
            return value_of(query.signal, read)
        except NoData as e:
            raise NoData(f"no data for {query.signal} of {service}/{arm.arm} in Datadog ({e})") from None


def value_of(signal: str, read: Lookup) -> float:
    """A standard signal's value from its reads' series (module docstring); NoData saying what is missing."""
    def total(r: Read, kind: str = TICK) -> float:
        found = _total(read(r, kind))
        if found is None:
            raise NoData(f"no {r.metric}{'{' + r.where + '}' if r.where else ''} series")
        return found

    if signal == "errors":
        try:
            return total(ERRORS)
        except NoData:  # no 5xx series: 0 errors if the service answered at all (PromQL's `or … * 0`)
            return 0.0 * total(REQUESTS)
    if signal == "slow":
        return total(DURATION_COUNT) - total(FAST)
    if signal == "memory_bytes":
        found = _last(read(MEMORY, TRAILING))
        if found is None:
            raise NoData(f"no {MEMORY.metric} series")
        return found
    if signal == "p99_seconds":
        return _p99(read(BUCKETS, TRAILING), total(DURATION_COUNT, TRAILING))
    return total({"requests": REQUESTS, "cpu_seconds": CPU}[signal])


def _p99(buckets: Series, count: float) -> float:
    """Prometheus's histogram_quantile(0.99, …) over the buckets' counts within the span (the check sends no +Inf
    bucket: that is the histogram's count)."""
    cumulative: dict[float, float] = {}
    for tags, points in buckets:
        try:
            le = float(tags.get("upper_bound", ""))
        except ValueError:
            continue
        if math.isfinite(le):
            cumulative[le] = cumulative.get(le, 0.0) + sum(points)
    if not cumulative or count <= 0:
        raise NoData("no requests in the window" if cumulative else "no upper_bound bucket series")
    value = histogram_quantile(0.99, {**cumulative, math.inf: count})
    if not math.isfinite(value):
        raise NoData("no requests in the window")
    return value


def planned_keys(requests: Iterable[tuple[SignalQuery, str, ArmSelector, float, float]],
                 min_window: float) -> Mapping[tuple[str, int, int], tuple[set[Read], set[str], set[str]]]:
    """The reads, services and arm values a plan of fetches needs, by (arm label, span): what one request per span
    asks for. Fetches that cannot be asked for (not a standard signal, a name that is not a tag value) are left out."""
    out: dict[tuple[str, int, int], tuple[set[Read], set[str], set[str]]] = {}
    for query, service, arm, start, end in requests:
        if query.signal not in STANDARD or end <= start:
            continue
        try:
            svc, label, value = tag_value(service), tag_value(arm.label), tag_value(arm.label_value)
        except SourceUnavailable:
            continue  # its fetch says why
        for read, kind in NEEDS[query.signal]:
            reads, services, arms = out.setdefault((label, *span_ms(kind, start, end, min_window)),
                                                   (set(), set(), set()))
            reads.add(read)
            services.add(svc)
            arms.add(value)
    return out
