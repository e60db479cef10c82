"""One exporter for a fleet: the series of N services × 2 arms that the default templates read.

Per (service, track): `http_requests_total` by code (200, and 500 for two services in three: the rest
never failed, which the `errors` template must read as 0), the `http_request_duration_seconds`
histogram (buckets, count, sum), `process_cpu_seconds_total` and `process_resident_memory_bytes`.
Counters grow with time at per-service rates; `reset(service, track)` starts a pair's counters again
from zero (a restarted process). Used by benchmarks/scale.py (as a subprocess:
`python -m guardian.demo.fleet --services 500 --port 9200`) and the batching tests (in a thread).
"""
from __future__ import annotations

import argparse
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from guardian.rules.promql import escape_label_value

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)
TRACKS = ("canary", "baseline")


def service_names(n: int) -> list[str]:
    return [f"svc-{i:04d}" for i in range(n)]


class Fleet:
    def __init__(self, services: list[str], tracks: tuple[str, ...] = TRACKS, start: float | None = None):
        self.services, self.tracks = list(services), tracks
        self.start = time.time() if start is None else start
        self._reset_at: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def reset(self, service: str, track: str) -> None:
        with self._lock:
            self._reset_at[(service, track)] = time.time()

    def exposition(self, now: float | None = None) -> bytes:
        now = time.time() if now is None else now
        out: list[str] = []
        for i, service in enumerate(self.services):
            s = escape_label_value(service)
            for j, track in enumerate(self.tracks):
                with self._lock:
                    since = max(self.start, self._reset_at.get((service, track), self.start))
                age = max(0.0, now - since)
                rps = 4.0 + (i % 7) + j
                requests = math.floor(rps * age)
                sel = f'service="{s}",track="{track}"'
                failing = i % 3 != 0
                errors = math.floor(requests * (0.01 + 0.02 * j + 0.01 * (i % 2))) if failing else 0
                out.append(f'http_requests_total{{{sel},code="200"}} {requests - errors}')
                if failing:
                    out.append(f'http_requests_total{{{sel},code="500"}} {errors}')
                slow = 0.05 + 0.1 * j + 0.01 * (i % 5)  # share of requests slower than each bucket decays
                for le in BUCKETS:
                    share = 1.0 - slow * (BUCKETS[-1] / le) ** 0.5 * 0.3
                    out.append(f'http_request_duration_seconds_bucket{{{sel},le="{le}"}} '
                               f"{math.floor(requests * min(1.0, max(0.0, share)))}")
                out.append(f'http_request_duration_seconds_bucket{{{sel},le="+Inf"}} {requests}')
                out.append(f"http_request_duration_seconds_count{{{sel}}} {requests}")
                out.append(f"http_request_duration_seconds_sum{{{sel}}} {requests * (0.03 + 0.01 * j):.3f}")
                out.append(f"process_cpu_seconds_total{{{sel}}} {age * (0.05 + 0.001 * i):.3f}")
                mem = 50e6 + 1e5 * i + 2e6 * j + 1e6 * math.sin(now / 30.0 + i)
                out.append(f"process_resident_memory_bytes{{{sel}}} {mem:.0f}")
        return ("\n".join(out) + "\n").encode()


def serve(fleet: Fleet, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve /metrics in a daemon thread; `server.server_address[1]` is the port, `shutdown()` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            body = fleet.exposition()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="fleet-exporter").start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--port", type=int, default=9200)
    args = parser.parse_args()
    server = serve(Fleet(service_names(args.services)), args.port)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
