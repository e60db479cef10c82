"""grafana/: the "Release Guardian" dashboard loads, reads the provisioned Prometheus datasource, and
every metric its queries name is one the guardian or the demo app exposes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import Counter, Gauge, Histogram
from ruamel.yaml import YAML

from demo.app import DemoState
from guardian.metrics import GuardianMetrics

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "release-guardian.json"

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers followed by `{` or `[` or bare, not
    functions or aggregations (followed by `(`), keywords, label names (in matchers and by/without/on
    lists), strings, durations or numbers."""
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)  # ranges and subqueries' durations
    expr = _LABEL_LIST.sub(" ", expr)
    names = set()
    for m in _IDENT.finditer(expr):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def test_the_extractor():
    assert metric_names('sum by (track, le) (rate(x_bucket{service=~"$service",le="0.5"}[$__rate_interval]))'
                        ) == {"x_bucket"}
    assert metric_names("a_total - ignoring (le) b{c=\"d\"} or on (x) vector(0) * 2.5e3 > bool 1") == {"a_total", "b"}
    assert metric_names("histogram_quantile(0.99, sum without (code) (rate(h[5m] offset 1h)))") == {"h"}
    assert metric_names("up") == {"up"}


def exercised(metrics_registry_owner) -> set[str]:
    """Every sample name a registry exposes once each of its labelled metrics has a child."""
    for value in vars(metrics_registry_owner).values():
        if isinstance(value, (Counter, Gauge, Histogram)) and value._labelnames:
            child = value.labels(*["x"] * len(value._labelnames))
            (child.observe if isinstance(value, Histogram) else child.inc)(1)
    return {s.name for family in metrics_registry_owner.registry.collect() for s in family.samples}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict):
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])


def _datasource_uid() -> str:
    provisioned = [f for f in (GRAFANA / "provisioning" / "datasources").iterdir() if f.suffix in (".yml", ".yaml")]
    (ds,) = [d for f in provisioned for d in YAML(typ="safe").load(f.read_text())["datasources"]
             if d["type"] == "prometheus"]
    assert ds["url"] == "http://prometheus:9090"
    return ds["uid"]


def test_the_dashboard_loads_and_is_provisioned(dashboard):
    assert dashboard["title"] == "Release Guardian" and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    providers = [p for f in (GRAFANA / "provisioning" / "dashboards").iterdir() if f.suffix in (".yml", ".yaml")
                 for p in YAML(typ="safe").load(f.read_text())["providers"]]
    assert [p["options"]["path"] for p in providers if p["type"] == "file"] == ["/var/lib/grafana/dashboards"]
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"] for p in _panels(dashboard)).lower()
    for wanted in ("rollouts in flight", "error ratio", "slow ratio", "p99", "cpu", "memory", "canary weight",
                   "verdicts by check and result", "decisions by action"):
        assert wanted in titles, wanted


def test_panels_read_the_provisioned_datasource_by_uid(dashboard):
    uid = _datasource_uid()
    for p in _panels(dashboard):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
        assert p["targets"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid and t["expr"], p["title"]
    for v in dashboard["templating"]["list"]:
        assert v["datasource"]["uid"] == uid


def test_the_guardians_annotations_are_shown(dashboard):
    queries = [a for a in dashboard["annotations"]["list"] if not a.get("builtIn")]
    assert any(a["enable"] and a["datasource"]["type"] == "grafana" and a["target"]["type"] == "tags"
               and "guardian" in a["target"]["tags"] for a in queries)


def test_every_metric_queried_is_exposed_by_the_guardian_or_the_demo_app(dashboard):
    exposed = exercised(GuardianMetrics()) | exercised(DemoState())
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= exposed  # prometheus_client's defaults
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    for v in dashboard["templating"]["list"]:
        exprs += [m.group(1) for m in re.finditer(r"label_values\((\w+)", v["definition"])]
    queried = set().union(*(metric_names(e) for e in exprs))
    assert queried >= {"http_requests_total", "http_request_duration_seconds_bucket", "guardian_rollouts",
                       "guardian_rollout_canary_weight", "guardian_verdicts_total", "guardian_decisions_total"}
    assert queried <= exposed, sorted(queried - exposed)


def test_panels_group_the_arms_by_service_and_track(dashboard):
    arms = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", []) if "http_" in t["expr"]
            or "process_" in t["expr"]]
    assert arms and all("track" in e and '$service' in e for e in arms)


def test_the_slow_ratio_uses_the_guardians_latency_objective(dashboard):
    from demo.app import BUCKETS
    from guardian.rules.defaults import SLOW_OBJECTIVE_LE

    (slow,) = [p for p in _panels(dashboard) if p["title"].lower().startswith("slow ratio")]
    assert f'le="{SLOW_OBJECTIVE_LE}"' in slow["targets"][0]["expr"] and float(SLOW_OBJECTIVE_LE) in BUCKETS
