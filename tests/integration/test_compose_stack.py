"""docker-compose.yml started for real: `docker-compose build` makes the guardian image from the
Dockerfile (offline: FROM the local guardian-stack-base:py311, dependencies from deploy/wheels/), then
`docker-compose up` starts guardian, checkout-baseline, checkout-canary, prometheus, alertmanager and nginx with
the compose file's own commands, mounts, healthchecks and depends_on conditions.

Nothing can be pulled here, so a compose override swaps the official prometheus, alertmanager and
nginx images for local stand-ins built from Debian's binaries in the official images' layout
(demo/stack_images.py), and shortens the healthchecks' interval to 1 s. Grafana is not
started: no image of it can be built here (tests/integration/test_deploy_files.py checks its part of
the file). Skipped only when no Docker engine answers. The module's stack is removed with
`docker-compose down -v` at the end; the images stay (a second session rebuilds nothing).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from demo import stack_images
from tests.integration.conftest import REPO, free_port, wait_until

STARTED = ["prometheus", "alertmanager", "guardian", "checkout-baseline", "checkout-canary", "nginx"]
IMAGE = "release-guardian:stack-test"
PORTS = ["GUARDIAN_HOST_PORT", "PROMETHEUS_HOST_PORT", "ALERTMANAGER_HOST_PORT", "GRAFANA_HOST_PORT",
         "CHECKOUT_HOST_PORT"]
pytestmark = pytest.mark.integration


def override(standins: dict[str, str]) -> str:
    """The compose override: local stand-ins for the official images, 1 s healthcheck intervals, and
    checkout-baseline's port published on an ephemeral loopback port (to read its /metrics directly)."""
    services: dict[str, Any] = {name: {"healthcheck": {"interval": "1s"}} for name in STARTED}
    for name in ("prometheus", "alertmanager", "nginx"):
        services[name]["image"] = standins[name]
    services["checkout-baseline"]["ports"] = ["127.0.0.1::8000"]
    return json.dumps({"services": services}, indent=1)  # JSON is YAML


@dataclass
class Stack:
    project: str
    files: list[str]
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["docker-compose", "-p", self.project, *(a for f in self.files for a in ("-f", f)), *args]
        result = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n"
                                 f"{self.logs()}")
        return result

    def logs(self) -> str:
        result = subprocess.run(["docker-compose", "-p", self.project, *(a for f in self.files for a in ("-f", f)),
                                 "logs", "--no-color", "--tail", "15"], cwd=REPO, env=self.env, capture_output=True,
                                text=True, timeout=60)
        return result.stdout[-6000:]

    def containers(self) -> dict[str, dict[str, Any]]:
        """{service: `docker inspect` of its container}."""
        ids = self.compose("ps", "-q").stdout.split()
        if not ids:
            return {}
        out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True, timeout=30)
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in json.loads(out.stdout)}

    def url(self, variable: str) -> str:
        return f"http://127.0.0.1:{self.ports[variable]}"

    def published(self, service: str, port: int) -> str:
        address = self.compose("port", service, str(port)).stdout.strip()
        return f"http://{address}"

    @property
    def operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['GUARDIAN_TOKEN']}"}


def docker_engine() -> None:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the engine is "no engine"
        pytest.skip(f"no Docker engine answers ({exc}); bash scripts/docker-up.sh starts one")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    docker_engine()
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: bash scripts/test.sh installs Debian's 'docker-compose'")
    built = stack_images.ensure_all(log=lambda line: print(f"stack images: {line}"))
    tmp = tmp_path_factory.mktemp("compose")
    (tmp / "override.yml").write_text(override(built))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "COMPOSE_", "DOCKER_BUILDKIT"))}
    env |= {"GUARDIAN_TOKEN": uuid.uuid4().hex, "GUARDIAN_ALERTS_TOKEN": uuid.uuid4().hex,
            "GUARDIAN_IMAGE": IMAGE, "GUARDIAN_BASE_IMAGE": built["base"]}
    ports = {variable: free_port() for variable in PORTS}
    env |= {variable: str(port) for variable, port in ports.items()}
    stack = Stack(f"guardian-stack-test-{os.getpid()}", [str(REPO / "docker-compose.yml"), str(tmp / "override.yml")],
                  env, ports)
    try:
        # one build: checkout-baseline and checkout-canary run the same image (the same `image:` name)
        stack.compose("build", "guardian", timeout=600)
        stack.compose("up", "-d", "--no-build", *STARTED, timeout=180)
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False, timeout=120)


