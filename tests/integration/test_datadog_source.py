"""DatadogSource against a STUB of Datadog's metrics query API (tests/stubs/datadog_stub.py: Datadog is a hosted
service, it cannot run here; the stub follows Datadog's published OpenAPI document and refuses any request that
breaks it). Points are seeded as the Agent's OpenMetrics check sends them (monotonic counts, gauges, tags): counters
exact within a window, 0 errors rather than no data, slow requests and p99 from the histogram's buckets, gauges summed
over instances, no data for a service never seen; one request per span for 100 rollouts; refused keys, a rate limit,
no connection and a timeout unavailable naming the cause; and a whole rollout promoted by a real `guardian serve`
reading real demo apps' metrics, sent to the stub by an emulation of the Agent (tests/fixtures/datadog_agent.py)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from demo.stack import free_port
from guardian.domain import SignalType
from guardian.errors import NoData, SourceUnavailable
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.datadog import STANDARD, DatadogSource
from guardian.sources.datadog_batching import BatchingDatadogSource
from tests.fixtures.whole_rollout import promote_the_healthy_canary
from tests.stubs.datadog_stub import COUNT, GAUGE, SPEC, DatadogStub, request_schema, resolve, schema_errors

pytestmark = pytest.mark.integration
CANARY, BASELINE = ArmSelector("canary"), ArmSelector("baseline")
T = 1_800_000_000  # a tick window [T, T + 10)
KINDS = {s: SignalType.GAUGE if s in ("p99_seconds", "memory_bytes") else SignalType.COUNTER for s in STANDARD}
QUERY = "/api/v2/query/timeseries"


def q(signal: str) -> SignalQuery:
    return SignalQuery(signal, KINDS[signal], "(built in)")


def source(stub: DatadogStub, **kw: Any) -> DatadogSource:
    kw = {"timeout": 3.0, "min_window": 4.0, **kw}
    return DatadogSource(stub.url, stub.api_key, stub.app_key, **kw)


def seed(stub: DatadogStub, service: str, track: str, *, ok: float, failed: float = 0.0, t: int = T) -> None:
    """A service arm as the check sends it: requests by code (two instances), its latency histogram, cpu, memory."""
    base = [f"service:{service}", f"track:{track}"]
    stub.add("app.http_requests.count", COUNT, [*base, "code:200", "host:a"], [(t + 1, ok * 0.75), (t + 6, ok * 0.25)])
    stub.add("app.http_requests.count", COUNT, [*base, "code:200", "host:a"], [(t - 1, 1e6), (t + 10, 1e6)])  # outside
    if failed:
        stub.add("app.http_requests.count", COUNT, [*base, "code:503", "host:b"], [(t + 2, failed)])
    for le, n in (("0.1", 0.6), ("0.25", 0.8), ("0.5", 0.9), ("1.0", 1.0)):  # cumulative, no +Inf (the check's way)
        stub.add("app.http_request_duration_seconds.bucket", COUNT, [*base, f"upper_bound:{le}"],
                 [(t + 5, (ok + failed) * n)])
    stub.add("app.http_request_duration_seconds.count", COUNT, base, [(t + 5, ok + failed)])
    stub.add("app.process_cpu_seconds.count", COUNT, base, [(t + 3, 0.25), (t + 8, 0.5)])
    stub.add("app.process_resident_memory_bytes", GAUGE, [*base, "host:a"], [(t + 2, 100.0), (t + 8, 120.0)])
    stub.add("app.process_resident_memory_bytes", GAUGE, [*base, "host:b"], [(t + 8, 200.0)])


@pytest.fixture
def stub():
    with DatadogStub() as s:
        yield s


def test_each_standard_signal_within_the_window(stub: DatadogStub) -> None:
    seed(stub, "checkout", "canary", ok=60, failed=5)
    seed(stub, "checkout", "baseline", ok=40)
    dd = source(stub)
    value = {s: dd.fetch(q(s), "checkout", CANARY, T, T + 10) for s in STANDARD}
    assert value["requests"] == 65  # both instances and codes, nothing from outside [T, T + 10)
    assert value["errors"] == 5
    assert value["slow"] == pytest.approx(65 * 0.1)  # the count less the 0.5 s bucket
    assert value["p99_seconds"] == pytest.approx(0.5 + 0.5 * (0.99 - 0.9) / 0.1)  # histogram_quantile, in (0.5, 1]
    assert value["cpu_seconds"] == 0.75
    assert value["memory_bytes"] == 110 + 200  # each instance's average in the window, summed
    assert dd.fetch(q("errors"), "checkout", BASELINE, T, T + 10) == 0.0  # answered, never failed: 0, not no data
    assert dd.requests == 6 + 1  # one request per fetch: a signal's reads go together
    dd.close()


def test_no_series_is_nodata_and_names_are_asked_in_lower_case(stub: DatadogStub) -> None:
    seed(stub, "checkout", "canary", ok=10)
    dd = source(stub)
    for signal in STANDARD:
        with pytest.raises(NoData, match=f"no data for {signal} of payments/canary in Datadog"):
            dd.fetch(q(signal), "payments", CANARY, T, T + 10)
    with pytest.raises(NoData):
        dd.fetch(q("requests"), "checkout", CANARY, T + 100, T + 110)  # a window with nothing in it
    assert dd.fetch(q("requests"), "Checkout", ArmSelector("canary", value="Canary"), T, T + 10) == 10
    with pytest.raises(SourceUnavailable, match="cannot be asked for as a Datadog tag value"):
        dd.fetch(q("requests"), "check out", CANARY, T, T + 10)  # would break the query: never sent
    with pytest.raises(SourceUnavailable, match="standard signals only"):
        dd.fetch(SignalQuery("queue_depth", SignalType.GAUGE, "sum(x)"), "checkout", CANARY, T, T + 10)
    assert [c.status for c in stub.queries()] == [200] * (len(STANDARD) + 2)


def test_p99_and_memory_read_at_least_min_window(stub: DatadogStub) -> None:
    """A 2 s tick reads its gauges over the last min_window (10 s here): the points of [T, T + 8) count too."""
    seed(stub, "checkout", "canary", ok=60)
    dd = source(stub, min_window=10)
    assert dd.fetch(q("memory_bytes"), "checkout", CANARY, T + 8, T + 10) == 310
    assert dd.fetch(q("p99_seconds"), "checkout", CANARY, T + 8, T + 10) > 0.5
    with pytest.raises(NoData):
        dd.fetch(q("requests"), "checkout", CANARY, T + 8, T + 10)  # counters: the tick only
    spans = [(c.body["data"]["attributes"]["from"], c.body["data"]["attributes"]["to"]) for c in stub.queries()]
    assert spans == [(T * 1000, (T + 10) * 1000)] * 2 + [((T + 8) * 1000, (T + 10) * 1000)]


def test_one_request_per_span_for_100_rollouts(stub: DatadogStub) -> None:
    services = [f"svc-{i:03d}" for i in range(100)]
    for i, s in enumerate(services):
        seed(stub, s, "canary", ok=100 + i, failed=i % 3)
        seed(stub, s, "baseline", ok=100 + i)
    fetches = [(q(signal), s, arm, T, T + 10) for s in services for arm in (CANARY, BASELINE) for signal in STANDARD]

    def tick(batching: BatchingDatadogSource) -> dict[tuple[str, str, str], float]:
        batching.plan(fetches)
        with ThreadPoolExecutor(16) as pool:
            values = pool.map(lambda f: batching.fetch(*f), fetches)
            return {(f[0].signal, f[1], f[2].arm): v for f, v in zip(fetches, values, strict=True)}

    values = tick(BatchingDatadogSource(source(stub)))
    assert len(stub.queries()) == 1  # the 10 s tick is at least min_window: one span, one request
    assert values[("requests", "svc-042", "canary")] == 142 + 0 and values[("errors", "svc-043", "canary")] == 1
    assert values[("errors", "svc-043", "baseline")] == 0.0
    alone = source(stub)
    for signal in STANDARD:  # what each rollout would read alone
        assert values[(signal, "svc-007", "canary")] == pytest.approx(alone.fetch(q(signal), "svc-007", CANARY,
                                                                                  T, T + 10))
    before = len(stub.queries())
    tick(BatchingDatadogSource(source(stub, min_window=15)))
    assert len(stub.queries()) - before == 2  # min_window above the tick: the gauges' span is a second request
    body = stub.queries()[-1].body["data"]["attributes"]
    assert len(body["queries"]) == len(body["formulas"]) >= 2
    assert "service IN (svc-000, svc-001," in body["queries"][0]["query"]
    before, unplanned = len(stub.queries()), BatchingDatadogSource(source(stub))
    for signal in STANDARD:  # a span nobody planned (a rollout's pre-rollout window): every read of it at once
        unplanned.fetch(q(signal), "svc-001", BASELINE, T - 600, T + 10)
    assert len(stub.queries()) - before == 1


def test_refused_keys_are_unavailable_naming_the_cause(stub: DatadogStub) -> None:
    seed(stub, "checkout", "canary", ok=10)
    wrong = DatadogSource(stub.url, stub.api_key, "not-the-app-key-123456", timeout=3, min_window=4)
    with pytest.raises(SourceUnavailable, match="Datadog refused the keys: HTTP 403 Forbidden") as e:
        wrong.fetch(q("requests"), "checkout", CANARY, T, T + 10)
    assert "not-the-app-key-123456" not in str(e.value) and stub.api_key not in str(e.value)
    assert "timeseries_query" in str(e.value)
    stub.query_permission = False  # the right keys, but an application key scoped without timeseries_query
    with pytest.raises(SourceUnavailable, match="refused the keys"):
        BatchingDatadogSource(source(stub)).fetch(q("requests"), "checkout", CANARY, T, T + 10)
    assert source(stub).ping() and not DatadogSource(stub.url, "wrong-api-key-123456", stub.app_key).ping()


def test_a_rate_limit_is_unavailable_with_its_reset_and_is_not_asked_again(stub: DatadogStub) -> None:
    seed(stub, "checkout", "canary", ok=10)
    stub.rate_limit = 1
    dd = source(stub)
    assert dd.fetch(q("requests"), "checkout", CANARY, T, T + 10) == 10
    with pytest.raises(SourceUnavailable, match=r"rate-limited .*HTTP 429, 1 requests per 3600 s.* resets in \d+ s"):
        dd.fetch(q("requests"), "checkout", CANARY, T, T + 10)
    asked = stub.count(QUERY)
    with pytest.raises(SourceUnavailable, match=r"not asking again for \d+ s"):
        dd.fetch(q("errors"), "checkout", CANARY, T, T + 10)
    assert stub.count(QUERY) == asked  # no request until the limit resets


def test_no_connection_and_a_timeout_are_unavailable(stub: DatadogStub) -> None:
    with pytest.raises(SourceUnavailable, match=r"unavailable: ConnectError \(no connection\?\)"):
        DatadogSource(f"http://127.0.0.1:{free_port()}", "k" * 10, "a" * 10).fetch(q("requests"), "x", CANARY, T,
                                                                                    T + 10)
    stub.delay = 1.0
    with pytest.raises(SourceUnavailable, match="no answer within 0.3 s"):
        source(stub, timeout=0.3).fetch(q("requests"), "checkout", CANARY, T, T + 10)


def test_every_request_and_answer_follows_datadogs_document(stub: DatadogStub) -> None:
    """What the source sent was accepted by the stub's check against the extract; here the answers are checked too,
    and the stub is shown to refuse what Datadog's document does not allow."""
    seed(stub, "checkout", "canary", ok=10, failed=1)
    dd = source(stub)
    for signal in STANDARD:
        dd.fetch(q(signal), "checkout", CANARY, T, T + 10)
    op = SPEC["paths"][QUERY]["post"]
    for call in stub.queries():
        assert schema_errors(call.body, request_schema()) == []
        response = resolve(op["responses"][str(call.status)])
        assert schema_errors(call.answer, response["content"]["application/json"]["schema"], strict=False) == []
    good = stub.queries()[0].body

    def post(body: Any, **headers: str) -> httpx.Response:
        keys = {"DD-API-KEY": stub.api_key, "DD-APPLICATION-KEY": stub.app_key, **headers}
        return httpx.post(stub.url + QUERY, json=body, headers={k: v for k, v in keys.items() if v})

    attributes = good["data"]["attributes"]
    seconds = {"data": {**good["data"], "attributes": {**attributes, "from": T, "to": T + 10}}}
    extra = {"data": {**good["data"], "attributes": {**attributes, "step": 10}}}
    syntax = {"data": {**good["data"], "attributes": {**attributes, "queries": [
        {**attributes["queries"][0], "query": "sum:app.http_requests.count{service=checkout}"}]}}}
    for body in (seconds, extra, syntax, {"data": {**good["data"], "type": "timeseries_rquest"}}):
        r = post(body)
        assert r.status_code == 400 and schema_errors(r.json(), resolve(op["responses"]["400"])["content"][
            "application/json"]["schema"], strict=False) == [], r.text
    assert post(good, **{"DD-APPLICATION-KEY": ""}).json() == {"errors": ["Unauthorized"]}


