"""Scale: one guardian, N concurrent rollouts against a real Prometheus; batched versus per-rollout queries.

    .venv/bin/python benchmarks/scale.py --rollouts 500 --duration 120 --tick 10 --mode both [--json out.json]
                                         [--store prometheus|victoriametrics|influxdb|datadog|cloudwatch]

What runs (all real processes on loopback):
- one exporter (`python -m tests.fixtures.fleet`) serving the series of N services × 2 arms that the six
  default templates read (requests by code, the latency histogram, CPU, memory), changing over time;
- Debian's `prometheus` scraping it every 5 s (`--store victoriametrics`: Debian's single-node `victoria-metrics`
  scraping it with the same configuration, the guardian reading it through its VictoriaMetrics source;
  `--store influxdb`: Debian's `influxd`, written every 5 s in the layout of Telegraf's prometheus input by the
  emulation of Telegraf in tests/fixtures/influx.py scraping the exporter, in this process — Debian ships no Telegraf;
  `--store datadog`: a STUB of Datadog's metrics API (tests/stubs/datadog_stub.py: Datadog is a hosted service),
  fed every 5 s by the emulation of the Datadog Agent's openmetrics check in tests/fixtures/datadog_agent.py, both in
  this process; `--store cloudwatch`: moto's server, an EMULATOR of CloudWatch's API with the p99 and trimmed-count
  statistics it lacks added (tests/fixtures/cloudwatch.py), fed every 5 s through PutMetricData by its FleetPublisher
  in this process, the same rates as the exporter's);
- `guardian serve` (noop actuator, SQLite, the built-in default policy: 6 signals × 2 arms per tick,
  `batch_queries` on or off, aligned ticks), with N canary rollouts started at once through its API
  (analysis_seconds long enough that none ends during the run).

Measured over `duration` seconds, from half a tick after the first tick of every rollout is due:
- tick lag: for every tick due in that time, when its evidence was stored (the `ticks` table's `at`,
  i.e. after all its fetches) minus when it became due (window end + evaluation_delay); p50/p99 in
  seconds; ticks due but never evaluated by the end count as lag = end - due (so a guardian that falls
  behind cannot look good by skipping). The guardian's own `guardian_tick_lag_seconds` (start lag) is
  reported beside it (its p99 from the histogram buckets, an upper bound);
- store queries: Prometheus's own `prometheus_http_requests_total` for /api/v1/query and /query_range
  (VictoriaMetrics: `vm_http_requests_total` for the same paths; InfluxDB: `queryReq`, the /query requests its
  httpd answered, from its /debug/vars; Datadog: the stub's count of POST /api/v2/query/timeseries; CloudWatch: the
  emulator's count of GetMetricData requests), read before and after; per second and per tick window;
- guardian CPU % (of one core: utime + stime from /proc over the window) and peak RSS (VmHWM).

`run()` is what benchmarks/run_all.py calls; the CLI prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.stack import (  # noqa: E402
    GuardianServer,
    PrometheusServer,
    VictoriaMetricsServer,
    free_port,
    terminate,
    wait_until,
)
from tests.fixtures.datadog_agent import AgentLike  # noqa: E402
from tests.fixtures.fleet import service_names  # noqa: E402
from tests.fixtures.influx import InfluxDBServer, TelegrafLike  # noqa: E402
from tests.stubs.datadog_stub import DatadogStub  # noqa: E402

EVALUATION_DELAY = 1.0
QUERY_HANDLERS = ("/api/v1/query", "/api/v1/query_range")


def _prom_queries(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "prometheus_http_requests":
            total += sum(s.value for s in family.samples
                         if s.name.endswith("_total") and s.labels.get("handler") in QUERY_HANDLERS)
        elif family.name in ("vm_http_requests", "vm_http_requests_total"):  # VictoriaMetrics: by path, untyped
            total += sum(s.value for s in family.samples
                         if s.name.endswith("_total") and s.labels.get("path") in QUERY_HANDLERS)
    return total


def _influx_queries(url: str) -> float:
    """The /query requests influxd's httpd has answered (its own count, /debug/vars)."""
    stats = httpx.get(f"{url}/debug/vars", timeout=10).json()
    return float(sum(v["values"]["queryReq"] for k, v in stats.items() if k.startswith("httpd")))


