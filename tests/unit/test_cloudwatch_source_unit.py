"""CloudWatchSource without a server: the periods it asks for (CloudWatch must not round a StartTime), and what moto
cannot show — pages followed through NextToken, 500 queries a call, a result CloudWatch marks Forbidden — against
botocore's Stubber: a stub, which checks every request against botocore's own model of the CloudWatch API (the
official service description shipped with boto3) and answers what each test gives it."""
from __future__ import annotations

import datetime as dt
import threading
import time

import boto3
import pytest
from botocore.stub import ANY, Stubber

from guardian.domain import SignalType
from guardian.errors import NoData, SourceUnavailable
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.cloudwatch import CloudWatchSource, arm_dimension, latest_period, window_period

REQUESTS = SignalQuery("requests", SignalType.COUNTER, "(built in)")
CANARY = ArmSelector("canary")
START, END = 1_800_000_000, 1_800_000_010  # a 10 s window on the grid


def test_periods_tile_the_window_from_a_start_cloudwatch_keeps() -> None:
    assert window_period(START, END) == 10  # the whole window, one datapoint
    assert window_period(1_800_000_000 - 60, 1_800_000_000) == 60  # :00 to :00 (START is a whole minute)
    assert window_period(START, START + 15) == 5
    assert window_period(START + 1, START + 11) == 1  # an unaligned window: 1 s periods (high resolution)
    assert window_period(START, START + 180) == 180
    assert latest_period(END, 15) == 10  # min_window 15 s, but 20 and 30 s periods would not end at :10
    assert latest_period(START + 20, 30) == 20 and latest_period(START, 120) == 120
    assert latest_period(START + 1, 15) == 1
    assert arm_dimension("track") == "Track" and arm_dimension("deployTrack") == "DeployTrack"


def _stubbed(**kw) -> tuple[CloudWatchSource, Stubber]:
    client = boto3.session.Session().client("cloudwatch", region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE",
                                            aws_secret_access_key="not-a-secret")
    return CloudWatchSource("eu-west-1", client=client, **kw), Stubber(client)


def _result(qid: str, *values: tuple[int, float], status: str = "Complete", **extra) -> dict:
    return {"Id": qid, "Timestamps": [dt.datetime.fromtimestamp(t, dt.UTC) for t, _ in values],
            "Values": [v for _, v in values], "StatusCode": status, **extra}


def test_pages_are_followed_through_next_token_and_merged() -> None:
    src, stub = _stubbed()
    wanted = {"MetricDataQueries": ANY, "StartTime": ANY, "EndTime": ANY, "ScanBy": "TimestampAscending"}
    stub.add_response("get_metric_data", {"MetricDataResults": [_result("q0", (START, 4.0), status="PartialData")],
                                          "NextToken": "page-2"}, wanted)
    stub.add_response("get_metric_data", {"MetricDataResults": [_result("q0", (START + 5, 3.0))]},
                      {**wanted, "NextToken": "page-2"})
    with stub:
        assert src.fetch(REQUESTS, "checkout", CANARY, START, START + 10) == 7.0
        stub.assert_no_pending_responses()
    assert src.calls == 2


def test_a_pass_of_600_reads_is_two_calls_of_at_most_500_queries() -> None:
    src, stub = _stubbed()
    services = [f"svc-{i:03d}" for i in range(300)]
    fetches = [(REQUESTS, s, arm, START, END) for s in services for arm in (CANARY, ArmSelector("baseline"))]
    src.plan(fetches)
    sizes: list[int] = []

    def answer(**kwargs) -> None:
        sizes.append(len(kwargs["MetricDataQueries"]))

    src._client.meta.events.register("provide-client-params.cloudwatch.GetMetricData", lambda params, **_: answer(
        **params))
    for n in (500, 100):
        stub.add_response("get_metric_data", {"MetricDataResults": [_result(f"q{i}", (START, 1.0)) for i in range(n)]})
    with stub:
        assert all(src.fetch(*f) == 1.0 for f in fetches)
    assert sizes == [500, 100] and src.calls == 2


