"""`guardian doctor` for Datadog (sources/doctor.py): no cheap metadata the guardian's keys are sure to reach, so the
same query API the source reads, over the last 5 minutes: present when the arm's series of each query the signal is
read from have a point there (one request for every signal of an arm). Else one more request, saying what it asked:
the metric by `service` over all series (none: the Agent's check does not send it, or another namespace), the
service's series by the arm's tag, and for `slow` the arm's buckets by `upper_bound`."""
from __future__ import annotations

import math
from typing import Any

from guardian.errors import SourceUnavailable
from guardian.rules.defaults import SLOW_OBJECTIVE_LE
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.datadog import (
    BUCKETS,
    CPU,
    DURATION_COUNT,
    FAST,
    MEMORY,
    REQUESTS,
    DatadogSource,
    Read,
    tag_value,
)
from guardian.sources.doctor import bucket_advice, listing

LOOKBACK = 300.0  # how far back the series are looked for (the InfluxDB source's lookback too)
NEEDS: dict[str, tuple[Read, ...]] = {  # signal -> the queries it is read from that must have series
    "requests": (REQUESTS,), "errors": (REQUESTS,), "slow": (DURATION_COUNT, FAST), "p99_seconds": (BUCKETS,
                                                                                                    DURATION_COUNT),
    "cpu_seconds": (CPU,), "memory_bytes": (MEMORY,),
}
ALL_READS = tuple(dict.fromkeys(r for reads in NEEDS.values() for r in reads))
NOT_TAGGED = ("", "n/a")  # a group without the tag (Datadog answers such a group as `tag:N/A`)


def tagged_series(body: dict[str, Any], count: int) -> list[list[tuple[dict[str, str], int]]]:
    """A timeseries answer per query: each series' group tags and how many points it has."""
    out: list[list[tuple[dict[str, str], int]]] = [[] for _ in range(count)]
    attributes = (body.get("data") or {}).get("attributes") or {}
    for one, values in zip(attributes.get("series") or [], attributes.get("values") or [], strict=False):
        index = one.get("query_index")
        if isinstance(index, int) and 0 <= index < count:
            tags = {k: v.lower() for k, _, v in (t.partition(":") for t in one.get("group_tags") or [])}
            out[index].append((tags, sum(1 for v in values if isinstance(v, int | float) and math.isfinite(v))))
    return out


class DatadogExaminer:
    def __init__(self, source: DatadogSource) -> None:
        self.source = source
        self._arms: dict[tuple[str, str, str, float], dict[Read, bool]] = {}

    def describe(self) -> str:
        return f"Datadog at {self.source.url}, namespace {self.source.namespace}"

    def notes(self) -> list[str]:
        return []

    def _span(self, now: float, window: float) -> tuple[int, int]:
        return round((now - max(window, LOOKBACK)) * 1000), round(now * 1000)

    def _names(self, service: str, arm: ArmSelector) -> tuple[str, str, str]:
        return tag_value(service), tag_value(arm.label), tag_value(arm.label_value)

    def present(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> bool:
        if query.signal not in NEEDS:
            return False
        try:
            svc, label, value = self._names(service, arm)
        except SourceUnavailable:
            return False  # a name Datadog cannot be asked for: `why` says so
        key = (svc, label, value, now)
        if key not in self._arms:  # every signal's queries for this arm, in one request
            groups = self.source.ask(*self._span(now, window), ALL_READS, [svc], label, [value])
            self._arms[key] = {r: any(points for _, points in g.get((svc, value), [])) for r, g in
                               zip(ALL_READS, groups, strict=True)}
        return all(self._arms[key][r] for r in NEEDS[query.signal])

    def why(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> str:
        if query.signal not in NEEDS:
            return (f"a Datadog source reads the standard signals only: {query.signal} cannot be read there")
        try:
            svc, label, value = self._names(service, arm)
        except SourceUnavailable as e:
            return f"{e}: name the service and the arms with such names (the rule file's `service` and `arms:`)"
        try:
            missing = [r for r in NEEDS[query.signal] if not self._arms.get((svc, label, value, now), {})
                       .get(r)] or list(NEEDS[query.signal])
            return self._why(missing[0], svc, label, value, arm.arm, now, window)
        except SourceUnavailable as e:
            return f"(could not find out why: {e})"

    def _why(self, read: Read, svc: str, label: str, value: str, arm: str, now: float, window: float) -> str:
        ns, minutes = self.source.namespace, f"{max(window, LOOKBACK) / 60:g} min"
        metric, count = f"{ns}.{read.metric}", ".as_count()" if read.counted else ""
        asked = [f"sum:{metric}{{*}} by {{service}}{count}", f"sum:{metric}{{service:{svc}}} by {{{label}}}{count}"]
        if read == FAST:
            asked.append(f"sum:{ns}.{BUCKETS.metric}{{service:{svc} AND {label}:{value}}} by {{upper_bound}}{count}")
        by_service, by_arm, *buckets = tagged_series(self.source.post_queries(*self._span(now, window), asked),
                                                     len(asked))
        services = sorted({t.get("service", "") for t, n in by_service if n} - set(NOT_TAGGED))
        if not any(n for _, n in by_service):
            return (f"Datadog has no {metric} series with a point in the last {minutes} (asked: `{asked[0]}`): is the "
                    f"Agent's openmetrics check sending it, with `namespace: {ns}` (GUARDIAN_DATADOG_NAMESPACE)? "
                    "(`datadog-agent check openmetrics` lists the names it sends)")
        if not services:
            return (f"no {metric} series has a `service` tag (asked: `{asked[0]}`): add `service:{svc}` to the tags of "
                    "the check instance that scrapes the service")
        if svc not in services:
            return (f"no {metric} series has service:{svc} in the last {minutes}; the services that have it: "
                    f"{listing(services)} (asked: `{asked[0]}`)")
        arms = sorted({t.get(label, "") for t, n in by_arm if n} - set(NOT_TAGGED))
        if not arms:
            return (f"the {metric} series of service:{svc} have no `{label}` tag to tell the arms apart (asked: "
                    f"`{asked[1]}`): add `{label}:{value}` to the {arm}'s check instance tags, or name the tag that "
                    "does in the rule file's `arms:`")
        if value not in arms:
            return (f"no {metric} series with service:{svc} has {label}:{value} (the {arm}) in the last {minutes}; its "
                    f"{label} values: {listing(arms)} (asked: `{asked[1]}`)")
        if buckets:
            bounds = sorted({t.get("upper_bound", "") for t, n in buckets[0] if n} - set(NOT_TAGGED))
            return bucket_advice(f"{ns}.{BUCKETS.metric}", SLOW_OBJECTIVE_LE, bounds, overridable=False,
                                 bucket="upper_bound:{}") + f" (asked: `{asked[2]}`)"
        return (f"the series of service:{svc}, {label}:{value} exist, yet none had a point in the last {minutes} "
                f"(asked: `{asked[1]}`)")

    def value(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> float:
        return self.source.fetch(query, service, arm, now - window, now)


__all__ = ["ALL_READS", "NEEDS", "DatadogExaminer", "tagged_series"]
