"""Where evidence comes from. One protocol, one module per backend.

`MetricSource.fetch` returns one number for one signal of one arm over one tick window, or raises
`NoData` (answered, nothing there) or `SourceUnavailable` (could not ask). Never a made-up zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
