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
6. power (judge/power.py): at the end of the last step on which the canary is compared with a baseline
   (`power_gate`: the last step, or the one before a final 100% step of a canary or rolling rollout — at
   100% the baseline serves nothing and the evidence stops growing), a passing rate or sign check that could
   not have seen its `min_detectable` (Verdict.powered False; gating: it would roll back or pause) extends the
   analysis: CONTINUE until `max_analysis_seconds` of it, then PAUSE (`underpowered: pause`, resumed once the
   evidence has the power) or go on as if powered (`underpowered: promote`), saying so. The decision that
   goes on (ADVANCE, BAKE, PROMOTE) states what each check could have seen.
7. approval (a step followed by `approve` in `steps`, or the last one with `approve_before: promote`): where the
   rollout would go on (ADVANCE, BAKE, PROMOTE) from a step that waits for a human "go" not given yet, it says
   so once (APPROVAL: the guard notifies) and then CONTINUEs, judged every tick (a failing check still rolls it
   back); after `approval_timeout` of waiting it PAUSEs, and stays paused until approved (APPROVE, by a user).
An optional check whose signal neither arm reports abstains (visibly, in the evidence) and is left
out; with no check left, nothing is known and the rollout pauses.
A rollout the guardian (or an Alertmanager alert) paused is RESUMEd when the evidence is conclusive
again and no alert fails it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from guardian.domain import APPROVAL_TIMED_OUT, Action, Decision, Phase, Result, RolloutState, Strategy, Verdict
from guardian.judge.power import asked, headline

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


UNDERPOWERED = "underpowered"  # the start of the reason of a pause for lack of power (it resumes only with it)
GATING = (Action.ROLLBACK, Action.PAUSE)  # a check whose failure would stop the rollout must have seen enough


def power_gate(state: RolloutState) -> bool:
    """Is this the step whose end needs the power to see each check's `min_detectable`? The last step on which
    the canary is compared with a baseline that serves traffic: the last step, or the one before a final 100%
    step of a canary or rolling rollout (at 100% the baseline serves nothing: the evidence stops growing)."""
    if state.open_ended or state.strategy is Strategy.WATCH or state.baking or not state.steps:
        return False
    last = len(state.steps) - 1
    if state.strategy in (Strategy.CANARY, Strategy.ROLLING) and last >= 1 and state.steps[last] >= 100:
        last -= 1
    return state.step_index == last


def power_due(state: RolloutState, now: float) -> bool:
    """Should this tick's verdicts carry their power (judge/power.py)? Where it decides or is said: from the last
    tick of the analysis of the power gate's step or of the last step on (extensions included), on the bake's
    last tick, and while paused for lack of power. The guard computes it only then (it costs, and a replay's
    analysis spans the whole recording: its last tick only)."""
    if state.open_ended or state.strategy is Strategy.WATCH or state.phase.terminal:
        return False
    if state.phase is Phase.PAUSED:
        return state.paused_by == "guardian" and state.reason.startswith(UNDERPOWERED)
    if state.baking:
        return (state.baked_ticks + 1) * state.step_seconds >= state.bake_seconds
    if not (state.last_step or power_gate(state)):
        return False
    return now - state.step_started_at >= state.analysis_seconds - state.step_seconds


