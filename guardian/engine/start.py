"""How a rollout starts: the request (`StartSpec`), its defaults (`start_spec`), and the state it starts in
(`first_state`). `POST /v1/rollouts`, the gates and the watchers all make a StartSpec with `start_spec` and
hand it to `Guard.start`, which checks the release freeze, freezes the forecast models, stores this first
state and carries out its START."""
from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from guardian.domain import OPEN_ENDED_ANALYSIS, RolloutState, Strategy
from guardian.rules.loader import RuleSet


@dataclass(frozen=True)
class StartSpec:
    service: str
    image: str
    strategy: Strategy = Strategy.CANARY
    steps: tuple[int, ...] = (10, 25, 50, 100)
    target: str = "noop"
    step_seconds: float = 10.0
    analysis_seconds: float = 60.0
    id: str | None = None
    previous_image: str | None = None  # the image the new one replaces, if known (arms' {previous_version})
    reason: str | None = None  # why the rollout starts (default: "start STRATEGY rollout of IMAGE")
    source: str = "user"  # who started it: "user", or "guardian" (the Swarm watcher)
    force: bool = False  # start even while a critical alert freezes the service's releases
    bake_seconds: float | None = None  # the bake after the last step; None: the rule file's `bake`
    approvals: tuple[int, ...] = ()  # the steps whose end waits for a human "go" (`approve` in the steps)

    @property
    def open_ended(self) -> bool:
        """A gate's rollout: judged until ended from outside, never baked."""
        return self.analysis_seconds >= OPEN_ENDED_ANALYSIS

    @property
    def start_reason(self) -> str:
        """The reason its START decision carries."""
        return self.reason or f"start {self.strategy.value} rollout of {self.image}"


class StartDefaults(Protocol):
    """What a start request may leave out: the Settings carry these."""

    steps: list[int]
    default_target: str
    tick_seconds: float
    analysis_seconds: float


def start_spec(defaults: StartDefaults, *, service: str, image: str, strategy: Strategy = Strategy.CANARY,
               steps: Sequence[int] | None = None, target: str | None = None, step_seconds: float | None = None,
               analysis_seconds: float | None = None, previous_image: str | None = None, reason: str | None = None,
               source: str = "user", force: bool = False, bake_seconds: float | None = None,
               approvals: Sequence[int] = ()) -> StartSpec:
    """A start request as a StartSpec, what it leaves out taken from `defaults`. The one way a rollout is
    started: `POST /v1/rollouts` and the watchers both call this, then `Guard.start`."""
    if not steps:
        steps = defaults.steps if strategy in (Strategy.CANARY, Strategy.ROLLING) else [100]
    return StartSpec(
        service=service, image=image, strategy=strategy, steps=tuple(steps), target=target or defaults.default_target,
        step_seconds=step_seconds or defaults.tick_seconds,
        analysis_seconds=defaults.analysis_seconds if analysis_seconds is None else analysis_seconds,
        previous_image=previous_image, reason=reason, source=source, force=force, bake_seconds=bake_seconds,
        approvals=tuple(approvals),
    )


def first_state(spec: StartSpec, ruleset: RuleSet, now: float, *, align_ticks: bool = False) -> RolloutState:
    """The rollout `spec` starts, as it is before its START: a new id unless the spec names one, the rules it
    runs under, and with `align_ticks` its ticks on the grid of its tick length (the next multiple of
    `step_seconds` since the epoch, so rollouts with the same tick length share tick windows)."""
    return RolloutState(
        id=spec.id or uuid.uuid4().hex[:12], service=spec.service, image=spec.image, strategy=spec.strategy,
        steps=spec.steps, target=spec.target, step_seconds=spec.step_seconds,
        analysis_seconds=spec.analysis_seconds, created_at=now, step_started_at=now, updated_at=now,
        rules=ruleset.source, previous_image=spec.previous_image,
        tick_origin=math.ceil(now / spec.step_seconds) * spec.step_seconds if align_ticks else None,
        bake_seconds=0.0 if spec.open_ended else (
            ruleset.rules.bake if spec.bake_seconds is None else spec.bake_seconds),
        max_analysis_seconds=ruleset.rules.max_analysis_for(spec.analysis_seconds),
        underpowered=ruleset.rules.underpowered,
        approvals=approvals_of(spec, ruleset),
        approval_timeout_seconds=ruleset.rules.approval_timeout or None,
    )


def approvals_of(spec: StartSpec, ruleset: RuleSet) -> tuple[int, ...]:
    """The steps whose end waits for a human "go": those the start request marks (`approve` after them) and, with
    the rule file's `approve_before: promote`, the last. A rollout whose traffic the guardian does not move
    (observe, a gate's) waits for nobody."""
    if spec.strategy is Strategy.OBSERVE or spec.open_ended or not spec.steps:
        return ()
    marked = {i for i in spec.approvals if 0 <= i < len(spec.steps)}
    if ruleset.rules.approve_before == "promote":
        marked.add(len(spec.steps) - 1)
    return tuple(sorted(marked))


__all__ = ["StartDefaults", "StartSpec", "approvals_of", "first_state", "start_spec"]
