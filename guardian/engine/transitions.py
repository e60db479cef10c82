"""The rollout state machine: pure functions from a state and a decision that took effect."""
from __future__ import annotations

from guardian.domain import APPROVAL_TIMED_OUT, Action, Decision, Phase, RolloutState


def weight_after(state: RolloutState, action: Action) -> int:
    """The canary traffic percent once `action` is done."""
    if action is Action.ADVANCE:
        return state.steps[min(state.step_index + 1, len(state.steps) - 1)]
    if action in (Action.PROMOTE, Action.BAKE):
        return 100
    if action is Action.ROLLBACK:
        return 0
    if action is Action.START:
        return state.steps[0]
    return state.weight


def transition(state: RolloutState, decision: Decision, now: float, max_scale: int) -> RolloutState:
    """The state after `decision` took effect."""
    a = decision.action
    s = state.evolve(updated_at=now, reason=decision.reason)
    if a is Action.START:
        return s.evolve(step_index=0, step_started_at=now)
    if a is Action.ADVANCE:
        return s.evolve(step_index=state.step_index + 1, step_started_at=now, awaiting_since=None)
    if a is Action.APPROVAL:  # the step's end waits for a human "go" from now on
        return s.evolve(awaiting_since=now)
    if a is Action.APPROVE:  # the step is approved; a rollout paused for want of it goes on
        back = state.phase is Phase.PAUSED and state.paused_by == "guardian" and state.reason.startswith(
            APPROVAL_TIMED_OUT)
        return s.evolve(approved=tuple(sorted({*state.approved, state.step_index})), awaiting_since=None,
                        **({"phase": Phase.PROGRESSING, "paused_by": None} if back else {}))
    if a is Action.BAKE:  # the bake's first tick is the next one
        first = (decision.tick + 1) if decision.tick is not None else state.last_tick + 1
        return s.evolve(phase=Phase.BAKING, paused_by=None, step_started_at=now, bake_tick=first, baked_ticks=0)
    if a is Action.PROMOTE:
        return s.evolve(phase=Phase.PROMOTED, paused_by=None)
    if a is Action.ROLLBACK:
        return s.evolve(phase=Phase.ROLLED_BACK, paused_by=None)
    if a is Action.PAUSE:
        return s.evolve(phase=Phase.PAUSED, paused_by=decision.source)
    if a is Action.RESUME:  # back into the bake when its BAKE had taken effect (its clock kept what had passed)
        return s.evolve(phase=Phase.BAKING if state.bake_tick is not None else Phase.PROGRESSING, paused_by=None,
                        step_started_at=now)
    if a is Action.SCALE:
        return s.evolve(scaled_replicas=min(max_scale, state.scaled_replicas + decision.replicas), last_scale_at=now)
    return s