def test_a_whole_rollout_judged_from_datadog(tmp_path) -> None:
    """A real `guardian serve` (GUARDIAN_SOURCE=datadog) reading the stub, fed every second by the Agent emulation
    scraping two real demo apps under load: the healthy canary is promoted."""
    from demo.loadgen import LoadGenerator
    from demo.stack import GuardianServer, start_demo_pair
    from tests.fixtures.datadog_agent import AgentLike

    started: list = []
    try:
        baseline, canary = start_demo_pair(started)
        stub = DatadogStub().start()
        started.append(stub)
        agent = AgentLike(stub.url, stub.api_key, [(f"{baseline.url}/metrics", ["service:checkout", "track:baseline"]),
                                                   (f"{canary.url}/metrics", ["service:checkout", "track:canary"])])
        started.append(agent.start())
        started.append(LoadGenerator({baseline.url: 1, canary.url: 1}, rps=100, max_seconds=300).start())
        guardian = GuardianServer(tmp_path, prometheus_url="http://127.0.0.1:9", rules=[], tick_seconds=2,
                                  evaluation_delay=1.5, min_window=4, analysis_seconds=4, source="datadog",
                                  datadog_url=stub.url, datadog_api_key=stub.api_key,
                                  datadog_app_key=stub.app_key).start()
        started.append(guardian)
        assert guardian.api("GET", "/readyz").status_code == 200  # /api/v1/validate accepts the API key
        promote_the_healthy_canary(guardian, [100], 120)
        assert stub.api_key not in guardian.log_tail(10**6) and stub.app_key not in guardian.log_tail(10**6)
    finally:
        for thing in reversed(started):
            thing.stop()
