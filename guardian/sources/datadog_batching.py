"""BatchingDatadogSource: every read of a span of time, for all its rollouts, in one Datadog request.

A standard signal is computed from a few reads — one query over one span (`datadog.NEEDS`: the tick window, or the
window but at least min_window) — and rollouts ticking on the same grid need the same spans. Each query asks for
every planned service and arm at once and keeps them apart (`{service IN (a, b, …) AND track IN (baseline, canary)}
by {service,track}`): a rollout arm's group in the answer is exactly the series the per-rollout query returns, and
`DatadogSource.signal_value` computes its value from it with the same code. A service or arm absent from an answer
has no series there (NoData, or 0 errors when it answered), as alone.

The scheduler plans each pass of due ticks first (`plan`); the first fetch needing a span then sends one request
holding every read planned for that span (one query each), and the fetches after it read the answer kept (waiting for
it while it is in flight). A fetch that no plan covered asks again, with the planned services and arms besides its
own; over a span nobody planned (a rollout's pre-rollout window, read once at its start) it asks for every read of
the span at once, so that the other signals' fetches over it find them. So a tick window of 100 rollouts costs one
request per span: two when the tick is shorter than min_window, one otherwise. A request that failed is
SourceUnavailable for every rollout it covered and is kept `failure_ttl` seconds (a dead or rate-limited Datadog is
not asked once per rollout); plans and answers are kept `keep_seconds`.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from guardian.errors import SourceUnavailable
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
from guardian.sources.wrapping import Wrapping

SpanKey = tuple[str, int, int]  # arm label, span from and to (ms)


def _order(read: Read) -> tuple[Any, ...]:
    return read.metric, read.where, read.by, read.counted


@dataclass
class _Wanted:
    """What the plans ask of a span."""

    reads: set[Read] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    arms: set[str] = field(default_factory=set)
    created: float = field(default_factory=time.monotonic)


@dataclass
class _Ask:
    """One request: in flight, answered, or failed."""

    reads: tuple[Read, ...]
    services: frozenset[str]
    arms: frozenset[str]
    created: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    groups: dict[Read, Groups] = field(default_factory=dict)
    error: SourceUnavailable | None = None
    finished: float = 0.0

    def serves(self, reads: Iterable[Read], service: str, arm: str, now: float, failure_ttl: float) -> bool:
        if self.error is not None and self.done.is_set() and now - self.finished > failure_ttl:
            return False
        return set(reads) <= set(self.reads) and service in self.services and arm in self.arms


class BatchingDatadogSource(Wrapping):
    """A MetricSource over a DatadogSource that asks once per (arm label, span) for every planned rollout."""

    def __init__(self, inner: DatadogSource, *, failure_ttl: float = 2.0, keep_seconds: float = 60.0) -> None:
        self.inner = inner
        self.failure_ttl, self.keep_seconds = failure_ttl, keep_seconds
        self._lock = threading.Lock()
        self._planned: dict[SpanKey, _Wanted] = {}
        self._asks: dict[SpanKey, _Ask] = {}

    def plan(self, requests: Iterable[Fetch]) -> None:
        """Fetches about to be made: the first fetch needing a span asks for all of their reads over it."""
        with self._lock:
            for key, (reads, services, arms) in planned_keys(requests, self.inner.min_window).items():
                wanted = self._planned.setdefault(key, _Wanted())
                wanted.reads.update(reads)
                wanted.services.update(services)
                wanted.arms.update(arms)
            self._prune()

    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        self.inner.check(query, end - start)
        svc, label, value = tag_value(service), tag_value(arm.label), tag_value(arm.label_value)
        by_kind: dict[str, list[Read]] = {}
        for read, kind in NEEDS[query.signal]:
            by_kind.setdefault(kind, []).append(read)
        using: dict[str, _Ask] = {}
        mine: dict[SpanKey, _Ask] = {}
        keys = {kind: (label, *span_ms(kind, start, end, self.inner.min_window)) for kind in READS_OF_SPAN}
        with self._lock:
            now = time.monotonic()
            for kind, reads in by_kind.items():
                key = keys[kind]
                old = self._asks.get(key)
                if old is None or not old.serves(reads, svc, value, now, self.failure_ttl):
                    if key not in self._planned:  # nobody planned the span: every read of it, for the fetches to come
                        reads = reads + [r for k, k_key in keys.items() if k_key == key for r in READS_OF_SPAN[k]]
                    mine[key] = self._asks[key] = self._new_ask(key, reads, svc, value, old)
                using[kind] = self._asks[key]
            if mine:
                self._prune()
        for key, ask in mine.items():
            self._send(key, ask)
        for ask in using.values():
            if not ask.done.wait(self.inner.timeout * 2 + 5):
                raise SourceUnavailable(f"the batched Datadog request for {query.signal} did not finish")
            if ask.error is not None:
                raise ask.error
        return self.inner.signal_value(query, service, arm,
                                       lambda read, kind: using[kind].groups[read].get((svc, value), []))

    def _new_ask(self, key: SpanKey, reads: list[Read], service: str, arm: str, old: _Ask | None) -> _Ask:
        """A request for the planned reads, services and arms of the span, those of the one it replaces, and the
        asking fetch's."""
        wanted = self._planned.get(key, _Wanted())
        before: tuple[Any, Any, Any] = (old.reads, old.services, old.arms) if old else ((), (), ())
        return _Ask(tuple(sorted(set(reads) | wanted.reads | set(before[0]), key=_order)),
                    frozenset(wanted.services | {service} | set(before[1])),
                    frozenset(wanted.arms | {arm} | set(before[2])))

    def _send(self, key: SpanKey, ask: _Ask) -> None:
        """One request for `ask`; answered (or failed) and released, whatever happens."""
        label, begin, stop = key
        try:
            answers = self.inner.ask(begin, stop, ask.reads, ask.services, label, ask.arms)
            ask.groups = dict(zip(ask.reads, answers, strict=True))
        except SourceUnavailable as e:
            ask.error = e
        except Exception as e:  # noqa: BLE001 - every waiter must hear of it, not hang
            ask.error = SourceUnavailable(f"the batched Datadog request failed: {e!r}")
        finally:
            ask.finished = time.monotonic()
            ask.done.set()

    def _prune(self) -> None:
        """Forget plans and answers older than `keep_seconds` (never a request in flight); called under the lock."""
        oldest = time.monotonic() - self.keep_seconds
        for key in [k for k, a in self._asks.items() if a.done.is_set() and a.created < oldest]:
            del self._asks[key]
        for key in [k for k, w in self._planned.items() if w.created < oldest]:
            del self._planned[key]
