"""Verdicts -> one Decision. Pure: no I/O, time passed in.

Order of precedence:
1. any FAIL -> the most severe action the failing checks ask for (rollback > pause > scale > notify);
2. any ERROR, or INCONCLUSIVE without a breach -> PAUSE (missing data is never a pass);
3. any INCONCLUSIVE breach whose `for:` is still running, or a check still filling its first
   window (warming up) -> CONTINUE (hold the step);
4. all PASS -> ADVANCE, or on the last step BAKE (a rollout with a bake) or PROMOTE, once the step has
   been analysed long enough; an open-ended rollout (a gate's: RolloutState.open_ended) never completes
   its analysis: it CONTINUEs, judged every tick, until its client ends it.
5. in the bake, all PASS -> CONTINUE until `bake_seconds` of passing ticks, then PROMOTE. Only a tick
   that passes counts (`bake_counts`): missing data or a pending `for:` stops the bake's clock.
An optional check whose signal neither arm reports abstains (visibly, in the evidence) and is left
out; with no check left, nothing is known and the rollout pauses.
A rollout the guardian (or an Alertmanager alert) paused is RESUMEd when the evidence is conclusive
again and no alert fails it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from guardian.domain import Action, Decision, Phase, Result, RolloutState, Verdict

SEVERITY = {Action.ROLLBACK: 4, Action.PAUSE: 3, Action.SCALE: 2, Action.NOTIFY: 1}


@dataclass(frozen=True)
class Policy:
    on_inconclusive: Action = Action.PAUSE  # or CONTINUE: hold without pausing
    scale_cooldown_seconds: float = 60.0


def bake_counts(verdicts: Sequence[Verdict]) -> bool:
    """Does this tick count towards the bake? Only when every check that judges passed."""
    judged = [v for v in verdicts if not v.abstained]
    return bool(judged) and all(v.result is Result.PASS for v in judged)


def reasons(verdicts: Sequence[Verdict]) -> str:
    """'check: its reason; check: its reason': the verdicts behind a decision, in its reason."""
    return "; ".join(f"{v.check}: {v.reason}" for v in verdicts)


def decide(
    verdicts: Sequence[Verdict],
    state: RolloutState,
    now: float,
    policy: Policy = Policy(),
    *,
    tick: int | None = None,
    last_scale_at: float | None = None,
) -> Decision:
    vs = tuple(verdicts)

    def make(action: Action, reason: str, replicas: int = 0) -> Decision:
        return Decision(action=action, reason=reason, tick=tick, at=now, verdicts=vs, replicas=replicas)

    failed = [v for v in vs if v.result is Result.FAIL]
    if failed:
        worst = max(failed, key=lambda v: SEVERITY.get(v.action, 0))
        if worst.action is Action.SCALE:
            if last_scale_at is not None and now - last_scale_at < policy.scale_cooldown_seconds:
                return make(Action.CONTINUE, f"scale-out cooling down; {reasons(failed)}")
            return make(Action.SCALE, reasons(failed), replicas=worst.replicas)
        if worst.action is not Action.NOTIFY:
            return make(worst.action, reasons([v for v in failed if v.action is worst.action]))
        notify = make(Action.NOTIFY, reasons(failed))
    else:
        notify = None
    judged = [v for v in vs if not v.abstained]  # optional checks whose signal does not exist
    if not judged:
        return make(policy.on_inconclusive, "no checks judge this rollout: nothing is known, so nothing passes")
    unknown = [v for v in judged if v.result is Result.ERROR
               or (v.result is Result.INCONCLUSIVE and not (v.breaching or v.warming_up))]
    if unknown:
        return make(policy.on_inconclusive, reasons(unknown))
    if notify is not None:
        return notify
    holding = [v for v in judged if v.result is Result.INCONCLUSIVE]
    if holding:
        return make(Action.CONTINUE, reasons(holding))
    if state.phase is Phase.PAUSED and state.paused_by in ("guardian", "alertmanager"):
        return make(Action.RESUME, "all checks pass again: " + reasons(vs))
    if state.baking:
        baked = (state.baked_ticks + 1) * state.step_seconds  # this tick passed: it counts
        if baked >= state.bake_seconds:
            return make(Action.PROMOTE, f"the bake passed: {baked:g}s at 100% with every check passing: "
                                        + reasons(vs))
        return make(Action.CONTINUE, f"baking at 100%: {baked:g}s of {state.bake_seconds:g}s passed "
                                     f"({state.bake_seconds - baked:g}s left), the previous version warm: "
                                     + reasons(vs))
    analysed = now - state.step_started_at
    if state.open_ended:
        return make(Action.CONTINUE, f"all checks pass ({analysed:.0f}s judged); judging on until the rollout is "
                                     "ended from outside: " + reasons(vs))
    if analysed < state.analysis_seconds:
        left = state.analysis_seconds - analysed
        return make(Action.CONTINUE, f"all checks pass; step {state.step_index + 1}/{len(state.steps)} "
                                     f"analysed {analysed:.0f}s of {state.analysis_seconds:g}s ({left:.0f}s left)")
    if state.last_step and state.bake_seconds > 0:
        return make(Action.BAKE, f"all checks passed on every step: baking at 100% for {state.bake_seconds:g}s, "
                                 "the previous version kept warm: " + reasons(vs))
    if state.last_step:
        return make(Action.PROMOTE, "all checks passed on every step: " + reasons(vs))
    return make(Action.ADVANCE, f"all checks passed for {analysed:.0f}s at {state.weight}%: " + reasons(vs))
