"""Settings: defaults, a YAML config file, GUARDIAN_* environment variables on top, unsafe combinations refused."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from guardian.errors import RuleError
from guardian.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """The developer's or CI's own GUARDIAN_* variables must not leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("GUARDIAN_"):
            monkeypatch.delenv(name)


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "guardian.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refused(*args, **kwargs) -> list[str]:
    with pytest.raises(RuleError) as err:
        load_settings(*args, **kwargs)
    return [str(p) for p in err.value.problems]


def test_defaults():
    s = load_settings()
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.token is None
    assert s.prometheus_url == "http://127.0.0.1:9090"
    assert s.rules == ["rules"]
    assert s.steps == [10, 25, 50, 100]
    assert s.tick_seconds == 10.0
    assert s.evaluation_delay == 1.0
    assert s.analysis_seconds == 60.0
    assert s.default_target == "noop"
    assert s.on_inconclusive == "pause"


def test_config_file_values(tmp_path):
    path = config(tmp_path, """\
        # a comment
        port: 9000
        prometheus_url: http://prom.internal:9090
        rules: [a, b]
        tick_seconds: 5
        evaluation_delay: 0.5
        steps: [5, 50, 100]
        on_inconclusive: continue
        """)
    s = load_settings(path)
    assert s.port == 9000
    assert s.prometheus_url == "http://prom.internal:9090"
    assert s.rules == ["a", "b"]
    assert (s.tick_seconds, s.evaluation_delay) == (5.0, 0.5)
    assert s.steps == [5, 50, 100]
    assert s.on_inconclusive == "continue"
    assert s.host == "127.0.0.1"  # untouched settings keep their defaults


def test_empty_config_file_means_defaults(tmp_path):
    assert load_settings(config(tmp_path, "")).port == 8080


def test_overrides_beat_the_file(tmp_path):
    path = config(tmp_path, "port: 9000\nprometheus_url: http://a:9090\n")
    s = load_settings(path, port=9100, prometheus_url=None)  # None: the option was not given
    assert s.port == 9100
    assert s.prometheus_url == "http://a:9090"


def test_environment_beats_the_file(tmp_path, monkeypatch):
    path = config(tmp_path, "port: 9000\ntick_seconds: 5\n")
    monkeypatch.setenv("GUARDIAN_PORT", "7000")
    monkeypatch.setenv("GUARDIAN_PROMETHEUS_URL", "http://env:9090")
    monkeypatch.setenv("GUARDIAN_STEPS", "[20, 100]")
    s = load_settings(path)
    assert s.port == 7000
    assert s.prometheus_url == "http://env:9090"
    assert s.steps == [20, 100]
    assert s.tick_seconds == 5.0  # not set in the environment: the file's value stays


def test_command_line_flags_beat_the_environment(tmp_path, monkeypatch):
    path = config(tmp_path, "port: 9000\n")
    monkeypatch.setenv("GUARDIAN_PORT", "7000")
    assert load_settings(path, port=9100).port == 9100
    assert load_settings(path, port=None).port == 7000


def test_token_from_environment_is_secret(monkeypatch):
    monkeypatch.setenv("GUARDIAN_TOKEN", "s3cret")
    s = load_settings()
    assert s.token is not None and s.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)


def test_unknown_setting_names_file_line_and_field(tmp_path):
    path = config(tmp_path, """\
        port: 9000
        # comment
        colour: red
        """)
    assert refused(path) == [f"{path}:3: colour: unknown setting"]


def test_wrong_type_names_file_line_and_field(tmp_path):
    path = config(tmp_path, "host: 127.0.0.1\nport: lots\n")
    [problem] = refused(path)
    assert problem.startswith(f"{path}:2: port: ")
    assert "integer" in problem


def test_every_bad_setting_is_reported(tmp_path):
    path = config(tmp_path, "colour: red\nport: lots\n")
    problems = refused(path)
    assert len(problems) == 2
    assert any(p.startswith(f"{path}:1: colour:") for p in problems)
    assert any(p.startswith(f"{path}:2: port:") for p in problems)


def test_malformed_config_file(tmp_path):
    path = config(tmp_path, "port: 9000\nsteps: [10, 20\n")
    [problem] = refused(path)
    assert problem.startswith(f"{path}:")
    assert "(yaml): malformed YAML" in problem


def test_config_file_must_be_a_mapping(tmp_path):
    path = config(tmp_path, "- port\n- 9000\n")
    assert refused(path) == [f"{path}:1: (file): a config file is a mapping of setting: value"]


def test_missing_config_file(tmp_path):
    [problem] = refused(tmp_path / "nope.yaml")
    assert "(file): cannot read" in problem


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "guardian.example.com"])
def test_listening_beyond_loopback_without_a_token_is_refused(host):
    [problem] = refused(host=host)
    assert "refusing to listen" in problem
    assert host in problem


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_token(host):
    assert load_settings(host=host).host == host


def test_listening_beyond_loopback_with_a_token(monkeypatch):
    monkeypatch.setenv("GUARDIAN_TOKEN", "s3cret")
    assert load_settings(host="0.0.0.0").host == "0.0.0.0"


def test_unsafe_host_in_environment_is_refused(monkeypatch):
    monkeypatch.setenv("GUARDIAN_HOST", "0.0.0.0")
    with pytest.raises(ValueError, match="refusing to listen"):
        Settings()


@pytest.mark.parametrize(("delay", "tick"), [(10, 10), (11, 10), (2, 1)])
def test_evaluation_delay_must_be_shorter_than_the_tick(tmp_path, delay, tick):
    path = config(tmp_path, f"tick_seconds: {tick}\nevaluation_delay: {delay}\n")
    [problem] = refused(path)
    assert "evaluation_delay" in problem and "tick_seconds" in problem


def test_evaluation_delay_shorter_than_the_tick_is_fine(tmp_path):
    s = load_settings(config(tmp_path, "tick_seconds: 2\nevaluation_delay: 1.5\n"))
    assert (s.tick_seconds, s.evaluation_delay) == (2.0, 1.5)


@pytest.mark.parametrize("steps", ["[]", "[0, 50, 100]", "[10, 150]", "[50, 10, 100]", "[-5, 100]",
                                   "[10, 10, 100]"])
def test_bad_steps_are_refused(tmp_path, steps):
    path = config(tmp_path, f"steps: {steps}\n")
    [problem] = refused(path)
    assert "steps" in problem


def test_bad_steps_in_environment_are_refused(monkeypatch):
    monkeypatch.setenv("GUARDIAN_STEPS", "[50, 10]")
    assert any("steps" in p for p in refused())


@pytest.mark.parametrize(("setting", "value"), [("tick_seconds", 0.1), ("port", 70000), ("prometheus_timeout", 0),
                                                ("on_inconclusive", "ignore")])
def test_out_of_range_values_are_refused(tmp_path, setting, value):
    path = config(tmp_path, f"{setting}: {value}\n")
    [problem] = refused(path)
    assert problem.startswith(f"{path}:1: {setting}: ")
