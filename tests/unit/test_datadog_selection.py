"""Datadog chosen like the other metric stores (docs/sources.md): the settings' `source`, a rule file's `source:`,
the site's address and both keys required, the address https (the keys travel in its headers), PromQL `queries:`
refused with their line; each refused with the file, line and field, at `guardian rules check` and at start."""
from __future__ import annotations

import re

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from guardian.api.components import metric_sources
from guardian.cli import app
from guardian.errors import RuleError
from guardian.rules.book import RuleBook
from guardian.settings import Settings, load_settings
from tests.fixtures.env import clean_guardian_env  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("clean_guardian_env")
DD_KEYS = {"datadog_api_key": "dd-api-key-secret-1", "datadog_app_key": "dd-app-key-secret-2"}


@pytest.mark.parametrize(("settings", "says"), [
    ({"source": "datadog"}, "set datadog_url (GUARDIAN_DATADOG_URL)"),
    ({"datadog_url": "https://api.datadoghq.eu"}, "datadog_api_key and datadog_app_key are not: set "
                                                  "GUARDIAN_DATADOG_API_KEY and GUARDIAN_DATADOG_APP_KEY"),
    ({"datadog_url": "https://api.datadoghq.eu", "datadog_api_key": "k" * 10}, "datadog_app_key is not"),
    ({"datadog_url": "api.datadoghq.eu", **DD_KEYS}, "must be an http(s):// URL"),
    ({"datadog_url": "http://api.datadoghq.eu", **DD_KEYS}, "must be https:// (the API keys travel in its headers)"),
    ({"datadog_url": "https://api.datadoghq.eu", "datadog_namespace": "my ns", **DD_KEYS}, "datadog_namespace"),
])
def test_bad_datadog_settings_are_refused(settings, says):
    with pytest.raises(ValidationError, match=re.escape(says)):
        Settings(**settings)


def test_a_settings_file_with_a_malformed_datadog_url_is_refused_with_its_line(tmp_path):
    (tmp_path / "guardian.yaml").write_text("port: 8080\ndatadog_url: http://api.datadoghq.com\n")
    with pytest.raises(RuleError) as e:
        load_settings(tmp_path / "guardian.yaml")
    (p,) = e.value.problems
    assert (p.line, p.field) == (2, "datadog_url") and "must be https://" in p.message


def test_datadog_is_chosen_like_the_others_and_refuses_promql_queries(tmp_path):
    (tmp_path / "checkout.yaml").write_text("service: checkout\nsource: datadog\n")
    with pytest.raises(RuleError) as e:  # no address, no keys: refused with the rule file's line
        metric_sources(Settings(), RuleBook([tmp_path]))
    (p,) = e.value.problems
    assert (p.line, p.field) == (2, "source") and "GUARDIAN_DATADOG_URL" in p.message
    result = CliRunner().invoke(app, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 2 and "checkout.yaml:2: source: datadog has no address" in result.output
    (tmp_path / "checkout.yaml").write_text(
        'service: checkout\nsource: datadog\nqueries:\n  requests: {type: counter, promql: "sum(x)"}\n')
    settings = Settings(datadog_url="https://api.datadoghq.eu", **DD_KEYS)
    with pytest.raises(RuleError) as e:
        metric_sources(settings, RuleBook([tmp_path]))
    (p,) = e.value.problems
    assert (p.line, p.field) == (3, "queries") and "datadog source reads the standard signals only" in p.message
    (tmp_path / "checkout.yaml").write_text("service: checkout\nsource: datadog\n")
    router = metric_sources(settings, RuleBook([tmp_path]))
    assert repr(router.for_service("checkout")) == (
        "BatchingDatadogSource(DatadogSource('https://api.datadoghq.eu', namespace='app'))")
    (tmp_path / "none").mkdir()
    alone = metric_sources(Settings(source="datadog", batch_queries=False, datadog_url="https://api.datadoghq.eu",
                                    **DD_KEYS), RuleBook([tmp_path / "none"])).for_service("payments")
    assert type(alone).__name__ == "DatadogSource"  # the settings' default store, not batched
    assert not any(k in repr(router) + repr(alone) for k in DD_KEYS.values())
