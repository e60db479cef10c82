"""A new user's first hour, repeated (issue 17): the README's Quick start followed with the user's own exporters.

    .venv/bin/python benchmarks/first_hour.py [--workdir DIR]

Starts a real Prometheus scraping
- `checkout`: an exporter of its own whose latency histogram has buckets 0.1 / 0.3 / 1.0 s (no le="0.5"),
  baseline and canary;
- `shop`: an exporter labelled service="shop-svc" (not the rule file's "shop");
- `api`: two demo apps (the canary and the baseline) with the standard metrics, under 30 requests/s split
  by the rollout's weights through a webhook traffic router (the load generator's control port);
then `guardian serve` (built-in default policy, 2 s ticks, 20 s of analysis per step) and runs, printing each
command and what it said: `guardian doctor checkout`, `guardian doctor shop`, `guardian rollout start checkout`
(refused), the same with --allow-missing (paused), and a whole `rollout start api --wait` (promoted), whose
status lines are counted. Prints a JSON line of the figures at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: its demo/ and tests/ packages

from demo.loadgen import LoadGenerator  # noqa: E402
from demo.stack import DemoApp, GuardianServer, PrometheusServer, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class OwnExporter:
    """A service's own exporter, built the way users build theirs (prometheus_client, its own buckets)."""

    def __init__(self, buckets: tuple[float, ...], rps: float = 10.0):
        registry = CollectorRegistry()
        self.requests = Counter("http_requests", "requests", ["code"], registry=registry)
        self.latency = Histogram("http_request_duration_seconds", "latency", buckets=buckets, registry=registry)
        self.port, self.rps, self.running = free_port(), rps, True

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._traffic, daemon=True).start()

    def _traffic(self) -> None:
        while self.running:
            self.requests.labels("200").inc(self.rps / 5)
            self.latency.observe(0.03)
            time.sleep(0.2)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.running = False
        self.server.shutdown()


def guardian_cli(env: dict[str, str], *args: str, timeout: float = 300) -> tuple[int, str]:
    """Run `guardian ARGS` as a user would; print the command and its output; (exit code, output)."""
    print(f"\n$ guardian {' '.join(args)}", flush=True)
    p = subprocess.run([sys.executable, "-m", "guardian", *args], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=REPO)
    text = (p.stdout + p.stderr).rstrip()
    print(text)
    print(f"[exit {p.returncode}]", flush=True)
    return p.returncode, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="guardian-first-hour-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started: list = []
    try:
        no_bucket = [OwnExporter((0.1, 0.3, 1.0)) for _ in range(2)]
        wrong_label = OwnExporter((0.1, 0.5, 1.0))
        started += [*no_bucket, wrong_label]
        api = {arm: DemoApp(f"api-{arm}", version="v2" if arm == "canary" else "v1", latency=0.01).start()
               for arm in ("canary", "baseline")}
        started += list(api.values())
        targets = [(no_bucket[0].target, {"service": "checkout", "track": "baseline"}),
                   (no_bucket[1].target, {"service": "checkout", "track": "canary"}),
                   (wrong_label.target, {"service": "shop-svc", "track": "baseline"}),
                   (api["baseline"].target, {"service": "api", "track": "baseline"}),
                   (api["canary"].target, {"service": "api", "track": "canary"})]
        prom = PrometheusServer(targets, "1s", workdir=workdir / "prometheus").start()
        started.append(prom)
        load = LoadGenerator({api["baseline"].url: 100, api["canary"].url: 0}, rps=30, max_seconds=1800).start()
        started.append(load)
        prom.wait_for_series('http_requests_total{service="api",track="baseline"}', timeout=30)
        router = load.serve_control(0, canary=api["canary"].url, baseline=api["baseline"].url)
        (workdir / "guardian").mkdir(exist_ok=True)
        guardian = GuardianServer(workdir / "guardian", prometheus_url=prom.url, rules=[], tick_seconds=2,
                                  evaluation_delay=1, min_window=3, analysis_seconds=20).start()
        started.append(guardian)
        time.sleep(3)  # a few scrapes
        env = {**os.environ, "GUARDIAN_API": guardian.url}
        figures: dict = {}
        figures["doctor_checkout_exit"], _ = guardian_cli(env, "doctor", "checkout", "--window", "10")
        figures["doctor_shop_exit"], _ = guardian_cli(env, "doctor", "shop", "--window", "10")
        figures["start_checkout_exit"], _ = guardian_cli(env, "rollout", "start", "checkout", "--image",
                                                         "checkout:v2", "--target", "noop")
        code, text = guardian_cli(env, "rollout", "start", "checkout", "--image", "checkout:v2", "--target", "noop",
                                  "--allow-missing")
        figures["start_checkout_allow_missing_exit"] = code
        rid = text.split()[-1]
        guardian_cli(env, "rollout", "status", rid)
        guardian_cli(env, "rollout", "rollback", rid)
        began = time.time()
        code, text = guardian_cli(env, "rollout", "start", "api", "--image", "api:v2", "--steps", "10,50,100",
                                  "--target", f"webhook+http://127.0.0.1:{router}/weights", "--wait",
                                  "--timeout", "300")
        figures.update({"api_rollout_exit": code, "api_rollout_seconds": round(time.time() - began),
                        "api_status_lines": len(text.splitlines())})
        print("\n" + json.dumps({"benchmark": "first_hour", **figures}))
        return 0
    finally:
        for thing in reversed(started):
            with contextlib.suppress(Exception):  # stop the rest anyway
                thing.stop()


if __name__ == "__main__":
    raise SystemExit(main())
