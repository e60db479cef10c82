"""PrometheusSource against a real Prometheus scraping two real demo apps (one stack per store), and the same tests
against a real VictoriaMetrics (Debian's victoria-metrics) scraping them with the same configuration.

Counter checks are exact, not approximate: `settled()` waits until Prometheus has scraped every
target after the last request, so the instant values at a window's start and end bracket exactly
the requests sent in between.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from demo.stack import VictoriaMetricsServer
from guardian.domain import SignalType
from guardian.errors import NoData, SourceUnavailable
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.prometheus import PrometheusSource

from .conftest import DemoApp, PrometheusServer, free_port, prometheus_binary

pytestmark = pytest.mark.integration

SEL = '{service="{{service}}",{{arm_label}}="{{arm}}"}'
SEL_5XX = '{service="{{service}}",{{arm_label}}="{{arm}}",code=~"5.."}'
REQUESTS = SignalQuery("requests", SignalType.COUNTER, f"sum without (code) (http_requests_total{SEL})")
ERRORS = SignalQuery(
    "errors",
    SignalType.COUNTER,
    f"sum without (code) (http_requests_total{SEL_5XX}) or (sum without (code) (http_requests_total{SEL}) * 0)",
)
ERRORS_NAIVE = SignalQuery("errors", SignalType.COUNTER, f"sum without (code) (http_requests_total{SEL_5XX})")
P99 = SignalQuery(
    "p99_seconds",
    SignalType.GAUGE,
    f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{SEL}[{{{{window}}}}])))",
)
CANARY, BASELINE = ArmSelector("canary"), ArmSelector("baseline")


@dataclass
class Stack:
    canary: DemoApp
    baseline: DemoApp
    prom: PrometheusServer
    source: PrometheusSource

    def settled(self) -> float:
        """A time at which Prometheus's latest samples include every request sent before the call."""
        self.prom.wait_for_scrape(after=time.time())
        return time.time()


STORES = {"prometheus": lambda targets, workdir: PrometheusServer(targets, workdir=workdir, binary=prometheus_binary()),
          # the same tests against VictoriaMetrics: PromQL-compatible, scraping with the same prometheus.yml
          "victoriametrics": lambda targets, workdir: VictoriaMetricsServer(targets, workdir=workdir)}


@pytest.fixture(scope="module", params=list(STORES))
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    apps = {"baseline": DemoApp("baseline", latency=0.002), "canary": DemoApp("canary", latency=0.01)}
    prom = None
    try:
        for app in apps.values():
            app.spawn()
        for app in apps.values():
            app.wait_ready().hit(1)  # labelled series only exist after their first request
        targets = [(app.target, {"service": "checkout", "track": name}) for name, app in apps.items()]
        prom = STORES[request.param](targets, tmp_path_factory.mktemp(request.param)).start()
        prom.wait_for_series('count(http_requests_total{service="checkout"}) >= 2')
        source = prom.source(timeout=3)
        yield Stack(apps["canary"], apps["baseline"], prom, source)
        source.close()
    finally:
        if prom is not None:
            prom.stop()
        for app in apps.values():
            app.stop()


def test_counters_are_the_increment_within_the_window(stack: Stack) -> None:
    stack.canary.control(error_ratio=0.3)
    try:
        start = stack.settled()
        canary_codes = stack.canary.hit(40)
        baseline_codes = stack.baseline.hit(25)
        end = stack.settled()
    finally:
        stack.canary.control(error_ratio=0.0)

    fetch = stack.source.fetch
    assert fetch(REQUESTS, "checkout", CANARY, start, end) == 40
    assert fetch(ERRORS, "checkout", CANARY, start, end) == canary_codes.get(500, 0)
    assert fetch(REQUESTS, "checkout", BASELINE, start, end) == 25
    assert fetch(ERRORS, "checkout", BASELINE, start, end) == 0.0  # the `or ... * 0` idiom: a zero, not NoData
    assert baseline_codes == {200: 25}

    later = stack.settled()  # a quiet window: the series exist, nothing happened
    assert fetch(REQUESTS, "checkout", CANARY, end, later) == 0.0


def test_errors_without_the_or_idiom_have_no_data_when_nothing_failed(stack: Stack) -> None:
    end = time.time()
    with pytest.raises(NoData):
        stack.source.fetch(ERRORS_NAIVE, "checkout", BASELINE, end - 5, end)
    assert stack.source.fetch(ERRORS, "checkout", BASELINE, end - 5, end) == 0.0


