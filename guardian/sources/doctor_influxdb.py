"""`guardian doctor` for InfluxDB 1.x (sources/doctor.py): present when each measurement the standard signal is read
from has a point for the service and arm within the source's lookback (5 min), with the fields it reads. Else, why,
from InfluxQL's cheap index queries: `SHOW MEASUREMENTS WITH MEASUREMENT = …` (none: Telegraf does not write it),
`SHOW TAG VALUES … WITH KEY = "service"` (the services there are), `SHOW TAG VALUES … WITH KEY = "track" WHERE
"service" = …` (the arm values), `SHOW TAG KEYS` (the tags there are), `SHOW FIELD KEYS` (a histogram's buckets: is
0.5 one?), and the newest point's time (written once, not lately)."""
from __future__ import annotations

from typing import Any

from guardian.errors import SourceUnavailable
from guardian.rules.defaults import SLOW_OBJECTIVE_LE
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.doctor import bucket_advice, duration, listing
from guardian.sources.influxdb import DURATION, STANDARD, InfluxDBSource, identifier, literal

NEEDS: dict[str, tuple[str, tuple[str, ...]]] = {  # signal -> (measurement, the fields it reads)
    "requests": ("http_requests_total", ("counter",)), "errors": ("http_requests_total", ("counter",)),
    "slow": (DURATION, ("count", SLOW_OBJECTIVE_LE)), "p99_seconds": (DURATION, ("count", "+Inf")),
    "cpu_seconds": ("process_cpu_seconds_total", ("counter",)), "memory_bytes": ("process_resident_memory_bytes",
                                                                                ("gauge",)),
}


class InfluxDBExaminer:
    def __init__(self, source: InfluxDBSource) -> None:
        self.source = source
        self._seen: dict[tuple[str, str, str, str, float], set[str] | None] = {}

    def describe(self) -> str:
        return f"InfluxDB at {self.source.safe_url}, database {self.source.database}"

    def notes(self) -> list[str]:
        return []

    def _where(self, service: str, arm: ArmSelector) -> str:
        return f"{identifier('service')} = {literal(service)} AND {identifier(arm.label)} = {literal(arm.label_value)}"

    def _fields(self, measurement: str, service: str, arm: ArmSelector, now: float) -> set[str] | None:
        """The fields of the arm's series of `measurement` with a point within the lookback (None: no series)."""
        key = (measurement, service, arm.label, arm.label_value, now)
        if key not in self._seen:
            series = self.source.last_values(measurement, self._where(service, arm), now)
            self._seen[key] = {f for fields in series.values() for f in fields} if series else None
        return self._seen[key]

    def present(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> bool:
        if query.signal not in NEEDS:
            return False
        measurement, wanted = NEEDS[query.signal]
        fields = self._fields(measurement, service, arm, now)
        return fields is not None and all(f in fields for f in wanted)

    def why(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> str:
        if query.signal not in NEEDS:
            return (f"an InfluxDB source reads the standard signals only ({', '.join(STANDARD)}): "
                    f"{query.signal} cannot be read there")
        try:
            return self._why(query.signal, service, arm, now)
        except SourceUnavailable as e:
            return f"(could not find out why: {e})"

    def _show(self, statement: str) -> list[list[Any]]:
        """The rows of one statement's answer, all series together."""
        (answer,) = self.source.answers([statement])
        if isinstance(answer, SourceUnavailable):
            raise answer
        return [row for series in answer for row in series.get("values") or []]

    def _why(self, signal: str, service: str, arm: ArmSelector, now: float) -> str:
        measurement, wanted = NEEDS[signal]
        m, db, label, value = identifier(measurement), self.source.database, arm.label, arm.label_value
        if not self._show(f"SHOW MEASUREMENTS WITH MEASUREMENT = {m}"):
            if not self._show("SHOW MEASUREMENTS LIMIT 1"):
                return (f"InfluxDB database {db!r} holds no measurement at all: is Telegraf writing to it (its "
                        "[[outputs.influxdb]] `database`; GUARDIAN_INFLUXDB_DATABASE here)?")
            return (f"InfluxDB database {db!r} has no measurement {measurement}: does Telegraf's inputs.prometheus "
                    f"scrape the service's /metrics (metric_version 1, the default), and does it export {measurement}?")
        services = sorted({str(r[1]) for r in self._show(f"SHOW TAG VALUES FROM {m} WITH KEY = \"service\"")})
        if not services:
            return (f"{measurement} has no `service` tag: tag the Telegraf input that scrapes the service with service "
                    f"= \"{service}\" (under [inputs.prometheus.tags])")
        if service not in services:
            return (f"no {measurement} series has service=\"{service}\"; the services that have it: "
                    f"{listing(services)} (tag the Telegraf input with service = \"{service}\", or name the rule "
                    "file's service after one of these)")
        of_service = f"WHERE {identifier('service')} = {literal(service)}"
        arms = sorted({str(r[1]) for r in self._show(f"SHOW TAG VALUES FROM {m} WITH KEY = {identifier(label)} "
                                                     f"{of_service}")})
        if not arms:
            tags = sorted({str(r[0]) for r in self._show(f"SHOW TAG KEYS FROM {m} {of_service}")})
            return (f"the {measurement} series of service \"{service}\" have no `{label}` tag to tell the arms apart "
                    f"(their tags: {', '.join(tags)}): tag the {arm.arm}'s Telegraf input {label} = \"{value}\", or "
                    "name the tag that does in the rule file's `arms:`")
        if value not in arms:
            return (f"no {measurement} series with service=\"{service}\" has {label}=\"{value}\" (the {arm.arm}); its "
                    f"{label} values: {listing(arms)}")
        fields = {str(r[0]) for r in self._show(f"SHOW FIELD KEYS FROM {m}")}
        if SLOW_OBJECTIVE_LE in wanted and SLOW_OBJECTIVE_LE not in fields:
            buckets = [f for f in fields if _is_bound(f)]
            return bucket_advice(measurement, SLOW_OBJECTIVE_LE, buckets, overridable=False)
        if absent := [f for f in wanted if f not in fields]:
            return (f"{measurement} has no field {', '.join(absent)} (its fields: {listing(sorted(fields))}): is it "
                    "written by Telegraf's inputs.prometheus with metric_version 1 (a counter in `counter`, a gauge in "
                    "`gauge`, a histogram's buckets as fields named by their `le`, with `count`)?")
        rows = self._show(f"SELECT last({identifier(wanted[0])}) FROM {m} WHERE {self._where(service, arm)}")
        if rows:
            age = now - float(rows[0][0]) / 1000
            return (f"the newest point of {measurement} with service=\"{service}\", {label}=\"{value}\" is "
                    f"{duration(age)} old, older than the {self.source.lookback:g} s a tick looks back: is Telegraf "
                    "still scraping the service?")
        return f"the series exist, but none of service=\"{service}\", {label}=\"{value}\" has a {wanted[0]} field"

    def value(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> float:
        return self.source.fetch(query, service, arm, now - window, now)


def _is_bound(name: str) -> bool:
    try:
        float(name)
    except ValueError:
        return False
    return True


__all__ = ["NEEDS", "InfluxDBExaminer"]
