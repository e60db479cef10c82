"""How `guardian doctor` and the start's preflight (sources/doctor.py) ask each store about a service's signals:
`examiner_for` finds the service's store (behind a router and a batching wrapper) and its `Examiner`.

- Prometheus, VictoriaMetrics: the signal's PromQL (doctor.py `PromQLExaminer`, `diagnose`); for VictoriaMetrics also
  its `-search.latencyOffset` (its `/flags` page): above 1 s the newest samples are hidden from every tick (a note).
- InfluxDB 1.x (`InfluxDBExaminer`): present when each measurement the standard signal is read from has a point for
  the service and arm within the source's lookback (5 min), with the fields it reads. Else, why, from InfluxQL's
  cheap index queries: `SHOW MEASUREMENTS WITH MEASUREMENT = …` (none: Telegraf does not write it), `SHOW TAG VALUES
  … WITH KEY = "service"` (the services there are), `SHOW TAG VALUES … WITH KEY = "track" WHERE "service" = …` (the
  arm values), `SHOW TAG KEYS` (the tags there are), `SHOW FIELD KEYS` (a histogram's buckets: is 0.5 one?), and the
  newest point's time (written once, not lately).
- CloudWatch (`CloudWatchExaminer`): present when `ListMetrics` (recently active: within 3 hours) finds each metric
  the signal is read from with exactly the dimensions `Service` and the arm's (GetMetricData matches a metric's whole
  dimension set). Else, from `ListMetrics` of the metric alone: not published in the namespace (listing what is), no
  `Service` dimension, not this service (listing the services), no arm dimension or not its value (listing them),
  published with more dimensions than the two, or not within 3 hours.
- Datadog (`DatadogExaminer`): no cheap metadata the guardian's keys are sure to reach, so the same query API the
  source reads, over the last 5 minutes: present when the arm's series of each query the signal is read from have a
  point there (one request for every signal of an arm). Else one more request, saying what it asked: the metric by
  `service` over all series (none: the Agent's check does not send it, or another namespace), the service's series
  by the arm's tag, and for `slow` the arm's buckets by `upper_bound`.

Values are read by the store's own `fetch` (the batching wrappers left out: the doctor's reads are its own), over
the last `window` seconds (CloudWatch: the last window on its period grid, as a tick reads it). A refusal, no
connection or a timeout is SourceUnavailable naming the cause, as a tick's; the findings say `unavailable`.
"""
from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from typing import Any

from guardian.errors import SourceUnavailable
from guardian.rules.defaults import SLOW_OBJECTIVE_LE
from guardian.sources import ArmSelector, Introspectable, Routing, SignalQuery
from guardian.sources.datadog import (
    BUCKETS,
    CPU,
    DURATION_COUNT,
    FAST,
    MEMORY,
    REQUESTS,
    DatadogSource,
    Read,
    tag_value,
)
from guardian.sources.doctor import Examiner, PromQLExaminer, _bucket_advice, _list
from guardian.sources.influxdb import DURATION as INFLUX_DURATION
from guardian.sources.influxdb import STANDARD as INFLUX_STANDARD
from guardian.sources.influxdb import InfluxDBSource, identifier, literal

LOOKBACK = 300.0  # how far back Datadog's series are looked for (InfluxDB: the source's own lookback, 5 min too)


def examiner_for(source: Any, service: str) -> Examiner | None:
    """The examiner of `service`'s store (the one its rule file names, behind a router); None for a source the doctor
    does not know (a recording, a test stub). Raises SourceUnavailable when the service's store is not configured."""
    if isinstance(source, Routing):
        source = source.for_service(service)
    store = innermost(source)
    if isinstance(source, Introspectable):
        return PromQLStoreExaminer(source, store)
    if isinstance(store, InfluxDBSource):
        return InfluxDBExaminer(store)
    if isinstance(store, DatadogSource):
        return DatadogExaminer(store)
    cloudwatch = sys.modules.get("guardian.sources.cloudwatch")  # imported (boto3 with it) only where it is used
    if cloudwatch is not None and isinstance(store, cloudwatch.CloudWatchSource):
        return CloudWatchExaminer(store)
    return None


