"""Alertmanager webhook intake: how many posts per second `guardian serve` takes in, and how fast.

    .venv/bin/python benchmarks/webhook_intake.py [--posts 20000] [--clients 16] [--distinct N]
                                                   [--processes 2] [--rate R] [--warmup 500] [--json]

`guardian serve` runs as a real subprocess (uvicorn, SQLite state, an Alertmanager token, no rules, a
Prometheus that is not there: the intake needs none). `--posts` webhook bodies (payload version 4, one
alert each, about no rollout) are posted over loopback by `--clients` keep-alive connections, spread
over `--processes` client processes. The client is lean on purpose (the machine has 2 cores that it
shares with the server): raw non-blocking sockets driven by `selectors`, the request bytes built before
the clock starts, one HTTP/1.1 request in flight per connection. Post i carries fingerprint
`bench{i % distinct}`, so with `--distinct` below `--posts` the later posts are repeats (which must
change nothing).

Closed loop by default: each connection posts its next body as soon as the previous one is answered
(the sustained maximum). With `--rate R` the posts are paced at R per second in total (open loop),
and a post's latency counts from when it was due, so a server that falls behind shows it.

A warm-up of `--warmup` posts (other fingerprints, not timed) comes first: the figures are the sustained
ones, not a cold start's. posts_per_s = posts / (last answer - first send); p50/p99 over every timed
post; lost = posts answered non-2xx (or not at all) + alerts missing from `GET /v1/alerts?all=true`
afterwards (the warm-up's included).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import selectors
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: its demo/ and tests/ packages

TOKEN = "bench-alert-token"


def body(i: int, distinct: int, prefix: str = "bench") -> bytes:
    n = i % distinct
    return json.dumps({
        "version": "4", "groupKey": f"bench-{n}", "truncatedAlerts": 0, "status": "firing", "receiver": "guardian",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "alerts": [{"status": "firing", "labels": {"alertname": "BenchAlert", "service": "bench-nothing",
                                                   "severity": "info", "n": str(n)},
                    "annotations": {"summary": "benchmark"}, "startsAt": "2026-11-28T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": f"{prefix}{n:08d}"}],
    }, separators=(",", ":")).encode()


def request(i: int, distinct: int, host: str, port: int, prefix: str = "bench") -> bytes:
    b = body(i, distinct, prefix)
    return (f"POST /v1/alerts HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n").encode() + b


class _Conn:
    __slots__ = ("sock", "buf", "index", "due")

    def __init__(self, sock: socket.socket):
        self.sock, self.buf, self.index, self.due = sock, b"", -1, 0.0


def _client(host: str, port: int, indices: list[int], connections: int, distinct: int, rate: float | None,
            t0_due: float, go: Any, out: Any, prefix: str = "bench") -> None:
    """One client process: `connections` keep-alive connections post `indices` (the due time of post i
    is t0_due + i / rate when paced). Sends back (latencies, failures, first send, last answer)."""
    reqs = {i: request(i, distinct, host, port, prefix) for i in indices}
    todo = list(reversed(indices))
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(min(connections, len(indices))):
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        conns.append(_Conn(s))
    latencies: list[float] = []
    failures: list[str] = []
    waiting: list[_Conn] = []  # paced: connections waiting for their next post's due time
    go.wait()
    first = time.perf_counter()

    def send(c: _Conn) -> None:
        c.index = todo.pop()
        if rate:
            c.due = t0_due + c.index / rate
            delay = c.due - time.perf_counter()
            if delay > 0:
                waiting.append(c)
                return
        else:
            c.due = time.perf_counter()
        c.sock.setblocking(True)
        c.sock.sendall(reqs[c.index])
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)

    for c in conns:
        if todo:
            send(c)
    active = len(conns)
    while active:
        if waiting:
            waiting.sort(key=lambda c: c.due)
            timeout = max(0.0, waiting[0].due - time.perf_counter())
        else:
            timeout = 30.0
        events = sel.select(timeout)
        now = time.perf_counter()
        while waiting and waiting[0].due <= now:
            c = waiting.pop(0)
            c.sock.setblocking(True)
            c.sock.sendall(reqs[c.index])
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, c)
        if not events and not waiting and timeout == 30.0:
            failures.extend(f"no answer in 30 s to post {c.index}" for c in conns if c.index >= 0)
            break
        for key, _ in events:
            c: _Conn = key.data
            chunk = c.sock.recv(65536)
            if not chunk:
                failures.append(f"connection closed by the server during post {c.index}")
                sel.unregister(c.sock)
                active -= 1
                continue
            c.buf += chunk
            head_end = c.buf.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            head = c.buf[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(c.buf) < head_end + 4 + length:
                continue
            status = int(head.split(" ", 2)[1])
            done = time.perf_counter()
            latencies.append(done - c.due)
            if not 200 <= status < 300:
                failures.append(f"post {c.index}: {status} {c.buf[head_end + 4:head_end + 4 + length][:200]!r}")
            c.buf = c.buf[head_end + 4 + length:]
            c.index = -1
            sel.unregister(c.sock)
            if todo:
                send(c)
            else:
                active -= 1
    last = time.perf_counter()
    for c in conns:
        c.sock.close()
    out.put((latencies, failures, first, last))


def post_all(url: str, posts: int, clients: int, distinct: int, processes: int = 2,
             rate: float | None = None, prefix: str = "bench") -> dict[str, Any]:
    """Post `posts` bodies to a running guardian at `url`; the client side of `run`."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    processes = max(1, min(processes, clients))
    ctx = mp.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    t0_due = time.perf_counter() + 1.0 + posts / 4000  # every process has built its requests by then
    workers = []
    for p in range(processes):
        share = clients // processes + (1 if p < clients % processes else 0)
        w = ctx.Process(target=_client, args=(host, int(port), list(range(p, posts, processes)), share, distinct,
                                              rate, t0_due, go, out, prefix), daemon=True)
        w.start()
        workers.append(w)
    if rate:
        time.sleep(max(0.0, t0_due - time.perf_counter() - 0.05))
    else:
        time.sleep(0.3 + posts / 20000)  # let each build its requests
    go.set()
    results = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join(10)
    latencies = sorted(x for r in results for x in r[0])
    failures = [f for r in results for f in r[1]]
    took = max(r[3] for r in results) - min(r[2] for r in results)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [latencies[0]] * 99
    return {"answered": len(latencies), "refused": len(failures) + (posts - len(latencies) - len(failures)),
            "seconds": round(took, 3), "posts_per_s": round(posts / took) if took > 0 else 0,
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
            "max_ms": round(latencies[-1] * 1000, 1) if latencies else None, "first_failures": failures[:3]}


