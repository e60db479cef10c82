"""BatchingInfluxDBSource against a real InfluxDB 1.x (Debian's influxd) holding a synthetic fleet
(tests/fixtures/fleet.py) written every half second in the layout of Telegraf's prometheus input
(tests/fixtures/influx.py: an emulation of Telegraf, which Debian does not ship). Batched and per-rollout reads
give the same values (counters with a reset and a series born within the window, 0 errors, no data, p99 over the
min window); the reads of a whole tick window for 56 services x 2 arms x 6 signals go in one /query request
(influxd's own count); service names with regex metacharacters match only themselves; failures (no server, a
missing database) are unavailable for every rollout they cover, never no data; and an [http] max-row-limit
cuts no answer short (they are read chunked)."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from guardian.domain import SignalType
from guardian.errors import NoData, SourceUnavailable
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.influxdb import STANDARD, InfluxDBSource
from guardian.sources.influxdb_batching import BatchingInfluxDBSource, regex_of
from tests.fixtures.fleet import Fleet, serve, service_names
from tests.fixtures.influx import InfluxDBServer, TelegrafLike

pytestmark = pytest.mark.integration
ARMS = (ArmSelector("canary"), ArmSelector("baseline"))
QUERIES = [SignalQuery(s, SignalType.GAUGE if s in ("p99_seconds", "memory_bytes") else SignalType.COUNTER,
                       "(built in)") for s in STANDARD]
ODD = ["a.c", "abc", "a/b", "x|y(z)", "o'k", "svc-0001+"]  # regex metacharacters, a slash, a quote


@dataclass
class Stack:
    fleet: Fleet
    influx: InfluxDBServer
    telegraf: TelegrafLike

    def source(self, **kwargs: object) -> InfluxDBSource:
        return InfluxDBSource(self.influx.url, timeout=3, min_window=4, **kwargs)  # type: ignore[arg-type]

    def query_requests(self) -> int:
        """/query requests influxd has answered (its own count, /debug/vars)."""
        stats = httpx.get(f"{self.influx.url}/debug/vars", timeout=5).json()
        return next(v["values"]["queryReq"] for k, v in stats.items() if k.startswith("httpd"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fleet = Fleet(service_names(50) + ODD, start=time.time() - 60)
    exporter = serve(fleet)
    influx = InfluxDBServer(tmp_path_factory.mktemp("influxdb")).start()
    telegraf = TelegrafLike(influx, [(f"http://127.0.0.1:{exporter.server_address[1]}/metrics", {})],
                            interval=0.5).start()
    try:
        telegraf.settled()
        yield Stack(fleet, influx, telegraf)
    finally:
        telegraf.stop()
        influx.stop()
        exporter.shutdown()


def outcome(fetch, *args) -> float | tuple[str, str]:  # noqa: ANN001
    try:
        return fetch(*args)
    except (NoData, SourceUnavailable) as e:
        return type(e).__name__, str(e)


def test_batched_and_per_rollout_reads_give_the_same_values(stack: Stack) -> None:
    start = stack.telegraf.settled()
    stack.fleet.reset("a.c", "canary")  # a counter reset within the window
    stack.fleet.services.append("late.born")  # a service whose series are born within it
    time.sleep(0.6)
    end = stack.telegraf.settled()  # ~1-2 s: shorter than min_window, so p99 reads one more instant
    services = [*ODD, "svc-0000", "svc-0002", "late.born", "ghost"]  # svc-0000 never fails; ghost has no series
    single, batched = stack.source(), BatchingInfluxDBSource(stack.source())
    fetches = [(q, s, arm, start, end) for s in services for arm in ARMS for q in QUERIES]
    batched.plan(fetches)
    before = stack.query_requests()
    got = {(q.signal, s, arm.arm): outcome(batched.fetch, q, s, arm, a, b) for q, s, arm, a, b in fetches}
    assert stack.query_requests() - before == batched.requests == 1  # every read of the window, one request
    want = {(q.signal, s, arm.arm): outcome(single.fetch, q, s, arm, a, b) for q, s, arm, a, b in fetches}
    assert got == want
    assert got[("errors", "svc-0000", "canary")] == 0.0 and got[("requests", "svc-0000", "canary")] > 0
    assert got[("requests", "late.born", "baseline")] > 100  # born in the window: all of it counted
    counters = single.last_values("http_requests_total", "\"service\" = 'a.c' AND \"track\" = 'canary'", end)
    assert got[("requests", "a.c", "canary")] == sum(v["counter"] for v in counters.values())  # all since the reset
    assert got[("requests", "ghost", "canary")][0] == "NoData"
    assert got[("errors", "ghost", "canary")][0] == "NoData"  # no series at all: no data, not 0
    assert 0 < got[("p99_seconds", "abc", "canary")] <= 1.0 and got[("memory_bytes", "o'k", "baseline")] > 4e7
    for source in (single, batched):
        source.close()


def test_a_tick_window_of_many_services_is_one_request(stack: Stack) -> None:
    """56 services x 2 arms x 6 signals (the default policy's 672 fetches) fetched from 8 threads."""
    start = stack.telegraf.settled()
    end = stack.telegraf.settled()
    services = service_names(50) + ODD
    source = BatchingInfluxDBSource(stack.source())
    fetches = [(q, s, arm, start, end) for s in services for arm in ARMS for q in QUERIES]
    source.plan(fetches)
    before = stack.query_requests()
    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda f: source.fetch(*f), fetches))
    assert stack.query_requests() - before == 1  # per rollout: 50 x 2 x 11 reads, each its own request
    assert source.statements == 8  # requests and errors, slow, cpu: 2 instants each; p99 one more; memory one
    assert all(v >= 0 for v in values) and sum(values[::6]) > 0
    # a service no plan named asks for its own reads (and those planned for them), once
    late = stack.source()
    source = BatchingInfluxDBSource(late)
    source.plan(fetches[:12])  # svc-0000's two arms
    assert source.fetch(QUERIES[0], "svc-0003", ARMS[0], start, end) == late.fetch(QUERIES[0], "svc-0003",
                                                                                   ARMS[0], start, end)
    source.fetch(QUERIES[0], "svc-0000", ARMS[1], start, end)  # answered by the same request
    assert source.requests == 1
    source.close()


