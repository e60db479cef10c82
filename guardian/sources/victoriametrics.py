"""VictoriaMetrics as a metric source: its Prometheus-compatible query API, so `PrometheusSource` with two switches.

Measured against a real single-node VictoriaMetrics (Debian's victoria-metrics 1.79) by the same integration tests
as Prometheus (tests/integration/test_prometheus_source.py, test_batching.py). The differences that matter here
(docs/sources.md):
- its query response cache rounds a range query's start and end to multiples of the step, which would move a tick
  window's edges: every query is sent with `nocache=1`;
- readiness is `/health` (not `/-/ready`);
- a range query's newest point lags for a few seconds (its rollup cache; `nocache=1` does not help) while an
  instant query is current: a counter's increase over a tick window is asked as two instant queries, at the
  window's start and end, merged per series into the range answer `counter_value` reads;
- a query that does not parse is HTTP 422 (Prometheus: 400); both are "unavailable", never "no data";
- the server itself hides the newest `-search.latencyOffset` (30 s by default) of samples from queries: run it with
  `-search.latencyOffset=1s` or less, or every tick's last seconds read as missing (the doctor says so, from `flags`).
"""
from __future__ import annotations

import json
from typing import Any

import requests

from guardian.sources.prometheus import PrometheusSource


class VictoriaMetricsSource(PrometheusSource):
    product = "VictoriaMetrics"
    extra_params = {"nocache": "1"}
    ready_path = "/health"

    def range_result(self, promql: str, start: float, end: float) -> list[dict[str, Any]]:
        """The series of `promql` at `start` and `end`, as a range answer, from two instant queries."""
        series: dict[str, dict[str, Any]] = {}
        for at in (start, end):
            for s in self.instant_result(promql, at):
                key = json.dumps(s.get("metric") or {}, sort_keys=True)
                series.setdefault(key, {"metric": s.get("metric") or {}, "values": []})["values"].append(
                    [at, s["value"][1]])
        return list(series.values())

    def flags(self) -> str | None:
        """Its `/flags` page: the command-line flags it runs with. None where it has none (a cluster's vmselect) or
        does not answer."""
        try:
            r = self._session.get(f"{self.url}/flags", headers=self._headers, timeout=self.timeout)
        except requests.RequestException:
            return None
        return r.text if r.status_code == 200 else None