def test_a_result_marked_forbidden_is_unavailable_and_an_empty_one_no_data() -> None:
    src, stub = _stubbed()
    stub.add_response("get_metric_data", {"MetricDataResults": [_result(
        "q0", status="Forbidden", Messages=[{"Code": "Forbidden", "Value": "not allowed in this account"}])]})
    stub.add_response("get_metric_data", {"MetricDataResults": [_result("q0")]})
    with stub:
        with pytest.raises(SourceUnavailable, match="answered Forbidden .*not allowed in this account"):
            src.fetch(REQUESTS, "checkout", CANARY, START, END)
        with pytest.raises(NoData, match="no datapoints for requests of checkout/canary"):
            src.fetch(REQUESTS, "checkout", CANARY, END, END + 10)


def test_a_throttled_call_is_unavailable_naming_the_code_and_refusals_name_the_credentials() -> None:
    src, stub = _stubbed()
    stub.add_client_error("get_metric_data", "Throttling", "Rate exceeded", 400)
    stub.add_client_error("get_metric_data", "AccessDeniedException", "User: arn:aws:iam::1:user/x is not authorized",
                          400)
    with stub:
        with pytest.raises(SourceUnavailable, match=r"unavailable: Throttling \(HTTP 400\): Rate exceeded"):
            src.fetch(REQUESTS, "checkout", CANARY, START, END)
        with pytest.raises(SourceUnavailable, match=r"refused the credentials \(AccessDeniedException"):
            src.fetch(REQUESTS, "checkout", CANARY, END, END + 10)


class SlowClient:
    """A CloudWatch client whose every GetMetricData request takes `pause` seconds and answers 1.0 per query."""

    def __init__(self, pause: float) -> None:
        self.pause, self.requests, self.started = pause, 0, threading.Event()

    def get_metric_data(self, **kwargs) -> dict:
        self.requests += 1
        self.started.set()
        time.sleep(self.pause)
        return {"MetricDataResults": [_result(q["Id"], (START, 1.0)) for q in kwargs["MetricDataQueries"]]}


def _waiter_meets_runner(client: SlowClient, request_wait: float) -> tuple[CloudWatchSource, float | Exception]:
    """Three planned reads of one window; one fetch makes the call, another waits for it."""
    src = CloudWatchSource("eu-west-1", client=client)
    src.request_wait = request_wait
    fetches = [(REQUESTS, f"svc-{i}", CANARY, START, END) for i in range(3)]
    src.plan(fetches)
    runner = threading.Thread(target=src.fetch, args=fetches[0])
    runner.start()
    assert client.started.wait(5)
    try:
        got: float | Exception = src.fetch(*fetches[2])
    except SourceUnavailable as e:
        got = e
    runner.join(10)
    return src, got


def test_the_waiters_limit_follows_the_call_not_one_request(monkeypatch) -> None:
    # a call of 3 requests (one query each here) of 0.5 s: 1.5 s in all, longer than one request's limit (1 s here);
    # the fetch waiting for it hears each request answered and waits for the whole call
    monkeypatch.setattr("guardian.sources.cloudwatch.MAX_QUERIES", 1)
    src, got = _waiter_meets_runner(SlowClient(0.5), request_wait=1.0)
    assert got == 1.0 and src.calls == 3

    # one request that takes longer than its limit: the waiter gives up, saying so
    monkeypatch.setattr("guardian.sources.cloudwatch.MAX_QUERIES", 500)
    began = time.monotonic()
    src, got = _waiter_meets_runner(SlowClient(1.5), request_wait=0.3)
    assert isinstance(got, SourceUnavailable) and "the GetMetricData call for RequestCount did not finish" in str(got)
    assert src.calls == 1 and time.monotonic() - began < 5


def test_the_default_request_wait_outlasts_what_the_client_may_take_for_one_request() -> None:
    # botocore: 2 attempts, each connect_timeout + read_timeout, and a pause of at most 1 s (6 s with
    # x-amz-retry-after) before the retry
    for timeout in (1.0, 5.0, 30.0):
        assert CloudWatchSource("eu-west-1", client=SlowClient(0), timeout=timeout).request_wait >= 2 * 2 * timeout + 6
