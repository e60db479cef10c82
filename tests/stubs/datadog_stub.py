"""A STUB of the part of Datadog's API the guardian uses (Datadog is a hosted service: it cannot run on the test
machine): a real HTTP server on a free loopback port, in a thread, answering as Datadog's published OpenAPI document
says (the extract in tests/contracts/datadog_query_openapi_extract.json names its source and commit).

    POST /api/v2/query/timeseries   DD-API-KEY + DD-APPLICATION-KEY  -> TimeseriesFormulaQueryResponse
    GET  /api/v1/validate           DD-API-KEY                       -> {"valid": true}
    POST /api/v2/series             DD-API-KEY                       -> 202 {"errors": []}  (metric intake)

What it checks and does, as Datadog does:
- every query request body is validated against the extract's TimeseriesFormulaQueryRequest (types, required
  fields, enums; stricter than Datadog: an undeclared field is refused too, so the guardian sends nothing the
  document does not name), and `from` < `to` must be milliseconds (a value in seconds is refused: Datadog would read
  it as 1970 and answer nothing); refused with 400 and Datadog's error body {"errors": ["API input validation failed:
  …"]};
- each `query` must be the classic metrics syntax this stub understands — `AGG:METRIC{FILTER} by {TAGS}` with an
  optional `.as_count()`, FILTER `*` or terms joined by ` AND `: `key:value`, `key:prefix*`, `key IN (v1, v2)`
  (docs.datadoghq.com/metrics/advanced-filtering) — anything else is 400 {"errors": ["Error parsing query: …"]};
  each formula must name one query (the only formula the stub evaluates);
- 401 {"errors": ["Unauthorized"]} without the key headers, 403 {"errors": ["Forbidden"]} with wrong keys or an
  application key without the timeseries_query permission (`query_permission = False`);
- `rate_limit` requests per `rate_period` seconds (calendar-aligned) on the query endpoint, then 429
  {"errors": ["Too many requests"]}; every query answer carries X-RateLimit-Limit, -Period, -Remaining, -Reset (seconds
  to the next period) and -Name (docs.datadoghq.com/api/latest/rate-limits);
- evaluation: the points with `from` <= timestamp < `to` matching the filter, in epoch-aligned buckets of
  `interval` ms; within a bucket each series (one tag set) is summed for a count queried `.as_count()`, averaged
  otherwise; series are then combined by the query's aggregator within each group of the `by` tags (a series without
  a group tag is in group `tag:N/A`); one response series per query and group, its values aligned to the shared
  `times` (null where it has no point). Tags are stored lowercased, as Datadog does at intake.

Metrics reach it as points (`add`, or POST /api/v2/series as the documented intake): a count point holds the
increase since the previous one, as the Agent's monotonic counts do. `calls` keeps every request (method, path,
body, status); `count(path)` how many reached a path; `delay` holds each query answer that long; `down` answers 503.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.stubs.loopback import LoopbackServer, json_body

EXTRACT = Path(__file__).resolve().parents[1] / "contracts" / "datadog_query_openapi_extract.json"
SPEC: dict[str, Any] = json.loads(EXTRACT.read_text(encoding="utf-8"))
COUNT, RATE, GAUGE = 1, 2, 3  # MetricIntakeType
_KEY = r"[a-z][a-z0-9_\-./]*"
_VALUE = r"[a-z0-9_\-./:]+"
_QUERY = re.compile(rf"(?P<agg>sum|avg|min|max):(?P<metric>[A-Za-z][A-Za-z0-9_.]*)\{{(?P<filter>[^{{}}]*)\}}"
                    rf"(?: by \{{(?P<by>{_KEY}(?:,{_KEY})*)\}})?(?P<modifier>\.as_count\(\)|\.as_rate\(\))?")
_TERM = re.compile(rf"(?P<key>{_KEY}):(?P<value>{_VALUE})(?P<star>\*)?|(?P<inkey>{_KEY}) IN \((?P<values>"
                   rf"{_VALUE}(?:, {_VALUE})*)\)")


@dataclass
class Call:
    method: str
    path: str
    body: Any
    status: int
    answer: Any


@dataclass(frozen=True)
class Query:
    """A parsed classic metrics query."""

    agg: str
    metric: str
    terms: tuple[tuple[str, str, tuple[str, ...]], ...]  # (kind "=", "*" or "in", key, values)
    by: tuple[str, ...]
    counted: bool

    def matches(self, tags: dict[str, str]) -> bool:
        for kind, key, values in self.terms:
            have = tags.get(key)
            if have is None or not (have.startswith(values[0]) if kind == "*" else have in values):
                return False
        return True


def parse_query(text: str) -> Query:
    """`text` as a Query; ValueError saying what the stub cannot read."""
    m = _QUERY.fullmatch(text)
    if m is None:
        raise ValueError(f"not AGG:METRIC{{FILTER}} by {{TAGS}}[.as_count()]: {text!r}")
    terms: list[tuple[str, str, tuple[str, ...]]] = []
    if m["filter"] != "*":
        for part in m["filter"].split(" AND "):
            t = _TERM.fullmatch(part)
            if t is None:
                raise ValueError(f"cannot read the filter term {part!r} in {text!r}")
            if t["inkey"]:
                terms.append(("in", t["inkey"], tuple(t["values"].split(", "))))
            else:
                terms.append(("*" if t["star"] else "=", t["key"], (t["value"],)))
    by = tuple(m["by"].split(",")) if m["by"] else ()
    return Query(m["agg"], m["metric"], tuple(terms), by, m["modifier"] == ".as_count()")


# -- the extract as a validator ------------------------------------------------------------------------------------
def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, section, name = node["$ref"].split("/")
        node = SPEC["components"][section][name]
    return node


def schema_errors(value: Any, schema: dict[str, Any], where: str = "", *, strict: bool = True) -> list[str]:
    """How `value` breaks `schema`: type, int64 range, enum, required, items, oneOf, and with `strict` an undeclared
    property (a request must not send one; Datadog's answers carry some, e.g. data.id)."""
    schema = resolve(schema)
    if value is None and schema.get("nullable"):
        return []
    if "oneOf" in schema:
        matching = [s for s in schema["oneOf"] if not schema_errors(value, s, where, strict=strict)]
        return [] if len(matching) == 1 else [f"{where or 'body'} matches {len(matching)} of its oneOf schemas"]
    kind = schema.get("type") or ("object" if "properties" in schema else None)
    checks = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
              "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63,
              "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool)}
    if kind and not checks[kind](value):
        return [f"{where or 'body'}: invalid type, expected {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: invalid value {value!r}, expected one of {schema['enum']}"]
    out: list[str] = []
    if kind == "object":
        props = schema.get("properties", {})
        out += [f"{where}.{name}: required" for name in schema.get("required", []) if name not in value]
        out += [f"{where}.{name}: not a field of {schema.get('description', 'this object')!r}" for name in value
                if strict and name not in props]
        for name, sub in props.items():
            if name in value:
                out += schema_errors(value[name], sub, f"{where}.{name}", strict=strict)
    if kind == "array":
        for i, item in enumerate(value):
            out += schema_errors(item, schema.get("items", {}), f"{where}[{i}]", strict=strict)
    return out


def request_schema() -> dict[str, Any]:
    op = SPEC["paths"]["/api/v2/query/timeseries"]["post"]
    return op["requestBody"]["content"]["application/json"]["schema"]


class DatadogStub(LoopbackServer):
    def __init__(self, api_key: str = "stub-api-key-0123456789", app_key: str = "stub-app-key-0123456789", *,
                 rate_limit: int | None = None, rate_period: int = 3600) -> None:
        self.api_key, self.app_key = api_key, app_key
        self.query_permission = True
        self.rate_limit, self.rate_period = rate_limit, rate_period
        self.delay = 0.0
        self.down = False
        self.calls: list[Call] = []
        self._points: dict[str, list[tuple[int, dict[str, str], int, float]]] = {}  # metric -> (type, tags, ts, v)
        self._used: dict[int, int] = {}  # rate-limit period start -> query requests in it
        self._lock = threading.Lock()
        self.serve(self._handler(), "datadog-stub")

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.path == path)

    def queries(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path == "/api/v2/query/timeseries"]

    # -- intake --------------------------------------------------------------------------------------
    def add(self, metric: str, kind: int, tags: Iterable[str], points: Iterable[tuple[float, float]]) -> None:
        """Store points [(timestamp s, value)] of a metric with tags ["key:value"] (lowercased, as at intake)."""
        tag_map = dict(t.lower().partition(":")[::2] for t in tags)
        with self._lock:
            self._points.setdefault(metric, []).extend((kind, tag_map, int(ts), float(v)) for ts, v in points)

    def intake(self, body: Any) -> tuple[int, Any]:
        """POST /api/v2/series: MetricPayload {"series": [MetricSeries]} -> 202 {"errors": []}."""
        try:
            for s in body["series"]:
                self.add(s["metric"], int(s.get("type") or 0), s.get("tags") or [],
                         [(p["timestamp"], p["value"]) for p in s["points"]])
        except (KeyError, TypeError, ValueError) as e:
            return 400, {"errors": [f"Invalid payload: {e!r}"]}
        return 202, {"errors": []}

    # -- the query endpoint --------------------------------------------------------------------------
    def query(self, body: Any) -> tuple[int, Any]:
        problems = schema_errors(body, request_schema())
        if problems:
            return 400, {"errors": [f"API input validation failed: {'; '.join(problems)}"]}
        attributes = body["data"]["attributes"]
        start, end = attributes["from"], attributes["to"]
        if start < 10**11 or end < 10**11:
            return 400, {"errors": ["API input validation failed: from and to are milliseconds since the epoch"]}
        if start >= end:
            return 400, {"errors": ["API input validation failed: from must be before to"]}
        interval = attributes.get("interval") or max((end - start) // 150, 1000)
        named: dict[str, Query] = {}
        try:
            for i, q in enumerate(attributes["queries"]):
                named[q.get("name") or f"query{i}"] = parse_query(q["query"])
        except ValueError as e:
            return 400, {"errors": [f"Error parsing query: {e}"]}
        formulas = [f["formula"] for f in attributes.get("formulas") or []] or list(named)
        if unknown := [f for f in formulas if f not in named]:
            return 400, {"errors": [f"Error parsing formula: the stub evaluates a query's name only, not {unknown}"]}
        series: list[dict[str, Any]] = []
        columns: list[dict[int, float]] = []
        for index, name in enumerate(formulas):
            for group, points in sorted(self._evaluate(named[name], start, end, interval).items()):
                series.append({"group_tags": [f"{k}:{v}" for k, v in zip(named[name].by, group, strict=True)],
                               "query_index": index, "unit": None})
                columns.append(points)
        times = sorted({t for c in columns for t in c})
        values = [[c.get(t) for t in times] for c in columns]
        return 200, {"data": {"type": "timeseries_response", "id": "0",
                              "attributes": {"series": series, "times": times, "values": values}}}

    def _evaluate(self, q: Query, start: int, end: int, interval: int) -> dict[tuple[str, ...], dict[int, float]]:
        by_series: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...], int], list[tuple[int, float]]] = {}
        with self._lock:
            points = list(self._points.get(q.metric, []))
        for kind, tags, ts, value in points:
            if start <= ts * 1000 < end and q.matches(tags):
                group = tuple(tags.get(k, "N/A") for k in q.by)
                bucket = ts * 1000 // interval * interval
                by_series.setdefault((group, tuple(sorted(tags.items())), bucket), []).append((kind, value))
        rolled: dict[tuple[tuple[str, ...], int], list[float]] = {}
        for (group, _, bucket), found in by_series.items():
            counts = [v for k, v in found if k == COUNT]
            if counts and q.counted:
                value = sum(counts)
            elif counts:
                value = sum(counts) / (interval / 1000)  # a count not asked .as_count(): as a rate per second
            else:
                value = sum(v for _, v in found) / len(found)
            rolled.setdefault((group, bucket), []).append(value)
        combine = {"sum": sum, "avg": lambda v: sum(v) / len(v), "min": min, "max": max}[q.agg]
        out: dict[tuple[str, ...], dict[int, float]] = {}
        for (group, bucket), values in rolled.items():
            out.setdefault(group, {})[bucket] = combine(values)
        return out

    def _limit(self) -> tuple[int, dict[str, str]]:
        """Count a query request against the rate limit: (remaining after it, the X-RateLimit headers)."""
        if self.rate_limit is None:
            return 1, {}
        now = time.time()
        period_start = int(now // self.rate_period * self.rate_period)
        with self._lock:
            used = self._used[period_start] = self._used.get(period_start, 0) + 1
        remaining = self.rate_limit - used
        reset = math.ceil(period_start + self.rate_period - now)
        return remaining, {"X-RateLimit-Limit": str(self.rate_limit), "X-RateLimit-Period": str(self.rate_period),
                           "X-RateLimit-Remaining": str(max(remaining, 0)), "X-RateLimit-Reset": str(reset),
                           "X-RateLimit-Name": "metrics_query"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, payload: Any, body: Any = None, headers: dict[str, str] | None = None,
                        content_type: str = "application/json") -> None:
                data = json.dumps(payload).encode()
                with stub._lock:
                    stub.calls.append(Call(self.command, urlsplit(self.path).path, body, status, payload))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that gave up waiting
                    self.wfile.write(data)

            def _keys(self, body: Any, *, app: bool) -> bool:
                api_key, app_key = self.headers.get("DD-API-KEY"), self.headers.get("DD-APPLICATION-KEY")
                if api_key is None or (app and app_key is None):
                    self._answer(401, {"errors": ["Unauthorized"]}, body)
                    return False
                if api_key != stub.api_key or (app and (app_key != stub.app_key or not stub.query_permission)):
                    self._answer(403, {"errors": ["Forbidden"]}, body)
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802
                path = urlsplit(self.path).path
                if stub.down:
                    self._answer(503, {"errors": ["Service Unavailable"]})
                elif path != "/api/v1/validate":
                    self._answer(404, {"errors": ["Not found"]})
                elif self.headers.get("DD-API-KEY") == stub.api_key:
                    self._answer(200, {"valid": True})
                else:
                    self._answer(403, {"errors": ["Forbidden"]})

            def do_POST(self) -> None:  # noqa: N802
                path, body = urlsplit(self.path).path, json_body(self)
                if stub.down:
                    self._answer(503, {"errors": ["Service Unavailable"]}, body)
                elif path == "/api/v2/series":
                    if self._keys(body, app=False):
                        self._answer(*stub.intake(body), body)
                elif path != "/api/v2/query/timeseries":
                    self._answer(404, {"errors": ["Not found"]}, body)
                elif self._keys(body, app=True):
                    remaining, headers = stub._limit()
                    if remaining < 0:
                        self._answer(429, {"errors": ["Too many requests"]}, body, headers)
                        return
                    if stub.delay:
                        time.sleep(stub.delay)
                    status, answer = stub.query(body)
                    self._answer(status, answer, body, headers,
                                 "application/vnd.api+json" if status == 200 else "application/json")

        return Handler
