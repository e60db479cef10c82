"""Amazon CloudWatch as a metric source: `GetMetricData` through boto3, for services that publish their metrics there.

The six standard signals are built in, read from one layout (docs/sources.md, "Amazon CloudWatch"): a namespace
(`ReleaseGuardian` unless set) where each service publishes, with exactly the dimensions `Service` and the arm's
label capitalised (`Track` for the default `track`; e.g. with the Embedded Metric Format, `"Dimensions": [["Service",
"Track"]]`), the metrics

    RequestCount  requests served (Sum)              ErrorCount   of them answered 5xx (Sum)
    Latency       each request's, Unit Seconds        CpuSeconds   CPU time used (Sum, Unit Seconds)
    MemoryBytes   resident memory (Unit Bytes)

CloudWatch keeps observations, not cumulative counters, so a counter's increase within a tick window is the Sum of
its datapoints there; `slow` is the trimmed count `TC(0.5:)` of Latency (requests slower than 0.5 s: lower bound
exclusive, as Prometheus's `le` bucket is inclusive); `p99_seconds` the `p99` statistic; `memory_bytes` the newest
Average within a minute before the window's end. Rule files that name `source: cloudwatch` read the standard signals
only (their PromQL `queries:` are refused at start).

Time: CloudWatch answers per *period* (1, 5, 10, 20, 30, 60 s or a multiple of 60) and rounds a request's StartTime
down to one it accepts. Every query here is sent with a StartTime its period tiles from, so nothing moves: a window is
read at the longest period that tiles it (the whole tick with aligned ticks of a valid length), the p99 over the
longest period ending at the window's end that is at most max(window, min_window) (a percentile of raw values does not
merge across periods).

Missing data: no datapoint is NoData, never 0, except that an ErrorCount (or a Latency above 0.5 s) absent from a
window in which RequestCount has datapoints is 0 — a publisher that leaves out a zero (as ALB does for its 5xx count)
is read like Prometheus's `or … * 0` idiom; a Latency absent while RequestCount counts requests is NoData. A refusal
(AccessDenied, an unknown key, HTTP 401/403), no credentials, a timeout, no connection or any other failure is
SourceUnavailable naming the cause, never "no data". Credentials come from boto3's standard chain (the environment,
a profile, an instance or task role) and are never logged or shown.

Batching (`Planning`): the fetches of a pass of due ticks are planned first; the first fetch of a window then asks
for all of that window's planned reads in as few calls as the API allows (500 queries a call, pages followed through
NextToken). Concurrent fetches of a window wait for the call in flight (single-flight: sources/single_flight.py), as
long as each of its requests is answered within the client's own limit for one (`request_wait`); answers are kept
for the recent windows, failures for `failure_ttl` seconds.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    ReadTimeoutError,
)

from guardian.errors import NoData, SourceUnavailable
from guardian.rules.defaults import SLOW_OBJECTIVE_LE
from guardian.sources import ArmSelector, Fetch, SignalQuery
from guardian.sources.prometheus import _safe_url
from guardian.sources.single_flight import Sets, SingleFlight

NAMESPACE = "ReleaseGuardian"
SERVICE_DIMENSION = "Service"
REQUESTS, ERRORS, LATENCY, CPU, MEMORY = "RequestCount", "ErrorCount", "Latency", "CpuSeconds", "MemoryBytes"
STANDARD = ("requests", "errors", "slow", "p99_seconds", "cpu_seconds", "memory_bytes")
MAX_QUERIES = 500  # MetricDataQueries in one GetMetricData call: the API's limit
MAX_PAGES = 200  # NextToken pages followed for one call before giving up (a runaway answer)
ATTEMPTS = 2  # botocore's tries of one request (standard retry mode: the first and one retry)
RETRY_PAUSE = 6.0  # botocore's longest pause before that retry: up to 1 s, 5 s more when told x-amz-retry-after
GAUGE_LOOKBACK = 60.0  # a gauge is its newest datapoint within this long before the window's end
SHORT_PERIODS = (30, 20, 10, 5)  # the high-resolution periods besides 1 s; longer ones are multiples of 60
_XML_ERROR = re.compile(r"<Code>(\w+)</Code>\s*<Message>([^<]*)</Message>")
REFUSALS = frozenset({  # error codes that mean "these credentials may not do this", whatever the HTTP status
    "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
    "SignatureDoesNotMatch", "IncompleteSignature", "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId",
    "MissingAuthenticationToken", "NotAuthorized", "AuthFailure"})


@dataclass(frozen=True)
class Read:
    """One MetricDataQuery: a statistic of one metric of one service's arm, at one period."""

    metric: str
    stat: str
    unit: str | None
    service: str
    arm_dimension: str
    arm_value: str
    period: int

    def query(self, namespace: str, qid: str) -> dict[str, Any]:
        stat: dict[str, Any] = {
            "Metric": {"Namespace": namespace, "MetricName": self.metric,
                       "Dimensions": [{"Name": SERVICE_DIMENSION, "Value": self.service},
                                      {"Name": self.arm_dimension, "Value": self.arm_value}]},
            "Period": self.period, "Stat": self.stat}
        if self.unit:
            stat["Unit"] = self.unit  # CloudWatch converts no units: another unit reads as no data, not a wrong value
        return {"Id": qid, "MetricStat": stat, "ReturnData": True}