@pytest.fixture(scope="module")
def healthy(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every started service's container, once all report healthy (fails at once if one exits)."""
    def all_healthy() -> dict[str, dict[str, Any]] | None:
        containers = stack.containers()
        for name, c in containers.items():
            if c["State"]["Status"] in {"exited", "dead"} or c["State"]["Restarting"]:
                raise AssertionError(f"{name} is {c['State']['Status']} (exit {c['State']['ExitCode']})")
        states = {name: c["State"].get("Health", {}).get("Status") for name, c in containers.items()}
        return containers if set(states) == set(STARTED) and set(states.values()) == {"healthy"} else None

    try:
        return wait_until(all_healthy, 60, 0.5, "every service healthy", ignore=(subprocess.SubprocessError,))
    except (AssertionError, TimeoutError) as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None


def test_every_service_becomes_healthy_in_dependency_order_on_loopback_only(stack, healthy):
    started = {name: c["State"]["StartedAt"] for name, c in healthy.items()}
    # depends_on: condition: service_healthy — a dependent starts after what it needs
    assert started["guardian"] > started["prometheus"]
    assert started["alertmanager"] > started["guardian"]
    assert started["nginx"] > max(started["checkout-baseline"], started["checkout-canary"])
    for name, c in healthy.items():
        for bindings in (c["NetworkSettings"]["Ports"] or {}).values():
            for binding in bindings or []:
                assert binding["HostIp"] == "127.0.0.1", f"{name} is published on {binding['HostIp']}"
    guardian = healthy["guardian"]
    assert guardian["Config"]["Image"] == IMAGE and healthy["checkout-baseline"]["Config"]["Image"] == IMAGE
    assert guardian["Config"]["User"] == "10001:10001"  # not root


def test_the_guardian_answers_through_its_published_loopback_port(stack, healthy):
    base = stack.url("GUARDIAN_HOST_PORT")
    assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    # ready, and it reaches Prometheus by its compose service name
    ready = wait_until(lambda: (r := httpx.get(f"{base}/readyz", timeout=5)).status_code == 200
                       and r.json()["metrics_source"] and r.json(), 20, 0.5, "guardian ready")
    assert ready["store"] is True
    # it listens on 0.0.0.0 in the container, so the token is required
    assert httpx.post(f"{base}/v1/rules/reload", timeout=5).status_code == 401
    assert httpx.post(f"{base}/v1/rules/reload", headers=stack.operator, timeout=5).status_code == 200
    assert "checkout" in httpx.get(f"{base}/v1/rules", timeout=5).text  # ./rules mounted


def test_checkout_serves_its_metrics_and_nginx_sends_requests_to_it(stack, healthy):
    through_nginx = stack.url("CHECKOUT_HOST_PORT")
    answers = [httpx.get(f"{through_nginx}/", timeout=5) for _ in range(20)]
    assert all(r.status_code == 200 and r.text.startswith("ok v") for r in answers)
    metrics = httpx.get(f"{stack.published('checkout-baseline', 8000)}/metrics", timeout=5).text
    assert "# TYPE http_requests_total counter" in metrics
    assert 'http_requests_total{code="200",method="GET"}' in metrics
    assert "http_request_duration_seconds_bucket" in metrics


def test_prometheus_scrapes_both_arms_and_the_guardian_and_loads_the_alert_rules(stack, healthy):
    prometheus = stack.url("PROMETHEUS_HOST_PORT")

    def targets_up() -> dict[tuple[str, str], str] | None:
        active = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        health = {(t["labels"]["job"], t["labels"].get("track", "")): t["health"] for t in active}
        want = {("checkout", "baseline"), ("checkout", "canary"), ("guardian", "")}
        return health if want <= set(health) and all(health[k] == "up" for k in want) else None

    health = wait_until(targets_up, 30, 0.5, "the arms and the guardian scraped", ignore=(httpx.HTTPError, KeyError))
    assert ("alertmanager", "") in health  # scraped every 15 s: not waited for
    httpx.get(f"{stack.url('CHECKOUT_HOST_PORT')}/", timeout=5)
    series = wait_until(lambda: httpx.get(f"{prometheus}/api/v1/query", timeout=5, params={
        "query": 'http_requests_total{service="checkout"}'}).json()["data"]["result"], 20, 0.5, "checkout series")
    assert {s["metric"]["track"] for s in series} <= {"baseline", "canary"}
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    names = {r["name"] for g in rules for r in g["rules"]}
    assert {"CheckoutCanaryHighErrorRate", "CheckoutCanaryHighLatency", "GuardianDown"} <= names
    alertmanagers = httpx.get(f"{prometheus}/api/v1/alertmanagers", timeout=5).json()["data"]
    assert [a["url"] for a in alertmanagers["activeAlertmanagers"]] == ["http://alertmanager:9093/api/v2/alerts"]


def test_alertmanager_delivers_a_service_alert_to_the_guardian_with_its_token(stack, healthy):
    """deploy/alertmanager.yml's route and webhook, the token file the entrypoint writes from
    GUARDIAN_ALERTS_TOKEN, and the guardian's POST /v1/alerts, all in their containers."""
    alertmanager, guardian = stack.url("ALERTMANAGER_HOST_PORT"), stack.url("GUARDIAN_HOST_PORT")
    labels = {"alertname": "CheckoutCanaryHighErrorRate", "service": "checkout", "track": "canary",
              "severity": "critical", "test_run": uuid.uuid4().hex[:8]}
    sent = time.monotonic()
    httpx.post(f"{alertmanager}/api/v2/alerts", json=[{"labels": labels, "annotations": {"summary": "drill"}}],
               timeout=5).raise_for_status()

    def received() -> dict[str, Any] | None:
        alerts = httpx.get(f"{guardian}/v1/alerts", timeout=5).json()
        return next((a for a in alerts if a["labels"].get("test_run") == labels["test_run"]), None)

    alert = wait_until(received, 15, 0.2, "the alert at the guardian")
    assert time.monotonic() - sent < 10  # group_wait 0s
    assert alert["status"] == "firing" and alert["action"] == "rollback" and alert["freezes"] is True
    # the operator's token is not Alertmanager's: the guardian keeps them apart
    direct = httpx.post(f"{guardian}/v1/alerts", headers=stack.operator, timeout=5,
                        json={"version": "4", "status": "firing", "alerts": []})
    assert direct.status_code == 401


def test_the_stack_is_removed_with_its_volumes(stack, healthy):
    """Runs last in this module: `docker-compose down -v` leaves no container nor volume behind."""
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "5", timeout=120)
    assert stack.compose("ps", "-q").stdout.split() == []
    volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                              f"label=com.docker.compose.project={stack.project}"],
                             capture_output=True, text=True, check=True, timeout=30).stdout.split()
    assert volumes == []
