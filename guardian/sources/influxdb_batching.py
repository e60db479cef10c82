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
(`InfluxDBSource.answers`), and the fetches after it read the answers kept (waiting for it while it is in flight:
sources/single_flight.py). A fetch no plan covered asks for its own reads, with the planned services and arms. A
statement answered with an error, or a request that failed, is SourceUnavailable for the rollouts it covered, kept
`failure_ttl` seconds (a dead InfluxDB is not asked once per rollout); answers are kept for the newest
`keep_instants` instants only.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from guardian.errors import SourceUnavailable
from guardian.sources import ArmSelector, Fetch, SignalQuery
from guardian.sources.batching import regex_escape
from guardian.sources.influxdb import InfluxDBSource, Series, identifier, last_statement, reads, series_of
from guardian.sources.single_flight import Sets, SingleFlight
from guardian.sources.wrapping import Wrapping

ReadKey = tuple[str, str, int]  # measurement, arm label, instant (ns)


def _ns(t: float) -> int:
    return int(t * 1e9)  # as last_statement writes the instant


def regex_of(values: Iterable[str]) -> str:
    """An InfluxQL regex literal matching exactly these values: Go regexp's metacharacters escaped (the same as
    RE2's), and `/` as `\\/` for InfluxQL's lexer (which passes every other backslash on to the regexp)."""
    return "/^(?:" + "|".join(regex_escape(v).replace("/", "\\/") for v in sorted(values)) + ")$/"


Groups = dict[tuple[str, str], Series]  # (service, arm value) -> its series


@dataclass(frozen=True)
class _Asked:
    """A read's scope: its instant (as the fetch computed it: `last_statement` writes it in ns, `_ns` its key) and
    Sets(services, arm values)."""

    at: float
    who: Sets

    def covers(self, other: _Asked) -> bool:
        return self.who.covers(other.who)

    def __or__(self, other: _Asked) -> _Asked:
        return _Asked(self.at, self.who | other.who)


class BatchingInfluxDBSource(Wrapping):
    """A MetricSource over an InfluxDBSource that asks for each (measurement, arm label, instant) once."""

    def __init__(self, inner: InfluxDBSource, *, failure_ttl: float = 2.0, keep_instants: int = 10) -> None:
        self.inner = inner
        self.failure_ttl, self.keep_instants = failure_ttl, keep_instants
        # a read is planned in its tick window (a WindowKey): the window's first fetch asks for all of its reads
        self._flights: SingleFlight[ReadKey, _Asked, Groups] = SingleFlight(
            prune=lambda flights: flights.keep_newest(self.keep_instants, lambda key: (key[:2], key[2])))

    @property
    def requests(self) -> int:
        """/query requests this wrapper sent (each holding one statement per read)."""
        return self._flights.requests

    @property
    def statements(self) -> int:
        return self._flights.keys_asked

    def _keys(self, query: SignalQuery, arm: ArmSelector, start: float, end: float) -> list[tuple[ReadKey, float]]:
        return [((measurement, arm.label, _ns(at)), at)
                for measurement, at in reads(query.signal, start, end, self.inner.min_window)]

    def plan(self, requests: Iterable[Fetch]) -> None:
        """Fetches about to be made: the first fetch of each tick window asks for all of their reads."""
        self._flights.plan((key, _Asked(at, Sets.of({service}, {arm.label_value})), (arm.label, _ns(start), _ns(end)))
                           for query, service, arm, start, end in requests if service and arm.label_value
                           for key, at in self._keys(query, arm, start, end))

    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        keys = self._keys(query, arm, start, end)
        if not keys or not service or not arm.label_value or end <= start:
            return self.inner.fetch(query, service, arm, start, end)  # what it says of them, as alone
        who = Sets.of({service}, {arm.label_value})
        answers = self._flights.get(
            {key: _Asked(at, who) for key, at in keys}, self._ask,
            failure_ttl=self.failure_ttl, wait=self.inner.timeout * 2 + 5,
            failed=lambda e: f"the batched InfluxDB request failed: {e!r}",
            late=lambda *_: f"the batched InfluxDB request for {query.signal} did not finish",
            window=(arm.label, _ns(start), _ns(end)))
        group = (service, arm.label_value)
        return self.inner.signal_value(query, service, arm, start, end,
                                       lambda measurement, at: answers[(measurement, arm.label, _ns(at))].get(
                                           group, {}))

    def _ask(self, asked: dict[ReadKey, _Asked], _progress: Any) -> dict[ReadKey, Groups | SourceUnavailable]:
        """One request for these reads, a statement each: each read's series by (service, arm value), or the error
        its statement was answered with."""
        statements = [last_statement(measurement, f"{identifier('service')} =~ {regex_of(r.who.sets[0])} AND "
                                                  f"{identifier(label)} =~ {regex_of(r.who.sets[1])}",
                                     r.at, self.inner.lookback)
                      for (measurement, label, _), r in asked.items()]
        return {key: answer if isinstance(answer, SourceUnavailable) else _groups(answer, key[1])
                for key, answer in zip(asked, self.inner.answers(statements), strict=True)}


def _groups(answer: Any, label: str) -> Groups | SourceUnavailable:
    try:
        groups: Groups = {}
        for tags, fields in series_of(answer).items():
            named = dict(tags)
            groups.setdefault((named.get("service", ""), named.get(label, "")), {})[tags] = fields
        return groups
    except Exception as e:  # noqa: BLE001
        return SourceUnavailable(f"the batched InfluxDB answer could not be read: {e!r}")
