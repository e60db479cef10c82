"""Which metric store a service's signals come from: the rule file's `source:`, else the settings' `source`; a store
without an address is refused with the file, line and field; the router hands each fetch to its service's store."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from guardian.api.components import metric_sources
from guardian.cli import app
from guardian.domain import SignalType
from guardian.errors import RuleError, SourceUnavailable
from guardian.rules.book import RuleBook
from guardian.settings import Settings
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.batching import BatchingSource
from guardian.sources.router import SourceRouter
from guardian.sources.victoriametrics import VictoriaMetricsSource
from tests.fixtures.env import clean_guardian_env  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("clean_guardian_env")
Q = SignalQuery("requests", SignalType.COUNTER, "x")


def _rules(tmp_path: Path, **services: str | None) -> Path:
    for name, source in services.items():
        (tmp_path / f"{name}.yaml").write_text(f"service: {name}\n" + (f"source: {source}\n" if source else ""))
    return tmp_path


def test_a_rule_file_naming_a_store_without_an_address_is_refused_with_its_line(tmp_path):
    rules = _rules(tmp_path, checkout="victoriametrics", payments=None)
    with pytest.raises(RuleError) as e:
        metric_sources(Settings(), RuleBook([rules]))
    (p,) = e.value.problems
    assert (Path(p.file).name, p.line, p.field) == ("checkout.yaml", 2, "source")
    assert "GUARDIAN_VICTORIAMETRICS_URL" in p.message
    result = CliRunner().invoke(app, ["rules", "check", str(rules)])
    assert result.exit_code == 2 and "checkout.yaml:2: source: victoriametrics has no address" in result.output


def test_an_unknown_store_is_refused_by_rules_check(tmp_path):
    (tmp_path / "c.yaml").write_text("service: c\nsource: influxdb2\n")
    result = CliRunner().invoke(app, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 2 and "c.yaml:2: source:" in result.output and "victoriametrics" in result.output


@pytest.mark.parametrize(("env", "says"), [
    ({"GUARDIAN_DATADOG_URL": "http://example.com", "GUARDIAN_DATADOG_API_KEY": "k", "GUARDIAN_DATADOG_APP_KEY": "a"},
     "(settings):1: datadog_url: datadog_url must be https://"),
    ({"GUARDIAN_SOURCE": "cloudwatch"}, "source is cloudwatch: set cloudwatch_region"),
    ({"GUARDIAN_INFLUXDB_URL": "influx:8086"}, "(settings):1: influxdb_url:"),
])
def test_rules_check_refuses_the_store_settings_serve_would_refuse(tmp_path, monkeypatch, env, says):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["rules", "check", str(_rules(tmp_path, checkout=None))])
    assert result.exit_code == 2 and says in result.output, result.output


def test_rules_check_leaves_other_settings_problems_to_serve(tmp_path, monkeypatch):
    monkeypatch.setenv("GUARDIAN_PORT", "not-a-port")
    result = CliRunner().invoke(app, ["rules", "check", str(_rules(tmp_path, checkout=None))])
    assert result.exit_code == 0 and result.output.startswith("ok:"), result.output


@pytest.mark.parametrize(("settings", "says"), [
    ({"victoriametrics_url": "localhost:8428"}, "must be an http(s):// URL"),
    ({"source": "victoriametrics"}, "set victoriametrics_url"),
])
def test_bad_store_settings_are_refused(settings, says):
    with pytest.raises(ValidationError, match=says.replace("(", r"\(").replace(")", r"\)")):
        Settings(**settings)


def test_each_service_is_read_from_its_rule_files_store_or_the_default(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = metric_sources(Settings(), RuleBook([_rules(tmp_path / "a", payments=None)]))
    assert isinstance(one, SourceRouter) and list(one.sources) == ["prometheus"]
    assert isinstance(one.for_service("payments"), BatchingSource)
    both = metric_sources(Settings(victoriametrics_url="http://127.0.0.1:8428"),
                          RuleBook([_rules(tmp_path / "b", checkout="victoriametrics", payments=None)]))
    assert isinstance(both, SourceRouter) and set(both.sources) == {"prometheus", "victoriametrics"}
    assert isinstance(both.for_service("checkout").inner, VictoriaMetricsSource)
    assert type(both.for_service("payments").inner).__name__ == "PrometheusSource"
    assert type(both.for_service("no-rule-file").inner).__name__ == "PrometheusSource"  # the settings' default


class _Fake:
    def __init__(self, value: float) -> None:
        self.value, self.planned, self.closed = value, [], False

    def fetch(self, query, service, arm, start, end) -> float:
        return self.value

    def plan(self, requests) -> None:
        self.planned += list(requests)

    def ping(self) -> bool:
        return self.value > 0

    def close(self) -> None:
        self.closed = True


def test_the_router_hands_each_fetch_and_plan_to_its_services_store():
    prom, vm = _Fake(1.0), _Fake(2.0)
    r = SourceRouter({"prometheus": prom, "victoriametrics": vm},
                     lambda s: {"checkout": "victoriametrics", "lost": "influxdb"}.get(s, "prometheus"))
    arm = ArmSelector("canary")
    assert (r.fetch(Q, "checkout", arm, 0, 10), r.fetch(Q, "payments", arm, 0, 10)) == (2.0, 1.0)
    r.plan([(Q, "checkout", arm, 0, 10), (Q, "payments", arm, 0, 10), (Q, "lost", arm, 0, 10)])
    assert [x[1] for x in vm.planned] == ["checkout"] and [x[1] for x in prom.planned] == ["payments"]
    with pytest.raises(SourceUnavailable, match="not configured"):  # unavailable, never "no data"
        r.fetch(Q, "lost", arm, 0, 10)
    assert r.ping()
    r.close()
    assert prom.closed and vm.closed


def test_a_rule_file_reloaded_with_another_store_is_read_from_it_or_unavailable(tmp_path):
    rules = _rules(tmp_path, checkout=None)
    book = RuleBook([rules])
    router = metric_sources(Settings(), book)
    assert type(router.for_service("checkout").inner).__name__ == "PrometheusSource"
    _rules(tmp_path, checkout="victoriametrics")
    assert book.reload() == []
    with pytest.raises(SourceUnavailable, match="GUARDIAN_VICTORIAMETRICS_URL"):
        router.fetch(Q, "checkout", ArmSelector("canary"), 0, 10)  # never read from the wrong store


def test_influxdb_is_chosen_like_the_others_and_refuses_promql_queries(tmp_path):
    with pytest.raises(ValidationError, match="set influxdb_url"):
        Settings(source="influxdb")
    with pytest.raises(ValidationError, match="must be an http"):
        Settings(influxdb_url="127.0.0.1:8086")
    (tmp_path / "checkout.yaml").write_text(
        'service: checkout\nsource: influxdb\nqueries:\n  requests: {type: counter, promql: "sum(x)"}\n')
    settings = Settings(influxdb_url="http://127.0.0.1:8086", influxdb_username="telegraf",
                        influxdb_password="pw-secret")
    with pytest.raises(RuleError) as e:
        metric_sources(settings, RuleBook([tmp_path]))
    (p,) = e.value.problems
    assert (p.line, p.field) == (3, "queries") and "standard signals only" in p.message
    (tmp_path / "checkout.yaml").write_text("service: checkout\nsource: influxdb\n")
    router = metric_sources(settings, RuleBook([tmp_path]))
    assert set(router.sources) == {"prometheus", "influxdb"}
    assert repr(router.for_service("checkout")) == (  # batched (settings' batch_queries)
        "BatchingInfluxDBSource(InfluxDBSource('http://127.0.0.1:8086', database='telegraf'))")
    assert "pw-secret" not in repr(router)