def weak(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The gating checks that passed without the power to see their `min_detectable`."""
    return [v for v in verdicts if v.powered is False and v.action in GATING and not v.abstained]


def power_said(verdicts: Sequence[Verdict]) -> str:
    """'errors-vs-baseline ×1.7, p99-vs-baseline +35% (+25% asked)': what each check could have detected with 80%
    power, with its `min_detectable` when it could not see that."""
    return ", ".join(f"{v.check} {headline(v.detectable)}" + (f" ({asked(v.detectable)} asked)" if v.powered is False
                                                              and asked(v.detectable) else "")
                     for v in verdicts if v.detectable)


def _lacking(verdicts: Sequence[Verdict]) -> str:
    """The underpowered checks' statements: 'check could only have detected ×4.1 …: ~2,300 more … needed; …'."""
    return "; ".join(f"{v.check} {v.detectable}" for v in verdicts)


def _power_note(verdicts: Sequence[Verdict]) -> str:
    """', powered (could have detected with 80% power: …)' or ', underpowered (…)': what a decision that goes on
    says of the power its checks had ('' when they did not say)."""
    said = power_said(verdicts)
    if not said:
        return ""
    return f", {UNDERPOWERED if weak(verdicts) else 'powered'} (could have detected with 80% power: {said})"


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
        if state.paused_by == "guardian" and state.reason.startswith(UNDERPOWERED) and (lacking := weak(judged)):
            return make(Action.CONTINUE, f"{UNDERPOWERED}, still paused: {_lacking(lacking)}")
        if state.paused_by == "guardian" and state.reason.startswith(APPROVAL_TIMED_OUT) and state.needs_approval:
            return make(Action.CONTINUE, f"{APPROVAL_TIMED_OUT}, still paused until approved: " + reasons(vs))
        return make(Action.RESUME, "all checks pass again: " + reasons(vs))
    if state.baking:
        baked = (state.baked_ticks + 1) * state.step_seconds  # this tick passed: it counts
        if baked >= state.bake_seconds:
            return make(Action.PROMOTE, f"the bake passed: {baked:g}s at 100% with every check passing"
                                        f"{_power_note(vs)}: " + reasons(vs))
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
    note = _power_note(vs)
    if power_gate(state) and (lacking := weak(judged)):
        limit = max(state.max_analysis_seconds or 0.0, state.analysis_seconds)
        if analysed < limit:
            return make(Action.CONTINUE, f"{UNDERPOWERED}, analysis at {state.weight}% extended up to {limit:g}s "
                                         f"({limit - analysed:.0f}s left): {_lacking(lacking)}")
        if state.underpowered == "pause":
            return make(Action.PAUSE, f"{UNDERPOWERED} after {analysed:.0f}s of analysis at {state.weight}% "
                                      f"(max_analysis {limit:g}s; underpowered: pause): {_lacking(lacking)}")
        note = (f", {UNDERPOWERED} after {analysed:.0f}s of analysis (underpowered: promote; could have detected "
                f"with 80% power: {power_said(vs)}): {_lacking(lacking)}")
    if state.needs_approval:
        return _awaiting(make, state, now, note, vs)
    if state.last_step and state.bake_seconds > 0:
        return make(Action.BAKE, f"all checks passed on every step{note}: baking at 100% for "
                                 f"{state.bake_seconds:g}s, the previous version kept warm: " + reasons(vs))
    if state.last_step:
        return make(Action.PROMOTE, f"all checks passed on every step{note}: " + reasons(vs))
    return make(Action.ADVANCE, f"all checks passed for {analysed:.0f}s at {state.weight}%{note}: " + reasons(vs))


def _awaiting(make: Callable[[Action, str], Decision], state: RolloutState, now: float, note: str,
              vs: tuple[Verdict, ...]) -> Decision:
    """The step passed but waits for a human "go": say so once, then hold; pause after `approval_timeout`."""
    then = ("promotion" if state.bake_seconds <= 0 else "the bake") if state.last_step else (
        f"{state.steps[state.step_index + 1]}%")
    if state.awaiting_since is None:
        timeout = (f"; it pauses after {state.approval_timeout_seconds:g}s without one"
                   if state.approval_timeout_seconds else "")
        return make(Action.APPROVAL, f"waiting for approval at {state.weight}% before {then}: all checks passed"
                                     f"{note}{timeout}: " + reasons(vs))
    waited = now - state.awaiting_since
    limit = state.approval_timeout_seconds
    if limit and waited >= limit:
        return make(Action.PAUSE, f"{APPROVAL_TIMED_OUT} after {waited:.0f}s at {state.weight}% "
                                  f"(approval_timeout {limit:g}s): approve it to go on to {then}")
    left = f", {limit - waited:.0f}s before it pauses" if limit else ""
    return make(Action.CONTINUE, f"waiting for approval at {state.weight}% before {then} ({waited:.0f}s{left}); "
                                 "checks pass: " + reasons(vs))
