"""The guardian's vocabulary: plain frozen values that every layer passes around.

Nothing here does I/O. Judges read `Evidence` (arrays, never a client) and return `Verdict`s;
`policy.decide` turns them into one `Decision`; the engine applies it to a `RolloutState`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal

import numpy as np

Arm = Literal["canary", "baseline"]
ARMS: tuple[Arm, ...] = ("canary", "baseline")


class SignalType(str, Enum):
    COUNTER = "counter"  # recorded as the increment within the tick
    GAUGE = "gauge"  # recorded as the value at the end of the tick


class Result(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"  # not enough evidence (missing data, too few samples, `for:` pending)
    ERROR = "error"  # the evidence could not be fetched at all


class Action(str, Enum):
    START = "start"  # deploy the new version at the first traffic step
    CONTINUE = "continue"  # stay at this step and keep watching
    ADVANCE = "advance"  # go to the next traffic step
    PROMOTE = "promote"  # the new version becomes stable
    BAKE = "bake"  # all traffic on the new version, the previous one kept warm out of rotation, still judged
    PAUSE = "pause"  # hold traffic where it is; resumes when the evidence is conclusive again
    RESUME = "resume"
    SCALE = "scale"  # add (or remove) replicas of the stable version
    ROLLBACK = "rollback"  # all traffic back to the stable version
    NOTIFY = "notify"  # a check wants a human to know; the rollout goes on
    APPROVAL = "approval"  # every check passed at a step that holds for a human "go": it waits (and notifies)
    APPROVE = "approve"  # a human's "go" for a step that waits for approval


class Phase(str, Enum):
    PROGRESSING = "progressing"
    PAUSED = "paused"
    BAKING = "baking"  # at 100% after the last step, the previous version warm, until the bake passes
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ENDED = "ended"  # a watch (Strategy.WATCH) that ended: a rollout of its service started, or it is no longer watched

    @property
    def terminal(self) -> bool:
        return self in (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ENDED)


class Strategy(str, Enum):
    CANARY = "canary"
    ROLLING = "rolling"
    BLUE_GREEN = "blue-green"
    OBSERVE = "observe"
    WATCH = "watch"  # the service between rollouts (engine/watches.py, judge/steady.py): judged, scaled, never paused


@dataclass(frozen=True)
class Verdict:
    """What one check concluded at one tick, with everything needed to explain it."""

    check: str
    result: Result
    reason: str
    value: float | None = None
    threshold: float | None = None
    sample_size: float | None = None
    statistic: str | None = None  # e.g. "wilson_lower(0.95)", "e_value", "last"
    action: Action = Action.ROLLBACK  # what a FAIL asks for
    breaching: bool = False  # INCONCLUSIVE only: the limit is crossed but `for:` has not elapsed
    warming_up: bool = False  # INCONCLUSIVE only: the rollout is younger than the check's window
    abstained: bool = False  # INCONCLUSIVE only: an optional check whose signal neither arm reports
    replicas: int = 0  # for action SCALE: the replica delta
    # power (judge/power.py; rate and sign tests, on PASS): what the evidence could have revealed, in words
    # ("could have detected ×1.7 (3.1% errors) with 80% power …"); whether that covers the check's
    # `min_detectable`; and, for a rate test that does not, the canary requests still needed. None: not known
    detectable: str | None = None
    powered: bool | None = None
    needed: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)  # shallow: every field is a plain value (asdict deep-copies, slowly)
        d["result"] = self.result.value
        d["action"] = self.action.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        """Also a verdict stored before a field existed (older decision logs and ticks): it takes its default."""
        return cls(**{**d, "result": Result(d["result"]), "action": Action(d["action"])})


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    tick: int | None = None
    at: float | None = None
    verdicts: tuple[Verdict, ...] = ()
    source: str = "guardian"  # "guardian", "user" or "alertmanager"
    replicas: int = 0
    logs: tuple[dict[str, Any], ...] = ()  # log templates new in / far more frequent in the canary
    by: str | None = None  # a user's decision: the operator who made it (a named operator token's name)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "action": self.action.value,
            "reason": self.reason,
            "tick": self.tick,
            "at": self.at,
            "source": self.source,
            "replicas": self.replicas,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }
        if self.logs:
            d["logs"] = list(self.logs)
        if self.by is not None:
            d["by"] = self.by
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        return cls(
            action=Action(d["action"]),
            reason=d["reason"],
            tick=d.get("tick"),
            at=d.get("at"),
            source=d.get("source", "guardian"),
            replicas=d.get("replicas", 0),
            verdicts=tuple(Verdict.from_dict(v) for v in d.get("verdicts", [])),
            logs=tuple(d.get("logs") or ()),
            by=d.get("by"),
        )


class Growing:
    """An append-only float array (1-D, or rows of `width`) with amortised O(1) appends."""

    def __init__(self, width: int | None = None):
        self._buf = np.empty((16,) if width is None else (16, width))
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def extend(self, rows: np.ndarray) -> None:
        need = self._n + len(rows)
        if need > len(self._buf):
            bigger = np.empty((max(need, 2 * len(self._buf)), *self._buf.shape[1:]))
            bigger[: self._n] = self._buf[: self._n]
            self._buf = bigger
        self._buf[self._n : need] = rows
        self._n = need

    @property
    def view(self) -> np.ndarray:
        return self._buf[: self._n]


# the key of the bake's reference in a rollout's frozen models snapshot (and a recording's `models`)
BAKE_REFERENCE_KEY = "#bake"
# the key of the service's pre-rollout window (the rate test's level reference, judge/sequential.py) there
BEFORE_ROLLOUT_KEY = "#before"


@dataclass
class Evidence:
    """Everything fetched so far for one rollout, tick by tick (the body of a recording).

    `series[signal][arm][t]` is the value for tick t (None: missing). `unavailable[t]` says why the
    source could not be asked at tick t (None when it answered).
    """

    step_seconds: float
    series: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    unavailable: list[str | None] = field(default_factory=list)
    counters: frozenset[str] = frozenset()  # signals recorded as increments (summed over a window)
    started_at: float = 0.0  # Unix time of tick 0's start (the rollout's start: forecasts are frozen there)
    models: dict[str, Any] = field(default_factory=dict)  # check name -> its frozen forecast model, or why none
    # the bake's reference (judge/bake.py): {"from_tick": the bake's first tick or None, "before": {signal: the
    # pre-rollout window's value}, "window": [start, end]}; None: no bake
    bake: dict[str, Any] | None = None
    # the baseline before the rollout (judge/compare.py level_reference): {"before": {signal: the pre-rollout
    # window's value}, "window": [start, end]}; None: not fetched (a recording without it, or no rate check)
    before: dict[str, Any] | None = None
    # why the latest value of (signal, arm) is missing, in the source's words ("no series for …"); live only
    # (recordings hold values, not reasons), cleared when a value arrives
    missing_why: dict[tuple[str, str], str] = field(default_factory=dict)
    # memo of arrays derived from the (append-only) ticks, extended as ticks arrive; never an input
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ticks(self) -> int:
        return len(self.unavailable)

    def append(self, values: dict[str, dict[str, float | None]], unavailable: str | None = None,
               why: dict[tuple[str, str], str] | None = None) -> None:
        """Add tick `ticks`; `why`: the source's reason for each (signal, arm) it had no value for."""
        t = self.ticks
        for signal, arms in values.items():
            per_arm = self.series.setdefault(signal, {})
            for arm, v in arms.items():
                column = per_arm.setdefault(arm, [])
                column.extend([None] * (t - len(column)))
                column.append(v)
                if v is not None:
                    self.missing_why.pop((signal, arm), None)
                elif why and (signal, arm) in why:
                    self.missing_why[(signal, arm)] = why[(signal, arm)]
        self.unavailable.append(unavailable)
        for per_arm in self.series.values():
            for column in per_arm.values():
                column.extend([None] * (t + 1 - len(column)))

    def array(self, signal: str, arm: str) -> np.ndarray:
        """The column as floats (NaN for missing), memoised and extended incrementally."""
        grown = self.cache.get(("array", signal, arm))
        if grown is not None and grown._n == len(self.unavailable):  # up to date: the common case
            return grown._buf[: grown._n]
        if grown is None:
            grown = self.cache[("array", signal, arm)] = Growing()
        if len(grown) < self.ticks:
            grown.extend(np.array([np.nan if v is None else v for v in self.column(signal, arm)[len(grown):]],
                                  dtype=float))
        return grown.view

    def why_missing(self, signal: str, arm: str) -> str:
        """' (the source: …)' when the source said why (signal, arm) has no value, else ''."""
        why = self.missing_why.get((signal, arm))
        return f" (the source: {why})" if why else ""

    def column(self, signal: str, arm: str) -> list[float | None]:
        """Tick-aligned values (every column is kept padded to `ticks`). Do not mutate."""
        col = self.series.get(signal, {}).get(arm)
        return col if col is not None else [None] * self.ticks


