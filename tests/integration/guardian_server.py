"""`guardian serve` as a real subprocess on a free loopback port, configured through GUARDIAN_* env."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import REPO, _terminate, free_port, wait_until


class GuardianServer:
    def __init__(self, workdir: Path, *, prometheus_url: str, rules: list[str], **settings: Any):
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            **os.environ,
            "GUARDIAN_PORT": str(self.port),
            "GUARDIAN_PROMETHEUS_URL": prometheus_url,
            "GUARDIAN_RULES": __import__("json").dumps(rules),
            "GUARDIAN_DB_PATH": str(workdir / "guardian.db"),
            "GUARDIAN_RECORDINGS_DIR": str(workdir / "recordings"),
            **{f"GUARDIAN_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.log_path = workdir / "guardian.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GuardianServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "guardian", "serve"], cwd=REPO, env=self.env,
                                     stdout=log, stderr=log)
        log.close()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"guardian exited ({self.proc.returncode}): {self.log_tail()}")
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200

        wait_until(ready, 30, 0.1, f"guardian ready on {self.url}")
        return self

    def stop(self) -> None:
        _terminate(self.proc)

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=30, **kw)

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        return self.api("GET", f"/v1/rollouts/{rollout_id}").raise_for_status().json()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
