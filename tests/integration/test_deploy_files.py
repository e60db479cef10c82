"""The shipped deployment files are valid: promtool accepts the Prometheus config, and every host it
scrapes is a service of docker-compose.yml, built from files that exist."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from ruamel.yaml import YAML

from tests.integration.conftest import REPO


def test_promtool_accepts_the_prometheus_config():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/setup.sh installs Debian's 'prometheus')")
    run = subprocess.run([promtool, "check", "config", str(REPO / "deploy" / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_compose_services_match_the_scrape_targets_and_files():
    yaml = YAML(typ="safe")
    compose = yaml.load((REPO / "docker-compose.yml").read_text())
    prom = yaml.load((REPO / "deploy" / "prometheus.yml").read_text())
    services = set(compose["services"])
    hosts = {t.split(":")[0] for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert hosts <= services, f"scraped but not in compose: {hosts - services}"
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
        if service.get("build") == ".":
            assert (REPO / "Dockerfile").exists()
    tracks = {sc["labels"]["track"] for job in prom["scrape_configs"] for sc in job["static_configs"]
              if "labels" in sc}
    assert tracks == {"baseline", "canary"}
