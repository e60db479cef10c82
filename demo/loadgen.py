"""A steady, weighted load generator for the demo services, steerable over HTTP.

    python -m demo.loadgen BASELINE_URL [CANARY_URL] --rps 20 --seconds 60 \
        [--weights 90,10] [--control-port 9100]

`LoadGenerator` sends `rps` requests per second in total, split over its URLs by weights that can
change while it runs (`set_weights`). The split is a smooth weighted round-robin, not random, so a
90/10 split really is 9 to 1 in every window of ten requests: canary tests see the traffic they
asked for. A pacing thread feeds a small bounded queue drained by worker threads, so a slow
service cannot pile up unbounded work (requests that find the queue full are counted as skipped).

`serve_control(port, canary=..., baseline=...)` lets a rollout steer the split the way a traffic
router would: `POST /weights` with `{"canary": 25}`, or the webhook actuator's payload (any JSON
carrying `"weight": INT`, the canary percent), sends that percent to the canary URL.
"""
from __future__ import annotations

import argparse
import json
import queue
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class LoadGenerator:
    def __init__(
        self,
        targets: Mapping[str, float] | Sequence[str],
        *,
        rps: float = 20.0,
        max_seconds: float = 600.0,
        timeout: float = 2.0,
        workers: int = 8,
        keepalive: bool = True,
        record: bool = False,
    ) -> None:
        if rps <= 0:
            raise ValueError("rps must be positive")
        self.rps, self.max_seconds, self.workers = rps, max_seconds, workers
        self._lock = threading.Lock()
        self._weights: dict[str, float] = {}
        self._current: dict[str, float] = {}
        self.set_weights(targets if isinstance(targets, Mapping) else {u: 1.0 for u in targets})
        self.counts: dict[str, dict[str, int]] = {}
        self.skipped = 0
        self._queue: queue.Queue[str] = queue.Queue(maxsize=workers * 2)
        self._halt = threading.Event()  # stop now
        self._paced = threading.Event()  # the pacing thread is done; drain the queue and end
        self._threads: list[threading.Thread] = []
        # keepalive=False: a new connection per request, as a fleet of independent clients would open
        # (a kept-alive connection that nginx retires on reload can lose the request sent on it)
        limits = httpx.Limits(max_connections=workers * 2, max_keepalive_connections=None if keepalive else 0)
        self._client = httpx.Client(timeout=timeout, limits=limits)
        self.dropped = 0  # requests that got no HTTP answer at all (refused, reset, timed out)
        # "v1" -> first / last answer time, count; failed (5xx) answers: failed, first_failed, last_failed
        self.versions: dict[str, dict[str, float]] = {}
        # record=True: every request as (time, version that answered or None, status or None when dropped)
        self.answers: list[tuple[float, str | None, int | None]] | None = [] if record else None
        self.wall_offset = time.time() - time.monotonic()  # the times here are monotonic: + this is wall time
        self._control: ThreadingHTTPServer | None = None

    # -- weights ---------------------------------------------------------------------------------
    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Replace the split, e.g. `{"http://b": 90, "http://c": 10}`; weights are relative."""
        clean = {url: float(w) for url, w in weights.items()}
        if any(w < 0 for w in clean.values()) or sum(clean.values()) <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum: {dict(weights)}")
        with self._lock:
            self._weights = clean
            self._current = dict.fromkeys(clean, 0.0)

    @property
    def weights(self) -> dict[str, float]:
        with self._lock:
            return dict(self._weights)

    def _pick(self) -> str:
        """Smooth weighted round-robin (as nginx does): exact proportions, evenly interleaved."""
        with self._lock:
            total = sum(self._weights.values())
            for url, w in self._weights.items():
                self._current[url] += w
            best = max(self._current, key=self._current.__getitem__)
            self._current[best] -= total
            return best

    # -- counting --------------------------------------------------------------------------------
    def _count(self, url: str, ok: bool) -> None:
        with self._lock:
            c = self.counts.setdefault(url, {"ok": 0, "failed": 0})
            c["ok" if ok else "failed"] += 1

    @property
    def ok(self) -> int:
        with self._lock:
            return sum(c["ok"] for c in self.counts.values())

    @property
    def failed(self) -> int:
        with self._lock:
            return sum(c["failed"] for c in self.counts.values())

    def stats(self) -> dict[str, Any]:
        with self._lock:
            per_url = {u: dict(c) for u, c in self.counts.items()}
        return {
            "ok": sum(c["ok"] for c in per_url.values()),
            "failed": sum(c["failed"] for c in per_url.values()),
            "skipped": self.skipped,
            "dropped": self.dropped,
            "per_url": per_url,
        }

    # -- running ---------------------------------------------------------------------------------
    def start(self) -> LoadGenerator:
        self._threads = [threading.Thread(target=self._pace, name="loadgen-pace", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, name=f"loadgen-{i}", daemon=True) for i in range(self.workers)
        ]
        for t in self._threads:
            t.start()
        return self

    def _pace(self) -> None:
        t0, i = time.monotonic(), 0
        while not self._halt.is_set():
            due = t0 + i / self.rps
            if due - t0 >= self.max_seconds:
                break
            if self._halt.wait(max(0.0, due - time.monotonic())):
                break
            try:
                self._queue.put_nowait(self._pick())
            except queue.Full:
                self.skipped += 1
            i += 1
        self._paced.set()

    def _work(self) -> None:
        while not self._halt.is_set():
            try:
                url = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._paced.is_set():
                    return
                continue
            try:
                response = self._client.get(url)
                ok = response.status_code < 400
                self._seen(_version(response.text), response.status_code)
            except httpx.HTTPError:
                ok = False
                with self._lock:
                    self.dropped += 1
                    if self.answers is not None:
                        self.answers.append((time.monotonic(), None, None))
            self._count(url, ok)

    @staticmethod
    def version_of(url: str, timeout: float = 2.0) -> str:
        """One request on a new connection: the version that answered (the demo app's last word)."""
        return _version(httpx.get(url, timeout=timeout, headers={"Connection": "close"}).text)

    def _seen(self, version: str, status: int = 200) -> None:
        """The demo app ends every answer with its version: remember when each version answered (and failed)."""
        now = time.monotonic()
        with self._lock:
            v = self.versions.setdefault(version, {"first": now, "last": now, "count": 0, "failed": 0})
            v["last"], v["count"] = now, v["count"] + 1
            if status >= 400:
                v.setdefault("first_failed", now)
                v["last_failed"], v["failed"] = now, v["failed"] + 1
            if self.answers is not None:
                self.answers.append((now, version, status))

    def wall(self, t: float) -> float:
        """A time of this generator's (monotonic) as wall-clock time, to compare with the guardian's decisions."""
        return t + self.wall_offset

    def join(self, timeout: float | None = None) -> bool:
        """Wait until `max_seconds` of load have been sent and answered; True when finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending at once (in-flight requests finish), and stop the control endpoint."""
        self._halt.set()
        self.join(timeout)
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
            self._control = None
        self._client.close()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- remote steering -------------------------------------------------------------------------
    def set_canary_percent(self, percent: float, *, canary: str, baseline: str) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"canary percent must be within [0, 100], got {percent}")
        self.set_weights({baseline: 100 - percent, canary: percent})

    def serve_control(self, port: int = 0, *, canary: str, baseline: str, host: str = "127.0.0.1") -> int:
        """Listen for `POST /weights` (see module doc); returns the bound port (0 picks a free one)."""
        gen = self

        class Control(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._reply(200, {"weights": gen.weights, "canary": gen.weights.get(canary, 0.0)})

            def do_POST(self) -> None:
                if self.path.split("?", 1)[0] not in ("/", "/weights"):
                    return self._reply(404, {"error": "POST /weights"})
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                    percent = canary_percent(body)
                    gen.set_canary_percent(percent, canary=canary, baseline=baseline)
                except (ValueError, TypeError) as exc:
                    return self._reply(400, {"error": str(exc)})
                return self._reply(200, {"weights": gen.weights, "canary": percent})

            def _reply(self, code: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer((host, port), Control)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        self._control = server
        return server.server_port


def _version(text: str) -> str:
    return text.split()[-1] if text.strip() else "?"


def canary_percent(body: Any) -> float:
    """The canary percent from `{"canary": P}` or from the first `"weight": P` anywhere in a webhook body."""
    if isinstance(body, dict) and "canary" in body:
        return float(body["canary"])
    stack = [body]
    while stack:
        item = stack.pop(0)
        if isinstance(item, dict):
            if isinstance(item.get("weight"), int | float) and not isinstance(item["weight"], bool):
                return float(item["weight"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    raise ValueError('no "canary" or "weight" in the body')


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m demo.loadgen", description=__doc__.splitlines()[0])
    p.add_argument("urls", nargs="+", help="with --control-port: BASELINE_URL CANARY_URL")
    p.add_argument("--rps", type=float, default=20.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--weights", help="comma-separated, one per URL (default: equal)")
    p.add_argument("--control-port", type=int, help="serve POST /weights on 127.0.0.1:PORT")
    a = p.parse_args(argv)
    weights = [float(w) for w in a.weights.split(",")] if a.weights else [1.0] * len(a.urls)
    if len(weights) != len(a.urls):
        p.error("--weights needs one weight per URL")
    if a.control_port is not None and len(a.urls) != 2:
        p.error("--control-port needs exactly two URLs: BASELINE_URL CANARY_URL")
    gen = LoadGenerator(dict(zip(a.urls, weights, strict=True)), rps=a.rps, max_seconds=a.seconds)
    if a.control_port is not None:
        port = gen.serve_control(a.control_port, baseline=a.urls[0], canary=a.urls[1])
        print(f"loadgen control on http://127.0.0.1:{port}/weights", flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: gen._halt.set())
    gen.start()
    while not gen.join(timeout=0.5):
        pass
    gen.stop()
    print(json.dumps(gen.stats()), flush=True)


if __name__ == "__main__":
    main()
