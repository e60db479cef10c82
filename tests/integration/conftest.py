"""Fixtures that start real servers on loopback: demo apps and a Prometheus scraping them.
The servers themselves are in `demo.stack` (the demo and the benchmarks use them too).

    def test_x(demo_apps, prometheus):
        apps = demo_apps("baseline", "canary", latency=0.005)          # name -> DemoApp
        prom = prometheus([(apps["canary"].target, {"service": "checkout", "track": "canary"})])
        prom.wait_for_series('http_requests_total{service="checkout"}')

Module- or session-scoped stacks can use `DemoApp` / `PrometheusServer` directly (see
test_prometheus_source.py), stopping them in a `finally`.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.stack import DemoApp, PrometheusServer, free_port, terminate, wait_until
from tests.pg_fixture import pg_server, pg_url  # noqa: F401 - a real PostgreSQL (session) and a fresh database
from tests.stubs.kube_stub import KubeStub

REPO = Path(__file__).resolve().parents[2]
__all__ = ["REPO", "DemoApp", "PrometheusServer", "free_port", "terminate", "wait_until", "prometheus_binary"]


@pytest.fixture
def demo_apps() -> Iterator[Callable[..., dict[str, DemoApp]]]:
    """Factory: `demo_apps("baseline", "canary", latency=0.005)` -> {name: DemoApp}, all stopped after."""
    started: list[DemoApp] = []

    def start(*names: str, **options: Any) -> dict[str, DemoApp]:
        apps = {name: DemoApp(name, **options).spawn() for name in names or ("baseline", "canary")}
        started.extend(apps.values())
        for app in apps.values():
            app.wait_ready()
        return apps

    yield start
    for app in started:
        app.stop()


@pytest.fixture(scope="module")
def docker_client():
    """A client of the REAL Docker engine with the demo images built (scripts/docker-up.sh does both); skips
    the module, saying which, when either is missing."""
    docker = pytest.importorskip("docker")
    try:
        c = docker.from_env()
        c.ping()
    except docker.errors.DockerException as e:
        pytest.skip(f"no Docker engine answers ({e}); bash scripts/docker-up.sh starts one")
    for tag in ("v1", "v2", "v3"):
        try:
            c.images.get(f"guardian-demo:{tag}")
        except docker.errors.ImageNotFound:
            pytest.skip("the demo images are missing; bash scripts/docker-up.sh builds them")
    return c


@pytest.fixture
def kube() -> Iterator[KubeStub]:
    """A Kubernetes API stub (tests/stubs/kube_stub.py, named a stub: no API server runs here)."""
    stub = KubeStub().start()
    yield stub
    stub.stop()


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("the prometheus binary is not installed (scripts/setup.sh installs Debian's 'prometheus')")
    return path


@pytest.fixture
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., PrometheusServer]]:
    """Factory: `prometheus(targets, scrape_interval="1s")` -> a started PrometheusServer, stopped after."""
    binary = prometheus_binary()
    servers: list[PrometheusServer] = []

    def start(targets: list[tuple[str, dict[str, str]]], scrape_interval: str = "1s") -> PrometheusServer:
        workdir = tmp_path_factory.mktemp("prometheus")
        server = PrometheusServer(targets, scrape_interval, workdir=workdir, binary=binary)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `serial` stop a server the others share (the Docker daemon): a parallel (xdist)
    worker skips them; scripts/test.sh runs them alone afterwards (`-n 0 -m serial`)."""
    import os

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    skip = pytest.mark.skip(reason="serial: runs alone after the parallel pass (scripts/test.sh)")
    for item in items:
        if item.get_closest_marker("serial"):
            item.add_marker(skip)
