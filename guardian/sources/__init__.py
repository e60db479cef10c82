"""Where evidence comes from. One protocol, one module per backend.

`MetricSource.fetch` returns one number for one signal of one arm over one tick window, or raises
`NoData` (answered, nothing there) or `SourceUnavailable` (could not ask). Never a made-up zero.

What some sources can do besides `fetch`: each capability a small Protocol, so a caller asks
`isinstance(source, Planning)` instead of looking for a method by name.

    capability      method                                  who has it
    Planning        plan(requests)                          batching: the fetches about to be made
    Pinging         ping()                                  prometheus (and batching): does it answer
    Closeable       close()                                 prometheus (and batching): its HTTP session
    Introspectable  render(...), instant_result(...)        prometheus (and batching): `doctor`, preflight

`runtime_checkable` checks that the methods are there, not their signatures: the signatures below are
the contract a source that declares the capability keeps.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from guardian.domain import SignalType


@dataclass(frozen=True)
class SignalQuery:
    """One signal as a rule set defines it: a PromQL template and how to read it."""

    signal: str  # e.g. "errors"
    type: SignalType  # COUNTER: increment within the tick; GAUGE: value at the tick's end
    promql: str  # template with {{service}}, {{arm}}, {{arm_label}}, {{window}}


@dataclass(frozen=True)
class ArmSelector:
    """Which label tells the arms apart, and the label value of the arm asked for."""

    arm: str  # "canary" or "baseline": the guardian's name for the arm
    label: str = "track"
    value: str = ""  # the label value; defaults to `arm`

    @property
    def label_value(self) -> str:
        return self.value or self.arm


class MetricSource(Protocol):
    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        """The signal's value for tick window [start, end) (epoch seconds).

        COUNTER signals: the increase within the window (summed over series, resets handled).
        GAUGE signals: the value at `end`.
        Raises NoData or SourceUnavailable.
        """
        ...


Fetch = tuple[SignalQuery, str, ArmSelector, float, float]  # a fetch's arguments: query, service, arm, window


@runtime_checkable
class Planning(Protocol):
    def plan(self, requests: Iterable[Fetch]) -> None:
        """The fetches about to be made (a pass of due ticks): a batching source asks for all of them in
        its first query per signal and window."""
        ...


@runtime_checkable
class Routing(Protocol):
    def for_service(self, service: str) -> MetricSource:
        """The source this service's signals are read from (a rule file's `source:`): sources/router.py."""
        ...


@runtime_checkable
class Pinging(Protocol):
    def ping(self) -> bool:
        """Does the source answer (the guardian's readiness shows it)?"""
        ...


@runtime_checkable
class Closeable(Protocol):
    def close(self) -> None: ...


@runtime_checkable
class Introspectable(Protocol):
    """A source that can be asked about its series, not only for a tick's value: `guardian doctor` and the
    preflight of a start (sources/doctor.py)."""

    def render(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> str:
        """The query `fetch` would send for these arguments."""
        ...

    def instant_result(self, promql: str, at: float) -> list[dict[str, Any]]:
        """The series of `promql` at `at`."""
        ...

    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float: ...
