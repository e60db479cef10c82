"""Two (or more) `guardian serve` replicas on one real PostgreSQL, guarding a canary of real demo apps
scraped by a real Prometheus: what tests/integration/test_ha_failover.py and benchmarks/failover.py run.

    with HAStack(lease_seconds=3, tick_seconds=1) as ha:
        a, b = ha.replica("a"), ha.replica("b")
        rid = ha.start_rollout(a)
        killed_at = ha.kill_holder(rid)              # SIGKILL the replica holding the rollout's lease
        seconds, survivor = ha.wait_takeover(rid, killed_at)
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from guardian.demo.loadgen import LoadGenerator
from guardian.demo.pgserver import PostgresServer
from guardian.demo.stack import DemoApp, GuardianServer, PrometheusServer, wait_until

RULES = """\
service: checkout
checks:
  - {name: error-rate, kind: threshold, ratio: errors / requests, above: 5%, window: 4s, for: 2s, min_samples: 10,
     action: rollback}
"""


class HAStack:
    def __init__(self, workdir: Path | None = None, *, lease_seconds: float = 15.0, tick_seconds: float = 1.0,
                 analysis_seconds: float = 2.0, rps: float = 40.0):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="guardian-ha-"))
        self.settings = {"lease_seconds": lease_seconds, "tick_seconds": tick_seconds,
                         "evaluation_delay": min(0.5, tick_seconds / 2), "min_window": 4,
                         "analysis_seconds": analysis_seconds}
        self.rps = rps
        self.replicas: dict[str, GuardianServer] = {}
        self._started: list[Any] = []

    def __enter__(self) -> HAStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> HAStack:
        self.pg = PostgresServer().start()
        self._started.append(self.pg)
        self.baseline = DemoApp("baseline", latency=0.005, version="v1").start()
        self._started.append(self.baseline)
        self.canary = DemoApp("canary", latency=0.005, version="v2").start()
        self._started.append(self.canary)
        (self.workdir / "prometheus").mkdir(parents=True, exist_ok=True)
        self.prometheus = PrometheusServer(
            [(self.baseline.target, {"service": "checkout", "track": "baseline"}),
             (self.canary.target, {"service": "checkout", "track": "canary"})],
            "1s", workdir=self.workdir / "prometheus").start()
        self._started.append(self.prometheus)
        self.load = LoadGenerator({self.baseline.url: 1, self.canary.url: 1}, rps=self.rps, max_seconds=900).start()
        self._started.append(self.load)
        self.rules = self.workdir / "rules"
        self.rules.mkdir(exist_ok=True)
        (self.rules / "checkout.yaml").write_text(RULES)
        self.prometheus.wait_for_series('http_requests_total{service="checkout",track="canary"}')
        return self

    def stop(self) -> None:
        for server in self.replicas.values():
            server.stop()
        for thing in reversed(self._started):
            thing.stop()

    # -- replicas ---------------------------------------------------------------------------------
    def replica(self, name: str) -> GuardianServer:
        """Start `guardian serve` as replica NAME (its lease holder id) on the shared PostgreSQL."""
        workdir = self.workdir / f"guardian-{name}-{len(self.replicas)}"
        workdir.mkdir(parents=True)
        server = GuardianServer(workdir, prometheus_url=self.prometheus.url, rules=[str(self.rules)],
                                database_url=self.pg.url, replica_id=name, **self.settings).start()
        self.replicas[name] = server
        return server

    def live(self) -> dict[str, GuardianServer]:
        return {n: s for n, s in self.replicas.items() if s.proc is not None and s.proc.poll() is None}

    def start_rollout(self, via: GuardianServer, *, steps: str = "10,50,100", **body: Any) -> str:
        r = via.api("POST", "/v1/rollouts", json={"service": "checkout", "image": "demo:v2",
                                                   "steps": [int(s) for s in steps.split(",")], **body})
        r.raise_for_status()
        return r.json()["id"]

    # -- the database's view --------------------------------------------------------------------------
    def sql(self, query: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def holder(self, rollout_id: str) -> str | None:
        rows = self.sql("SELECT holder FROM leases WHERE rollout_id = %s AND expires_at > now()", rollout_id)
        return rows[0][0] if rows else None

    def kill_holder(self, rollout_id: str) -> tuple[str, float]:
        """SIGKILL the replica holding the rollout's lease; returns its name and the time of the kill."""
        name = wait_until(lambda: self.holder(rollout_id), 30, 0.05, f"a holder for {rollout_id}")
        proc = self.replicas[name].proc
        assert proc is not None
        killed_at = time.time()
        proc.kill()
        proc.wait(10)
        return name, killed_at

    def wait_takeover(self, rollout_id: str, killed_at: float, timeout: float = 60.0) -> tuple[float, str]:
        """Seconds from the kill to the first tick written after it (only a survivor can write one), and
        the survivor now holding the lease."""
        def first_tick() -> float | None:
            rows = self.sql("SELECT min(at) FROM ticks WHERE rollout_id = %s AND at > %s", rollout_id, killed_at)
            return rows[0][0]

        at = wait_until(first_tick, timeout, 0.05, f"a tick of {rollout_id} after the kill")
        return at - killed_at, self.holder(rollout_id) or "?"
