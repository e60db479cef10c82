"""BatchingSource against a real Prometheus: for every default template, each rollout's batched answer is
exactly the per-rollout one (values, NoData, SourceUnavailable), with awkward service names, a counter
reset, a service that never failed, a service Prometheus never saw and a Prometheus that is down; and it
asks once per signal and window however many rollouts ask, concurrently."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from demo.stack import VictoriaMetricsServer
from guardian.errors import NoData, SourceUnavailable
from guardian.rules.defaults import STANDARD_QUERIES
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.batching import BatchingSource
from guardian.sources.prometheus import PrometheusSource
from tests.fixtures.fleet import Fleet, serve

from .conftest import PrometheusServer, free_port, prometheus_binary

pytestmark = pytest.mark.integration

SERVICES = ["never-failed", "checkout", "a.b", "c|d", 'q"uote', "x+y(1)"]  # the fleet's i % 3 == 0 never fail
GHOST = "ghost"  # asked for, never exported
QUERIES = [SignalQuery(name, q.type, q.promql) for name, q in STANDARD_QUERIES.items()]
ARMS = [ArmSelector("canary"), ArmSelector("baseline")]


def outcome(source, query, service, arm, start, end):
    try:
        return source.fetch(query, service, arm, start, end)
    except NoData:
        return "NoData"
    except SourceUnavailable:
        return "SourceUnavailable"


@pytest.fixture(scope="module", params=["prometheus", "victoriametrics"])
def prom(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[PrometheusServer, Fleet]]:
    fleet = Fleet(SERVICES, start=time.time() - 60)
    server = serve(fleet)
    targets = [(f"127.0.0.1:{server.server_address[1]}", {})]
    workdir = tmp_path_factory.mktemp(request.param)
    prom = (PrometheusServer(targets, "1s", workdir=workdir, binary=prometheus_binary())
            if request.param == "prometheus" else VictoriaMetricsServer(targets, "1s", workdir=workdir)).start()
    try:
        prom.wait_for_series("count(http_requests_total) > 0")
        yield prom, fleet
    finally:
        prom.stop()
        server.shutdown()


def test_batched_answers_are_the_per_rollout_answers(prom) -> None:
    server, fleet = prom
    start = server.wait_for_scrape(after=time.time())
    time.sleep(2.2)
    fleet.reset("checkout", "canary")  # a counter reset within the window
    time.sleep(2.2)
    end = server.wait_for_scrape(after=time.time())
    single = server.source(timeout=3)
    batched = BatchingSource(server.source(timeout=3))
    asked = [(q, s, a, start, end) for q in QUERIES for s in [*SERVICES, GHOST] for a in ARMS]
    batched.plan(asked)
    want = {(q.signal, s, a.arm): outcome(single, q, s, a, start, end) for q, s, a, *_ in asked}
    got: dict = {}

    def ask(items):
        for q, s, a, *_ in items:
            got[(q.signal, s, a.arm)] = outcome(batched, q, s, a, start, end)

    threads = [threading.Thread(target=ask, args=(asked[i::8],)) for i in range(8)]  # concurrent ticks
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want
    assert batched.batch_queries == len(QUERIES) and batched.single_queries == 0  # one query per signal
    assert all(want[(q.signal, GHOST, a.arm)] == "NoData" for q in QUERIES for a in ARMS)
    assert want[("errors", "never-failed", "canary")] == 0.0  # the `or (… * 0)` branch, per service
    assert isinstance(want[("requests", "checkout", "canary")], float)
    assert want[("requests", "checkout", "canary")] < want[("requests", "checkout", "baseline")]  # reset
    assert all(isinstance(want[(q.signal, s, a.arm)], float) for q in QUERIES for s in SERVICES for a in ARMS
               if q.signal != "p99_seconds")


def test_a_service_outside_the_plan_is_asked_again_and_answered(prom) -> None:
    server, _ = prom
    end = server.wait_for_scrape(after=time.time())
    start = end - 10
    batched = BatchingSource(server.source(timeout=3))
    single = server.source(timeout=3)
    q = QUERIES[0]
    batched.plan([(q, "checkout", ARMS[0], start, end)])
    assert outcome(batched, q, "checkout", ARMS[0], start, end) == outcome(single, q, "checkout", ARMS[0], start, end)
    assert outcome(batched, q, "a.b", ARMS[1], start, end) == outcome(single, q, "a.b", ARMS[1], start, end)
    assert batched.batch_queries == 2
    assert outcome(batched, q, "checkout", ARMS[1], start, end) != "SourceUnavailable"  # covered by the second
    assert batched.batch_queries == 2


def test_a_down_prometheus_is_unavailable_for_every_rollout_once() -> None:
    batched = BatchingSource(PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout=1))
    now = time.time()
    asked = [(q, s, a, now - 10, now) for q in QUERIES for s in SERVICES for a in ARMS]
    batched.plan(asked)
    assert {outcome(batched, *item) for item in asked} == {"SourceUnavailable"}
    assert batched.batch_queries == len(QUERIES)  # a failure is shared for failure_ttl, not re-asked per rollout
