"""The pure parts of PrometheusSource: counter arithmetic, answer parsing and error mapping.

The client is replaced by a named stub returning canned API answers; the HTTP behaviour itself is
tested against a real Prometheus in tests/integration/test_prometheus_source.py.
"""
from __future__ import annotations

import math
from typing import Any

import pytest
import requests
from prometheus_api_client import PrometheusApiClientException

from guardian.domain import SignalType
from guardian.errors import NoData, SourceUnavailable
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.prometheus import PrometheusSource, _http_reason, _safe_url, counter_increase, window_pair

COUNTER = SignalQuery("requests", SignalType.COUNTER, 'sum(x{service="{{service}}",{{arm_label}}="{{arm}}"})')
GAUGE = SignalQuery("p99", SignalType.GAUGE, 'q(x{service="{{service}}"}[{{window}}])')
ARM = ArmSelector("canary")


# -- counter_increase ---------------------------------------------------------------------------
def test_sums_increments_over_series() -> None:
    assert counter_increase([(10, 15), (100, 107)]) == 12


def test_a_reset_counts_the_end_value() -> None:
    assert counter_increase([(50, 4)]) == 4  # restarted within the window, 4 since


def test_a_series_born_within_the_window_counts_all_of_it() -> None:
    assert counter_increase([(None, 3), (10, 12)]) == 5


def test_a_series_that_vanished_contributes_nothing() -> None:
    assert counter_increase([(7, None), (1, 2)]) == 1


def test_no_end_value_at_all_is_nodata_not_zero() -> None:
    with pytest.raises(NoData):
        counter_increase([])
    with pytest.raises(NoData):
        counter_increase([(5, None), (1, math.nan)])


def test_an_unchanged_counter_is_a_real_zero() -> None:
    assert counter_increase([(9, 9)]) == 0.0


def test_non_finite_start_counts_as_missing() -> None:
    assert counter_increase([(math.inf, 4)]) == 4


# -- window_pair --------------------------------------------------------------------------------
def test_points_go_to_the_nearer_end_of_the_window() -> None:
    assert window_pair([[100.0, "3"], [110.0, "8"]], 100.0, 110.0) == (3.0, 8.0)
    assert window_pair([[110.001, "8"]], 100.0, 110.0) == (None, 8.0)
    assert window_pair([[99.999, "3"]], 100.0, 110.0) == (3.0, None)


# -- messages -----------------------------------------------------------------------------------
def test_safe_url_drops_credentials() -> None:
    assert _safe_url("https://u:p@prom.example:9090/prefix") == "https://prom.example:9090/prefix"
    assert _safe_url("http://prom:9090") == "http://prom:9090"


def test_http_reason_extracts_prometheus_error() -> None:
    exc = PrometheusApiClientException(
        "HTTP Status Code 400 (b'{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"parse error\"}')"
    )
    assert _http_reason(exc) == "HTTP 400: parse error"
    assert _http_reason(PrometheusApiClientException("HTTP Status Code 502 (b'<html>')")).startswith("HTTP 502")


# -- fetch with a stub client -------------------------------------------------------------------
class StubClient:
    """Stands in for PrometheusConnect: returns `answer` or raises it, and records the calls."""

    def __init__(self, answer: Any) -> None:
        self.answer, self.calls = answer, []

    def _reply(self, *args: Any) -> Any:
        self.calls.append(args)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    custom_query = custom_query_range = _reply


def source_with(answer: Any, **kwargs: Any) -> tuple[PrometheusSource, StubClient]:
    source = PrometheusSource("http://u:pw@127.0.0.1:9", **kwargs)
    stub = StubClient(answer)
    source._client = stub  # type: ignore[assignment]
    return source, stub


def test_counter_asks_for_exact_start_end_and_one_step() -> None:
    source, stub = source_with([{"metric": {}, "values": [[100.5, "10"], [112.5, "16"]]}])
    assert source.fetch(COUNTER, "checkout", ARM, 100.5, 112.5) == 6
    promql, _, _, step, params = stub.calls[0]
    assert promql == 'sum(x{service="checkout",track="canary"})'
    assert step == "12000ms" and params == {"start": "100.500", "end": "112.500"}


def test_counter_window_is_whole_milliseconds_so_the_end_point_exists() -> None:
    """A float step would be truncated by Prometheus, putting the last point before `end` or after it."""
    source, stub = source_with([{"metric": {}, "values": [[1.189, "1"], [2.234, "2"]]}])
    source.fetch(COUNTER, "checkout", ARM, 1.1888335, 2.2343726)
    _, _, _, step, params = stub.calls[0]
    assert params == {"start": "1.189", "end": "2.234"} and step == "1045ms"


def test_counter_with_empty_answer_is_nodata() -> None:
    source, _ = source_with([])
    with pytest.raises(NoData, match="requests of checkout/canary"):
        source.fetch(COUNTER, "checkout", ARM, 100, 110)


def test_gauge_is_the_instant_value_at_the_end_with_a_window_floor() -> None:
    source, stub = source_with([{"metric": {}, "value": [110, "0.25"]}], min_window=15)
    assert source.fetch(GAUGE, "checkout", ARM, 100, 110) == 0.25
    promql, params = stub.calls[0]
    assert promql == 'q(x{service="checkout"}[15s])' and params == {"time": "110.000"}


@pytest.mark.parametrize("raw", ["NaN", "+Inf", "-Inf"])
def test_gauge_not_finite_is_nodata(raw: str) -> None:
    source, _ = source_with([{"metric": {}, "value": [110, raw]}])
    with pytest.raises(NoData):
        source.fetch(GAUGE, "checkout", ARM, 100, 110)


def test_gauge_with_several_series_names_the_splitting_labels() -> None:
    source, _ = source_with(
        [
            {"metric": {"job": "a", "instance": "1"}, "value": [110, "1"]},
            {"metric": {"job": "a", "instance": "2"}, "value": [110, "2"]},
        ]
    )
    with pytest.raises(NoData, match=r"2 series \(differing in instance\).*aggregate"):
        source.fetch(GAUGE, "checkout", ARM, 100, 110)


def test_gauge_scalar_answer_is_read() -> None:
    source, _ = source_with([110, "3"])
    assert source.fetch(GAUGE, "checkout", ARM, 100, 110) == 3.0


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (requests.ConnectTimeout("x"), "timed out after 5s"),
        (requests.ConnectionError("[Errno 111] Connection refused"), "connection refused"),
        (PrometheusApiClientException("HTTP Status Code 503 (b'')"), "HTTP 503"),
        (requests.exceptions.InvalidJSONError("bad"), "bad response"),
    ],
)
def test_every_failure_to_ask_is_unavailable_without_credentials(error: Exception, reason: str) -> None:
    source, _ = source_with(error)
    for query in (COUNTER, GAUGE):
        with pytest.raises(SourceUnavailable, match=reason) as info:
            source.fetch(query, "checkout", ARM, 100, 110)
        assert "http://127.0.0.1:9" in str(info.value) and "pw" not in str(info.value)


def test_an_empty_window_is_a_programming_error() -> None:
    source, _ = source_with([])
    with pytest.raises(ValueError):
        source.fetch(COUNTER, "checkout", ARM, 110, 110)