def run(posts: int = 20000, clients: int = 16, distinct_alerts: int | None = None, processes: int = 2,
        rate: float | None = None, warmup: int = 500) -> dict[str, Any]:
    """Start `guardian serve`, post `warmup` posts (not timed), then `posts`; count what it stored.
    distinct_alerts defaults to posts (no repeats)."""
    import httpx

    from demo.stack import GuardianServer

    distinct = min(distinct_alerts or posts, posts)
    with tempfile.TemporaryDirectory(prefix="guardian-intake-") as tmp:
        work = Path(tmp)
        (work / "rules").mkdir()
        g = GuardianServer(work, prometheus_url="http://127.0.0.1:9", rules=[str(work / "rules")],
                           alerts_token=TOKEN, log_level="WARNING").start()
        try:
            w = post_all(g.url, warmup, clients, warmup, processes, None, "warmup") if warmup else None
            c = post_all(g.url, posts, clients, distinct, processes, rate)
            alerts = httpx.get(f"{g.url}/v1/alerts", params={"all": True}, timeout=120).json()
            stored = {a["fingerprint"] for a in alerts}
        finally:
            g.stop()
    missing = sum(1 for n in range(distinct) if f"bench{n:08d}" not in stored)
    if w is not None:  # the warm-up's posts count as lost too when refused or not stored
        missing += sum(1 for n in range(warmup) if f"warmup{n:08d}" not in stored)
        c["refused"] += w["refused"]
    return {"posts": posts, "clients": clients, "processes": processes, "distinct_alerts": distinct,
            "rate": rate, "warmup": warmup, "posts_per_s": c["posts_per_s"], "p50_ms": c["p50_ms"],
            "p99_ms": c["p99_ms"],
            "max_ms": c["max_ms"], "seconds": c["seconds"], "refused": c["refused"], "missing": missing,
            "lost": c["refused"] + missing, "first_failures": c["first_failures"],
            "client": f"raw keep-alive HTTP/1.1 sockets (selectors), {processes} processes"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=16, help="keep-alive connections in all")
    parser.add_argument("--distinct", type=int, default=None, help="distinct alerts (default: one per post)")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--rate", type=float, default=None, help="paced posts per second (open loop)")
    parser.add_argument("--warmup", type=int, default=500, help="untimed posts first")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    r = run(args.posts, args.clients, args.distinct, args.processes, args.rate, args.warmup)
    if not args.json:
        print(f"webhook intake: {r['posts_per_s']} posts/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
              f"max {r['max_ms']} ms, {r['lost']} lost ({r['refused']} refused, {r['missing']} not stored) of "
              f"{r['posts']} posts ({r['distinct_alerts']} distinct alerts), {r['clients']} clients, "
              f"{'paced at ' + str(r['rate']) + '/s' if r['rate'] else 'closed loop'}; client: {r['client']}")
    print(json.dumps(r))
    return 0 if r["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