class TelegrafInflux:
    """Debian's influxd, and the emulation of Telegraf (tests/fixtures/influx.py) writing the exporter into it."""

    def __init__(self, target: str, interval: str, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.influx = InfluxDBServer(workdir)
        self.telegraf = TelegrafLike(self.influx, [(f"http://{target}/metrics", {})],
                                     interval=float(interval.rstrip("s")))
        self.url = self.influx.url

    def start(self) -> TelegrafInflux:
        self.influx.start()
        self.telegraf.start().settled()  # a write holds every service's series
        return self

    def queries(self) -> float:
        return _influx_queries(self.url)

    def stop(self) -> None:
        self.telegraf.stop()
        self.influx.stop()


class AgentDatadog:
    """The Datadog stub, and the emulation of the Agent's openmetrics check (tests/fixtures/datadog_agent.py) sending
    the exporter's series to it (namespace `app`, the source's default)."""

    def __init__(self, target: str, interval: str) -> None:
        self.stub = DatadogStub()
        self.agent = AgentLike(self.stub.url, self.stub.api_key, [(f"http://{target}/metrics", [])],
                               interval=float(interval.rstrip("s")))
        self.url = self.stub.url
        self.keys = {"datadog_api_key": self.stub.api_key, "datadog_app_key": self.stub.app_key}

    def start(self) -> AgentDatadog:
        self.stub.start()
        self.agent.start()
        wait_until(lambda: self.agent.sends >= 2, 60, 0.1, "two runs of the check (counts from the second)")
        return self

    def queries(self) -> float:
        return float(self.stub.count("/api/v2/query/timeseries"))

    def stop(self) -> None:
        self.agent.stop()
        self.stub.stop()


class MotoCloudWatch:
    """moto's server for CloudWatch (an emulator: tests/fixtures/cloudwatch.py) and the fleet publishing to it; the
    guardian gets the emulator's endpoint and credentials (this process's environment, which it inherits)."""

    def __init__(self, rollouts: int, interval: str) -> None:
        from tests.fixtures.cloudwatch import CREDENTIALS, REGION, CloudWatchEmulator

        self.emulator = CloudWatchEmulator()
        self.rollouts, self.interval = rollouts, float(interval.rstrip("s"))
        os.environ.update(CREDENTIALS)
        self.publisher = None
        self.settings = {"source": "cloudwatch", "cloudwatch_region": REGION}

    def start(self) -> MotoCloudWatch:
        from tests.fixtures.cloudwatch import FleetPublisher

        self.emulator.start()
        self.settings["cloudwatch_endpoint_url"] = self.url = self.emulator.url
        self.publisher = FleetPublisher(self.emulator.client(), service_names(self.rollouts), self.interval).start()
        return self

    def queries(self) -> float:
        return float(self.emulator.calls("GetMetricData"))

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()
        self.emulator.stop()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def _histogram_quantile(url: str, name: str, q: float) -> float | None:
    """An upper bound of quantile q from a histogram's cumulative buckets on the guardian's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    buckets = []
    for family in text_string_to_metric_families(text):
        if family.name == name:
            buckets = sorted((float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket"))
    if not buckets or buckets[-1][1] == 0:
        return None
    for le, count in buckets:
        if count >= q * buckets[-1][1]:
            return le
    return None


def _lags(db: Path, window_start: float, window_end: float) -> tuple[list[float], int, int]:
    """Lag of every tick due within [window_start, window_end): stored `at` - due; unevaluated ones count
    as window_end - due. Returns (lags, ticks due, ticks not evaluated)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        states = [json.loads(r[0]) for r in con.execute("SELECT state FROM rollouts")]
        stored = {(r[0], r[1]): r[2] for r in con.execute("SELECT rollout_id, tick, at FROM ticks")}
    finally:
        con.close()
    return tick_lags(states, stored, window_start, window_end)


def tick_lags(states: list[dict[str, Any]], stored: dict[tuple[str, int], float], window_start: float,
              window_end: float) -> tuple[list[float], int, int]:
    """`_lags` from the rollouts' states and the ticks stored ((rollout id, tick) -> at), whatever the store."""
    lags: list[float] = []
    missing = 0
    for s in states:
        origin = s.get("tick_origin") or s["created_at"]
        step = s["step_seconds"]
        t = 0
        while True:
            due = origin + (t + 1) * step + EVALUATION_DELAY
            if due >= window_end:
                break
            if due >= window_start:
                at = stored.get((s["id"], t))
                if at is None:
                    missing += 1
                    lags.append(window_end - due)
                else:
                    lags.append(max(0.0, at - due))
            t += 1
    return lags, len(lags), missing


def run(rollouts: int = 500, signals: int = 6, tick_seconds: float = 10.0, duration: float = 120.0,
        batched: bool = True, scrape_interval: str = "5s", verbose: bool = False,
        store: str = "prometheus") -> dict[str, Any]:
    if signals != 6:
        raise ValueError("the benchmark judges with the built-in default policy: its 6 standard signals")
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    (work / "rules").mkdir()
    exporter_port = free_port()
    exporter = subprocess.Popen([sys.executable, "-m", "tests.fixtures.fleet", "--services", str(rollouts),
                                 "--port", str(exporter_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=Path(__file__).resolve().parents[1])  # `-m` finds tests/ from the repository
    prom = guardian = None
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{exporter_port}/metrics", timeout=30).status_code == 200,
                   60, 0.2, "the exporter", ignore=(httpx.HTTPError,))
        if store == "influxdb":
            prom = TelegrafInflux(f"127.0.0.1:{exporter_port}", scrape_interval, work / store).start()
        elif store == "datadog":
            prom = AgentDatadog(f"127.0.0.1:{exporter_port}", scrape_interval).start()
        elif store == "cloudwatch":
            prom = MotoCloudWatch(rollouts, scrape_interval).start()
        else:
            server = VictoriaMetricsServer if store == "victoriametrics" else PrometheusServer
            prom = server([(f"127.0.0.1:{exporter_port}", {})], scrape_interval, workdir=work / store).start()
            prom.wait_for_series(f"count(http_requests_total) >= {rollouts * 2}", timeout=60)
        queries_of = prom.queries if isinstance(prom, TelegrafInflux | AgentDatadog | MotoCloudWatch) else (
            lambda: _prom_queries(prom.url))
        reading = {"source": store, f"{store}_url": prom.url} if store not in ("prometheus", "cloudwatch") else {}
        reading |= prom.keys if isinstance(prom, AgentDatadog) else {}
        reading |= prom.settings if isinstance(prom, MotoCloudWatch) else {}
        unused = "http://127.0.0.1:9"  # no service reads Prometheus when the settings' source is influxdb
        elsewhere = store in ("influxdb", "datadog", "cloudwatch")
        guardian = GuardianServer(work, prometheus_url=unused if elsewhere else prom.url,
                                  rules=[str(work / "rules")],
                                  tick_seconds=tick_seconds, evaluation_delay=EVALUATION_DELAY,
                                  batch_queries=batched, align_ticks=True, analysis_seconds=86400,
                                  log_level="WARNING", **reading).start()
        assert guardian.proc is not None
        pid = guardian.proc.pid
        began = time.time()
        with httpx.Client(base_url=guardian.url, timeout=30) as client:
            for service in service_names(rollouts):
                client.post("/v1/rollouts", json={"service": service, "image": f"{service}:v2"}).raise_for_status()
        started = time.time()
        # the measured window starts half a tick after the first tick of the last rollout started is due,
        # so it holds exactly duration / tick_seconds tick windows (for whole multiples)
        first_due = (int(started // tick_seconds) + 2) * tick_seconds + EVALUATION_DELAY
        time.sleep(max(0.0, first_due + tick_seconds / 2 - time.time()))
        q0, cpu0, w0 = queries_of(), _cpu_seconds(pid), time.time()
        time.sleep(duration)
        q1, cpu1, w1 = queries_of(), _cpu_seconds(pid), time.time()
        time.sleep(min(tick_seconds, 5.0))  # let ticks due just before the end be stored
        start_lag_p99 = _histogram_quantile(guardian.url, "guardian_tick_lag_seconds", 0.99)
        peak = _peak_rss_mb(pid)
        guardian.stop()
        lags, due, missing = _lags(work / "guardian.db", w0, w1)
        windows = duration / tick_seconds
        queries = q1 - q0
        result = {
            "store": store, "rollouts": rollouts, "signals": signals, "tick_seconds": tick_seconds,
            "duration": duration,
            "batched": batched, "start_seconds": round(started - began, 1),
            "tick_lag_p50_s": round(_quantile(lags, 0.50), 3) if lags else None,
            "tick_lag_p99_s": round(_quantile(lags, 0.99), 3) if lags else None,
            "tick_lag_max_s": round(max(lags), 3) if lags else None,
            "tick_start_lag_p99_s": start_lag_p99,
            "ticks_due": due, "ticks_not_evaluated": missing,
            "prom_queries": int(queries),  # the store's own count (named so before there were other stores)
            "prom_queries_per_s": round(queries / (w1 - w0), 1),
            "queries_per_tick": round(queries / windows, 1),
            "guardian_cpu_percent": round(100 * (cpu1 - cpu0) / (w1 - w0), 1),
            "guardian_peak_rss_mb": round(peak, 1),
        }
        if verbose:
            print(json.dumps(result), file=sys.stderr)
        return result
    finally:
        if guardian is not None:
            guardian.stop()
        if prom is not None:
            prom.stop()
        terminate(exporter)


ROWS = [
    ("tick lag p50 (s)", "tick_lag_p50_s"), ("tick lag p99 (s)", "tick_lag_p99_s"),
    ("tick lag max (s)", "tick_lag_max_s"), ("tick start lag p99 (s, histogram bound)", "tick_start_lag_p99_s"),
    ("ticks due / not evaluated", None), ("store queries/s (its own count)", "prom_queries_per_s"),
    ("queries per tick", "queries_per_tick"), ("guardian CPU (% of a core)", "guardian_cpu_percent"),
    ("guardian peak RSS (MB)", "guardian_peak_rss_mb"),
]


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    head = ["", *names] + (["per-rollout / batched"] if len(names) == 2 else [])
    lines = [head]
    for label, key in ROWS:
        cells = [label]
        for name in names:
            r = results[name]
            cells.append(f"{r['ticks_due']} / {r['ticks_not_evaluated']}" if key is None else str(r.get(key)))
        if len(names) == 2 and key in ("prom_queries_per_s", "queries_per_tick"):
            b, p = results["batched"].get(key), results["per_rollout"].get(key)
            cells.append(f"{p / b:.0f}x" if b else "-")
        elif len(names) == 2:
            cells.append("")
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=500)
    parser.add_argument("--signals", type=int, default=6)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--tick", type=float, default=10.0)
    parser.add_argument("--mode", choices=("batched", "per-rollout", "both"), default="both")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--store", choices=("prometheus", "victoriametrics", "influxdb", "datadog", "cloudwatch"),
                        default="prometheus", help="the metric store the guardian reads")
    args = parser.parse_args()
    modes = {"batched": [True], "per-rollout": [False], "both": [True, False]}[args.mode]
    results = {}
    for batched in modes:
        name = "batched" if batched else "per_rollout"
        print(f"running {name}: {args.rollouts} rollouts, {args.tick:g} s ticks, {args.duration:g} s ...",
              file=sys.stderr)
        results[name] = run(args.rollouts, args.signals, args.tick, args.duration, batched, verbose=True,
                            store=args.store)
    print(f"scale ({args.store}): {args.rollouts} rollouts x {args.signals} signals x 2 arms, {args.tick:g} s ticks, "
          f"{args.duration:g} s measured, {os.cpu_count()} cores")
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
