"""`guardian doctor` against every store that is not Prometheus (guardian/sources/doctor_*.py), each a real server as
the sources' own tests start them: VictoriaMetrics and InfluxDB 1.x (Debian's binaries), moto's server (an emulator of
CloudWatch's API) and the Datadog stub (tests/stubs/datadog_stub.py). Through the CLI's `--here` / `--source … --url`
(the settings `guardian serve` reads) and the API: values per signal and arm, `missing` with the store's own reason
(no measurement, metric or series of that name; not this service, listing the ones there are; no arm tag or not its
value; no 0.5 bucket; published with more dimensions; written once, not lately), and a store that refuses or cannot
be reached `unavailable` with exit 2 — never a pass."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from guardian.cli import app
from tests.fixtures.influx import InfluxDBServer

pytestmark = pytest.mark.integration


def doctor(*args: str, **env: str) -> tuple[int, dict[str, Any] | None, str]:
    """`guardian doctor ARGS --json` with these GUARDIAN_* settings only (and the built-in policy: no rule files)."""
    settings = {"GUARDIAN_RULES": "[]", "GUARDIAN_DB_PATH": "/nonexistent/never-opened.db", **env}
    result = CliRunner().invoke(app, ["doctor", *args], env={"COLUMNS": "250", **settings})
    try:
        report = json.loads(result.stdout) if "--json" in args else None
    except ValueError:
        report = None
    return result.exit_code, report, result.output


def findings(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(f["signal"], f["arm"]): f for f in report["findings"]}


# -- InfluxDB 1.x -----------------------------------------------------------------------------------------------------
def line(measurement: str, tags: dict[str, str], fields: dict[str, float], at: float) -> str:
    tag_text = "".join(f",{k}={v}" for k, v in sorted(tags.items()))
    return f"{measurement}{tag_text} {','.join(f'{k}={v!r}' for k, v in fields.items())} {int(at * 1e9)}"


def test_influxdb_values_and_why_not_in_its_own_terms(tmp_path: Path) -> None:
    influx = InfluxDBServer(tmp_path).start()
    try:
        for db in ("telegraf", "empty"):
            influx.query(f'CREATE DATABASE "{db}"')
        now, points = time.time(), []
        base = {"service": "checkout", "track": "baseline"}
        for at, n in ((now - 40, 100.0), (now - 2, 160.0)):  # Telegraf's layout: a counter's value in `counter`
            points += [line("http_requests_total", {**base, "code": "200"}, {"counter": n}, at),
                       line("http_request_duration_seconds", base,  # a histogram without the 0.5 bucket
                            {"0.1": n * 0.9, "1": n, "+Inf": n, "count": n, "sum": n * 0.05}, at),
                       line("process_resident_memory_bytes", base, {"gauge": 5e7}, at),
                       line("http_requests_total", {"service": "untracked", "code": "200"}, {"counter": n}, at)]
        points.append(line("http_requests_total", {"service": "old", "track": "baseline", "code": "200"},
                           {"counter": 5.0}, now - 900))  # written once, 15 min ago
        r = httpx.post(f"{influx.url}/write", params={"db": "telegraf"}, content="\n".join(points).encode(), timeout=10)
        assert r.status_code == 204, r.text
        here = ("--source", "influxdb", "--url", influx.url, "--window", "30", "--json")

        code, report, out = doctor("checkout", *here)
        assert code == 1 and report is not None, out
        assert report["store"] == f"InfluxDB at {influx.url}, database telegraf"
        f = findings(report)
        assert f[("requests", "baseline")]["status"] == "ok" and f[("requests", "baseline")]["value"] == 60.0
        assert f[("errors", "baseline")]["value"] == 0.0  # answered, never failed
        assert f[("memory_bytes", "baseline")]["status"] == "ok"
        canary = f[("requests", "canary")]
        assert canary["blocking"]
        assert 'has track="canary" (the canary); its track values: "baseline"' in canary["detail"]
        slow = f[("slow", "baseline")]
        assert slow["blocking"] and 'no le="0.5" bucket (its buckets: "0.1", "1", "+Inf")' in slow["detail"], slow
        assert "reads that bucket only" in slow["detail"]  # no `queries:` override for this store

        f = findings(doctor("shop", *here)[1] or {})
        assert 'no http_requests_total series has service="shop"; the services that have it: "checkout", "old", ' \
               '"untracked"' in f[("requests", "baseline")]["detail"]
        f = findings(doctor("untracked", *here)[1] or {})
        assert "have no `track` tag to tell the arms apart (their tags: code, service)" in \
               f[("requests", "baseline")]["detail"]
        f = findings(doctor("old", *here)[1] or {})
        assert "is 15 min old, older than the 300 s a tick looks back" in f[("requests", "baseline")]["detail"]
        f = findings(doctor("checkout", *here, GUARDIAN_INFLUXDB_DATABASE="empty")[1] or {})
        assert "database 'empty' holds no measurement at all" in f[("requests", "baseline")]["detail"]

        code, _, out = doctor("checkout", "--source", "influxdb", "--url", influx.url)  # the same, for people
        assert code == 1 and "InfluxDB at" in out and "would be refused" in out, out
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "checkout.yaml").write_text("service: checkout\nsource: influxdb\n")
        code, report, out = doctor("checkout", "--url", influx.url, "--rules", str(tmp_path / "rules"), "--json",
                                   GUARDIAN_SOURCE="prometheus")  # --url is the address of the store it is read from
        assert code != 2 and report is not None and report["store"].startswith(f"InfluxDB at {influx.url}"), out
    finally:
        influx.stop()
    code, report, _ = doctor("checkout", *here)  # stopped: unavailable, exit 2, never a pass
    assert code == 2 and report is not None and not report["blocking"]
    assert {f["status"] for f in report["findings"]} == {"unavailable"}
    assert "InfluxDB at" in report["findings"][0]["detail"] and "unavailable" in report["findings"][0]["detail"]


def test_influxdb_refusing_the_credentials_is_unavailable_exit_2(tmp_path: Path) -> None:
    influx = InfluxDBServer(tmp_path, auth=True).start()
    try:
        assert influx.query("CREATE USER admin WITH PASSWORD 's3cret' WITH ALL PRIVILEGES").status_code == 200
        code, report, out = doctor("checkout", "--here", "--json", GUARDIAN_SOURCE="influxdb",
                                   GUARDIAN_INFLUXDB_URL=influx.url, GUARDIAN_INFLUXDB_USERNAME="admin",
                                   GUARDIAN_INFLUXDB_PASSWORD="wrong")
        assert code == 2 and report is not None, out
        assert "refused the credentials (HTTP 401)" in report["findings"][0]["detail"]
        assert "wrong" not in out and "s3cret" not in out
    finally:
        influx.stop()


# -- CloudWatch (moto's server, an emulator) ------------------------------------------------------------------------
def test_cloudwatch_values_and_why_not_from_list_metrics(tmp_path: Path) -> None:
    from tests.fixtures.cloudwatch import CREDENTIALS, REGION, CloudWatchEmulator, aws_environment, put_arm

    em = CloudWatchEmulator().start()
    try:
        c = em.client()
        minute = math.floor(time.time() / 60) * 60
        for at in (minute - 30, minute + 30):  # the last whole minute, and the next should it begin meanwhile
            put_arm(c, "checkout", "baseline", at, requests=40, errors=2, latencies={0.01: 38, 0.7: 2}, memory=5e7)
        for at in (minute - 30, minute + 30):  # as checkout's: a point in the last minute, whenever it runs
            put_arm(c, "billing", "baseline", at, requests=5)
        # the right dimensions, and a Host among them:
        c.put_metric_data(Namespace="ReleaseGuardian", MetricData=[{
            "MetricName": "RequestCount", "Value": 5.0, "Unit": "Count", "Dimensions": [
                {"Name": "Service", "Value": "hosted"}, {"Name": "Track", "Value": "baseline"},
                {"Name": "Host", "Value": "i-1"}]}])
        settings = {**CREDENTIALS, "GUARDIAN_SOURCE": "cloudwatch", "GUARDIAN_CLOUDWATCH_REGION": REGION,
                    "GUARDIAN_CLOUDWATCH_ENDPOINT_URL": em.url}
        with aws_environment():
            code, report, out = doctor("checkout", "--here", "--window", "60", "--json", **settings)
            assert code == 1 and report is not None, out
            f = findings(report)
            assert f[("requests", "baseline")]["value"] == 40 and f[("errors", "baseline")]["value"] == 2
            assert f[("slow", "baseline")]["value"] == 2 and f[("p99_seconds", "baseline")]["value"] == 0.7
            assert 'no RequestCount metric with Service="checkout" has Track="canary" (the canary); its Track ' \
                   'values: "baseline"' in f[("requests", "canary")]["detail"]
            f = findings(doctor("shop", "--here", "--json", **settings)[1] or {})
            assert 'the services that publish it: "billing", "checkout", "hosted"' in \
                   f[("requests", "baseline")]["detail"]
            f = findings(doctor("billing", "--here", "--json", **settings)[1] or {})
            assert f[("slow", "baseline")]["blocking"] and f[("requests", "baseline")]["status"] == "ok"
            assert 'no Latency metric has Service="billing"; the services that publish it: "checkout"' in \
                   f[("slow", "baseline")]["detail"]
            f = findings(doctor("hosted", "--here", "--json", **settings)[1] or {})
            assert "published only with the dimensions Host, Service, Track" in f[("requests", "baseline")]["detail"]
            f = findings(doctor("checkout", "--here", "--json", GUARDIAN_CLOUDWATCH_NAMESPACE="Other", **settings)[1]
                         or {})
            assert "no metric RequestCount in namespace Other (" in f[("requests", "baseline")]["detail"]
            assert "its metrics: none)" in f[("requests", "baseline")]["detail"]
            em.require_auth()  # from now on moto checks signatures: an unknown key is refused
            code, report, out = doctor("checkout", "--here", "--json", **{
                **settings, "AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000", "AWS_SECRET_ACCESS_KEY": "wrong-secret-12"})
        assert code == 2 and report is not None, out
        assert "refused the credentials (InvalidClientTokenId" in report["findings"][0]["detail"]
        assert "wrong-secret-12" not in out
    finally:
        em.stop()


# -- Datadog (a stub of its API) --------------------------------------------------------------------------------------
def test_datadog_values_and_why_not_saying_what_was_asked() -> None:
    from tests.stubs.datadog_stub import COUNT, GAUGE, DatadogStub

    with DatadogStub() as stub:
        now = time.time()
        for service, buckets in (("checkout", ("0.1", "0.5", "1.0")), ("shop", ("0.1", "0.25", "1.0"))):
            tags = [f"service:{service}", "track:baseline"]
            stub.add("app.http_requests.count", COUNT, [*tags, "code:200"], [(now - 20, 30.0), (now - 5, 10.0)])
            for le in buckets:
                stub.add("app.http_request_duration_seconds.bucket", COUNT, [*tags, f"upper_bound:{le}"],
                         [(now - 5, 40.0)])
            stub.add("app.http_request_duration_seconds.count", COUNT, tags, [(now - 5, 40.0)])
            stub.add("app.process_resident_memory_bytes", GAUGE, tags, [(now - 5, 5e7)])
        settings = {"GUARDIAN_SOURCE": "datadog", "GUARDIAN_DATADOG_URL": stub.url,
                    "GUARDIAN_DATADOG_API_KEY": stub.api_key, "GUARDIAN_DATADOG_APP_KEY": stub.app_key}
        code, report, out = doctor("checkout", "--here", "--window", "30", "--json", **settings)
        assert code == 1 and report is not None, out
        f = findings(report)
        assert f[("requests", "baseline")]["value"] == 40 and f[("slow", "baseline")]["value"] == 0
        assert "no app.http_requests.count series with service:checkout has track:canary (the canary)" in \
               f[("requests", "canary")]["detail"]
        assert "asked: `sum:app.http_requests.count{service:checkout} by {track}.as_count()`" in \
               f[("requests", "canary")]["detail"]
        f = findings(doctor("shop", "--here", "--json", **settings)[1] or {})
        assert 'no upper_bound:0.5 bucket (its buckets: "0.1", "0.25", "1.0")' in f[("slow", "baseline")]["detail"]
        f = findings(doctor("billing", "--here", "--json", **settings)[1] or {})
        assert 'the services that have it: "checkout", "shop"' in f[("requests", "baseline")]["detail"]
        f = findings(doctor("checkout", "--here", "--json", **settings, GUARDIAN_DATADOG_NAMESPACE="web")[1] or {})
        assert "Datadog has no web.http_requests.count series" in f[("requests", "baseline")]["detail"]
        code, report, out = doctor("checkout", "--here", "--json", **{**settings,
                                                                       "GUARDIAN_DATADOG_APP_KEY": "not-the-key"})
        assert code == 2 and report is not None and "Datadog refused the keys: HTTP 403" in \
               report["findings"][0]["detail"], out
        assert "not-the-key" not in out and stub.api_key not in out


# -- VictoriaMetrics, a store that is not configured, the API and the preflight ---------------------------------------
def test_victoriametrics_through_the_settings_names_itself(tmp_path: Path) -> None:
    """Its diagnosis is Prometheus's (tests/integration/test_doctor.py), in its own name."""
    from demo.stack import VictoriaMetricsServer

    vm = VictoriaMetricsServer([], "1s", workdir=tmp_path).start()  # scraping nothing yet
    try:
        code, report, out = doctor("checkout", "--source", "victoriametrics", "--url", vm.url, "--json")
        assert code == 1 and report is not None and report["store"] == f"VictoriaMetrics at {vm.url}", out
        assert report["notes"] == []  # the fixture runs it with -search.latencyOffset=0s
        assert "VictoriaMetrics has no series named http_requests_total at all" in \
               findings(report)[("requests", "canary")]["detail"]
    finally:
        vm.stop()


