"""Start and stop the real servers a guarded rollout needs, on free loopback ports: demo apps,
Prometheus, and the guardian itself. Used by the demo, the benchmarks and the integration tests.

Nothing here sleeps a fixed time waiting for a server: everything polls with `wait_until`.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from guardian.sources.prometheus import PrometheusSource
from guardian.sources.victoriametrics import VictoriaMetricsSource

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]  # `python -m demo.app` runs from here, whatever the caller's folder

_handed_out: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 right now, never the same twice in this process.

    Picked below the kernel's ephemeral range (32768+), which outgoing connections (scrapes, test
    clients) draw from: a port chosen there could be taken by one before the server binds it.
    """
    for _ in range(200):
        port = random.randint(15000, 32767)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # crowded: let the OS pick
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.1,
    message: str = "condition",
    ignore: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Poll `predicate` until it returns something truthy; return it.

    Exceptions listed in `ignore` count as "not yet" (a server that is not up raises all sorts);
    others propagate at once, so a predicate can fail fast (e.g. the server process died).
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ignore as exc:
            last = exc
        if time.monotonic() >= deadline:
            detail = f" (last: {last!r})" if last else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}{detail}")
        time.sleep(interval)


def terminate(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# -- demo apps -----------------------------------------------------------------------------------
class DemoApp:
    """One `python -m demo.app` subprocess on a free loopback port."""

    def __init__(self, name: str, *, error_ratio: float = 0.0, latency: float = 0.01, version: str = "v1",
                 port: int | None = None):
        self.name, self.port = name, port or free_port()
        self.args = ["--error-ratio", str(error_ratio), "--latency", str(latency), "--version", version]
        self.proc: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: nobody drains a pipe while tests run, and a full one would block the app.
        self.log_path = Path(tempfile.mkstemp(prefix=f"demo-{name}-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        """host:port, as a Prometheus static_config wants it."""
        return f"127.0.0.1:{self.port}"

    def spawn(self) -> DemoApp:
        cmd = [sys.executable, "-m", "demo.app", "--port", str(self.port), *self.args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=REPO)
        return self

    def wait_ready(self, timeout: float = 15.0) -> DemoApp:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.log_path.read_text(errors="replace")[-800:]
                raise RuntimeError(f"demo app {self.name} exited with {self.proc.returncode}: {err}")
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

        wait_until(up, timeout, 0.05, f"demo app {self.name} on {self.url}", ignore=(httpx.HTTPError,))
        return self

    def start(self) -> DemoApp:
        return self.spawn().wait_ready()

    def control(self, **settings: float) -> dict[str, Any]:
        """Change error_ratio / latency live; returns the app's current settings."""
        return httpx.post(f"{self.url}/control", json=settings, timeout=5).raise_for_status().json()

    def hit(self, n: int, path: str = "/") -> dict[int, int]:
        """Send n sequential requests; returns {status code: count} as the client saw them."""
        codes: dict[int, int] = {}
        with httpx.Client(base_url=self.url, timeout=5) as client:
            for _ in range(n):
                code = client.get(path).status_code
                codes[code] = codes.get(code, 0) + 1
        return codes

    def stop(self) -> None:
        terminate(self.proc)


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise RuntimeError("the prometheus binary is not installed: run scripts/setup.sh (Debian's 'prometheus')")
    return path


class PrometheusServer:
    """A real Prometheus scraping `targets` = [("host:port", {"service": ..., "track": ...}), ...].

    `stop()` then `start()` keeps the same data dir and port: an outage and a return, not a new server.
    """

    def __init__(
        self,
        targets: list[tuple[str, dict[str, str]]],
        scrape_interval: str = "1s",
        *,
        workdir: Path | None = None,
        binary: str | None = None,
        file_sd: Path | None = None,
        rules: str | None = None,
        alertmanager: str | None = None,
        query_log: Path | None = None,
    ) -> None:
        self.binary = binary or prometheus_binary()
        self.query_log = query_log  # every query Prometheus answers, one JSON line each (its query_log_file)
        self.targets, self.scrape_interval = list(targets), scrape_interval
        self.file_sd = file_sd  # a folder of file_sd JSON files (the docker actuator writes them)
        self.rules, self.alertmanager = rules, alertmanager  # alerting rules (YAML text), host:port to send to
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="prometheus-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "prometheus.yml"
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "prometheus.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        """prometheus.yml; strings are written JSON-quoted, which YAML reads as the same strings."""
        q, iv = json.dumps, self.scrape_interval
        lines = [
            "global:",
            f"  scrape_interval: {iv}",
            f"  scrape_timeout: {iv}",
            f"  evaluation_interval: {iv}",
            *([f"  query_log_file: {q(str(self.query_log))}"] if self.query_log else []),
            "scrape_configs:",
            "  - job_name: demo",
            "    static_configs:",
        ]
        for target, labels in self.targets:
            lines.append(f"      - targets: [{q(target)}]")
            if labels:
                lines.append("        labels:")
                lines += [f"          {k}: {q(v)}" for k, v in labels.items()]
        if not self.targets:
            lines.append("      - targets: []")
        if self.file_sd is not None:
            lines += ["  - job_name: file_sd", "    file_sd_configs:",
                      f"      - files: [{q(str(Path(self.file_sd) / '*.json'))}]", "        refresh_interval: 1s"]
        if self.rules is not None:
            (self.workdir / "rules.yml").write_text(self.rules)
            lines += ["rule_files:", f"  - {q(str(self.workdir / 'rules.yml'))}"]
        if self.alertmanager is not None:
            lines += ["alerting:", "  alertmanagers:", f"    - static_configs: [{{targets: [{q(self.alertmanager)}]}}]"]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        cmd = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=self.workdir)
        log.close()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.proc.returncode}): {self.log_tail()}")
            if httpx.get(f"{self.url}/-/ready", timeout=1).status_code != 200:
                return False
            # Make sure the server answering is this one, not another that took the port meanwhile.
            flags = httpx.get(f"{self.url}/api/v1/status/flags", timeout=1).json()["data"]
            if flags.get("storage.tsdb.path") != str(self.data_dir):
                raise RuntimeError(f"port {self.port} is served by another Prometheus ({flags.get('config.file')})")
            return True

        try:
            wait_until(ready, timeout, 0.1, f"prometheus ready on {self.url}", ignore=(httpx.HTTPError,))
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{self.log_tail()}") from None
        return self

    def stop(self) -> None:
        """SIGTERM and wait: Prometheus flushes its head block so a later start() sees the old data."""
        terminate(self.proc, timeout=20)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reload(self, targets: list[tuple[str, dict[str, str]]] | None = None) -> None:
        """Rewrite the config (new targets) and ask Prometheus to reload it."""
        if targets is not None:
            self.targets = list(targets)
        self.write_config()
        httpx.post(f"{self.url}/-/reload", timeout=10).raise_for_status()

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
        r = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def value(self, promql: str, at: float | None = None) -> float | None:
        """The single value of an instant query, or None when it is empty."""
        result = self.query(promql, at)
        return float(result[0]["value"][1]) if result else None

    def wait_for_series(self, promql: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll until the instant query returns at least one series; returns the result."""
        return wait_until(lambda: self.query(promql), timeout, 0.2, f"series for {promql}")

    def wait_for_scrape(self, after: float | None = None, timeout: float = 10.0) -> float:
        """Wait until every target has been scraped at or after `after` (default now); returns the
        oldest of those scrape timestamps. Use it to know the metrics Prometheus holds are current.
        """
        after = time.time() if after is None else after

        def scraped() -> float | None:
            ts = self.value('min(timestamp(up{job="demo"}))')
            return ts if ts is not None and ts >= after else None

        return wait_until(scraped, timeout, 0.1, f"a scrape of every target after {after:.3f}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def source(self, **options: Any) -> PrometheusSource:
        """The guardian's metric source for this server."""
        return PrometheusSource(self.url, **options)


def start_demo_pair(started: list[Any]) -> tuple[DemoApp, DemoApp]:
    """The baseline (v1) and the canary (v2) demo apps of checkout, 5 ms a request, appended to `started` (stopped in
    reverse by the caller) as each comes up."""
    pair = []
    for name, version in (("baseline", "v1"), ("canary", "v2")):
        pair.append(DemoApp(name, latency=0.005, version=version).start())
        started.append(pair[-1])
    return pair[0], pair[1]


def victoria_metrics_binary() -> str:
    path = shutil.which("victoria-metrics")
    if path is None:
        raise RuntimeError("the victoria-metrics binary is not installed: run scripts/setup.sh (Debian's "
                           "'victoria-metrics')")
    return path


class VictoriaMetricsServer(PrometheusServer):
    """A real single-node VictoriaMetrics scraping the same targets with the same prometheus.yml (its `promscrape`),
    answering the Prometheus query API. `-search.latencyOffset=0s`: by default VictoriaMetrics hides the newest 30 s
    of samples from queries (for late, out-of-order writes), which a guardian judging 2-10 s ticks cannot wait for."""

    def __init__(self, targets: list[tuple[str, dict[str, str]]], scrape_interval: str = "1s", *,
                 workdir: Path | None = None, binary: str | None = None, file_sd: Path | None = None) -> None:
        super().__init__(targets, scrape_interval, workdir=workdir, binary=binary or victoria_metrics_binary(),
                         file_sd=file_sd)

    def start(self, timeout: float = 30.0) -> VictoriaMetricsServer:
        cmd = [self.binary, f"-promscrape.config={self.config_path}", f"-storageDataPath={self.data_dir}",
               f"-httpListenAddr=127.0.0.1:{self.port}", "-search.latencyOffset=0s", "-loggerLevel=WARN",
               "-promscrape.config.strictParse=false", "-retentionPeriod=1d"]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=self.workdir)
        log.close()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited ({self.proc.returncode}): {self.log_tail()}")
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200

        try:
            wait_until(ready, timeout, 0.1, f"victoria-metrics ready on {self.url}", ignore=(httpx.HTTPError,))
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{self.log_tail()}") from None
        return self

    def source(self, **options: Any) -> VictoriaMetricsSource:
        return VictoriaMetricsSource(self.url, **options)


class GuardianServer:
    """`guardian serve` as a real subprocess on a free loopback port, configured through GUARDIAN_* env."""

    def __init__(self, workdir: Path, *, prometheus_url: str, rules: list[str], **settings: Any):
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            **os.environ,
            "GUARDIAN_PORT": str(self.port),
            "GUARDIAN_PROMETHEUS_URL": prometheus_url,
            "GUARDIAN_RULES": json.dumps(rules),
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
        self.proc = subprocess.Popen([sys.executable, "-m", "guardian", "serve"], env=self.env,
                                     stdout=log, stderr=log)
        log.close()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"guardian exited ({self.proc.returncode}): {self.log_tail()}")
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200

        wait_until(ready, 30, 0.1, f"guardian ready on {self.url}")
        return self

    def stop(self) -> None:
        terminate(self.proc)

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=30, **kw)

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        return self.api("GET", f"/v1/rollouts/{rollout_id}").raise_for_status().json()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
