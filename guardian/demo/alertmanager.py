"""A real Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port, routing every
alert to one webhook — the guardian's `POST /v1/alerts` — as fast as Alertmanager allows
(`group_wait: 0s`, `group_interval: 1s`), for the tests and the benchmarks.

    am = AlertmanagerServer(workdir, webhook_url=guardian.url + "/v1/alerts", token="...").start()
    prometheus = PrometheusServer(..., rules=RULES_YAML, alertmanager=am.address).start()
    am.alerts()      # what Alertmanager holds now (its v2 API)
    am.stop()
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from guardian.demo.stack import free_port, terminate, wait_until


def alertmanager_binary() -> str:
    for name in ("prometheus-alertmanager", "alertmanager"):
        if path := shutil.which(name):
            return path
    raise RuntimeError("Alertmanager is not installed: run scripts/setup.sh (Debian's 'prometheus-alertmanager')")


class AlertmanagerServer:
    def __init__(self, workdir: str | Path, *, webhook_url: str, token: str | None = None,
                 group_by: tuple[str, ...] = ("alertname", "service"), repeat_interval: str = "1h") -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.webhook_url, self.token = webhook_url, token
        self.group_by, self.repeat_interval = group_by, repeat_interval
        self.port = free_port()
        self.config_file = self.workdir / "alertmanager.yml"
        self.log_path = self.workdir / "alertmanager.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> None:
        """YAML written as JSON (a subset of YAML): no quoting surprises."""
        webhook: dict[str, Any] = {"url": self.webhook_url, "send_resolved": True, "max_alerts": 0}
        if self.token:
            webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials": self.token}}
        config = {
            "route": {"receiver": "guardian", "group_by": list(self.group_by), "group_wait": "0s",
                      "group_interval": "1s", "repeat_interval": self.repeat_interval},
            "receivers": [{"name": "guardian", "webhook_configs": [webhook]}],
        }
        self.config_file.write_text(json.dumps(config, indent=1))

    def start(self, timeout: float = 20.0) -> AlertmanagerServer:
        self.write_config()
        cmd = [alertmanager_binary(), f"--config.file={self.config_file}", f"--storage.path={self.workdir / 'data'}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=self.workdir)
        log.close()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited ({self.proc.returncode}): {self.log_tail()}")
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200

        try:
            wait_until(ready, timeout, 0.1, f"alertmanager ready on {self.url}", ignore=(httpx.HTTPError,))
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{self.log_tail()}") from None
        return self

    def alerts(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/api/v2/alerts", timeout=5).raise_for_status().json()

    def stop(self) -> None:
        terminate(self.proc)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
