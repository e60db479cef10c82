"""SingleFlight: the batching stores' cache of answers, each asked for once whoever needs it, by key.

Every store that batches — Prometheus and VictoriaMetrics (sources/batching.py), Datadog (datadog_batching.py),
InfluxDB (influxdb_batching.py), CloudWatch (cloudwatch.py) — names what it asks for by *key* (a PromQL template's
tick window, a Datadog span, an InfluxDB read at an instant, a CloudWatch read of a span) and says for whom by
*scope* (the services and arms, the reads, …): an answer serves a wanted scope that its own scope covers. A store
gives only how to ask for some keys (`Ask`); this cache does the rest, the same for all of them:

- plans (`plan`): what the fetches about to be made will want. A request for a key asks for its planned scope too,
  and with it every planned key of the same *window* (an InfluxDB tick window, a CloudWatch span) not served yet;
- single flight (`get`): a fetch whose keys are not all served claims the missing ones under the lock and asks for
  them in its own thread, in one request per `group` of keys (by default one for all); every other fetch of those
  keys waits for that request and shares its answer. A key's request asks for its wanted, planned and former scope,
  so it serves whoever the answer it replaces served;
- failures: whatever the request raises is SourceUnavailable for every key it asked for (the store's `failed`
  message for what is not SourceUnavailable already), as is a key the store answered with a SourceUnavailable. A
  failure serves for `failure_ttl` seconds (a dead store is not asked once per rollout), then the key is asked again;
- waiting: a waiter gives up (SourceUnavailable, the store's `late` message) after `wait` seconds in which the
  request neither finished nor made progress (`progress`, which a request of many calls says after each call), so
  a long request is waited for as long as each of its calls keeps within its own limit;
- forgetting: the store's `prune` (`keep_newest`, `forget_older`), after each plan and each new request.

Counts: `requests` started, and `keys_asked` in them.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar

from guardian.errors import SourceUnavailable


class Scope(Protocol):
    """For whom a key is asked: an answer serves the scopes its own covers; two scopes merge with `|`."""

    def covers(self, other: Self) -> bool: ...

    def __or__(self, other: Self) -> Self: ...


@dataclass(frozen=True)
class Sets:
    """A scope of a few sets (services, arms, reads …), each store's in its own order: it covers another scope whose
    every set is within its own. `Sets()` is the scope of a key that says everything itself."""

    sets: tuple[frozenset[Any], ...] = ()

    @classmethod
    def of(cls, *sets: Iterable[Any]) -> Sets:
        return cls(tuple(frozenset(s) for s in sets))

    def covers(self, other: Sets) -> bool:
        return all(theirs <= mine for mine, theirs in zip(self.sets, other.sets, strict=True))

    def __or__(self, other: Sets) -> Sets:
        return Sets(tuple(mine | theirs for mine, theirs in zip(self.sets, other.sets, strict=True)))


def merged(scopes: list[Any]) -> Any:
    """The union of scopes: of Sets at once, set by set (`|` one at a time copies the growing sets each time: with
    a plan of 500 rollouts' fetches that was a quarter of a million copies per key and pass)."""
    if all(isinstance(s, Sets) for s in scopes) and len({len(s.sets) for s in scopes}) == 1:
        return Sets(tuple(frozenset().union(*column) for column in zip(*(s.sets for s in scopes), strict=True)))
    out = scopes[0]
    for scope in scopes[1:]:
        out = out | scope
    return out


K = TypeVar("K", bound=Hashable)
S = TypeVar("S", bound=Scope)
V = TypeVar("V")
# how a store asks for keys: their scopes, and a callable saying "progress" -> each key's answer (or why it has none)
Ask = Callable[[dict[K, S], Callable[[], None]], Mapping[K, "V | SourceUnavailable"]]


@dataclass(eq=False)
class Flight(Generic[K, V]):
    """One request: in flight, answered, or failed."""

    started: float = field(default_factory=time.monotonic)
    moved: float = 0.0  # when it last made progress: its start, then each `progress()`
    done: threading.Event = field(default_factory=threading.Event)
    answers: dict[K, V | SourceUnavailable] = field(default_factory=dict)
    error: SourceUnavailable | None = None  # the whole request's
    finished: float = 0.0

    def __post_init__(self) -> None:
        self.moved = self.started

    def progress(self) -> None:
        self.moved = time.monotonic()

    def failure(self, key: K) -> SourceUnavailable | None:
        answer = self.answers.get(key)
        return self.error or (answer if isinstance(answer, SourceUnavailable) else None)

    def expired(self, key: K, now: float, failure_ttl: float) -> bool:
        """Did the key fail more than `failure_ttl` seconds ago (to be asked again)?"""
        return self.done.is_set() and self.failure(key) is not None and now - self.finished > failure_ttl


@dataclass(frozen=True)
class _Entry(Generic[K, S, V]):
    flight: Flight[K, V]
    scope: S  # what the flight asks for the key


@dataclass(frozen=True)
class _Plan(Generic[S]):
    scope: S
    since: float  # when the key was first planned


class SingleFlight(Generic[K, S, V]):
    """Answers by key, each asked for once by one of the fetches that need it (see the module's doc)."""

    def __init__(self, *, prune: Callable[[SingleFlight[K, S, V]], None] = lambda flights: None,
                 group: Callable[[K], Hashable] = lambda key: None) -> None:
        self.lock = threading.RLock()  # the stores' own counters and tables may share it
        self.prune, self.group = prune, group
        self.planned: dict[K, _Plan[S]] = {}
        self.windows: dict[Hashable, set[K]] = {}  # the planned keys of each window
        self.entries: dict[K, _Entry[K, S, V]] = {}
        self.requests = 0  # requests started
        self.keys_asked = 0  # keys asked for in them

    def plan(self, wanted: Iterable[tuple[K, S, Hashable | None]]) -> None:
        """(key, scope, window or None) that fetches about to be made will want."""
        with self.lock:
            now = time.monotonic()
            scopes: dict[K, list[S]] = {}  # merged once per key: one union per plan, not one per fetch planned
            for key, scope, window in wanted:
                scopes.setdefault(key, []).append(scope)
                if window is not None:
                    self.windows.setdefault(window, set()).add(key)
            for key, more in scopes.items():
                plan = self.planned.get(key)
                self.planned[key] = _Plan(merged(more), now) if plan is None else \
                    _Plan(merged([plan.scope, *more]), plan.since)
            self.prune(self)

    def get(self, wants: Mapping[K, S], ask: Ask[K, S, V], *, failure_ttl: float, wait: float,
            failed: Callable[[Exception], str], late: Callable[[K, S], str], window: Hashable | None = None,
            unplanned: Mapping[K, S] | None = None,
            kin: Callable[[K], tuple[Hashable, int]] | None = None) -> dict[K, V]:
        """Each wanted key's answer: kept, in flight (waited for), or asked for now with every missing key (and the
        window's planned keys not served), each wanting also what `unplanned` adds when nobody planned it and, with
        `kin` (a key's kind and time), the scope of the newest other key of its kind: the fetches planned for a
        template's last window are the ones late ticks make for their next, or the one they catch up on (each late
        tick asking for itself alone would ask once per rollout).
        SourceUnavailable for a key whose request failed or did not finish."""
        with self.lock:
            now = time.monotonic()
            missing = {key: scope for key, scope in wants.items() if not self._serves(key, scope, now, failure_ttl)}
            mine: dict[K, S] = {}
            for key, scope in missing.items():
                if key not in self.planned:
                    if unplanned and key in unplanned:
                        scope = scope | unplanned[key]
                    if kin is not None and (near := self._kin_scope(key, kin)) is not None:
                        scope = scope | near
                mine[key] = self._asked(key, scope)
            if mine and window is not None:
                for key in self.windows.get(window, ()):
                    plan = self.planned.get(key)
                    if plan is not None and key not in mine and not self._serves(key, plan.scope, now, failure_ttl):
                        mine[key] = self._asked(key, plan.scope)
            flights = self._start(mine)
            entries = {key: self.entries[key] for key in wants}  # before pruning (which may drop an old window)
            if mine:
                self.prune(self)
        for flight, asked in flights:
            self._run(flight, asked, ask, failed)
        out: dict[K, V] = {}
        for key, entry in entries.items():
            if not self._waited(entry.flight, wait):
                raise SourceUnavailable(late(key, entry.scope))
            if (failure := entry.flight.failure(key)) is not None:
                raise failure
            out[key] = entry.flight.answers[key]  # type: ignore[assignment]  # not a failure
        return out

    # -- forgetting (the stores' `prune`; called under the lock) -------------------------------------------------
    def keep_newest(self, count: int, when: Callable[[K], tuple[Hashable, int]]) -> None:
        """Keep the answers and plans of the newest `count` times of each kind of key (`when`: its kind, its time)."""
        times: dict[Hashable, set[int]] = {}
        for key in (*self.entries, *self.planned):
            kind, at = when(key)
            times.setdefault(kind, set()).add(at)
        oldest = {kind: sorted(ats)[-count] for kind, ats in times.items() if len(ats) > count}

        def old(key: K) -> bool:
            kind, at = when(key)
            return kind in oldest and at < oldest[kind]

        self._forget(lambda key, _: old(key), lambda key, _: old(key))

    def forget_older(self, seconds: float) -> None:
        """Forget answers (never a request in flight) and plans made more than `seconds` ago."""
        oldest = time.monotonic() - seconds
        self._forget(lambda _, entry: entry.flight.done.is_set() and entry.flight.started < oldest,
                     lambda _, plan: plan.since < oldest)

    def _forget(self, entry_old: Callable[[K, _Entry[K, S, V]], bool], plan_old: Callable[[K, _Plan[S]], bool]
                ) -> None:
        for key in [k for k, e in self.entries.items() if entry_old(k, e)]:
            del self.entries[key]
        for key in [k for k, p in self.planned.items() if plan_old(k, p)]:
            del self.planned[key]
        for window, keys in list(self.windows.items()):
            keys &= self.planned.keys()
            if not keys:
                del self.windows[window]

    # -- asking -----------------------------------------------------------------------------------------------
    def _serves(self, key: K, scope: S, now: float, failure_ttl: float) -> bool:
        entry = self.entries.get(key)
        return entry is not None and not entry.flight.expired(key, now, failure_ttl) and entry.scope.covers(scope)

    def _kin_scope(self, key: K, kin: Callable[[K], tuple[Hashable, int]]) -> S | None:
        """The scope planned for and asked of the newest other key of `key`'s kind (None when there is none)."""
        kind, _ = kin(key)
        newest: K | None = None
        newest_at = 0
        for other in (*self.planned, *self.entries):
            other_kind, at = kin(other)
            if other != key and other_kind == kind and (newest is None or at > newest_at):
                newest, newest_at = other, at
        if newest is None:
            return None
        scopes = [x.scope for x in (self.planned.get(newest), self.entries.get(newest)) if x is not None]
        return merged(scopes)

    def _asked(self, key: K, scope: S) -> S:
        """What a new request asks for the key: the scope wanted, planned, and the former request's."""
        if (plan := self.planned.get(key)) is not None:
            scope = scope | plan.scope
        if (entry := self.entries.get(key)) is not None:
            scope = scope | entry.scope
        return scope

    def _start(self, mine: dict[K, S]) -> list[tuple[Flight[K, V], dict[K, S]]]:
        """A flight per group of the keys to ask for, each key's entry now that one (called under the lock)."""
        groups: dict[Hashable, dict[K, S]] = {}
        for key, scope in mine.items():
            groups.setdefault(self.group(key), {})[key] = scope
        flights: list[tuple[Flight[K, V], dict[K, S]]] = []
        for asked in groups.values():
            flight: Flight[K, V] = Flight()
            self.entries.update((key, _Entry(flight, scope)) for key, scope in asked.items())
            flights.append((flight, asked))
            self.requests += 1
            self.keys_asked += len(asked)
        return flights

    @staticmethod
    def _run(flight: Flight[K, V], asked: dict[K, S], ask: Ask[K, S, V], failed: Callable[[Exception], str]) -> None:
        """Ask; answered (or failed) and released, whatever happens."""
        try:
            answers = ask(asked, flight.progress)
            flight.answers = {key: answers[key] for key in asked}
        except SourceUnavailable as e:
            flight.error = e
        except Exception as e:  # noqa: BLE001 - every waiter must hear of it, not hang
            flight.error = SourceUnavailable(failed(e))
        finally:
            flight.finished = time.monotonic()
            flight.done.set()

    @staticmethod
    def _waited(flight: Flight[K, V], wait: float) -> bool:
        """Is the flight done, waiting until it is but no longer than `wait` seconds without progress since this
        waiter came?"""
        came = time.monotonic()
        while not flight.done.wait(max(came, flight.moved) + wait - time.monotonic()):
            if time.monotonic() >= max(came, flight.moved) + wait:
                return False
        return True
