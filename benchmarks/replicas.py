"""Replicas: N rollouts guarded by two `guardian serve` replicas sharing one PostgreSQL.

    .venv/bin/python benchmarks/replicas.py --rollouts 1000 --duration 60 --tick 10 [--json out.json]

What runs (all real processes on loopback): the fleet exporter (`python -m tests.fixtures.fleet`, N services x 2
arms) scraped every 5 s by Debian's `prometheus`; a PostgreSQL 15 (tests/fixtures/pgserver.py); two replicas r0 and
r1 (noop actuator, the built-in default policy: 6 signals x 2 arms per tick, batched queries, aligned ticks). The N
rollouts are started through the API (4 at a time), all of them on r0 (the worst case for the spread: r1 must take
its share).

Measured:
- spread: how long until both replicas hold their share (within one of N/2), then every 2 s over the measured
  window the rollouts each holds (from the `leases` table);
- over `duration` seconds: tick lag (stored `at` of each tick due minus when it was due, unevaluated ones counted as
  lagging to the end, as benchmarks/scale.py), the ticks each replica wrote, Prometheus queries per tick window (both
  replicas), PostgreSQL transactions per tick window (`pg_stat_database.xact_commit`, both replicas and the
  benchmark's own few reads), each replica's CPU;
- a replica leaving: r1 stopped (SIGTERM, it releases its leases): seconds until r0 holds all N, and the tick lag
  over the next two tick windows; then joining: a new r2 started: seconds until the two hold their shares again.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import EVALUATION_DELAY, _cpu_seconds, _prom_queries, _quantile, tick_lags  # noqa: E402

from demo.stack import GuardianServer, PrometheusServer, free_port, terminate, wait_until  # noqa: E402
from tests.fixtures.fleet import service_names  # noqa: E402
from tests.fixtures.pgserver import PostgresServer  # noqa: E402


def _sql(url: str, query: str, *params: Any) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def _holders(url: str) -> dict[str, int]:
    return dict(_sql(url, "SELECT holder, count(*) FROM leases l JOIN rollouts r ON r.id = l.rollout_id "
                          "WHERE l.expires_at > now() AND r.phase IN ('progressing', 'paused') GROUP BY holder"))


def _xacts(url: str) -> int:
    return int(_sql(url, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")[0][0])


def _lags(url: str, w0: float, w1: float) -> tuple[list[float], int, int]:
    states = [json.loads(r[0]) for r in _sql(url, "SELECT state FROM rollouts")]
    stored = {(r[0], r[1]): r[2] for r in _sql(url, "SELECT rollout_id, tick, at FROM ticks")}
    return tick_lags(states, stored, w0, w1)


def _balanced(url: str, names: tuple[str, ...], rollouts: int) -> bool:
    held = _holders(url)
    return sorted(held) == sorted(names) and all(abs(held[n] - rollouts / len(names)) <= 1 for n in names) \
        and sum(held.values()) == rollouts


def _stats(lags: list[float]) -> dict[str, float | None]:
    return {"p50": round(_quantile(lags, 0.5), 3) if lags else None,
            "p99": round(_quantile(lags, 0.99), 3) if lags else None,
            "max": round(max(lags), 3) if lags else None}


def run(rollouts: int = 1000, tick_seconds: float = 10.0, duration: float = 60.0, lease_seconds: float = 15.0,
        verbose: bool = True, query_log: Path | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="replicas-bench-"))
    (work / "rules").mkdir()
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if verbose else (lambda m: None)
    exporter_port = free_port()
    exporter = subprocess.Popen([sys.executable, "-m", "tests.fixtures.fleet", "--services", str(rollouts),
                                 "--port", str(exporter_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=Path(__file__).resolve().parents[1])
    prom = pg = None
    replicas: dict[str, GuardianServer] = {}

    def replica(name: str) -> GuardianServer:
        (work / name).mkdir()
        server = GuardianServer(work / name, prometheus_url=prom.url, rules=[str(work / "rules")],
                                database_url=pg.url, replica_id=name, lease_seconds=lease_seconds,
                                tick_seconds=tick_seconds, evaluation_delay=EVALUATION_DELAY, batch_queries=True,
                                align_ticks=True, analysis_seconds=86400, log_level="WARNING").start()
        replicas[name] = server
        return server

    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{exporter_port}/metrics", timeout=30).status_code == 200,
                   60, 0.2, "the exporter", ignore=(httpx.HTTPError,))
        prom = PrometheusServer([(f"127.0.0.1:{exporter_port}", {})], "5s", workdir=work / "prometheus",
                                query_log=query_log).start()
        prom.wait_for_series(f"count(http_requests_total) >= {rollouts * 2}", timeout=60)
        pg = PostgresServer().start()
        r0, r1 = replica("r0"), replica("r1")
        say(f"starting {rollouts} rollouts on r0 ...")
        began = time.time()
        with httpx.Client(base_url=r0.url, timeout=120) as client, ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda service: client.post("/v1/rollouts", json={
                "service": service, "image": f"{service}:v2"}).raise_for_status(), service_names(rollouts)))
        started = time.time()
        say(f"started in {started - began:.0f} s; holders {_holders(pg.url)}")
        wait_until(lambda: _balanced(pg.url, ("r0", "r1"), rollouts), 120, 0.5, "the spread")
        spread_s = time.time() - started
        say(f"spread after {spread_s:.1f} s: {_holders(pg.url)}")
        first_due = (int(time.time() // tick_seconds) + 1) * tick_seconds + EVALUATION_DELAY
        time.sleep(max(0.0, first_due + tick_seconds / 2 - time.time()))
        q0, x0, w0 = _prom_queries(prom.url), _xacts(pg.url), time.time()
        cpu0 = {n: _cpu_seconds(s.proc.pid) for n, s in replicas.items() if s.proc}
        samples = []
        while time.time() < w0 + duration:
            samples.append(_holders(pg.url))
            time.sleep(2.0)
        q1, x1, w1 = _prom_queries(prom.url), _xacts(pg.url), time.time()
        cpu1 = {n: _cpu_seconds(s.proc.pid) for n, s in replicas.items() if s.proc}
        time.sleep(min(tick_seconds, 5.0))
        lags, due, missing = _lags(pg.url, w0, w1)
        by_replica = dict(_sql(pg.url, "SELECT l.holder, count(*) FROM ticks t JOIN leases l ON l.rollout_id = "
                                       "t.rollout_id WHERE t.at >= %s AND t.at < %s GROUP BY l.holder", w0, w1))
        windows = duration / tick_seconds
        shares = [s.get(n, 0) for s in samples for n in ("r0", "r1")]

        say("r1 leaves ...")
        left_at = time.time()
        r1.stop()
        wait_until(lambda: _holders(pg.url).get("r0") == rollouts, 120, 0.2, "r0 taking everything")
        leave_s = time.time() - left_at
        time.sleep(2 * tick_seconds + 5.0)
        leave_lags, _, leave_missing = _lags(pg.url, left_at, left_at + 2 * tick_seconds)
        say("r2 joins ...")
        joined_at = time.time()
        replica("r2")
        wait_until(lambda: _balanced(pg.url, ("r0", "r2"), rollouts), 120, 0.2, "the spread with r2")
        join_s = time.time() - joined_at
        result = {
            "rollouts": rollouts, "replicas": 2, "tick_seconds": tick_seconds, "duration": duration,
            "lease_seconds": lease_seconds, "start_seconds": round(started - began, 1),
            "spread_after_start_s": round(spread_s, 1),
            "held_min": min(shares), "held_max": max(shares),
            "tick_lag_p50_s": _stats(lags)["p50"], "tick_lag_p99_s": _stats(lags)["p99"],
            "tick_lag_max_s": _stats(lags)["max"], "ticks_due": due, "ticks_not_evaluated": missing,
            "ticks_by_replica": by_replica,
            "prom_queries_per_tick": round((q1 - q0) / windows, 1),
            "pg_transactions_per_tick_window": round((x1 - x0) / windows, 1),
            "pg_transactions_per_rollout_tick": round((x1 - x0) / max(1, due - missing), 2),
            "cpu_percent": {n: round(100 * (cpu1[n] - cpu0[n]) / (w1 - w0), 1) for n in cpu1},
            "leave_all_held_after_s": round(leave_s, 1),
            "leave_tick_lag_p99_s": _stats(leave_lags)["p99"], "leave_ticks_not_evaluated": leave_missing,
            "join_balanced_after_s": round(join_s, 1),
        }
        say(json.dumps(result))
        return result
    finally:
        for server in replicas.values():
            server.stop()
        for thing in (pg, prom):
            if thing is not None:
                thing.stop()
        terminate(exporter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--tick", type=float, default=10.0)
    parser.add_argument("--lease-seconds", type=float, default=15.0)
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--query-log", type=Path, help="Prometheus writes every query it answers here (JSON lines)")
    args = parser.parse_args()
    result = run(args.rollouts, args.tick, args.duration, args.lease_seconds, query_log=args.query_log)
    print(f"replicas: {args.rollouts} rollouts on 2 replicas sharing PostgreSQL, {args.tick:g} s ticks, "
          f"{args.duration:g} s measured, {os.cpu_count()} cores")
    for key, value in result.items():
        print(f"  {key}: {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), **result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
