"""A tiny demo HTTP service with the standard metrics, whose behaviour can be changed while it runs.

    python -m demo.app --port 8001 [--error-ratio 0.0] [--latency 0.01] [--version v1]
                       [--fail-after SECONDS --fail-ratio 0.1]

`GET /` (and any path but the ones below) sleeps about `latency` seconds and answers 200, or 500 with
probability `error_ratio`, counting `http_requests_total{code,method}` and observing
`http_request_duration_seconds`. `GET /metrics` is the exposition, `GET|POST /control` reads or
changes `{"error_ratio": x, "latency": y}` live (so a test or demo can make a canary go bad), and
`GET /healthz` is liveness. With `--fail-after S` the app degrades by itself: from S seconds after it
started, it answers 5xx to at least `--fail-ratio` of the requests (a release that passes its canary
steps and goes bad later: the demo's v4, caught in its bake). There is no service or track label here
on purpose: Prometheus adds them from its scrape config, exactly as it would for a real deployment.

Each request served writes one log line to stdout, as a real service's would (the guardian mines
them into templates when a canary fails): an access line, and for an injected 5xx an ERROR line
saying what "broke" — the fault the log evidence should find (a degraded app names another fault).

Stdlib `ThreadingHTTPServer` keeps it dependency-light and lets slow requests overlap; it has its
own `CollectorRegistry` so tests can build several apps in one process.
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SPECIAL = ("/metrics", "/control", "/healthz")


class DemoState:
    """The live settings and the metrics of one app instance."""

    def __init__(self, error_ratio: float = 0.0, latency: float = 0.01, version: str = "v1",
                 fail_after: float | None = None, fail_ratio: float = 0.1) -> None:
        if fail_after is not None and fail_after < 0:
            raise ValueError("fail_after must be at least 0 seconds")
        if not 0.0 <= fail_ratio <= 1.0:
            raise ValueError("fail_ratio must be within [0, 1]")
        self.lock = threading.Lock()
        self.error_ratio = error_ratio
        self.latency = latency
        self.version = version
        self.started = time.monotonic()
        self.fail_after, self.fail_ratio = fail_after, fail_ratio
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total", "Requests served.", ["code", "method"], registry=self.registry
        )
        self.duration = Histogram(
            "http_request_duration_seconds", "Request latency.", buckets=BUCKETS, registry=self.registry
        )
        info = Gauge("demo_app_info", "Version of the demo app.", ["version"], registry=self.registry)
        info.labels(version=version).set(1)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes

    def degraded(self, now: float | None = None) -> bool:
        """Has the app degraded by itself (`fail_after` seconds since it started)?"""
        now = time.monotonic() if now is None else now
        return self.fail_after is not None and now - self.started >= self.fail_after

    def settings(self) -> dict[str, Any]:
        with self.lock:
            out = {"error_ratio": self.error_ratio, "latency": self.latency, "version": self.version}
        if self.fail_after is not None:
            out |= {"fail_after": self.fail_after, "fail_ratio": self.fail_ratio, "degraded": self.degraded()}
        return out

    def update(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a /control body; raises ValueError on a bad value (and changes nothing then)."""
        ratio = float(body.get("error_ratio", self.error_ratio))
        latency = float(body.get("latency", self.latency))
        if not 0.0 <= ratio <= 1.0:
            raise ValueError("error_ratio must be within [0, 1]")
        if not 0.0 <= latency <= 60.0:
            raise ValueError("latency must be within [0, 60] seconds")
        with self.lock:
            self.error_ratio, self.latency = ratio, latency
        return self.settings()


_log_lock = threading.Lock()


def log_line(text: str) -> None:
    with _log_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the load generator reuses connections
    server: DemoServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the test output

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.state.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/control":
            self._json(200, self.server.state.settings())
        else:
            self._serve()

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/control":
            self._read_body()
            self._serve()
            return
        try:
            body = json.loads(self._read_body() or b"{}")
            if not isinstance(body, dict):
                raise TypeError("body must be a JSON object")
            self._json(200, self.server.state.update(body))
        except (ValueError, TypeError) as exc:
            self._json(400, {"error": str(exc)})

    def _serve(self) -> None:
        state = self.server.state
        with state.lock:
            ratio, latency = state.error_ratio, state.latency
        degraded = state.degraded()
        started = time.perf_counter()
        if latency > 0:
            time.sleep(latency * random.uniform(0.9, 1.1))
        draw = random.random()
        code = 500 if draw < ratio or (degraded and draw < state.fail_ratio) else 200
        pool_exhausted = code == 500 and not draw < ratio  # the degradation's own 5xx, not the injected ones
        body = f"{'error' if code == 500 else 'ok'} {state.version}\n".encode()
        took = time.perf_counter() - started
        state.duration.observe(took)
        state.requests.labels(code=str(code), method=self.command).inc()
        self._send(code, body, "text/plain")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        rid = f"{random.getrandbits(64):016x}"
        if pool_exhausted:
            log_line(f"{stamp} ERROR checkout: database connection pool exhausted: {random.randint(60, 64)}/64 in "
                     f"use, gave up after {random.randint(200, 400)}ms cart={random.randint(10000, 99999)} "
                     f"request_id={rid}")
        elif code == 500:
            log_line(f"{stamp} ERROR checkout: inventory reservation failed: upstream timeout after "
                     f"{random.randint(900, 1500)}ms order={random.randint(10000, 99999)} request_id={rid}")
        log_line(f'{stamp} INFO {self.client_address[0]} "{self.command} {self.path}" {code} '
                 f"{took * 1000:.1f}ms request_id={rid}")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj).encode() + b"\n", "application/json")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True  # in-flight requests must not delay shutdown
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: DemoState) -> None:
        self.state = state
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request (load generator stopping) is normal, not a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(port: int, host: str = "127.0.0.1", **settings: Any) -> None:
    """Run until SIGTERM or SIGINT; the server loop runs in a thread so the signal can stop it."""
    disable_created_metrics()  # no *_created series: less to scrape, nothing the guardian reads
    server = DemoServer((host, port), DemoState(**settings))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    print(f"demo app {settings.get('version', 'v1')} listening on http://{host}:{server.server_port}", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m demo.app", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--error-ratio", type=float, default=0.0)
    p.add_argument("--latency", type=float, default=0.01, help="seconds per request (±10%% jitter)")
    p.add_argument("--version", default="v1", help="reported in responses and demo_app_info")
    p.add_argument("--fail-after", type=float, default=None, metavar="SECONDS",
                   help="degrade by itself this long after starting: 5xx on --fail-ratio of the requests from then on")
    p.add_argument("--fail-ratio", type=float, default=0.1, help="the error ratio once degraded (default 0.1)")
    a = p.parse_args(argv)
    if a.fail_after is not None and a.fail_after < 0:
        p.error("--fail-after must be at least 0")
    if not 0.0 <= a.fail_ratio <= 1.0:
        p.error("--fail-ratio must be within [0, 1]")
    serve(a.port, a.host, error_ratio=a.error_ratio, latency=a.latency, version=a.version,
          fail_after=a.fail_after, fail_ratio=a.fail_ratio)


if __name__ == "__main__":
    main()