def innermost(source: Any) -> Any:
    """The store behind the wrappers around it (sources/wrapping.py: an `inner` attribute of its own)."""
    for _ in range(8):
        inner = vars(source).get("inner") if hasattr(source, "__dict__") else None
        if inner is None:
            break
        source = inner
    return source


def _ago(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 7200 else f"{seconds / 60:.0f} min" if seconds >= 120 else \
        f"{seconds:.0f} s"


# -- Prometheus, VictoriaMetrics ---------------------------------------------------------------------------------------
_LATENCY_OFFSET = re.compile(r'-search\.latencyOffset="?([^"\s]*)')
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")


def go_seconds(text: str) -> float | None:
    """A Go duration ("30s", "1m0s", "500ms") in seconds; None if it is not one."""
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    return sum(float(n) * unit[u] for n, u in parts)


class PromQLStoreExaminer(PromQLExaminer):
    def __init__(self, source: Introspectable, store: Any) -> None:
        super().__init__(source)
        self.store = store

    def notes(self) -> list[str]:
        """VictoriaMetrics: its `-search.latencyOffset`, read from its /flags page (not there: nothing said)."""
        if getattr(self.store, "product", "") != "VictoriaMetrics":
            return []
        try:
            r = self.store._session.get(f"{self.store.url}/flags", timeout=self.store.timeout)
            found = _LATENCY_OFFSET.search(r.text) if r.status_code == 200 else None
        except Exception:  # noqa: BLE001 - a page it may not have (a cluster's vmselect): nothing to say
            return []
        offset = go_seconds(found.group(1)) if found else None
        if offset is None or offset <= 1.0:
            return []
        return [f"VictoriaMetrics at {self.store.safe_url} hides the newest {offset:g} s of samples from every query "
                f"(-search.latencyOffset={found.group(1) if found else '?'}): each tick's last {offset:g} s would read "
                "as missing; run it with -search.latencyOffset=1s or less (docs/sources.md, VictoriaMetrics)"]


# -- InfluxDB 1.x -----------------------------------------------------------------------------------------------------
INFLUX_NEEDS: dict[str, tuple[str, tuple[str, ...]]] = {  # signal -> (measurement, the fields it reads)
    "requests": ("http_requests_total", ("counter",)), "errors": ("http_requests_total", ("counter",)),
    "slow": (INFLUX_DURATION, ("count", SLOW_OBJECTIVE_LE)), "p99_seconds": (INFLUX_DURATION, ("count", "+Inf")),
    "cpu_seconds": ("process_cpu_seconds_total", ("counter",)), "memory_bytes": ("process_resident_memory_bytes",
                                                                                ("gauge",)),
}


class InfluxDBExaminer:
    def __init__(self, source: InfluxDBSource) -> None:
        self.source = source
        self._seen: dict[tuple[str, str, str, str, float], set[str] | None] = {}

    def describe(self) -> str:
        return f"InfluxDB at {self.source.safe_url}, database {self.source.database}"

    def notes(self) -> list[str]:
        return []

    def _where(self, service: str, arm: ArmSelector) -> str:
        return f"{identifier('service')} = {literal(service)} AND {identifier(arm.label)} = {literal(arm.label_value)}"

    def _fields(self, measurement: str, service: str, arm: ArmSelector, now: float) -> set[str] | None:
        """The fields of the arm's series of `measurement` with a point within the lookback (None: no series)."""
        key = (measurement, service, arm.label, arm.label_value, now)
        if key not in self._seen:
            series = self.source.last_values(measurement, self._where(service, arm), now)
            self._seen[key] = {f for fields in series.values() for f in fields} if series else None
        return self._seen[key]

    def present(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> bool:
        if query.signal not in INFLUX_NEEDS:
            return False
        measurement, wanted = INFLUX_NEEDS[query.signal]
        fields = self._fields(measurement, service, arm, now)
        return fields is not None and all(f in fields for f in wanted)

    def why(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> str:
        if query.signal not in INFLUX_NEEDS:
            return (f"an InfluxDB source reads the standard signals only ({', '.join(INFLUX_STANDARD)}): "
                    f"{query.signal} cannot be read there")
        try:
            return self._why(query.signal, service, arm, now)
        except SourceUnavailable as e:
            return f"(could not find out why: {e})"

    def _show(self, statement: str) -> list[list[Any]]:
        """The rows of one statement's answer, all series together."""
        (answer,) = self.source.answers([statement])
        if isinstance(answer, SourceUnavailable):
            raise answer
        return [row for series in answer for row in series.get("values") or []]

    def _why(self, signal: str, service: str, arm: ArmSelector, now: float) -> str:
        measurement, wanted = INFLUX_NEEDS[signal]
        m, db, label, value = identifier(measurement), self.source.database, arm.label, arm.label_value
        if not self._show(f"SHOW MEASUREMENTS WITH MEASUREMENT = {m}"):
            if not self._show("SHOW MEASUREMENTS LIMIT 1"):
                return (f"InfluxDB database {db!r} holds no measurement at all: is Telegraf writing to it (its "
                        "[[outputs.influxdb]] `database`; GUARDIAN_INFLUXDB_DATABASE here)?")
            return (f"InfluxDB database {db!r} has no measurement {measurement}: does Telegraf's inputs.prometheus "
                    f"scrape the service's /metrics (metric_version 1, the default), and does it export {measurement}?")
        services = sorted({str(r[1]) for r in self._show(f"SHOW TAG VALUES FROM {m} WITH KEY = \"service\"")})
        if not services:
            return (f"{measurement} has no `service` tag: tag the Telegraf input that scrapes the service with service "
                    f"= \"{service}\" (under [inputs.prometheus.tags])")
        if service not in services:
            return (f"no {measurement} series has service=\"{service}\"; the services that have it: {_list(services)} "
                    f"(tag the Telegraf input with service = \"{service}\", or name the rule file's service after one "
                    "of these)")
        of_service = f"WHERE {identifier('service')} = {literal(service)}"
        arms = sorted({str(r[1]) for r in self._show(f"SHOW TAG VALUES FROM {m} WITH KEY = {identifier(label)} "
                                                     f"{of_service}")})
        if not arms:
            tags = sorted({str(r[0]) for r in self._show(f"SHOW TAG KEYS FROM {m} {of_service}")})
            return (f"the {measurement} series of service \"{service}\" have no `{label}` tag to tell the arms apart "
                    f"(their tags: {', '.join(tags)}): tag the {arm.arm}'s Telegraf input {label} = \"{value}\", or "
                    "name the tag that does in the rule file's `arms:`")
        if value not in arms:
            return (f"no {measurement} series with service=\"{service}\" has {label}=\"{value}\" (the {arm.arm}); its "
                    f"{label} values: {_list(arms)}")
        fields = {str(r[0]) for r in self._show(f"SHOW FIELD KEYS FROM {m}")}
        if SLOW_OBJECTIVE_LE in wanted and SLOW_OBJECTIVE_LE not in fields:
            buckets = [f for f in fields if _is_bound(f)]
            return _bucket_advice(measurement, SLOW_OBJECTIVE_LE, buckets, overridable=False)
        if absent := [f for f in wanted if f not in fields]:
            return (f"{measurement} has no field {', '.join(absent)} (its fields: {_list(sorted(fields))}): is it "
                    "written by Telegraf's inputs.prometheus with metric_version 1 (a counter in `counter`, a gauge in "
                    "`gauge`, a histogram's buckets as fields named by their `le`, with `count`)?")
        rows = self._show(f"SELECT last({identifier(wanted[0])}) FROM {m} WHERE {self._where(service, arm)}")
        if rows:
            age = now - float(rows[0][0]) / 1000
            return (f"the newest point of {measurement} with service=\"{service}\", {label}=\"{value}\" is {_ago(age)} "
                    f"old, older than the {self.source.lookback:g} s a tick looks back: is Telegraf still scraping "
                    "the service?")
        return f"the series exist, but none of service=\"{service}\", {label}=\"{value}\" has a {wanted[0]} field"

    def value(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> float:
        return self.source.fetch(query, service, arm, now - window, now)


def _is_bound(name: str) -> bool:
    try:
        float(name)
    except ValueError:
        return False
    return True


# -- Amazon CloudWatch ----------------------------------------------------------------------------------------------
RECENTLY = 3 * 3600.0  # ListMetrics' RecentlyActive (PT3H, the only value it takes)
MAX_LIST_PAGES = 5  # ListMetrics pages (500 metrics each) read for a diagnosis at most


class CloudWatchExaminer:
    def __init__(self, source: Any) -> None:
        from guardian.sources import cloudwatch

        self.source, self.cw = source, cloudwatch
        self.metrics = {"requests": (cloudwatch.REQUESTS,), "errors": (cloudwatch.REQUESTS,),
                        "slow": (cloudwatch.LATENCY,), "p99_seconds": (cloudwatch.LATENCY,),
                        "cpu_seconds": (cloudwatch.CPU,), "memory_bytes": (cloudwatch.MEMORY,)}
        self._listed: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def describe(self) -> str:
        return f"CloudWatch ({self.source.where}), namespace {self.source.namespace}"

    def notes(self) -> list[str]:
        return []

    def _list_metrics(self, metric: str | None, dimensions: list[dict[str, str]] | None = None, *,
                      recent: bool = False, pages: int = MAX_LIST_PAGES) -> list[dict[str, Any]]:
        """ListMetrics in the namespace (of `metric`, with these dimensions among its own), its pages followed."""
        key = (metric, repr(dimensions), recent, pages)
        if key in self._listed:
            return self._listed[key]
        ask: dict[str, Any] = {"Namespace": self.source.namespace, **({"MetricName": metric} if metric else {}),
                               **({"Dimensions": dimensions} if dimensions else {}),
                               **({"RecentlyActive": "PT3H"} if recent else {})}
        found: list[dict[str, Any]] = []
        for _ in range(pages):
            answer = self._call(self.source._client.list_metrics, **ask)
            found += answer.get("Metrics") or []
            if not answer.get("NextToken"):
                break
            ask["NextToken"] = answer["NextToken"]
        self._listed[key] = found
        return found

    def _call(self, method: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """One CloudWatch call; every way of not getting an answer as SourceUnavailable naming it."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"CloudWatch at {self.source.where}"
        try:
            return method(**kwargs)
        except ClientError as e:
            error, meta = e.response.get("Error") or {}, e.response.get("ResponseMetadata") or {}
            code, said = str(error.get("Code", "?")), str(error.get("Message") or "")
            if code.isdigit() and (xml := self.cw._XML_ERROR.search(said)):  # an XML body to a CBOR request (moto)
                code, said = xml.group(1), xml.group(2)
            status = meta.get("HTTPStatusCode")
            if code in self.cw.REFUSALS or status in (401, 403):
                raise SourceUnavailable(f"{where} refused the credentials ({code}, HTTP {status}): {said[:200]}; "
                                        "`guardian doctor` needs cloudwatch:ListMetrics and GetMetricData") from None
            raise SourceUnavailable(f"{where} unavailable: {code} (HTTP {status}): {said[:200]}") from None
        except NoCredentialsError:
            raise SourceUnavailable(f"{where} unavailable: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the guardian a role)") from None
        except BotoCoreError as e:
            raise SourceUnavailable(f"{where} unavailable: {type(e).__name__}: {str(e)[:200]}") from None

    def _dims(self, service: str, arm: ArmSelector) -> tuple[str, list[dict[str, str]]]:
        arm_dim = self.cw.arm_dimension(arm.label)
        return arm_dim, [{"Name": self.cw.SERVICE_DIMENSION, "Value": service}, {"Name": arm_dim,
                                                                                 "Value": arm.label_value}]

    def present(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> bool:
        if query.signal not in self.metrics:
            return False
        arm_dim, dims = self._dims(service, arm)
        exact = {self.cw.SERVICE_DIMENSION, arm_dim}
        return all(any({d["Name"] for d in m.get("Dimensions") or []} == exact
                       for m in self._list_metrics(metric, dims, recent=True))
                   for metric in self.metrics[query.signal])

    def why(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> str:
        if query.signal not in self.metrics:
            return (f"a CloudWatch source reads the standard signals only ({', '.join(self.cw.STANDARD)}): "
                    f"{query.signal} cannot be read there")
        try:
            for metric in self.metrics[query.signal]:
                if reason := self._why(metric, service, arm):
                    return reason
        except SourceUnavailable as e:
            return f"(could not find out why: {e})"
        return "the metrics are there (ListMetrics), yet not found a moment ago: ask again"

    def _why(self, metric: str, service: str, arm: ArmSelector) -> str | None:
        ns, svc_dim = self.source.namespace, self.cw.SERVICE_DIMENSION
        arm_dim, dims = self._dims(service, arm)
        value = arm.label_value
        every = self._list_metrics(metric)
        if not every:
            names = sorted({m.get("MetricName", "") for m in self._list_metrics(None, pages=1)})
            return (f"no metric {metric} in namespace {ns} ({self.source.where}; its metrics: {_list(names)}): does "
                    f"the service publish {metric} there (GUARDIAN_CLOUDWATCH_NAMESPACE names the namespace), in "
                    "this region?")

        def values_of(name: str, metrics: list[dict[str, Any]]) -> list[str]:
            return sorted({d["Value"] for m in metrics for d in m.get("Dimensions") or [] if d.get("Name") == name})

        services = values_of(svc_dim, every)
        if not services:
            names = sorted({d["Name"] for m in every for d in m.get("Dimensions") or []})
            return (f"{metric} has no {svc_dim} dimension (its dimensions: {', '.join(names) or 'none'}): publish it "
                    f"with exactly the dimensions {svc_dim} and {arm_dim} (EMF: \"Dimensions\": [[\"{svc_dim}\", "
                    f"\"{arm_dim}\"]])")
        if service not in services:
            return (f"no {metric} metric has {svc_dim}=\"{service}\"; the services that publish it: {_list(services)} "
                    f"(publish with {svc_dim}=\"{service}\", or name the rule file's service after one of these)")
        own = [m for m in every if {"Name": svc_dim, "Value": service} in (m.get("Dimensions") or [])]
        arms = values_of(arm_dim, own)
        if not arms:
            names = sorted({d["Name"] for m in own for d in m.get("Dimensions") or []})
            return (f"the {metric} metrics of {svc_dim}=\"{service}\" have no {arm_dim} dimension to tell the arms "
                    f"apart (their dimensions: {', '.join(names)}): publish the {arm.arm}'s with "
                    f"{arm_dim}=\"{value}\", or name the label that does in the rule file's `arms:` (its name "
                    "capitalised is the dimension)")
        if value not in arms:
            return (f"no {metric} metric with {svc_dim}=\"{service}\" has {arm_dim}=\"{value}\" (the {arm.arm}); its "
                    f"{arm_dim} values: {_list(arms)}")
        sets = {tuple(sorted(d["Name"] for d in m.get("Dimensions") or [])) for m in self._list_metrics(metric, dims)}
        if (svc_dim, arm_dim) not in {tuple(sorted(s)) for s in sets}:
            shown = "; ".join(", ".join(s) for s in sorted(sets))
            return (f"{metric} of {svc_dim}=\"{service}\", {arm_dim}=\"{value}\" is published only with the dimensions "
                    f"{shown}: GetMetricData matches a metric's whole dimension set, and the guardian reads the one "
                    f"with exactly {svc_dim} and {arm_dim}: publish that set too (EMF: \"Dimensions\": "
                    f"[[\"{svc_dim}\", \"{arm_dim}\"]])")
        return (f"{metric} with {svc_dim}=\"{service}\", {arm_dim}=\"{value}\" received no datapoint in the last "
                f"{_ago(RECENTLY)} (ListMetrics, RecentlyActive): does the service still publish it?")

    def value(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> float:
        """Over the last `window` seconds on CloudWatch's period grid (a whole minute, or 30, 20, 10, 5 s), as a tick
        window of that length reads it."""
        grid = next((p for p in (60, 30, 20, 10, 5) if window % p == 0), 1)
        end = math.floor(now / grid) * grid
        return self.source.fetch(query, service, arm, end - window, end)


# -- Datadog ---------------------------------------------------------------------------------------------------------
DATADOG_NEEDS: dict[str, tuple[Read, ...]] = {  # signal -> the queries it is read from that must have series
    "requests": (REQUESTS,), "errors": (REQUESTS,), "slow": (DURATION_COUNT, FAST), "p99_seconds": (BUCKETS,
                                                                                                    DURATION_COUNT),
    "cpu_seconds": (CPU,), "memory_bytes": (MEMORY,),
}
ALL_READS = tuple(dict.fromkeys(r for reads in DATADOG_NEEDS.values() for r in reads))
NOT_TAGGED = ("", "n/a")  # a group without the tag (Datadog answers such a group as `tag:N/A`)


def tagged_series(body: dict[str, Any], count: int) -> list[list[tuple[dict[str, str], int]]]:
    """A timeseries answer per query: each series' group tags and how many points it has."""
    out: list[list[tuple[dict[str, str], int]]] = [[] for _ in range(count)]
    attributes = (body.get("data") or {}).get("attributes") or {}
    for one, values in zip(attributes.get("series") or [], attributes.get("values") or [], strict=False):
        index = one.get("query_index")
        if isinstance(index, int) and 0 <= index < count:
            tags = {k: v.lower() for k, _, v in (t.partition(":") for t in one.get("group_tags") or [])}
            out[index].append((tags, sum(1 for v in values if isinstance(v, int | float) and math.isfinite(v))))
    return out


class DatadogExaminer:
    def __init__(self, source: DatadogSource) -> None:
        self.source = source
        self._arms: dict[tuple[str, str, str, float], dict[Read, bool]] = {}

    def describe(self) -> str:
        return f"Datadog at {self.source.url}, namespace {self.source.namespace}"

    def notes(self) -> list[str]:
        return []

    def _span(self, now: float, window: float) -> tuple[int, int]:
        return round((now - max(window, LOOKBACK)) * 1000), round(now * 1000)

    def _names(self, service: str, arm: ArmSelector) -> tuple[str, str, str]:
        return tag_value(service), tag_value(arm.label), tag_value(arm.label_value)

    def present(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> bool:
        if query.signal not in DATADOG_NEEDS:
            return False
        try:
            svc, label, value = self._names(service, arm)
        except SourceUnavailable:
            return False  # a name Datadog cannot be asked for: `why` says so
        key = (svc, label, value, now)
        if key not in self._arms:  # every signal's queries for this arm, in one request
            groups = self.source.ask(*self._span(now, window), ALL_READS, [svc], label, [value])
            self._arms[key] = {r: any(points for _, points in g.get((svc, value), [])) for r, g in
                               zip(ALL_READS, groups, strict=True)}
        return all(self._arms[key][r] for r in DATADOG_NEEDS[query.signal])

    def why(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> str:
        if query.signal not in DATADOG_NEEDS:
            return (f"a Datadog source reads the standard signals only: {query.signal} cannot be read there")
        try:
            svc, label, value = self._names(service, arm)
        except SourceUnavailable as e:
            return f"{e}: name the service and the arms with such names (the rule file's `service` and `arms:`)"
        try:
            missing = [r for r in DATADOG_NEEDS[query.signal] if not self._arms.get((svc, label, value, now), {})
                       .get(r)] or list(DATADOG_NEEDS[query.signal])
            return self._why(missing[0], svc, label, value, arm.arm, now, window)
        except SourceUnavailable as e:
            return f"(could not find out why: {e})"

    def _why(self, read: Read, svc: str, label: str, value: str, arm: str, now: float, window: float) -> str:
        ns, minutes = self.source.namespace, f"{max(window, LOOKBACK) / 60:g} min"
        metric, count = f"{ns}.{read.metric}", ".as_count()" if read.counted else ""
        asked = [f"sum:{metric}{{*}} by {{service}}{count}", f"sum:{metric}{{service:{svc}}} by {{{label}}}{count}"]
        if read == FAST:
            asked.append(f"sum:{ns}.{BUCKETS.metric}{{service:{svc} AND {label}:{value}}} by {{upper_bound}}{count}")
        by_service, by_arm, *buckets = tagged_series(self.source.post_queries(*self._span(now, window), asked),
                                                     len(asked))
        services = sorted({t.get("service", "") for t, n in by_service if n} - set(NOT_TAGGED))
        if not any(n for _, n in by_service):
            return (f"Datadog has no {metric} series with a point in the last {minutes} (asked: `{asked[0]}`): is the "
                    f"Agent's openmetrics check sending it, with `namespace: {ns}` (GUARDIAN_DATADOG_NAMESPACE)? "
                    "(`datadog-agent check openmetrics` lists the names it sends)")
        if not services:
            return (f"no {metric} series has a `service` tag (asked: `{asked[0]}`): add `service:{svc}` to the tags of "
                    "the check instance that scrapes the service")
        if svc not in services:
            return (f"no {metric} series has service:{svc} in the last {minutes}; the services that have it: "
                    f"{_list(services)} (asked: `{asked[0]}`)")
        arms = sorted({t.get(label, "") for t, n in by_arm if n} - set(NOT_TAGGED))
        if not arms:
            return (f"the {metric} series of service:{svc} have no `{label}` tag to tell the arms apart (asked: "
                    f"`{asked[1]}`): add `{label}:{value}` to the {arm}'s check instance tags, or name the tag that "
                    "does in the rule file's `arms:`")
        if value not in arms:
            return (f"no {metric} series with service:{svc} has {label}:{value} (the {arm}) in the last {minutes}; its "
                    f"{label} values: {_list(arms)} (asked: `{asked[1]}`)")
        if buckets:
            bounds = sorted({t.get("upper_bound", "") for t, n in buckets[0] if n} - set(NOT_TAGGED))
            return _bucket_advice(f"{ns}.{BUCKETS.metric}", SLOW_OBJECTIVE_LE, bounds, overridable=False,
                                  bucket="upper_bound:{}") + f" (asked: `{asked[2]}`)"
        return (f"the series of service:{svc}, {label}:{value} exist, yet none had a point in the last {minutes} "
                f"(asked: `{asked[1]}`)")

    def value(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> float:
        return self.source.fetch(query, service, arm, now - window, now)


__all__ = ["CloudWatchExaminer", "DatadogExaminer", "InfluxDBExaminer", "PromQLStoreExaminer", "examiner_for",
           "go_seconds", "innermost", "tagged_series"]