def test_gauge_p99_is_a_sensible_latency(stack: Stack) -> None:
    start = stack.settled()
    stack.canary.hit(30)  # ~10 ms each
    end = stack.settled()
    p99 = stack.source.fetch(P99, "checkout", CANARY, start, end)
    # a histogram quantile: one of the 30 answers slowed past 0.1 s by a busy machine puts the p99 in the
    # (0.1, 0.25] bucket; a sensible latency is tens of milliseconds, not seconds and not zero
    assert 0.005 < p99 <= 0.25


def test_gauge_with_several_series_is_nodata_naming_the_labels(stack: Stack) -> None:
    per_track = SignalQuery("x", SignalType.GAUGE, 'sum by (track) (http_requests_total{service="{{service}}"})')
    end = time.time()
    with pytest.raises(NoData, match="track"):
        stack.source.fetch(per_track, "checkout", CANARY, end - 5, end)


@pytest.mark.parametrize("query", [REQUESTS, ERRORS, P99], ids=lambda q: q.signal)
@pytest.mark.parametrize("service", ["no-such-service", 'a"b\\c'])
def test_a_service_without_series_is_nodata(stack: Stack, query: SignalQuery, service: str) -> None:
    """Also proves label values are escaped: a quote or backslash must not turn into a query error."""
    end = time.time()
    with pytest.raises(NoData):
        stack.source.fetch(query, service, CANARY, end - 10, end)
    with pytest.raises(NoData):
        stack.source.fetch(query, "checkout", ArmSelector("canary", value='x"\\'), end - 10, end)


def test_a_bad_query_is_unavailable_not_nodata(stack: Stack) -> None:
    broken = SignalQuery("x", SignalType.GAUGE, 'sum(http_requests_total{service="{{service}}"}')
    with pytest.raises(SourceUnavailable, match="HTTP 4(00|22)") as info:  # Prometheus 400, VictoriaMetrics 422
        stack.source.fetch(broken, "checkout", CANARY, time.time() - 5, time.time())
    assert stack.prom.url in str(info.value) and "sum(http_requests_total" in str(info.value)
    assert str(info.value).startswith(stack.source.product)  # "Prometheus at …" or "VictoriaMetrics at …"


def test_a_stopped_prometheus_is_unavailable_and_its_data_survives_a_restart(stack: Stack) -> None:
    start = stack.settled()
    stack.canary.hit(5)
    end = stack.settled()
    assert stack.source.fetch(REQUESTS, "checkout", CANARY, start, end) == 5
    assert stack.source.ping()

    stack.prom.stop()
    try:
        assert not stack.source.ping()
        for query in (REQUESTS, P99):
            with pytest.raises(SourceUnavailable, match="connection refused") as info:
                stack.source.fetch(query, "checkout", CANARY, start, end)
            assert stack.prom.url in str(info.value)
    finally:
        stack.prom.start()  # same port and data dir: the outage is over
    assert stack.source.ping()
    assert stack.source.fetch(REQUESTS, "checkout", CANARY, start, end) == 5


# -- failures that need no Prometheus at all -------------------------------------------------------
def test_connection_refused_is_unavailable_fast_and_hides_credentials() -> None:
    source = PrometheusSource(f"http://alice:s3cret@127.0.0.1:{free_port()}", timeout=2)
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match="connection refused") as info:
        source.fetch(REQUESTS, "checkout", CANARY, time.time() - 10, time.time())
    assert time.monotonic() - t0 < 1.5  # no retries with back-off
    assert "s3cret" not in str(info.value) and "alice" not in str(info.value)
    assert not source.ping()


def test_a_server_that_never_answers_is_a_timeout() -> None:
    with socket.socket() as listener:  # accepts connections in the kernel, never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        source = PrometheusSource(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3)
        with pytest.raises(SourceUnavailable, match="timed out"):
            source.fetch(P99, "checkout", CANARY, time.time() - 10, time.time())


def test_http_5xx_is_unavailable() -> None:
    """A stub server (standing in for a broken proxy in front of Prometheus) answering 503."""

    class Down(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Down)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = PrometheusSource(f"http://127.0.0.1:{server.server_port}", timeout=2)
        for query in (REQUESTS, P99):
            with pytest.raises(SourceUnavailable, match="HTTP 503"):
                source.fetch(query, "checkout", CANARY, time.time() - 10, time.time())
        assert not source.ping()
    finally:
        server.shutdown()
        server.server_close()