@dataclass(frozen=True)
class Outcome:
    """What an actuator did with one action."""

    ok: bool
    action: str
    detail: str
    attempts: int = 1
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "data": dict(self.data)}


# An analysis this long never completes: the rollout judges every tick until something else ends it (a gate's
# rollout: its client's last call, a new revision, or its client going quiet; api/gates.py).
OPEN_ENDED_ANALYSIS = 1e9
APPROVAL_TIMED_OUT = "approval timed out"  # the start of the reason of a pause for want of a human "go" (policy)


@dataclass(frozen=True)
class RolloutState:
    id: str
    service: str
    image: str
    strategy: Strategy
    steps: tuple[int, ...]
    target: str
    step_seconds: float  # tick length
    analysis_seconds: float  # how long each step must pass before advancing
    created_at: float
    phase: Phase = Phase.PROGRESSING
    paused_by: str | None = None  # "user" or "guardian" while PAUSED
    step_index: int = 0
    step_started_at: float = 0.0
    last_tick: int = -1
    scaled_replicas: int = 0
    last_scale_at: float | None = None
    reason: str = ""
    updated_at: float = 0.0
    rules: str = "default"  # name of the rule set judging this rollout
    previous_image: str | None = None  # the image the new one replaces, if known (arms' {previous_version})
    # tick 0's start when the guard aligned it to the tick grid (GuardConfig.align_ticks); None: created_at
    tick_origin: float | None = None
    # the bake (rule file `bake:`): after the last step, this long at 100% with the previous version warm,
    # counted in ticks that passed (a tick without the evidence to pass stops the bake's clock); 0: no bake
    bake_seconds: float = 0.0
    bake_tick: int | None = None  # the first tick judged in the bake (set when its BAKE took effect)
    baked_ticks: int = 0  # ticks of the bake that passed so far
    # a watch (Strategy.WATCH; judge/steady.py): `image` is the release running, `previous_image` the one it replaced
    replicas: int | None = None  # its replicas now: as the actuator last reported them, else tracked by each scale
    replicas_at_start: int | None = None  # what they were when the watch started (a replay starts there)
    replicas_reported: bool = False  # the actuator reported `replicas` (else tracked from the rule's count)
    calm_since: float | None = None  # since when every scaling check has passed (scale-in waits `scale_in_after`)
    refused_at: float | None = None  # when a scale beyond min/max was last refused (said again after `cooldown`)
    suspect: str | None = None  # the rollout that promoted `image`: a breach within `attribution` names it
    promoted_at: float | None = None  # when that rollout was promoted
    # power-aware promotion (rule file `max_analysis`, `underpowered`; judge/policy.py): how long the last
    # comparative step may be analysed waiting for the power to see each check's `min_detectable`, and what then.
    # A state stored before these existed: no extension (None: `analysis_seconds`), promoted as before
    max_analysis_seconds: float | None = None
    underpowered: str = "promote"  # "pause" | "promote"
    # approval steps (`steps: [10, 25, approve, 50, 100]`, rule file `approve_before: promote`; judge/policy.py):
    # the indexes of the steps whose end waits for a human "go", those approved so far, since when the current
    # step has waited, and how long it may wait before the rollout pauses (None: without end)
    approvals: tuple[int, ...] = ()
    approved: tuple[int, ...] = ()
    awaiting_since: float | None = None
    approval_timeout_seconds: float | None = None

    @property
    def needs_approval(self) -> bool:
        """Does the end of the current step wait for a human "go" not given yet?"""
        return self.step_index in self.approvals and self.step_index not in self.approved

    @property
    def awaiting_approval(self) -> bool:
        """Is it waiting for that "go" now: its step has passed (`awaiting_since`), or the guardian paused it because
        the wait timed out? (What `approve` may act on; the API's view, the UI and `rollout status` show it.)"""
        if self.phase.terminal or not self.needs_approval:
            return False
        return self.awaiting_since is not None or (
            self.phase is Phase.PAUSED and self.paused_by == "guardian" and self.reason.startswith(APPROVAL_TIMED_OUT))

    @property
    def baking(self) -> bool:
        """In the bake: BAKING, or paused (or held) after its BAKE took effect."""
        return self.bake_tick is not None and not self.phase.terminal

    @property
    def baked_seconds(self) -> float:
        return self.baked_ticks * self.step_seconds

    @property
    def origin(self) -> float:
        """Tick 0's start: `tick_origin`, or `created_at` for rollouts (and recordings) without one."""
        return self.created_at if self.tick_origin is None else self.tick_origin

    @property
    def weight(self) -> int:
        if self.phase in (Phase.PROMOTED, Phase.BAKING) or self.baking:
            return 100
        if self.phase == Phase.ROLLED_BACK:
            return 0
        return self.steps[self.step_index] if self.steps else 0

    @property
    def open_ended(self) -> bool:
        """Judged until ended from outside: passing checks never promote it (OPEN_ENDED_ANALYSIS)."""
        return self.analysis_seconds >= OPEN_ENDED_ANALYSIS

    @property
    def last_step(self) -> bool:
        return self.step_index >= len(self.steps) - 1

    def tick_bounds(self, t: int) -> tuple[float, float]:
        """Tick t covers [origin + t·step, origin + (t+1)·step)."""
        return self.origin + t * self.step_seconds, self.origin + (t + 1) * self.step_seconds

    def due_tick(self, now: float, delay: float = 0.0) -> int:
        """The newest tick whose window has ended (plus `delay` for the source to settle); -1 if none."""
        return int((now - delay - self.origin) // self.step_seconds) - 1

    def evolve(self, **changes: Any) -> RolloutState:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)  # shallow: every field is a plain value (asdict deep-copies, slowly)
        d["strategy"] = self.strategy.value
        d["phase"] = self.phase.value
        d["steps"] = list(self.steps)
        d["approvals"], d["approved"] = list(self.approvals), list(self.approved)
        d["weight"] = self.weight
        d["awaiting_approval"] = self.awaiting_approval
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RolloutState:
        d = {k: v for k, v in d.items() if k not in ("weight", "awaiting_approval")}  # derived
        return cls(
            **{
                **d,
                "strategy": Strategy(d["strategy"]),
                "phase": Phase(d["phase"]),
                "steps": tuple(d["steps"]),
                "approvals": tuple(d.get("approvals") or ()),
                "approved": tuple(d.get("approved") or ()),
            }
        )


APPROVE_STEP = "approve"  # in a list of steps: the step before it waits for a human "go" before going on


def split_steps(items: Sequence[int | str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """`[10, 25, "approve", 50, 100]` -> the traffic steps (10, 25, 50, 100) and the indexes of the steps whose end
    waits for approval (1: after 25%). Raises ValueError naming what is wrong."""
    steps: list[int] = []
    approvals: list[int] = []
    for i, item in enumerate(items):
        if isinstance(item, str) and item.strip().lower() == APPROVE_STEP:
            if not steps:
                raise ValueError("`approve` must follow a traffic step (it holds the end of the step before it)")
            if approvals and approvals[-1] == len(steps) - 1:
                raise ValueError(f"`approve` twice in a row (item {i + 1})")
            approvals.append(len(steps) - 1)
            continue
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ValueError(f"step {i + 1}: expected a percentage or `approve`, got {item!r}")
        try:
            steps.append(int(item))
        except ValueError:
            raise ValueError(f"step {i + 1}: expected a percentage or `approve`, got {item!r}") from None
    return tuple(steps), tuple(approvals)
