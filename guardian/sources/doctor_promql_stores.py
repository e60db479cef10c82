"""`guardian doctor` for Prometheus and VictoriaMetrics (sources/doctor.py): the signal's PromQL, as doctor.py's
`PromQLExaminer` and `diagnose` ask it; for VictoriaMetrics also its `-search.latencyOffset` (its `/flags` page):
above 1 s the newest samples are hidden from every tick (a note)."""
from __future__ import annotations

import re
from typing import Any

from guardian.sources import Introspectable
from guardian.sources.doctor import PromQLExaminer
from guardian.sources.victoriametrics import VictoriaMetricsSource

_LATENCY_OFFSET = re.compile(r'-search\.latencyOffset="?([^"\s]*)')
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")


def go_seconds(text: str) -> float | None:
    """A Go duration ("30s", "1m0s", "500ms") in seconds; None if it is not one."""
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    return sum(float(n) * unit[u] for n, u in parts)


class PromQLStoreExaminer(PromQLExaminer):
    """`source`: what a tick asks (a batching wrapper, maybe); `store`: the server behind it."""

    def __init__(self, source: Introspectable, store: Any) -> None:
        super().__init__(source)
        self.store = store

    def notes(self) -> list[str]:
        """VictoriaMetrics: its `-search.latencyOffset`, read from its /flags page (not there: nothing said)."""
        if not isinstance(self.store, VictoriaMetricsSource):
            return []
        page = self.store.flags()
        found = _LATENCY_OFFSET.search(page) if page is not None else None
        offset = go_seconds(found.group(1)) if found else None
        if found is None or offset is None or offset <= 1.0:
            return []
        return [f"VictoriaMetrics at {self.store.safe_url} hides the newest {offset:g} s of samples from every query "
                f"(-search.latencyOffset={found.group(1)}): each tick's last {offset:g} s would read as missing; run "
                "it with -search.latencyOffset=1s or less (docs/sources.md, VictoriaMetrics)"]


__all__ = ["PromQLStoreExaminer", "go_seconds"]
