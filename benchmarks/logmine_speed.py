"""Log template mining speed and memory: 1,000,000 synthetic log lines through `guardian.engine.logmine.Miner`.

The lines are generated deterministically (seeded): access logs (methods, a few dozen routes with
ids and words in them, statuses, sizes, latencies, client IPv4 and IPv6 addresses with ports, user
agents, request ids), some forty kinds of application messages with numbers, UUIDs, hex ids,
durations, timestamps and host:port pairs in them, stack-trace lines, warnings, and rare messages
(one in ten thousand and fewer). They are made in chunks, as bytes (what `docker logs` gives), and
only the mining is timed; memory is measured in a second pass under tracemalloc (the miner's
allocations only: its peak), and the process's peak RSS is reported too (that includes one chunk of
input). Prints a table and one JSON line. Shared machines vary: `reference_us` is the time of a fixed
bit of pure Python at the start, to compare runs by.

    .venv/bin/python benchmarks/logmine_speed.py --repeat 3
    .venv/bin/python benchmarks/logmine_speed.py --lines 200000 --no-memory
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import statistics
import sys
import time
import timeit
import tracemalloc
from collections.abc import Callable, Iterator

from guardian.engine.logmine import Miner

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor",
         "whiskey", "xray", "yankee", "zulu", "red", "green", "blue", "shoes", "shirts", "hats", "books", "lamps",
         "chairs", "tables", "garden", "kitchen", "sport", "music", "travel")
ROUTES = (
    "/api/v1/users/{n}", "/api/v1/users/{n}/orders", "/api/v1/orders/{n}/items/{n}", "/cart/{n}",
    "/cart/{n}/checkout", "/products/{w}", "/products/{w}/reviews", "/search?q={w}&page={n}",
    "/static/js/app.{h}.js", "/static/css/site.{h}.css", "/images/{w}/{n}.jpg", "/healthz", "/metrics",
    "/api/v2/sessions/{u}", "/api/v2/payments/{u}/status", "/login", "/logout", "/", "/favicon.ico",
    "/api/v1/inventory/{w}/{n}", "/feeds/{w}.xml", "/api/v1/recommendations?user={n}&limit={n}",
)
AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) Firefox/124.0", "curl/8.5.0", "Go-http-client/1.1",
          "python-httpx/0.27.0", "kube-probe/1.29", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4) Safari/604.1")
MESSAGES = (  # application messages: a template, and how to fill its fields
    "cache miss for key user:{n}:profile", "cache hit ratio {f} over last {n} lookups",
    "connected to database {host}:{port} in {d}", "connection pool size={n} idle={n} waiting={n}",
    "job {u} finished in {d} with {n} items", "job {u} started by scheduler at {ts}",
    "retrying request to http://{host}:{port}/api/{w} attempt {n}/5", "user {w} logged in from {ip}",
    "user {w} logged out after {d}", "order {n} created for customer {n} total {f} EUR",
    "order {n} shipped via {w} tracking {h}", "payment {u} authorised amount {f}",
    "refund {u} issued for order {n}", "sent email to customer {n} template {w}",
    "kafka consumer group {w} lag {n} on partition {n}", "published {n} events to topic {w} in {d}",
    "gc pause {d} heap {n}MB", "reloaded configuration from /etc/app/{w}.yaml version {v}",
    "feature flag {w} evaluated to {b} for user {n}", "rate limit reached for client {ip} ({n} req/s)",
    "session {h} expired", "token refreshed for client {u} expires in {n}s",
    "upstream {host}:{port} healthy", "upstream {host}:{port} marked unhealthy after {n} failures",
    "worker {n} picked up batch {n} of {n}", "worker {n} idle for {d}",
    "image resize {w}.jpg {n}x{n} -> {n}x{n} in {d}", "inventory sync for warehouse {w} updated {n} skus",
    "slow query took {d}: SELECT * FROM {w} WHERE id = {n}", "trace {h} span {h} exported",
    "listening on [{ip6}]:{port}", "dns lookup {host} resolved to {ip} in {d}",
    "tls handshake with {ip}:{port} completed protocol TLSv1.3", "disk usage {f}% on /var/lib/{w}",
    "checkpoint {n} written at {ts} size {n} bytes", "leader election: node {w}-{n} became leader",
    "metrics flushed: {n} series in {d}", "webhook delivered to https://{host}/{w} status {status}",
    "recommendation model {w} loaded version {v} in {d}", "request {h} queued behind {n} others",
)
WARNINGS = (
    "WARN deprecated endpoint /api/v1/{w} called by {ip}", "WARN retry budget {f} exhausted for {w}",
    "WARN response time {d} above target for {w}", "ERROR failed to connect to {host}:{port}: connection refused",
    "ERROR unhandled exception in handler {w}: KeyError('{w}')",
    "ERROR database deadlock detected on table {w}, transaction {n} rolled back",
)
TRACE = ("  at com.example.{W}.{w}({W}.java:{n})", "  at java.base/java.lang.Thread.run(Thread.java:{n})",
         "Caused by: java.io.IOException: {W} stream closed", '  File "/app/{w}.py", line {n}, in {w}')
RARE = ("FATAL out of memory allocating {n} bytes in {w}", "config key {w} unknown, ignored",
        "clock skew of {d} detected against {host}", "certificate for {host} expires in {n} days",
        "migration {n}_{w} applied in {d}", "shutdown requested by signal {n}")


class Synth:
    """Deterministic synthetic log lines (seeded)."""

    def __init__(self, seed: int = 7):
        r = self.r = random.Random(seed)
        self.ips = [f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}" for _ in range(500)]
        self.hosts = [f"{w}-{i}.svc.cluster.local" for i, w in enumerate(r.sample(WORDS, 20))]
        self.t = 1_764_324_000.0
        self.fill: dict[str, Callable[[], str]] = {
            "n": lambda: str(int(r.paretovariate(1.2) * 10)), "f": lambda: f"{r.random() * 100:.2f}",
            "w": lambda: r.choice(WORDS), "W": lambda: r.choice(WORDS).capitalize(),
            "h": lambda: f"{r.getrandbits(64):016x}", "u": lambda: self.uuid(),
            "d": lambda: r.choice((f"{r.randrange(1, 999)}ms", f"{r.random() * 10:.3f}s", f"{r.randrange(1, 90)}us",
                                   f"{r.randrange(1, 5)}m{r.randrange(60)}s")),
            "ip": lambda: r.choice(self.ips), "ip6": lambda: r.choice(("::", "::1", "fe80::1", "2001:db8::42")),
            "host": lambda: r.choice(self.hosts), "port": lambda: str(r.choice((5432, 6379, 8080, 9092, 443))),
            "ts": lambda: self.stamp(self.t - r.randrange(86400)),
            "v": lambda: f"{r.randrange(1, 4)}.{r.randrange(20)}.{r.randrange(9)}",
            "b": lambda: r.choice(("true", "false")), "status": lambda: r.choice(("200", "202", "500", "503")),
        }

    def uuid(self) -> str:
        h = f"{self.r.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    @staticmethod
    def stamp(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"

    def format(self, template: str) -> str:
        out, rest = [], template
        while "{" in rest:
            head, _, tail = rest.partition("{")
            name, _, rest = tail.partition("}")
            out += (head, self.fill[name]())
        out.append(rest)
        return "".join(out)

    def access(self) -> str:
        r = self.r
        client = f"[{r.choice(('2001:db8::', 'fd00::'))}{r.randrange(1, 0xffff):x}]:{r.randrange(1024, 65535)}" if (
            r.random() < 0.1) else f"{r.choice(self.ips)}:{r.randrange(1024, 65535)}"
        path = self.format(r.choice(ROUTES))
        method = r.choices(("GET", "POST", "PUT", "DELETE"), (80, 12, 5, 3))[0]
        status = r.choices(("200", "201", "204", "301", "304", "400", "401", "404", "500", "503"),
                           (70, 5, 3, 2, 8, 3, 2, 5, 1, 1))[0]
        return (f'INFO http {client} "{method} {path} HTTP/1.1" {status} {r.randrange(0, 50_000)} '
                f'{r.expovariate(1 / 40):.1f}ms "{r.choice(AGENTS)}" request_id={self.uuid()}')

    def line(self) -> str:
        r = self.r
        self.t += r.expovariate(200.0)
        x = r.random()
        if x < 0.70:
            body = self.access()
        elif x < 0.94:
            body = "INFO " + self.format(r.choice(MESSAGES))
        elif x < 0.98:
            body = self.format(r.choice(WARNINGS))
        elif x < 0.9998:
            body = self.format(r.choice(TRACE))
        else:  # rare: a few kinds, and a one-off now and then
            body = self.format(r.choice(RARE)) if x < 0.99995 else f"one-off {r.getrandbits(32)} {r.choice(WORDS)}"
        return f"{self.stamp(self.t)} {body}"

    def chunks(self, total: int, size: int) -> Iterator[list[bytes]]:
        while total > 0:
            n = min(size, total)
            total -= n
            yield [self.line().encode() for _ in range(n)]


def reference_us() -> float:
    """This machine's speed right now: microseconds for a fixed bit of pure Python (best of 20)."""
    return min(timeit.repeat("sum(range(1000))", number=200, repeat=20)) / 200 * 1e6


