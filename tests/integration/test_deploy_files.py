"""The shipped deployment files are valid and fit together: promtool accepts the Prometheus config and
the alert rules (and their unit tests pass), amtool accepts the Alertmanager config and routes service
alerts to the guardian, docker-compose accepts docker-compose.yml, every host Prometheus scrapes is one
of its services, every file it mounts exists, every service has a healthcheck and waits for what it
needs to be healthy, and nothing listens beyond loopback. (tests/integration/test_compose_stack.py
starts the stack for real.)"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.integration.conftest import REPO, free_port

DEPLOY = REPO / "deploy"
SERVICES = {"guardian", "prometheus", "alertmanager", "grafana", "nginx", "checkout-baseline", "checkout-canary"}
# service -> the services it must wait for, healthy
NEEDS = {"guardian": {"prometheus"}, "alertmanager": {"guardian"}, "grafana": {"prometheus"},
         "nginx": {"checkout-baseline", "checkout-canary"}}
OFFICIAL = {"prometheus": "prom/prometheus:", "alertmanager": "prom/alertmanager:", "grafana": "grafana/grafana:",
            "nginx": "nginx:"}
TOKENS = {"GUARDIAN_TOKEN": "test-operator-token", "GUARDIAN_ALERTS_TOKEN": "test-alertmanager-token"}


def tool(*names: str, package: str) -> str:
    for name in names:
        if path := shutil.which(name):
            return path
    pytest.skip(f"{names[0]} is not installed (scripts/test.sh installs Debian's '{package}')")


def run(*cmd: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd, env=env)


def yaml_file(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as the file says it (YAML anchors and merge keys resolved)."""
    return yaml_file(REPO / "docker-compose.yml")


def compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "COMPOSE_"))}
    return env | TOKENS | extra


