"""BatchingDatadogSource: every read of a span of time, for all its rollouts, in one Datadog request.

A standard signal is computed from a few reads — one query over one span (`datadog.NEEDS`: the tick window, or the
window but at least min_window) — and rollouts ticking on the same grid need the same spans. Each query asks for
every planned service and arm at once and keeps them apart (`{service IN (a, b, …) AND track IN (baseline, canary)}
by {service,track}`): a rollout arm's group in the answer is exactly the series the per-rollout query returns, and
`DatadogSource.signal_value` computes its value from it with the same code. A service or arm absent from an answer
has no series there (NoData, or 0 errors when it answered), as alone.

The scheduler plans each pass of due ticks first (`plan`); the first fetch needing a span then sends one request
holding every read planned for that span (one query each), and the fetches after it read the answer kept (waiting
for it while it is in flight: sources/single_flight.py). A fetch that no plan covered asks again, with the planned
services and arms besides its own; over a span nobody planned (a rollout's pre-rollout window, read once at its
start) it asks for every read of the span at once, so that the other signals' fetches over it find them. So a tick
window of 100 rollouts costs one request per span: two when the tick is shorter than min_window, one otherwise. A
request that failed is SourceUnavailable for every rollout it covered and is kept `failure_ttl` seconds (a dead or
rate-limited Datadog is not asked once per rollout); plans and answers are kept `keep_seconds`.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from guardian.sources import ArmSelector, Fetch, SignalQuery
from guardian.sources.datadog import (
    NEEDS,
    READS_OF_SPAN,
    DatadogSource,
    Groups,
    Read,
    planned_keys,
    span_ms,
    tag_value,
)
from guardian.sources.single_flight import Sets, SingleFlight
from guardian.sources.wrapping import Wrapping

SpanKey = tuple[str, int, int]  # arm label, span from and to (ms)


def _order(read: Read) -> tuple[Any, ...]:
    return read.metric, read.where, read.by, read.counted


class BatchingDatadogSource(Wrapping):
    """A MetricSource over a DatadogSource that asks once per (arm label, span) for every planned rollout."""

    def __init__(self, inner: DatadogSource, *, failure_ttl: float = 2.0, keep_seconds: float = 60.0) -> None:
        self.inner = inner
        self.failure_ttl, self.keep_seconds = failure_ttl, keep_seconds
        # a span's scope: Sets(reads, services, arm values); one request per span; plans and answers kept keep_seconds
        self._flights: SingleFlight[SpanKey, Sets, dict[Read, Groups]] = SingleFlight(
            prune=lambda flights: flights.forget_older(self.keep_seconds), group=lambda key: key)

    def plan(self, requests: Iterable[Fetch]) -> None:
        """Fetches about to be made: the first fetch needing a span asks for all of their reads over it."""
        self._flights.plan((key, Sets.of(reads, services, arms), None)
                           for key, (reads, services, arms) in planned_keys(requests, self.inner.min_window).items())

    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        self.inner.check(query, end - start)
        svc, label, value = tag_value(service), tag_value(arm.label), tag_value(arm.label_value)
        keys = {kind: (label, *span_ms(kind, start, end, self.inner.min_window)) for kind in READS_OF_SPAN}
        needs: dict[SpanKey, set[Read]] = {}
        for read, kind in NEEDS[query.signal]:
            needs.setdefault(keys[kind], set()).add(read)
        answers = self._flights.get(
            {key: Sets.of(reads, {svc}, {value}) for key, reads in needs.items()}, self._ask,
            failure_ttl=self.failure_ttl, wait=self.inner.timeout * 2 + 5,
            failed=lambda e: f"the batched Datadog request failed: {e!r}",
            late=lambda *_: f"the batched Datadog request for {query.signal} did not finish",
            # nobody planned the span: every read of it, for the fetches to come
            unplanned={key: Sets.of((r for kind, k in keys.items() if k == key for r in READS_OF_SPAN[kind]), (), ())
                       for key in needs})
        return self.inner.signal_value(query, service, arm,
                                       lambda read, kind: answers[keys[kind]][read].get((svc, value), []))

    def _ask(self, asked: dict[SpanKey, Sets], _progress: Any) -> dict[SpanKey, dict[Read, Groups]]:
        """One request for a span's reads, services and arms: each read's groups."""
        [((label, begin, stop), scope)] = asked.items()
        reads, services, arms = scope.sets
        ordered = tuple(sorted(reads, key=_order))
        answers = self.inner.ask(begin, stop, ordered, services, label, arms)
        return {(label, begin, stop): dict(zip(ordered, answers, strict=True))}