def test_a_store_that_does_not_answer_is_exit_2_not_every_signal_there() -> None:
    """It was exit 0, "every signal a check needs is there", with every finding unavailable."""
    code, report, out = doctor("checkout", "--prometheus-url", "http://127.0.0.1:9", "--json")
    assert code == 2 and report is not None and {f["status"] for f in report["findings"]} == {"unavailable"}, out
    code, _, out = doctor("checkout", "--prometheus-url", "http://127.0.0.1:9")
    assert code == 2 and "could not be asked" in out and "every signal a check needs is there" not in out


def test_a_service_whose_store_is_not_configured_is_unavailable() -> None:
    from guardian.engine.preflight import checkup
    from guardian.rules.book import RuleBook
    from guardian.sources.prometheus import PrometheusSource
    from guardian.sources.router import SourceRouter

    router = SourceRouter({"prometheus": PrometheusSource("http://127.0.0.1:9")}, lambda service: "influxdb")
    report = checkup(RuleBook([]), router, "checkout", time.time())
    assert report["unavailable"] and not report["blocking"]
    assert "which is not configured (set GUARDIAN_INFLUXDB_URL)" in report["findings"][0]["detail"]


def test_the_api_and_the_preflight_examine_influxdb(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from guardian.api.app import create_app
    from guardian.api.components import build
    from guardian.settings import Settings

    influx = InfluxDBServer(tmp_path).start()
    try:
        influx.query('CREATE DATABASE "telegraf"')
        now = time.time()
        r = httpx.post(f"{influx.url}/write", params={"db": "telegraf"}, content=line(
            "http_requests_total", {"service": "checkout", "track": "canary"}, {"counter": 1.0}, now - 1).encode())
        assert r.status_code == 204
        s = Settings(db_path=str(tmp_path / "g.db"), rules=[], recordings_dir="", source="influxdb",
                     influxdb_url=influx.url)
        c = build(s)
        with TestClient(create_app(c, run_scheduler=False)) as client:
            r = client.get("/v1/services/checkout/doctor", params={"window": 5})  # was 409: "cannot be examined"
            assert r.status_code == 200 and r.json()["blocking"] is True, r.text
            assert r.json()["store"].startswith("InfluxDB at")
            r = client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:v2"})
            assert r.status_code == 422 and r.json()["error"] == "missing_metrics", r.text
            fields = {d["field"]: d["message"] for d in r.json()["detail"]}
            assert 'has track="baseline" (the baseline); its track values: "canary"' in fields["requests (baseline)"]
            assert c.store.list() == []
    finally:
        influx.stop()
