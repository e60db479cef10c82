"""CloudWatch chosen like the other stores (the settings' `source`, a rule file's `source:`), configured by its region:
without one, with a malformed region or endpoint, it is refused with the file, line and field at `guardian rules check`
and at start; the PromQL `queries:` of a cloudwatch service are refused with their line; the secret key never shows."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from guardian.api.components import metric_sources
from guardian.cli import app
from guardian.errors import RuleError
from guardian.redact import redact_text
from guardian.rules.book import RuleBook
from guardian.settings import Settings, load_settings
from guardian.sources.cloudwatch import CloudWatchSource
from tests.fixtures.env import clean_guardian_env  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("clean_guardian_env")


@pytest.mark.parametrize(("settings", "says"), [
    ({"source": "cloudwatch"}, "source is cloudwatch: set cloudwatch_region"),
    ({"cloudwatch_region": "Ireland"}, "is not an AWS region name"),
    ({"cloudwatch_region": "eu-west-1", "cloudwatch_endpoint_url": "localhost:4566"}, "must be an http"),
    ({"cloudwatch_endpoint_url": "http://127.0.0.1:4566"}, "cloudwatch_region is not"),
    ({"cloudwatch_region": "eu-west-1", "cloudwatch_namespace": "AWS/ApplicationELB"}, "AWS's own"),
])
def test_bad_cloudwatch_settings_are_refused(settings, says):
    with pytest.raises(ValidationError, match=says):
        Settings(**settings)


def test_a_settings_file_with_a_bad_region_is_refused_with_its_line(tmp_path):
    config = tmp_path / "guardian.yaml"
    config.write_text("source: cloudwatch\ncloudwatch_region: eu-west\n")
    with pytest.raises(RuleError) as e:
        load_settings(config)
    (p,) = e.value.problems
    assert (p.line, p.field) == (2, "cloudwatch_region") and "not an AWS region name" in p.message


def test_a_rule_file_naming_cloudwatch_without_a_region_is_refused_with_its_line(tmp_path):
    (tmp_path / "checkout.yaml").write_text("service: checkout\nsource: cloudwatch\n")
    with pytest.raises(RuleError) as e:
        metric_sources(Settings(), RuleBook([tmp_path]))
    (p,) = e.value.problems
    assert (Path(p.file).name, p.line, p.field) == ("checkout.yaml", 2, "source")
    assert "GUARDIAN_CLOUDWATCH_REGION" in p.message
    result = CliRunner().invoke(app, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 2 and "checkout.yaml:2: source: cloudwatch has no region" in result.output


def test_promql_queries_for_a_cloudwatch_service_are_refused_with_their_line(tmp_path, monkeypatch):
    (tmp_path / "checkout.yaml").write_text(
        'service: checkout\nsource: cloudwatch\nqueries:\n  requests: {type: counter, promql: "sum(x)"}\n')
    with pytest.raises(RuleError) as e:
        metric_sources(Settings(cloudwatch_region="eu-west-1"), RuleBook([tmp_path]))
    (p,) = e.value.problems
    assert (p.line, p.field) == (3, "queries") and "cloudwatch source reads the standard signals only" in p.message
    monkeypatch.setenv("GUARDIAN_CLOUDWATCH_REGION", "eu-west-1")
    result = CliRunner().invoke(app, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 2 and "checkout.yaml:3: queries:" in result.output


def test_cloudwatch_is_read_for_its_services_and_the_secret_key_is_never_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY")
    (tmp_path / "checkout.yaml").write_text("service: checkout\nsource: cloudwatch\n")
    (tmp_path / "payments.yaml").write_text("service: payments\n")
    router = metric_sources(Settings(cloudwatch_region="eu-west-1", cloudwatch_endpoint_url="http://127.0.0.1:4566",
                                     cloudwatch_namespace="Shop/Checkout"), RuleBook([tmp_path]))
    assert set(router.sources) == {"prometheus", "cloudwatch"}
    cloudwatch = router.for_service("checkout")
    assert isinstance(cloudwatch, CloudWatchSource) and cloudwatch.namespace == "Shop/Checkout"
    assert type(router.for_service("payments").inner).__name__ == "PrometheusSource"
    assert repr(cloudwatch) == "CloudWatchSource('http://127.0.0.1:4566', namespace='Shop/Checkout')"
    assert "EXAMPLEKEY" not in repr(router)
    # building it registered the secret key: a message quoting it is masked in every log line
    assert redact_text("signature for wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY") == "signature for ***"
    everywhere = metric_sources(Settings(source="cloudwatch", cloudwatch_region="eu-west-1"), RuleBook([tmp_path]))
    assert isinstance(everywhere.for_service("no-rule-file"), CloudWatchSource)  # the settings' default store
    assert everywhere.for_service("checkout").where == "region eu-west-1"
