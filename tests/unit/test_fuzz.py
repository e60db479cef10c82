"""Fuzzing, with few examples (the whole file in well under 30 s): the HTTP API through schemathesis, the
rule parser and the recording reader through Hypothesis. The properties are in tests/unit/fuzzing.py;
`benchmarks/fuzz.py --examples 5000` runs the same ones at length."""
from __future__ import annotations

import pytest

from tests.unit import fuzzing

pytest.importorskip("schemathesis")


@pytest.fixture(autouse=True)
def quiet():
    from loguru import logger

    logger.disable("guardian")
    yield
    logger.enable("guardian")


def assert_clean(report: fuzzing.Report, at_least: int) -> None:
    assert not report.failures, "\n".join(f"{k}\n    e.g. {v}" for k, v in report.failures.items())
    assert report.cases >= at_least


@pytest.fixture(scope="module")
def api():
    with fuzzing.api_harness() as h:
        try:
            yield h
        finally:
            h.close()


def test_api_never_5xx_and_a_4xx_changes_nothing(api):
    assert_clean(fuzzing.api_property(api, 10), 100)


def test_api_without_the_token_is_refused_and_changes_nothing(api):
    assert_clean(fuzzing.api_property(api, 10, authenticated=False), 100)


def test_rule_parser_gives_a_rulefile_or_the_documented_error():
    assert_clean(fuzzing.rules_property(200), 150)


def test_recording_reader_gives_a_replay_or_the_documented_error():
    assert_clean(fuzzing.recordings_property(300), 250)


@pytest.mark.parametrize("text", [
    "a: \x07",                                                                      # ReaderError
    "[" * 600,                                                                      # RecursionError
    "service: s\n<<: {checks: [{name: x, kind: threshold, signal: nope, above: 1, action: rollback}]}\n",
    "service: s\nchecks:\n  - <<: {name: x, kind: threshold, signal: nope, above: 1, action: rollback}\n",
    *(f"service: s\nchecks:\n  - {{name: x, kind: threshold, signal: p99_seconds, above: {above}, for: {for_},"
      " action: rollback}\n" for above, for_ in [("1s", "1" + "0" * 400), ("1" + "0" * 400, "2m"),  # OverflowError
                                                 (".nan", "2m"), ("1s", ".inf")]),             # accepted before
])
def test_rule_parser_crashes_found_by_fuzzing(text):
    assert fuzzing.check_rule_text(text) is None


@pytest.mark.parametrize("raw", [
    b"[" * 100000,                                                                      # RecursionError
    b"1" * 5000,                                                                        # ValueError (digits)
    *(fuzzing.json.dumps(fuzzing.VALID_RECORDING | change, allow_nan=True).encode() for change in [
        {"series": {"requests": {}}},                                                   # no arrays: max() of nothing
        {"step_seconds": float("nan")}, {"step_seconds": 1e308}, {"step_seconds": 10**400},
        {"step_seconds": 5e-324},                                                       # ticks vanish in a float
        {"service": ["a"]}, {"service": None},
        {"series": {"requests": {"canary": [10**400], "baseline": [1]}}},
        {"series": {"requests": {"canary": [1e308] * 5, "baseline": [1e308] * 5},
                    "errors": {"canary": [1e308] * 5, "baseline": [0] * 5}}},           # ZeroDivisionError
        {"series": {"requests": {"canary": [47417, 6.4e16, 47417, -1e308]}}},           # log1p domain
    ]),
])
def test_recording_reader_crashes_found_by_fuzzing(raw, tmp_path):
    assert fuzzing.check_recording_bytes(raw, tmp_path) is None


@pytest.mark.parametrize(("above", "for_", "field"), [(".nan", "2m", "above"), ("1s", ".inf", "for"),
                                                      ("1" + "0" * 400, "2m", "above")])
def test_limits_and_durations_must_be_finite(above, for_, field):
    from guardian.errors import RuleError
    from guardian.rules.loader import parse_text

    with pytest.raises(RuleError) as e:
        parse_text(f"service: s\nchecks:\n  - {{name: x, kind: threshold, signal: p99_seconds, above: {above},"
                   f" for: {for_}, action: rollback}}\n", "f.yaml")
    [problem] = e.value.problems
    assert (problem.line, problem.field) == (3, f"checks[0].{field}")
