"""InfluxDBSource against a real InfluxDB 1.x (Debian's influxd) holding the metrics of two real demo apps, written
every second in the layout of Telegraf's prometheus input (tests/fixtures/influx.py: an emulation of Telegraf, which
Debian does not ship): counters exact within a window, 0 errors rather than no data, p99 and slow requests, no data
for a service it never saw, unavailable when stopped or when it refuses the credentials."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from demo.stack import DemoApp
from guardian.domain import SignalType
from guardian.errors import NoData, SourceUnavailable
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.influxdb import InfluxDBSource, histogram_quantile
from tests.fixtures.influx import InfluxDBServer, TelegrafLike
from tests.fixtures.whole_rollout import promote_the_healthy_canary

pytestmark = pytest.mark.integration
CANARY, BASELINE = ArmSelector("canary"), ArmSelector("baseline")


def q(signal: str, kind: SignalType = SignalType.COUNTER) -> SignalQuery:
    return SignalQuery(signal, kind, "(built in)")


@dataclass
class Stack:
    canary: DemoApp
    baseline: DemoApp
    influx: InfluxDBServer
    telegraf: TelegrafLike
    source: InfluxDBSource


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    apps = {"baseline": DemoApp("baseline", latency=0.002), "canary": DemoApp("canary", latency=0.01)}
    influx = telegraf = None
    try:
        for app in apps.values():
            app.spawn()
        for app in apps.values():
            app.wait_ready().hit(1)
        influx = InfluxDBServer(tmp_path_factory.mktemp("influxdb")).start()
        telegraf = TelegrafLike(influx, [(f"{a.url}/metrics", {"service": "checkout", "track": n})
                                         for n, a in apps.items()]).start()
        telegraf.settled()
        source = InfluxDBSource(influx.url, timeout=3, min_window=4)
        yield Stack(apps["canary"], apps["baseline"], influx, telegraf, source)
        source.close()
    finally:
        if telegraf is not None:
            telegraf.stop()
        if influx is not None:
            influx.stop()
        for app in apps.values():
            app.stop()


def test_counters_are_the_increment_within_the_window(stack: Stack) -> None:
    stack.canary.control(error_ratio=0.3)
    try:
        start = stack.telegraf.settled()
        codes = stack.canary.hit(40)
        stack.baseline.hit(25)
        end = stack.telegraf.settled()
    finally:
        stack.canary.control(error_ratio=0.0)
    fetch = stack.source.fetch
    assert fetch(q("requests"), "checkout", CANARY, start, end) == 40
    assert fetch(q("errors"), "checkout", CANARY, start, end) == codes.get(500, 0) > 0
    assert fetch(q("requests"), "checkout", BASELINE, start, end) == 25
    assert fetch(q("errors"), "checkout", BASELINE, start, end) == 0.0  # never failed: 0, not no data
    assert fetch(q("cpu_seconds"), "checkout", CANARY, start, end) >= 0.0
    assert fetch(q("memory_bytes", SignalType.GAUGE), "checkout", CANARY, start, end) > 1e6
    later = stack.telegraf.settled()
    assert fetch(q("requests"), "checkout", CANARY, end, later) == 0.0


def test_p99_and_slow_requests_from_the_histogram(stack: Stack) -> None:
    start = stack.telegraf.settled()
    stack.canary.hit(30)  # ~10 ms each
    end = stack.telegraf.settled()
    p99 = stack.source.fetch(q("p99_seconds", SignalType.GAUGE), "checkout", CANARY, start, end)
    assert 0.005 < p99 <= 0.05
    assert stack.source.fetch(q("slow"), "checkout", CANARY, start, end) == 0.0  # none above 0.5 s
    stack.canary.control(latency=0.6)
    try:
        start = stack.telegraf.settled()
        stack.canary.hit(3)
        end = stack.telegraf.settled()
    finally:
        stack.canary.control(latency=0.01)
    assert stack.source.fetch(q("slow"), "checkout", CANARY, start, end) == 3


def test_a_service_it_never_saw_is_nodata_and_quotes_are_escaped(stack: Stack) -> None:
    end = time.time()
    for service in ("no-such-service", "a'b\\c"):
        with pytest.raises(NoData):
            stack.source.fetch(q("requests"), service, CANARY, end - 10, end)
    with pytest.raises(SourceUnavailable, match="standard signals only"):
        stack.source.fetch(q("custom"), "checkout", CANARY, end - 10, end)


def test_a_stopped_influxdb_is_unavailable_and_a_missing_database_too(stack: Stack) -> None:
    end = time.time()
    missing = InfluxDBSource(stack.influx.url, database="nope", timeout=2)
    with pytest.raises(SourceUnavailable, match="database not found"):
        missing.fetch(q("requests"), "checkout", CANARY, end - 10, end)
    gone = InfluxDBSource("http://127.0.0.1:9", timeout=1)
    with pytest.raises(SourceUnavailable, match="unavailable"):
        gone.fetch(q("requests"), "checkout", CANARY, end - 10, end)
    assert stack.source.ping() and not gone.ping()


def test_refused_credentials_are_unavailable_naming_the_cause(tmp_path) -> None:
    influx = InfluxDBServer(tmp_path, auth=True).start()
    try:
        r = influx.query("CREATE USER admin WITH PASSWORD 's3cret' WITH ALL PRIVILEGES")
        assert r.status_code == 200, r.text
        end = time.time()
        for source in (InfluxDBSource(influx.url, timeout=2),
                       InfluxDBSource(influx.url, username="admin", password="wrong", timeout=2)):
            with pytest.raises(SourceUnavailable, match="refused the credentials") as e:
                source.fetch(q("requests"), "checkout", CANARY, end - 10, end)
            assert "wrong" not in str(e.value) and "s3cret" not in str(e.value)
    finally:
        influx.stop()


def test_histogram_quantile_matches_prometheus() -> None:
    assert histogram_quantile(0.5, {0.1: 50, 0.5: 100, float("inf"): 100}) == pytest.approx(0.1)
    assert histogram_quantile(0.99, {0.1: 0, 0.5: 100, float("inf"): 100}) == pytest.approx(0.496)
    assert histogram_quantile(0.99, {0.1: 10, 0.5: 10, float("inf"): 100}) == 0.5  # in +Inf: the highest bound


def test_a_whole_rollout_judged_from_influxdb(tmp_path) -> None:
    """A real `guardian serve` (GUARDIAN_SOURCE=influxdb) over the same layout: the healthy canary is promoted."""
    from demo.loadgen import LoadGenerator
    from demo.stack import GuardianServer, start_demo_pair

    started: list = []
    try:
        baseline, canary = start_demo_pair(started)
        (tmp_path / "influx").mkdir()
        influx = InfluxDBServer(tmp_path / "influx").start()
        started.append(influx)
        telegraf = TelegrafLike(influx, [(f"{baseline.url}/metrics", {"service": "checkout", "track": "baseline"}),
                                         (f"{canary.url}/metrics", {"service": "checkout", "track": "canary"})]).start()
        started.append(telegraf)
        started.append(LoadGenerator({baseline.url: 1, canary.url: 1}, rps=40, max_seconds=300).start())
        telegraf.settled()
        (tmp_path / "guardian").mkdir()
        guardian = GuardianServer(tmp_path / "guardian", prometheus_url="http://127.0.0.1:9", rules=[], tick_seconds=2,
                                  evaluation_delay=1.5, min_window=4, analysis_seconds=6, source="influxdb",
                                  influxdb_url=influx.url).start()
        started.append(guardian)
        assert guardian.api("GET", "/readyz").status_code == 200  # InfluxDB answers /ping
        promote_the_healthy_canary(guardian, [50, 100], 120)
    finally:
        for thing in reversed(started):
            thing.stop()


@pytest.mark.parametrize("body", ["[]", "null", '"text"', '{"results": 3}'])
def test_a_server_answering_json_that_is_not_influxdbs_is_unavailable_not_a_crash(body: str) -> None:
    """A URL pointing at some other service that answers 200 with JSON: unavailable, naming the answer."""
    import http.server
    import threading

    class Other(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = InfluxDBSource(f"http://127.0.0.1:{server.server_address[1]}", timeout=3, min_window=4)
        with pytest.raises(SourceUnavailable, match="unavailable: HTTP 200"):
            source.fetch(q("requests"), "checkout", CANARY, time.time() - 10, time.time())
    finally:
        server.shutdown()
