"""CloudWatchSource against moto's server (an emulator of CloudWatch's API, a real local process spoken to by boto3;
tests/fixtures/cloudwatch.py), written in the guardian's layout with PutMetricData: counters are the Sum within the
window, an ErrorCount left out is 0 while a Latency left out is no data, p99 and slow from the raw latencies (moto
lacks both statistics: the fixture adds them, and plain moto's 500 for them reads as unavailable), no datapoints is
NoData, one pass of due ticks is a few GetMetricData calls, refused credentials / no credentials / no connection are
unavailable naming the cause, and a whole rollout judged from it on a real `guardian serve` is promoted."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from guardian.domain import SignalType
from guardian.errors import NoData, SourceUnavailable
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.cloudwatch import CloudWatchSource
from tests.fixtures.cloudwatch import CREDENTIALS, REGION, CloudWatchEmulator, aws_environment, put_arm
from tests.fixtures.whole_rollout import promote_the_healthy_canary

pytestmark = pytest.mark.integration
CANARY, BASELINE = ArmSelector("canary"), ArmSelector("baseline")
KINDS = {"requests": SignalType.COUNTER, "errors": SignalType.COUNTER, "slow": SignalType.COUNTER,
         "p99_seconds": SignalType.GAUGE, "cpu_seconds": SignalType.COUNTER, "memory_bytes": SignalType.GAUGE}


def q(signal: str) -> SignalQuery:
    return SignalQuery(signal, KINDS.get(signal, SignalType.COUNTER), "(built in)")


def window(ago: int = 120) -> tuple[int, int]:
    """A 10 s tick window on the grid, `ago` seconds back (moto, like CloudWatch, takes datapoints from the past)."""
    start = (math.floor(time.time()) - ago) // 10 * 10
    return start, start + 10


@pytest.fixture(scope="module")
def emulator() -> Iterator[CloudWatchEmulator]:
    em = CloudWatchEmulator().start()
    try:
        yield em
    finally:
        em.stop()


def source(em: CloudWatchEmulator, **kw) -> CloudWatchSource:
    with aws_environment():  # boto3's chain reads the credentials from the environment when the client is made
        return CloudWatchSource(REGION, endpoint_url=em.url, timeout=3, min_window=4, **kw)


def test_counters_are_the_sum_within_the_window(emulator: CloudWatchEmulator) -> None:
    c, (start, end) = emulator.client(), window(300)
    put_arm(c, "checkout", "canary", start - 1, requests=1000, errors=1000, memory=1.0)  # before: not counted
    put_arm(c, "checkout", "canary", start, requests=30, errors=2, cpu=0.25, memory=6e7)
    put_arm(c, "checkout", "canary", start + 9.5, requests=10, errors=1, cpu=0.5, memory=7e7)
    put_arm(c, "checkout", "canary", end, requests=1000, errors=1000, memory=1.0)  # EndTime is exclusive
    put_arm(c, "checkout", "baseline", start + 4, requests=25, cpu=0.1, memory=5e7)  # never published an ErrorCount
    src = source(emulator)
    fetch = src.fetch
    assert fetch(q("requests"), "checkout", CANARY, start, end) == 40
    assert fetch(q("errors"), "checkout", CANARY, start, end) == 3
    assert fetch(q("cpu_seconds"), "checkout", CANARY, start, end) == 0.75
    assert fetch(q("memory_bytes"), "checkout", CANARY, start, end) == 6.5e7  # the newest period's Average
    assert fetch(q("requests"), "checkout", BASELINE, start, end) == 25
    assert fetch(q("errors"), "checkout", BASELINE, start, end) == 0.0  # answered, never failed: 0, not no data
    # the same window read at another grid: 5 s ticks, the window's two halves
    assert fetch(q("requests"), "checkout", CANARY, start, start + 5) == 30
    assert fetch(q("requests"), "checkout", CANARY, start + 5, end) == 10


def test_p99_and_slow_requests_from_the_raw_latencies(emulator: CloudWatchEmulator) -> None:
    c, (start, end) = emulator.client(), window(240)
    put_arm(c, "checkout", "canary", start + 2, requests=100, latencies={0.01: 60, 0.02: 37, 0.6: 2, 0.9: 1})
    put_arm(c, "checkout", "baseline", start + 2, requests=50, latencies={0.01: 40, 0.5: 10})  # 0.5 is not slow
    src = source(emulator)
    assert src.fetch(q("slow"), "checkout", CANARY, start, end) == 3
    assert src.fetch(q("slow"), "checkout", BASELINE, start, end) == 0  # TC(0.5:): the lower bound is exclusive
    assert src.fetch(q("p99_seconds"), "checkout", CANARY, start, end) == 0.6
    assert src.fetch(q("p99_seconds"), "checkout", BASELINE, start, end) == 0.5


def test_no_datapoints_is_nodata_and_zeros_are_zeros(emulator: CloudWatchEmulator) -> None:
    c, (start, end) = emulator.client(), window(180)
    put_arm(c, "idle", "canary", start + 1, requests=0, cpu=0.0)  # a service that published zeros
    put_arm(c, "nolatency", "canary", start + 1, requests=12)  # requests, but no Latency published (in Seconds)
    src = source(emulator)
    assert src.fetch(q("requests"), "idle", CANARY, start, end) == 0.0
    assert src.fetch(q("errors"), "idle", CANARY, start, end) == 0.0
    assert src.fetch(q("slow"), "idle", CANARY, start, end) == 0.0  # no request: none slow
    with pytest.raises(NoData, match="although RequestCount counts 12 requests"):
        src.fetch(q("slow"), "nolatency", CANARY, start, end)
    for signal in KINDS:
        with pytest.raises(NoData, match="no datapoints"):
            src.fetch(q(signal), "no-such-service", CANARY, start, end)
        with pytest.raises(NoData):
            src.fetch(q(signal), "idle", BASELINE, start, end)  # an arm that published nothing
    with pytest.raises(SourceUnavailable, match="standard signals only"):
        src.fetch(q("custom"), "idle", CANARY, start, end)


def test_one_pass_of_due_ticks_is_a_few_get_metric_data_calls(emulator: CloudWatchEmulator) -> None:
    c, (start, end) = emulator.client(), window(360)
    services = [f"svc-{i:03d}" for i in range(60)]
    for i, service in enumerate(services):
        for j, arm in enumerate(("canary", "baseline")):
            put_arm(c, service, arm, start + 3, requests=10 + i + j, errors=i % 2, latencies={0.01: 9, 0.8: 1},
                    cpu=0.1, memory=1e6 * (i + 1))
    src = source(emulator)
    fetches = [(q(signal), service, arm, start, end) for service in services for signal in KINDS
               for arm in (CANARY, BASELINE)]
    before = emulator.calls()
    src.plan(fetches)
    with ThreadPoolExecutor(16) as pool:  # as the scheduler's pool runs the due ticks
        values = list(pool.map(lambda f: src.fetch(*f), fetches))
    # 60 services x 2 arms: 600 reads of the window (RequestCount, ErrorCount, TC, CpuSeconds, p99) in 500 + 100,
    # and 120 of the gauge's minute: 3 calls, for 720 fetches
    assert emulator.calls() - before == src.calls == 3
    got = {(f[1], f[0].signal, f[2].arm): v for f, v in zip(fetches, values, strict=True)}
    assert got[("svc-007", "requests", "baseline")] == 18
    assert got[("svc-007", "errors", "canary")] == 1 and got[("svc-006", "errors", "canary")] == 0
    assert got[("svc-059", "memory_bytes", "canary")] == 60e6 and got[("svc-001", "slow", "canary")] == 1
    src.fetch(q("requests"), "svc-000", CANARY, start, end)  # answered from what the pass read
    assert emulator.calls() - before == 3
    unplanned = source(emulator, batch=False)  # batch_queries off: each fetch asks for its own reads
    for f in fetches[:12]:
        unplanned.fetch(*f)
    assert unplanned.calls == 12


def test_plain_moto_lacks_the_extended_statistics_which_read_as_unavailable(tmp_path) -> None:
    """Without the fixture's statistics moto answers HTTP 500 to a p99: unavailable (never no data, never a pass),
    while the statistics it has are read; a real CloudWatch computes both (docs/sources.md: to verify there)."""
    plain = CloudWatchEmulator(statistics=False).start()
    try:
        start, end = window(60)
        put_arm(plain.client(), "checkout", "canary", start + 1, requests=5, latencies={0.01: 5})
        src = source(plain)
        assert src.fetch(q("requests"), "checkout", CANARY, start, end) == 5
        with pytest.raises(SourceUnavailable, match=r"unavailable: .*500"):
            src.fetch(q("p99_seconds"), "checkout", CANARY, start, end)
    finally:
        plain.stop()


def test_refused_credentials_are_unavailable_naming_the_cause() -> None:
    em = CloudWatchEmulator().start()
    try:
        iam = _iam(em)
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]  # a real key of moto's IAM, with no permission
        em.require_auth()
        start, end = window(60)
        cases = [({"AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000", "AWS_SECRET_ACCESS_KEY": "wrong-secret-123"},
                  "InvalidClientTokenId"),
                 ({"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]},
                  "AccessDenied")]
        for env, code in cases:
            with aws_environment(**env):
                src = CloudWatchSource(REGION, endpoint_url=em.url, timeout=3)
            with pytest.raises(SourceUnavailable, match=f"refused the credentials \\({code}, HTTP 403\\)") as e:
                src.fetch(q("requests"), "checkout", CANARY, start, end)
            assert env["AWS_SECRET_ACCESS_KEY"] not in str(e.value) and "GetMetricData" in str(e.value)
            assert not src.ping()
    finally:
        em.stop()


def _iam(em: CloudWatchEmulator):
    import boto3

    return boto3.session.Session().client("iam", region_name=REGION, endpoint_url=em.url,
                                          aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                          aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def test_no_connection_and_no_credentials_are_unavailable(emulator: CloudWatchEmulator, tmp_path, monkeypatch) -> None:
    start, end = window(60)
    with aws_environment():
        gone = CloudWatchSource(REGION, endpoint_url="http://127.0.0.1:9", timeout=1)
    with pytest.raises(SourceUnavailable, match="unavailable: EndpointConnectionError"):
        gone.fetch(q("requests"), "checkout", CANARY, start, end)
    assert not gone.ping() and source(emulator).ping()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata service asked (off loopback)
    anonymous = CloudWatchSource(REGION, endpoint_url=emulator.url, timeout=2)
    with pytest.raises(SourceUnavailable, match="no AWS credentials found"):
        anonymous.fetch(q("requests"), "checkout", CANARY, start, end)


class Publisher:
    """The two arms of a service publishing every second, as its Embedded Metric Format logs would."""

    def __init__(self, em: CloudWatchEmulator, service: str) -> None:
        self.client, self.service, self.stop_ = em.client(), service, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Publisher:
        self.thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self.stop_.wait(1.0 - time.time() % 1.0):
            n += 1
            for track in ("canary", "baseline"):
                put_arm(self.client, self.service, track, time.time(), requests=40,
                        latencies={0.01: 30, 0.02: 9, 0.05 + 0.01 * (n % 3): 1}, cpu=0.02,
                        memory=5e7 + 1e4 * (n % 5))

    def stop(self) -> None:
        self.stop_.set()
        self.thread.join(5)


def test_a_whole_rollout_judged_from_cloudwatch(tmp_path) -> None:
    """A real `guardian serve` (GUARDIAN_SOURCE=cloudwatch, the emulator's endpoint) judging with the default
    policy, 1 s ticks (high-resolution metrics): the healthy canary is promoted, its requests read from CloudWatch."""
    from demo.stack import GuardianServer

    started: list = []
    try:
        em = CloudWatchEmulator(log=tmp_path / "moto.log").start()
        started.append(em)
        started.append(Publisher(em, "checkout").start())
        with aws_environment():
            guardian = GuardianServer(tmp_path, prometheus_url="http://127.0.0.1:9", rules=[], tick_seconds=1,
                                      evaluation_delay=0.8, min_window=2, analysis_seconds=2, source="cloudwatch",
                                      cloudwatch_region=REGION, cloudwatch_endpoint_url=em.url).start()
        started.append(guardian)
        assert guardian.api("GET", "/readyz").status_code == 200  # CloudWatch answers ListMetrics
        promote_the_healthy_canary(guardian, [50, 100], 60)
        assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in guardian.log_path.read_text()
        assert em.calls() > 0
    finally:
        for thing in reversed(started):
            thing.stop()