# -- Prometheus --------------------------------------------------------------------------------------
def test_promtool_accepts_the_prometheus_config():
    promtool = tool("promtool", package="prometheus")
    result = run(promtool, "check", "config", str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr  # rule_files resolves to alert-rules.yml


def test_promtool_accepts_the_alert_rules_and_their_unit_tests_pass():
    promtool = tool("promtool", package="prometheus")
    result = run(promtool, "check", "rules", str(DEPLOY / "alert-rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # fires after 30 s of >5% canary errors, not on 2% nor on a trickle nor on the baseline; P99 > 1 s warns
    result = run(promtool, "test", "rules", "alert-rules.test.yml", cwd=DEPLOY)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_carry_what_the_guardian_routes_on():
    rules = {r["alert"]: r for g in yaml_file(DEPLOY / "alert-rules.yml")["groups"] for r in g["rules"]}
    error = rules["CheckoutCanaryHighErrorRate"]
    assert error["labels"] == {"severity": "critical", "service": "checkout", "track": "canary"}
    assert error["for"] == "30s" and "> 0.05" in error["expr"]
    latency = rules["CheckoutCanaryHighLatency"]
    assert latency["labels"] == {"severity": "warning", "service": "checkout", "track": "canary"}
    assert "histogram_quantile(0.99" in latency["expr"] and ") > 1" in latency["expr"]


def test_prometheus_scrapes_the_compose_services_and_alerts_to_alertmanager(compose):
    prom = yaml_file(DEPLOY / "prometheus.yml")
    services = set(compose["services"])
    hosts = {t.split(":")[0] for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert hosts <= services, f"scraped but not in compose: {hosts - services}"
    arms = {(sc["labels"]["track"], t) for job in prom["scrape_configs"] for sc in job["static_configs"]
            if "labels" in sc for t in sc["targets"]}
    assert arms == {("baseline", "checkout-baseline:8000"), ("canary", "checkout-canary:8000")}
    assert all(sc["labels"]["service"] == "checkout" for job in prom["scrape_configs"]
               for sc in job["static_configs"] if "labels" in sc)
    assert {"guardian:8080"} <= {t for job in prom["scrape_configs"] for sc in job["static_configs"]
                                 for t in sc["targets"]}
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    for rule_file in prom["rule_files"]:  # relative to the config, mounted next to it
        assert (DEPLOY / rule_file).is_file()
        assert f"./deploy/{rule_file}:/etc/prometheus/{rule_file}:ro" in compose["services"]["prometheus"]["volumes"]


# -- Alertmanager ------------------------------------------------------------------------------------
def test_amtool_accepts_the_alertmanager_config():
    amtool = tool("amtool", package="prometheus-alertmanager")
    result = run(amtool, "check-config", str(DEPLOY / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=CheckoutCanaryHighErrorRate", "service=checkout", "track=canary", "severity=critical"], "guardian"),
    (["alertname=Anything", "service=payments", "severity=warning"], "guardian"),
    (["alertname=GuardianDown", "severity=warning"], "default"),
])
def test_alerts_with_a_service_label_are_routed_to_the_guardian(labels, receiver):
    amtool = tool("amtool", package="prometheus-alertmanager")
    result = run(amtool, "config", "routes", "test", f"--config.file={DEPLOY / 'alertmanager.yml'}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_the_guardian_receiver_posts_to_the_guardian_with_its_token(compose):
    config = yaml_file(DEPLOY / "alertmanager.yml")
    guardian_route = next(r for r in config["route"]["routes"] if r["receiver"] == "guardian")
    assert guardian_route["group_wait"] == "0s"
    assert re.fullmatch(r"[1-9]s|10s", guardian_route["group_interval"])
    receiver = next(r for r in config["receivers"] if r["name"] == "guardian")
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"] == "http://guardian:8080/v1/alerts" and webhook["send_resolved"] is True
    auth = webhook["http_config"]["authorization"]
    assert auth["type"] == "Bearer" and "credentials" not in auth  # no secret in the file
    # the compose entrypoint writes GUARDIAN_ALERTS_TOKEN to that very file before starting Alertmanager
    am = compose["services"]["alertmanager"]
    script = am["entrypoint"][2]
    assert f"> {auth['credentials_file']}" in script and "$$GUARDIAN_ALERTS_TOKEN" in script
    assert "exec /bin/alertmanager" in script and "GUARDIAN_ALERTS_TOKEN" in am["environment"]
    assert compose["services"]["guardian"]["environment"]["GUARDIAN_ALERTS_TOKEN"] == \
        am["environment"]["GUARDIAN_ALERTS_TOKEN"]
    assert any(v.endswith(":/" + auth["credentials_file"].split("/")[1]) for v in am["volumes"])


# -- docker-compose.yml ------------------------------------------------------------------------------
def test_docker_compose_accepts_the_file_and_requires_the_tokens():
    docker_compose = tool("docker-compose", package="docker-compose")
    result = run(docker_compose, "config", "-q", env=compose_env())
    assert result.returncode == 0, result.stdout + result.stderr
    for missing in TOKENS:
        env = compose_env()
        del env[missing]
        result = run(docker_compose, "config", "-q", env=env)
        assert result.returncode != 0 and missing in result.stderr, result.stderr


def test_compose_services_healthchecks_and_dependencies(compose):
    assert "version" not in compose  # Compose Specification format
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check["test"][0] in {"CMD", "CMD-SHELL"} and check.get("interval"), name
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name its conditions"
        assert set(depends) == NEEDS.get(name, set()), name
        assert all(d == {"condition": "service_healthy"} for d in depends.values()), name
    for name, check in ((n, s["healthcheck"]["test"]) for n, s in services.items()):
        if name in {"guardian", "checkout-baseline", "checkout-canary"}:
            assert check[1:3] == ["python", "/app/healthcheck.py"] and check[3].endswith("/healthz"), name


def test_compose_images_ports_and_build(compose):
    services = compose["services"]
    for name, prefix in OFFICIAL.items():
        image = services[name]["image"]
        assert image.startswith(prefix) and not image.endswith(":latest"), image
        assert re.search(r":v?\d+\.\d+\.\d+", image), f"{name}: pin the tag: {image}"
    for name in ("guardian", "checkout-baseline", "checkout-canary"):
        service = services[name]
        assert service["build"]["context"] == "." and "BASE_IMAGE" in service["build"]["args"], name
        assert service["image"] == services["guardian"]["image"], "one image for the guardian and the demo app"
    assert services["checkout-baseline"]["entrypoint"][:3] == ["python", "-m", "demo.app"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes beyond loopback: {port}"
    env = services["guardian"]["environment"]
    assert env["GUARDIAN_TOKEN"].startswith("${GUARDIAN_TOKEN:?")
    assert env["GUARDIAN_PROMETHEUS_URL"] == "http://prometheus:9090"
    assert env["GUARDIAN_GRAFANA_URL"] == "http://grafana:3000" and "GUARDIAN_GRAFANA_TOKEN" in env


def test_every_mounted_file_exists(compose):
    mounted = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
                mounted.append(source)
    assert {"./deploy/prometheus.yml", "./deploy/alert-rules.yml", "./deploy/alertmanager.yml", "./deploy/nginx.conf",
            "./grafana/provisioning", "./grafana/dashboards", "./rules"} <= set(mounted)
    grafana = compose["services"]["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana


def test_nginx_config_sends_checkout_to_both_arms():
    conf = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"server checkout-baseline:8000 weight=\d+;", conf)
    assert re.search(r"server checkout-canary:8000 weight=\d+;", conf)
    assert "location = /healthz" in conf
    nginx = tool("nginx", package="nginx")
    # Debian's nginx checks the syntax (`nginx -t`), the compose hosts mapped to loopback addresses
    with tempfile.TemporaryDirectory() as tmp:
        server = conf.replace("checkout-canary:8000", "127.0.0.1:1").replace("checkout-baseline:8000", "127.0.0.1:2")
        server = server.replace("listen 80;", f"listen 127.0.0.1:{free_port()};")
        Path(tmp, "default.conf").write_text(server)
        Path(tmp, "nginx.conf").write_text(
            f"error_log {tmp}/error.log; pid {tmp}/nginx.pid;\nevents {{}}\n"
            f"http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};"
            f" fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};"
            f" include {tmp}/default.conf; }}\n")
        result = run(nginx, "-t", "-q", "-c", f"{tmp}/nginx.conf", "-p", tmp)
        assert result.returncode == 0, result.stdout + result.stderr


# -- the image ---------------------------------------------------------------------------------------
def test_dockerfile_runs_unprivileged_with_a_healthcheck_and_a_base_argument():
    text = (REPO / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*healthcheck\.py", text, re.MULTILINE)
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "GUARDIAN_HOST=0.0.0.0" in instructions
    assert "GUARDIAN_TOKEN" not in instructions  # no token baked into the image
    assert "--no-index --find-links /wheels" in text  # offline when the wheelhouse is there
    # whatever the Dockerfile copies from the context, .dockerignore lets through
    ignore = (REPO / ".dockerignore").read_text().split()
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.MULTILINE):
        assert "!" + source.rstrip("/") in ignore, f".dockerignore keeps {source} out of the build context"


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_healthcheck_script_passes_only_on_2xx():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    script = str(DEPLOY / "healthcheck.py")
    try:
        assert run(sys.executable, script, f"{base}/healthz").returncode == 0
        failing = run(sys.executable, script, f"{base}/readyz")
        assert failing.returncode == 1 and "503" in failing.stderr
        assert run(sys.executable, script, f"http://127.0.0.1:{free_port()}/healthz").returncode == 1
        env = dict(os.environ, GUARDIAN_PORT=str(server.server_port))  # the default URL follows the port
        assert run(sys.executable, script, env=env).returncode == 0
    finally:
        server.shutdown()
        server.server_close()