Span = tuple[int, int]  # a call's StartTime and EndTime, epoch seconds
Points = list[tuple[int, float]]  # (period start, value)


@dataclass(frozen=True)
class _Signal:
    metric: str
    stat: str
    unit: str | None
    kind: str  # "sum": over the window; "percentile": one period ending at the window's end; "latest": a gauge


SIGNALS = {
    "requests": _Signal(REQUESTS, "Sum", None, "sum"),
    "errors": _Signal(ERRORS, "Sum", None, "sum"),
    "slow": _Signal(LATENCY, f"TC({SLOW_OBJECTIVE_LE}:)", "Seconds", "sum"),
    "p99_seconds": _Signal(LATENCY, "p99", "Seconds", "percentile"),
    "cpu_seconds": _Signal(CPU, "Sum", "Seconds", "sum"),
    "memory_bytes": _Signal(MEMORY, "Average", "Bytes", "latest"),
}


def arm_dimension(label: str) -> str:
    """The dimension that tells the arms apart: the arm's label capitalised (`track` -> `Track`)."""
    return label[:1].upper() + label[1:]


def window_period(start: int, end: int) -> int:
    """The longest period CloudWatch accepts that tiles [start, end) from a StartTime it does not round."""
    length = end - start
    if length % 60 == 0 and start % 60 == 0:
        return length
    return next((p for p in SHORT_PERIODS if length % p == 0 and start % p == 0), 1)


def latest_period(end: int, longest: int) -> int:
    """The longest period CloudWatch accepts, at most `longest`, whose one datapoint ends exactly at `end`."""
    if longest >= 60 and end % 60 == 0:
        return longest // 60 * 60
    return next((p for p in SHORT_PERIODS if p <= longest and end % p == 0), 1)


CallKey = tuple[Span, Read]
Answer = tuple[Points, str | None]  # a read's datapoints; why CloudWatch refused it (a result marked Forbidden or …)
NOTHING = Sets()  # a read says all it asks for itself: a call of the span that asked for it serves it


