"""Several metric stores at once: each service's signals are read from the store its rule file names (`source:`),
else the settings' `source` (docs/sources.md). The router is a `MetricSource` that hands each fetch to that store,
splits a plan of fetches between them (each batching store batches its own), answers ready only when every store
does, and closes them all. A service whose store is not configured is unavailable, never "no data"."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from guardian.errors import SourceUnavailable
from guardian.sources import ArmSelector, Closeable, Fetch, MetricSource, Pinging, Planning, SignalQuery


class SourceRouter:
    def __init__(self, sources: Mapping[str, MetricSource], choose: Callable[[str], str]) -> None:
        self.sources, self.choose = dict(sources), choose

    def __repr__(self) -> str:
        return f"SourceRouter({', '.join(f'{k}={v!r}' for k, v in self.sources.items())})"

    def for_service(self, service: str) -> MetricSource:
        name = self.choose(service)
        source = self.sources.get(name)
        if source is None:
            setting = "GUARDIAN_CLOUDWATCH_REGION" if name == "cloudwatch" else f"GUARDIAN_{name.upper()}_URL"
            raise SourceUnavailable(f"{service}'s rule file reads its signals from {name}, which is not configured "
                                    f"(set {setting}); configured: {', '.join(self.sources)}")
        return source

    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        return self.for_service(service).fetch(query, service, arm, start, end)

    def plan(self, requests: Iterable[Fetch]) -> None:
        groups: dict[int, tuple[MetricSource, list[Fetch]]] = {}
        for r in requests:
            try:
                source = self.for_service(r[1])
            except SourceUnavailable:
                continue  # its fetch will say so
            groups.setdefault(id(source), (source, []))[1].append(r)
        for source, group in groups.values():
            if isinstance(source, Planning):
                source.plan(group)

    def ping(self) -> bool:
        return all(s.ping() for s in self.sources.values() if isinstance(s, Pinging))

    def close(self) -> None:
        for s in self.sources.values():
            if isinstance(s, Closeable):
                s.close()

