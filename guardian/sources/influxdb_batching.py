"""BatchingInfluxDBSource: every read of a tick window, for all its rollouts, in one InfluxDB request.

A standard signal is computed from a few reads — one measurement's series at one instant (`influxdb.reads`) — and
rollouts ticking on the same grid need the same reads. A read is asked for once for every planned service and arm:

    SELECT last(*) FROM "http_requests_total" WHERE "service" =~ /^(?:a|b|c)$/ AND "track" =~ /^(?:baseline|canary)$/
      AND time <= … AND time > … GROUP BY *

`GROUP BY *` keeps every series apart (so each counter's reset or birth within the window is handled on its own,
as alone) and each series carries its service and arm tags: a rollout arm's share of the answer is exactly the
series the per-rollout query (`"service" = 'a' AND "track" = 'canary'`) returns, and `InfluxDBSource.signal_value`
computes its value from them with the same code. A service or arm absent from an answer has no series there (NoData,
or 0 errors when it answered without failing), as alone.

The scheduler plans each pass of due ticks first (`plan`); the first fetch of a tick window then sends every read
planned for that window in one /query request, as `;`-separated statements that InfluxDB answers one result each
(`InfluxDBSource.answers`), and the fetches after it read the answers kept (waiting for it while it is in flight). A
fetch no plan covered asks for its own reads, with the planned services and arms. A statement answered with an error,
or a request that failed, is SourceUnavailable for the rollouts it covered, kept `failure_ttl` seconds (a dead
InfluxDB is not asked once per rollout); answers are kept for the newest `keep_instants` instants only.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from guardian.errors import SourceUnavailable
from guardian.sources import ArmSelector, Fetch, SignalQuery
from guardian.sources.batching import regex_escape
from guardian.sources.influxdb import InfluxDBSource, Series, identifier, last_statement, reads, series_of
from guardian.sources.wrapping import Wrapping

ReadKey = tuple[str, str, int]  # measurement, arm label, instant (ns)
WindowKey = tuple[str, int, int]  # arm label, tick window start and end (ns)


def _ns(t: float) -> int:
    return int(t * 1e9)  # as last_statement writes the instant


def regex_of(values: Iterable[str]) -> str:
    """An InfluxQL regex literal matching exactly these values: Go regexp's metacharacters escaped (the same as
    RE2's), and `/` as `\\/` for InfluxQL's lexer (which passes every other backslash on to the regexp)."""
    return "/^(?:" + "|".join(regex_escape(v).replace("/", "\\/") for v in sorted(values)) + ")$/"


@dataclass
class _Wanted:
    """Who a planned read is for."""

    at: float
    services: set[str] = field(default_factory=set)
    arms: set[str] = field(default_factory=set)


@dataclass
class _Read:
    at: float
    services: frozenset[str]
    arms: frozenset[str]
    done: threading.Event = field(default_factory=threading.Event)
    groups: dict[tuple[str, str], Series] = field(default_factory=dict)  # (service, arm value) -> its series
    error: SourceUnavailable | None = None
    finished: float = 0.0

    def serves(self, services: Iterable[str], arms: Iterable[str], now: float, failure_ttl: float) -> bool:
        """Does it answer for these services and arms (in flight, answered, or failed not long ago)?"""
        if self.error is not None and now - self.finished > failure_ttl:
            return False
        return self.services.issuperset(services) and self.arms.issuperset(arms)


class BatchingInfluxDBSource(Wrapping):
    """A MetricSource over an InfluxDBSource that asks for each (measurement, arm label, instant) once."""

    def __init__(self, inner: InfluxDBSource, *, failure_ttl: float = 2.0, keep_instants: int = 10) -> None:
        self.inner = inner
        self.failure_ttl, self.keep_instants = failure_ttl, keep_instants
        self._lock = threading.Lock()
        self._planned: dict[ReadKey, _Wanted] = {}
        self._windows: dict[WindowKey, set[ReadKey]] = {}
        self._reads: dict[ReadKey, _Read] = {}
        self.requests = 0  # /query requests this wrapper sent (each holding one statement per read)
        self.statements = 0

    def _keys(self, query: SignalQuery, arm: ArmSelector, start: float, end: float) -> list[tuple[ReadKey, float]]:
        return [((measurement, arm.label, _ns(at)), at)
                for measurement, at in reads(query.signal, start, end, self.inner.min_window)]

    def plan(self, requests: Iterable[Fetch]) -> None:
        """Fetches about to be made: the first fetch of each tick window asks for all of their reads."""
        with self._lock:
            for query, service, arm, start, end in requests:
                if not service or not arm.label_value:
                    continue
                window = self._windows.setdefault((arm.label, _ns(start), _ns(end)), set())
                for key, at in self._keys(query, arm, start, end):
                    wanted = self._planned.setdefault(key, _Wanted(at))
                    wanted.services.add(service)
                    wanted.arms.add(arm.label_value)
                    window.add(key)
            self._prune()

    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        keys = self._keys(query, arm, start, end)
        if not keys or not service or not arm.label_value or end <= start:
            return self.inner.fetch(query, service, arm, start, end)  # what it says of them, as alone
        with self._lock:
            now, mine = time.monotonic(), {}
            for key, at in keys:
                old = self._reads.get(key)
                if old is None or not old.serves([service], [arm.label_value], now, self.failure_ttl):
                    mine[key] = self._read(key, at, old, service, arm.label_value)
            if mine:  # this window's first fetch: its other planned reads go in the same request
                for key in self._windows.get((arm.label, _ns(start), _ns(end)), ()):
                    old, wanted = self._reads.get(key), self._planned.get(key)
                    if wanted is not None and key not in mine and (
                            old is None or not old.serves(wanted.services, wanted.arms, now, self.failure_ttl)):
                        mine[key] = self._read(key, wanted.at, old)
                self._reads.update(mine)
                self.requests += 1
                self.statements += len(mine)
            using = {key: self._reads[key] for key, _ in keys}
            if mine:
                self._prune()
        if mine:
            self._ask(mine)
        for read in using.values():
            if not read.done.wait(self.inner.timeout * 2 + 5):
                raise SourceUnavailable(f"the batched InfluxDB request for {query.signal} did not finish")
            if read.error is not None:
                raise read.error
        group = (service, arm.label_value)
        return self.inner.signal_value(query, service, arm, start, end,
                                       lambda measurement, at: using[(measurement, arm.label, _ns(at))].groups.get(
                                           group, {}))

    def _read(self, key: ReadKey, at: float, old: _Read | None, service: str = "", arm: str = "") -> _Read:
        """A new read for the planned services and arms, those of the read it replaces, and the one asking."""
        wanted = self._planned.get(key, _Wanted(at))
        services = wanted.services | (old.services if old else set()) | ({service} if service else set())
        arms = wanted.arms | (old.arms if old else set()) | ({arm} if arm else set())
        return _Read(at, frozenset(services), frozenset(arms))

    def _ask(self, mine: dict[ReadKey, _Read]) -> None:
        """One request for these reads; each is answered (or failed) and released, whatever happens."""
        try:
            statements = [last_statement(measurement, f"{identifier('service')} =~ {regex_of(r.services)} AND "
                                                      f"{identifier(label)} =~ {regex_of(r.arms)}",
                                         r.at, self.inner.lookback)
                          for (measurement, label, _), r in mine.items()]
            answers: list[Any] = self.inner.answers(statements)
        except SourceUnavailable as e:
            answers = [e] * len(mine)
        except Exception as e:  # noqa: BLE001 - every waiter must hear of it, not hang
            answers = [SourceUnavailable(f"the batched InfluxDB request failed: {e!r}")] * len(mine)
        for ((_, label, _), read), answer in zip(mine.items(), answers, strict=True):
            try:
                if isinstance(answer, SourceUnavailable):
                    read.error = answer
                else:
                    for tags, fields in series_of(answer).items():
                        named = dict(tags)
                        read.groups.setdefault((named.get("service", ""), named.get(label, "")), {})[tags] = fields
            except Exception as e:  # noqa: BLE001
                read.error = SourceUnavailable(f"the batched InfluxDB answer could not be read: {e!r}")
            finally:
                read.finished = time.monotonic()
                read.done.set()

    def _prune(self) -> None:
        """Keep the newest `keep_instants` instants of each (measurement, arm label); called under the lock."""
        instants: dict[tuple[str, str], set[int]] = {}
        for measurement, label, at in (*self._reads, *self._planned):
            instants.setdefault((measurement, label), set()).add(at)
        oldest = {k: sorted(v)[-self.keep_instants] for k, v in instants.items() if len(v) > self.keep_instants}
        for table in (self._reads, self._planned):
            for key in [k for k in table if k[:2] in oldest and k[2] < oldest[k[:2]]]:
                del table[key]
        for window, keys in list(self._windows.items()):
            keys &= self._planned.keys()
            if not keys:
                del self._windows[window]