class CloudWatchSource:
    """A `MetricSource` over CloudWatch's GetMetricData (readiness: ListMetrics), batching the reads of a window."""

    product = "CloudWatch"

    def __init__(self, region: str, *, endpoint_url: str | None = None, namespace: str = NAMESPACE,
                 timeout: float = 5.0, min_window: float = 15.0, gauge_lookback: float = GAUGE_LOOKBACK,
                 failure_ttl: float = 2.0, keep_spans: int = 64, batch: bool = True, client: Any = None) -> None:
        self.region, self.namespace, self.timeout, self.min_window = region, namespace, timeout, min_window
        self.batch = batch  # off (settings.batch_queries): every fetch asks for its own reads only
        self.gauge_lookback, self.failure_ttl, self.keep_spans = gauge_lookback, failure_ttl, keep_spans
        self.where = _safe_url(endpoint_url) if endpoint_url else f"region {region}"
        # boto3's credential chain: the environment, a profile, an instance or task role; never read here
        self._client = client or boto3.session.Session().client(
            "cloudwatch", region_name=region, endpoint_url=endpoint_url,
            config=Config(connect_timeout=timeout, read_timeout=timeout, max_pool_connections=16,
                          retries={"max_attempts": ATTEMPTS, "mode": "standard"}))
        # how long a fetch waits for another's call without it moving: the longest one GetMetricData request may
        # take within the client's limits (each attempt connecting and reading, the retry's pause), and 5 s more. A
        # call of many requests (500 queries each, pages followed) is waited for as long as each keeps within it.
        self.request_wait = ATTEMPTS * 2 * timeout + RETRY_PAUSE + 5
        self._flights: SingleFlight[CallKey, Sets, Answer] = SingleFlight(  # the newest keep_spans spans (by end)
            prune=lambda flights: flights.keep_newest(self.keep_spans, lambda key: (None, key[0][1])))
        self.calls = 0  # GetMetricData requests sent (each page counts)

    def __repr__(self) -> str:
        return f"CloudWatchSource({self.where!r}, namespace={self.namespace!r})"

    def close(self) -> None:
        self._client.close()

    def ping(self) -> bool:
        """Does CloudWatch answer these credentials (ListMetrics of one metric name, filtered to nothing)?"""
        try:
            self._client.list_metrics(Namespace=self.namespace, MetricName=REQUESTS,
                                      Dimensions=[{"Name": SERVICE_DIMENSION, "Value": "guardian-readiness"}])
            return True
        except (BotoCoreError, ClientError):
            return False

    # -- what a fetch reads ----------------------------------------------------------------------------
    def _reads(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float
               ) -> list[tuple[Span, Read]]:
        """The reads a fetch needs, each with its span: the signal's own read first (errors and slow add
        RequestCount, to tell "none" from "not published")."""
        if end <= start:
            raise ValueError(f"empty window: start={start} end={end}")
        spec = SIGNALS.get(query.signal)
        if spec is None:
            raise SourceUnavailable(f"{query.signal}: a CloudWatch source reads the standard signals only "
                                    f"({', '.join(STANDARD)}), not a rule file's PromQL")
        s, e = math.floor(start), math.floor(end)
        if e <= s:
            raise ValueError(f"a window shorter than CloudWatch's shortest period (1 s): start={start} end={end}")
        dimension = arm_dimension(arm.label)

        def read(metric: str, stat: str, unit: str | None, period: int) -> Read:
            return Read(metric, stat, unit, service, dimension, arm.label_value, period)

        p = window_period(s, e)
        if spec.kind == "percentile":
            period = latest_period(e, max(e - s, math.floor(self.min_window)))
            return [((e - period, e), read(spec.metric, spec.stat, spec.unit, period))]
        if spec.kind == "latest":
            back = math.ceil(max(e - s, self.gauge_lookback) / p) * p
            return [((e - back, e), read(spec.metric, spec.stat, spec.unit, p))]
        reads = [((s, e), read(spec.metric, spec.stat, spec.unit, p))]
        if query.signal in ("errors", "slow"):
            reads.append(((s, e), read(REQUESTS, "Sum", None, p)))
        return reads

    def plan(self, requests: Iterable[Fetch]) -> None:
        """The fetches about to be made: the first call of each window asks for all of them."""
        if not self.batch:
            return

        def wanted() -> Iterable[tuple[CallKey, Sets, Span]]:
            for query, service, arm, start, end in requests:
                if not service or not arm.label_value:
                    continue
                try:
                    reads = self._reads(query, service, arm, start, end)
                except (SourceUnavailable, ValueError):
                    continue  # its fetch will say so
                yield from (((span, r), NOTHING, span) for span, r in reads)

        self._flights.plan(wanted())

    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        reads = self._reads(query, service, arm, start, end)
        answers: dict[Read, Points] = {}
        for span in dict.fromkeys(span for span, _ in reads):
            answers.update(self._answers(span, {r for sp, r in reads if sp == span}))
        (span, own), *rest = reads
        points = [(t, v) for t, v in answers[own] if span[0] <= t < span[1] and math.isfinite(v)]
        where = f"{query.signal} of {service}/{arm.arm} ({own.metric} {own.stat}, {own.arm_dimension}=" \
                f"{own.arm_value!r}, namespace {self.namespace})"
        if SIGNALS[query.signal].kind == "sum":
            if points:
                return float(sum(v for _, v in points))
            if not rest:
                raise NoData(f"no datapoints for {where} in CloudWatch")
            requests = [v for t, v in answers[rest[0][1]] if span[0] <= t < span[1] and math.isfinite(v)]
            if not requests:
                raise NoData(f"no datapoints for {where}, nor for its RequestCount, in CloudWatch")
            if query.signal == "slow" and sum(requests) > 0:
                raise NoData(f"no datapoints for {where} in CloudWatch although RequestCount counts "
                             f"{sum(requests):g} requests: is Latency published in Seconds?")
            return 0.0  # the service answered and published no ErrorCount (or no slow request): none
        if not points:
            raise NoData(f"no datapoints for {where} in CloudWatch")
        return max(points)[1]  # the newest: the period ending at the window's end, or a gauge's last value

    # -- asking -----------------------------------------------------------------------------------------
    def _answers(self, span: Span, reads: set[Read]) -> dict[Read, Points]:
        """Each read's datapoints in `span`: from a call made or in flight, else from a new call that also asks for
        everything planned for the span and not asked yet."""
        answers = self._flights.get(
            {(span, r): NOTHING for r in reads}, lambda asked, progress: self._call(span, asked, progress),
            failure_ttl=self.failure_ttl, wait=self.request_wait,
            failed=lambda e: f"CloudWatch at {self.where}: GetMetricData failed: {type(e).__name__}: {str(e)[:200]}",
            late=lambda key, _: f"CloudWatch at {self.where}: the GetMetricData call for {key[1].metric} did not "
                                "finish", window=span)
        out: dict[Read, Points] = {}
        for (_, r), (points, refused) in answers.items():
            if refused is not None:
                raise SourceUnavailable(refused)
            out[r] = points
        return out

    def _call(self, span: Span, asked: Iterable[CallKey], progress: Callable[[], None]) -> dict[CallKey, Answer]:
        """One span's GetMetricData calls for these reads, in chunks of MAX_QUERIES queries, pages followed (each
        request answered is progress)."""
        start, end = (datetime.fromtimestamp(t, UTC) for t in span)
        reads = sorted((r for _, r in asked), key=repr)
        points: dict[Read, Points] = {r: [] for r in reads}
        refused: dict[Read, str] = {}
        for first in range(0, len(reads), MAX_QUERIES):
            chunk = {f"q{i}": r for i, r in enumerate(reads[first:first + MAX_QUERIES])}
            queries = [r.query(self.namespace, qid) for qid, r in chunk.items()]
            token: str | None = None
            for _ in range(MAX_PAGES):
                answer = self._get(MetricDataQueries=queries, StartTime=start, EndTime=end,
                                   ScanBy="TimestampAscending", **({"NextToken": token} if token else {}))
                progress()
                self._take(chunk, answer, points, refused)
                token = answer.get("NextToken")
                if not token:
                    break
            else:
                raise SourceUnavailable(f"CloudWatch at {self.where}: GetMetricData still paging after "
                                        f"{MAX_PAGES} pages")
        return {(span, r): (points[r], refused.get(r)) for r in reads}

    def _take(self, chunk: dict[str, Read], answer: dict[str, Any], points: dict[Read, Points],
              refused: dict[Read, str]) -> None:
        for result in answer.get("MetricDataResults") or []:
            r = chunk.get(result.get("Id", ""))
            if r is None:
                continue
            status = result.get("StatusCode")
            if status in ("Forbidden", "InternalError"):
                said = "; ".join(m.get("Value", "") for m in result.get("Messages") or [])
                refused[r] = (f"CloudWatch at {self.where} answered {status} for {r.metric} {r.stat} of "
                                  f"{r.service}/{r.arm_value}{': ' + said if said else ''}")
            points[r] += [(int(ts.timestamp()), float(v))
                       for ts, v in zip(result.get("Timestamps") or [], result.get("Values") or [], strict=False)]

    def list_metrics(self, **ask: Any) -> dict[str, Any]:
        """One ListMetrics request (boto3's arguments: Namespace, MetricName, Dimensions, RecentlyActive, NextToken),
        for `guardian doctor`: its answer, or SourceUnavailable naming why there is none, as a fetch's."""
        return self._answer(self._client.list_metrics, ask,
                            refused="`guardian doctor` needs cloudwatch:ListMetrics and GetMetricData")

    def _get(self, **kwargs: Any) -> dict[str, Any]:
        with self._flights.lock:
            self.calls += 1
        return self._answer(self._client.get_metric_data, kwargs,
                            refused="they come from the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                                    "AWS_PROFILE, or a role) and need cloudwatch:GetMetricData")

    def _answer(self, call: Callable[..., dict[str, Any]], kwargs: dict[str, Any], *, refused: str) -> dict[str, Any]:
        """One request's answer; every way of not getting one as SourceUnavailable naming it (`refused`: what a
        refusal adds, the permissions the caller needs)."""
        try:
            return call(**kwargs)
        except ClientError as e:
            error, meta = e.response.get("Error") or {}, e.response.get("ResponseMetadata") or {}
            code, status = str(error.get("Code", "?")), meta.get("HTTPStatusCode")
            said = str(error.get("Message") or "")
            if code.isdigit() and (xml := _XML_ERROR.search(said)):  # an XML error body to a CBOR request (moto's)
                code, said = xml.group(1), xml.group(2)
            said = said[:200]
            if code in REFUSALS or status in (401, 403):
                raise SourceUnavailable(f"CloudWatch at {self.where} refused the credentials ({code}, HTTP {status}): "
                                        f"{said}; {refused}") from None
            raise SourceUnavailable(f"CloudWatch at {self.where} unavailable: {code} (HTTP {status}): {said}") from None
        except NoCredentialsError:
            raise SourceUnavailable(f"CloudWatch at {self.where} unavailable: no AWS credentials found (set "
                                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the guardian "
                                    "a role)") from None
        except (ConnectTimeoutError, ReadTimeoutError):
            raise SourceUnavailable(f"CloudWatch at {self.where} unavailable: timed out after {self.timeout:g}s") \
                from None
        except BotoCoreError as e:
            raise SourceUnavailable(f"CloudWatch at {self.where} unavailable: {type(e).__name__}: {str(e)[:200]}") \
                from None