def timed(lines: int, chunk: int, seed: int) -> tuple[Miner, float]:
    """Mine `lines` synthetic lines; the seconds spent mining (generation excluded)."""
    miner, spent = Miner(), 0.0
    for block in Synth(seed).chunks(lines, chunk):
        began = time.perf_counter()
        miner.add_lines(block)
        spent += time.perf_counter() - began
    return miner, spent


def traced(lines: int, chunk: int, seed: int) -> tuple[int, int]:
    """The same under tracemalloc: (bytes the miner holds at the end, its peak while mining); the
    chunk of input being mined is not counted."""
    tracemalloc.start()
    miner, peak = Miner(), 0
    chunks = Synth(seed).chunks(lines, chunk)
    while True:
        before = tracemalloc.get_traced_memory()[0]
        block = next(chunks, None)
        if block is None:
            break
        held = tracemalloc.get_traced_memory()[0] - before  # the input
        tracemalloc.reset_peak()
        miner.add_lines(block)
        peak = max(peak, tracemalloc.get_traced_memory()[1] - held)
        del block
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return current, peak


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--chunk", type=int, default=50_000, help="lines generated (untimed) at a time")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=1, help="timed passes (the median and the best are reported)")
    p.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    a = p.parse_args()

    reference = reference_us()
    runs = [timed(a.lines, a.chunk, a.seed) for _ in range(a.repeat)]
    miner, seconds = runs[0][0], statistics.median(s for _, s in runs)
    rate, best = a.lines / seconds, a.lines / min(s for _, s in runs)
    result = {"benchmark": "logmine_speed", "lines": a.lines, "repeat": a.repeat, "seconds": round(seconds, 3),
              "lines_per_second": round(rate), "best_lines_per_second": round(best), "clusters": len(miner),
              "maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "python": platform.python_version(), "reference_us": round(reference, 2)}
    rows = [("lines", f"{a.lines:,}"), ("mining seconds (median)", f"{seconds:.2f}"),
            ("lines/second (median)", f"{rate:,.0f}"), ("lines/second (best)", f"{best:,.0f}"),
            ("clusters", f"{len(miner):,}"), ("peak RSS, with a chunk of input (MiB)", f"{result['maxrss_mib']}"),
            ("reference: sum(range(1000)) (us)", f"{reference:.2f}")]
    if not a.no_memory:
        current, peak = traced(a.lines, a.chunk, a.seed)
        result |= {"miner_mib": round(current / 2**20, 1), "miner_peak_mib": round(peak / 2**20, 1)}
        rows += [("miner's memory at the end (MiB, tracemalloc)", f"{result['miner_mib']}"),
                 ("miner's peak (MiB, tracemalloc)", f"{result['miner_peak_mib']}")]
    top = miner.clusters()[:5]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v:>12}")
    print("largest templates:")
    for c in top:
        print(f"  {c.count:>8,}  {c.template[:110]}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