def test_service_names_are_matched_exactly(stack: Stack) -> None:
    source = stack.source()
    end = stack.telegraf.settled()
    for names in (["a.c", "a/b", "x|y(z)", "o'k"], ["svc-0001+"], ["abc"]):
        statement = (f'SELECT last(*) FROM "http_requests_total" WHERE "service" =~ {regex_of(names)} '
                     f"AND time <= {int(end * 1e9)} AND time > {int((end - 60) * 1e9)} GROUP BY *")
        (series,) = source.answers([statement])
        assert not isinstance(series, SourceUnavailable)
        assert {s["tags"]["service"] for s in series} == set(names)  # "a.c" is not "abc", "svc-0001+" not svc-0001


def test_failures_are_unavailable_for_every_rollout_they_cover(stack: Stack, tmp_path) -> None:
    end = time.time()
    fetches = [(q, s, arm, end - 10, end) for s in ("svc-0000", "svc-0001") for arm in ARMS for q in QUERIES]
    gone = BatchingInfluxDBSource(InfluxDBSource("http://127.0.0.1:9", timeout=1), failure_ttl=30)
    gone.plan(fetches)
    for f in fetches:
        with pytest.raises(SourceUnavailable, match="unavailable: ConnectError"):
            gone.fetch(*f)
    assert gone.requests == 1  # a dead store is asked once per window, not once per rollout

    missing = BatchingInfluxDBSource(stack.source(database="nope"))
    missing.plan(fetches)
    with pytest.raises(SourceUnavailable, match="database not found"):
        missing.fetch(*fetches[0])
    time.sleep(0.05)
    missing.failure_ttl = 0.0  # once the failure is older than failure_ttl it is asked again
    with pytest.raises(SourceUnavailable, match="database not found"):
        missing.fetch(*fetches[0])
    assert missing.requests == 2

    cut = InfluxDBServer(tmp_path, http_options="max-row-limit = 1").start()
    try:
        telegraf = TelegrafLike(cut, stack.telegraf.targets).start()
        try:
            start = telegraf.settled()
            end = telegraf.settled()
        finally:
            telegraf.stop()
        single, batched = InfluxDBSource(cut.url, timeout=3), BatchingInfluxDBSource(InfluxDBSource(cut.url))
        fetches = [(q, s, arm, start, end) for s in ("svc-0000", "svc-0001") for arm in ARMS for q in QUERIES]
        batched.plan(fetches)
        for f in fetches:  # asked chunked: no answer is cut short (1.6 would drop series without saying so)
            assert batched.fetch(*f) == single.fetch(*f)
        where = "\"service\" = 'svc-0001' AND \"track\" = 'canary'"
        assert {dict(k)["code"] for k in single.last_values("http_requests_total", where, end)} == {"200", "500"}
    finally:
        cut.stop()


def test_batch_queries_off_reads_per_rollout(tmp_path) -> None:
    from guardian.api.components import metric_sources
    from guardian.rules.book import RuleBook
    from guardian.settings import Settings

    (tmp_path / "checkout.yaml").write_text("service: checkout\nsource: influxdb\n")
    for batch, kind in ((True, BatchingInfluxDBSource), (False, InfluxDBSource)):
        router = metric_sources(Settings(influxdb_url="http://127.0.0.1:8086", batch_queries=batch),
                                RuleBook([tmp_path]))
        assert type(router.for_service("checkout")) is kind
        router.close()


def test_concurrent_ticks_share_one_request_in_flight(stack: Stack) -> None:
    """Ticks that were not planned but ask for the same window while its request is in flight wait for it."""
    start = stack.telegraf.settled()
    end = stack.telegraf.settled()
    source = BatchingInfluxDBSource(stack.source())
    fetches = [(QUERIES[0], "svc-0000", arm, start, end) for arm in ARMS]
    source.plan(fetches)
    barrier = threading.Barrier(6)

    def one(i: int) -> float:
        barrier.wait()
        return source.fetch(*fetches[i % 2])

    with ThreadPoolExecutor(6) as pool:
        values = list(pool.map(one, range(6)))
    assert source.requests == 1 and len(set(values[::2])) == 1 and len(set(values[1::2])) == 1
