"""Which series are a rollout's arms: the rule file's arm label values, filled for one rollout.

A rule file's arms may follow the release: `{version}` / `{previous_version}` are the versions of the
rollout's images (guardian/images.py), other placeholders come from the rollout's actuator when it has
the ArmValues capability (the kubernetes actuator's `{pod_template_hash}`). An arm that cannot be filled
is not selected, with why: every check reading it is inconclusive, never a pass.

`ArmSelections` computes a rollout's selection once per tick: `Guard.plan` selects the arms of the ticks
about to run (the batch it plans is then exactly what they fetch), and the tick takes that selection, or
selects them itself when no plan came before it (replay, a tick the scheduler did not plan).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

from guardian.actuators import Actuator, ArmValues
from guardian.domain import ARMS, RolloutState
from guardian.images import image_version
from guardian.rules.loader import RuleSet
from guardian.rules.models import Arms
from guardian.sources import ArmSelector


def arm_selectors(arms: Arms, state: RolloutState, extra: dict[str, str | None] | None = None,
                  ) -> tuple[dict[str, ArmSelector], dict[str, str]]:
    """Each arm's selector for this rollout, its `{version}` / `{previous_version}` filled from the
    rollout's images (and other placeholders from `extra`: what the actuator's `arm_values` knows, e.g. the
    kubernetes actuator's `{pod_template_hash}`); and for each arm that cannot be filled, why not."""
    if not arms.templated:
        return {arm: ArmSelector(arm, arms.label, getattr(arms, arm)) for arm in ARMS}, {}
    versions = {"version": image_version(state.image),
                "previous_version": image_version(state.previous_image) if state.previous_image else None,
                **(extra or {})}
    selectors: dict[str, ArmSelector] = {}
    unresolved: dict[str, str] = {}
    for arm in ARMS:
        value = arms.resolve(arm, versions)
        if value is not None:
            selectors[arm] = ArmSelector(arm, arms.label, value)
            continue
        missing = ", ".join(f"{{{p}}}" for p in arms.placeholders(arm) if versions.get(p) is None)
        why = (f"rollout {state.id} does not know the image it replaces (start it with previous_image; the Swarm "
               "watcher takes it from the update it detected)") if "previous_version" in missing else (
               f"rollout {state.id}'s actuator ({state.target}) does not know it (only the kubernetes actuator "
               "reports pod-template-hashes)")
        unresolved[arm] = (f"the {arm} arm ({arms.label}={getattr(arms, arm)!r}) cannot be selected: {missing} "
                           f"has no value, because {why}")
    return selectors, unresolved


@dataclass(frozen=True)
class ArmSelection:
    """A rollout's arms for one tick: the selector of each arm that can be selected, and why each other
    one cannot."""

    arms: Arms  # the rule file's arms it was selected from
    selectors: dict[str, ArmSelector] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)


class ArmSelections:
    """Selects rollouts' arms, asking their actuators for the placeholder values they know; and keeps the
    selections `plan` made for the ticks about to run until each tick takes its own."""

    def __init__(self, actuator_for: Callable[[str], Actuator]) -> None:
        self.actuator_for = actuator_for
        self._planned: dict[str, tuple[int, ArmSelection]] = {}  # rollout id -> (tick, its selection)
        self._lock = threading.Lock()

    def select(self, state: RolloutState, ruleset: RuleSet) -> ArmSelection:
        arms = ruleset.rules.arms
        selectors, unresolved = arm_selectors(arms, state, self.arm_values(state, ruleset))
        return ArmSelection(arms, selectors, unresolved)

    def plan(self, planned: dict[str, tuple[int, ArmSelection]], keep: set[str] | frozenset[str] = frozenset()
             ) -> None:
        """The selections of a pass's due ticks (rollout id -> tick, selection); those planned before that no tick
        took are dropped, but for the rollouts in `keep` (due still, planned by an earlier pass)."""
        with self._lock:
            self._planned = {rid: v for rid, v in self._planned.items() if rid in keep} | planned

    def planned_tick(self, rollout_id: str) -> int | None:
        """The tick a pass planned the rollout's selection for, that no tick took yet (None: none)."""
        with self._lock:
            planned = self._planned.get(rollout_id)
        return planned[0] if planned is not None else None

    def for_tick(self, state: RolloutState, ruleset: RuleSet, t: int) -> ArmSelection:
        """Tick t's selection: the one planned for it (under the same rules), else selected now."""
        with self._lock:
            planned = self._planned.pop(state.id, None)
        if planned is not None and planned[0] == t and planned[1].arms is ruleset.rules.arms:
            return planned[1]
        return self.select(state, ruleset)

    def forget(self, rollout_id: str) -> None:
        with self._lock:
            self._planned.pop(rollout_id, None)

    def arm_values(self, state: RolloutState, ruleset: RuleSet) -> dict[str, str | None] | None:
        """Placeholder values the rollout's actuator knows (ArmValues, optional), when the arms need them."""
        if not ruleset.rules.arms.templated:
            return None
        try:
            actuator = self.actuator_for(state.target)
            return actuator.arm_values(state) if isinstance(actuator, ArmValues) else None
        except Exception as e:  # noqa: BLE001 - an arm left unresolved is inconclusive, never a pass
            logger.warning("rollout {}: arm values unavailable: {}", state.id, e)
            return None


__all__ = ["ArmSelection", "ArmSelections", "arm_selectors"]
