"""Verdicts -> one Decision for a watch: the service between rollouts (Strategy.WATCH). Pure: no I/O, time
passed in. The engine's part (which services are watched, starting and ending watches, the actuator's words)
is engine/watches.py; the rule file's `watch:` section is rules/models.py `Watch`.

A watch never pauses anything and never promotes. Order of precedence:
1. a failing `rollback` check (or alert) -> ROLLBACK of the suspect release, when it is within `attribution`
   of its promotion and its previous version can still be had (`restorable`); else NOTIFY naming the suspect
   and why it is not rolled back;
2. a failing `scale` check -> SCALE by its `replicas` (the largest asked), unless the last scaling is younger
   than `cooldown` (CONTINUE, cooling down) or the result would leave `min_replicas` .. `max_replicas` (NOTIFY:
   refused, with the reason; said again only after `cooldown`);
3. a failing `pause` or `notify` check -> NOTIFY (a watch pauses nothing: it says so);
4. every scaling check passing (and, with `scale_in_within`, its forecast within that many σ) for
   `scale_in_after` -> SCALE back by what the watch added (at most one check's `replicas` at a time), within the
   same cool-down and bounds;
5. any check ERROR or INCONCLUSIVE -> CONTINUE with the reason: missing data is never a pass, and a watch
   cannot pause, so it says so and keeps judging;
6. all pass -> CONTINUE.
Every decision driven by a failing check names the suspect — the release promoted within `attribution` — as
its reason's last part ("suspect: rollout R (image I), promoted 4m ago").

Time: a tick is judged at its end (`state.tick_bounds(tick)[1]`), not at the moment the guard got to it, so the
cool-down, the scale-in wait and the attribution window count the same live and in a replay of its recording.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

from guardian.domain import Action, Decision, Outcome, Result, RolloutState, Verdict
from guardian.judge.policy import reasons
from guardian.rules.models import Watch

# What "the previous version can still be had" means for each actuator: the watch asks it for a ROLLBACK of the
# suspect's image (strategy observe: someone else deployed it) and the actuator restores the version it replaced.
# Only the previous image being known is checked here (pure); the actuator's own ROLLBACK fails, with its reason,
# when what it needs is gone (and is tried again on the next tick, as a rollout's is).
RESTORES = {
    "docker": "the replicas the rollout started record the image they replaced (label guardian.previous-image) and "
              "it is still in the engine's image store",
    "swarm": "Swarm still keeps the service's PreviousSpec (no update since the suspect's)",
    "kubernetes": "the Deployment still keeps the previous ReplicaSet (revisionHistoryLimit above 0)",
    "webhook": "the receiver restores the previous image when told (action rollback, the suspect's image)",
    "noop": "nothing is changed (dry runs and replays)",
}
CANNOT_RESTORE = {
    "nginx": "the nginx actuator only moves traffic between tracks: once a release is promoted, the version it "
             "replaced no longer runs",
}
DEFAULT_WATCH = Watch()  # a service the settings' watch_services name, without a `watch:` section
_Z = re.compile(r"z=([+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?)")
_RUN = re.compile(r"run (\d+)/")
_SCALED_TO = re.compile(r"scaled (?:\S+ )?(?:from \d+ )?to (\d+) replica")


def ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def actuator_name(target: str) -> str:
    """The actuator a target names: the text before the first `+` or `:` (registry.parse_target's rule)."""
    return re.split(r"[+:]", target.strip(), maxsplit=1)[0].lower()


def restorable(state: RolloutState) -> str | None:
    """Why the suspect's previous version cannot be had (None: it can, as far as a pure judge can tell)."""
    if not state.previous_image:
        return f"the version release {state.suspect} replaced is not known"
    name = actuator_name(state.target)
    if name in CANNOT_RESTORE:
        return CANNOT_RESTORE[name]
    if name not in RESTORES:
        return f"the {name!r} actuator cannot restore a previous version"
    return None


def within_attribution(state: RolloutState, now: float, rules: Watch) -> bool:
    return state.suspect is not None and state.promoted_at is not None and (
        now - state.promoted_at <= rules.attribution)


def suspect_words(state: RolloutState, now: float, rules: Watch) -> str:
    """'suspect: rollout R (image I), promoted 4m ago' within the attribution window, else ''."""
    if not within_attribution(state, now, rules):
        return ""
    return f"suspect: rollout {state.suspect} ({state.image}), promoted {ago(now - state.promoted_at)} ago"


def _why_not_rolled_back(state: RolloutState, now: float, rules: Watch) -> str | None:
    if state.suspect is None or state.promoted_at is None:
        return "no release the guardian promoted is running (nothing to blame, nothing to roll back to)"
    if not within_attribution(state, now, rules):
        return (f"rollout {state.suspect} ({state.image}) was promoted {ago(now - state.promoted_at)} ago, outside "
                f"the {ago(rules.attribution)} attribution window")
    return restorable(state)


def _scaling(vs: Sequence[Verdict]) -> list[Verdict]:
    return [v for v in vs if v.action is Action.SCALE and not v.abstained]


def _calm(v: Verdict, rules: Watch) -> bool:
    """A scaling check that passes with its signal back on the forecast: no period beyond σ in its current run,
    and (with `scale_in_within`) |z| within that band."""
    if v.result is not Result.PASS:
        return False
    stat = v.statistic or ""
    run = _RUN.search(stat)
    if run and int(run.group(1)) > 0:
        return False
    z = _Z.search(stat)
    if rules.scale_in_within is not None and z:
        value = float(z.group(1))
        return math.isfinite(value) and abs(value) <= rules.scale_in_within
    return True


def calm(verdicts: Sequence[Verdict], rules: Watch) -> bool:
    """Every scaling check passes and is back on its forecast (there is at least one)."""
    scaling = _scaling(verdicts)
    return bool(scaling) and all(_calm(v, rules) for v in scaling)


def _replicas(state: RolloutState, rules: Watch) -> int:
    if state.replicas is not None:
        return state.replicas
    return rules.replicas or rules.min_replicas


def _count_words(state: RolloutState) -> str:
    return "" if state.replicas_reported else " (tracked: the actuator has not reported them)"


def _scale(state: RolloutState, now: float, rules: Watch, delta: int, why: str
           ) -> tuple[Action, str, int, bool]:
    """(action, reason, replica delta, refused) for scaling by `delta`."""
    have = _replicas(state, rules)
    want = have + delta
    direction = "out" if delta > 0 else "in"
    if state.last_scale_at is not None and now - state.last_scale_at < rules.cooldown:
        left = rules.cooldown - (now - state.last_scale_at)
        return (Action.CONTINUE, f"scale {direction} {delta:+d} waits: cooling down ({ago(left)} of the "
                f"{ago(rules.cooldown)} cooldown left); {why}", 0, False)
    if want > rules.max_replicas or want < rules.min_replicas:
        bound = (f"above max_replicas {rules.max_replicas}" if want > rules.max_replicas
                 else f"below min_replicas {rules.min_replicas}")
        refusal = (f"scale {direction} {delta:+d} refused: {have} -> {want} replicas{_count_words(state)} would be "
                   f"{bound}")
        if state.refused_at is not None and now - state.refused_at < rules.cooldown:
            return Action.CONTINUE, f"{refusal} (said {ago(now - state.refused_at)} ago); {why}", 0, False
        return Action.NOTIFY, f"{refusal}; {why}", 0, True
    return Action.SCALE, f"scale {direction}: {have} -> {want} replicas{_count_words(state)}; {why}", delta, False


def judge(verdicts: Sequence[Verdict], state: RolloutState, now: float, rules: Watch = DEFAULT_WATCH, *,
          tick: int | None = None) -> tuple[Decision, bool]:
    """The decision, and whether it refused a scaling (see the module docstring)."""
    vs, at = tuple(verdicts), now
    now = judged_at(state, tick, now)
    blame = suspect_words(state, now, rules)

    def make(action: Action, reason: str, replicas: int = 0, *, blamed: bool = False) -> Decision:
        if blamed and blame:
            reason = f"{reason}; {blame}"
        return Decision(action=action, reason=reason, tick=tick, at=at, verdicts=vs, replicas=replicas)

    failed = [v for v in vs if v.result is Result.FAIL]
    notes: list[str] = []
    rollback = [v for v in failed if v.action is Action.ROLLBACK]
    if rollback:
        why_not = _why_not_rolled_back(state, now, rules)
        if why_not is None:
            return make(Action.ROLLBACK, f"{reasons(rollback)}; rolling rollout {state.suspect} ({state.image}) "
                        f"back to {state.previous_image}", blamed=True), False
        if state.suspect is not None and not blame:  # outside the window: named all the same
            why_not += f"; the last release: rollout {state.suspect} ({state.image})"
        notes.append(f"{reasons(rollback)}; not rolled back: {why_not}")
    pause = [v for v in failed if v.action is Action.PAUSE]
    if pause:
        notes.append(f"{reasons(pause)} (a watch pauses nothing: said instead)")
    notify = [v for v in failed if v.action in (Action.NOTIFY, Action.CONTINUE)]
    if notify:
        notes.append(reasons(notify))
    out = [v for v in failed if v.action is Action.SCALE]
    if out:
        worst = max(out, key=lambda v: abs(v.replicas))
        action, reason, delta, refused = _scale(state, now, rules, worst.replicas, reasons(out))
        if notes:
            reason += "; also: " + "; ".join(notes)
            if action is Action.CONTINUE:
                action = Action.NOTIFY
        return make(action, reason, delta, blamed=True), refused
    if notes:
        return make(Action.NOTIFY, "; ".join(notes), blamed=True), False
    scaling = _scaling(vs)
    if (state.scaled_replicas and calm(vs, rules) and state.calm_since is not None
            and now - state.calm_since >= rules.scale_in_after):
        step = max((abs(v.replicas) for v in scaling), default=1) or 1
        back = -int(math.copysign(min(abs(state.scaled_replicas), step), state.scaled_replicas))
        band = f", within {rules.scale_in_within:g}σ" if rules.scale_in_within is not None else ""
        why = (f"every scaling check back on its forecast{band} for {ago(now - state.calm_since)} (scale_in_after "
               f"{ago(rules.scale_in_after)}); the watch added {state.scaled_replicas:+d}: {reasons(scaling)}")
        action, reason, delta, refused = _scale(state, now, rules, back, why)
        return make(action, reason, delta), refused
    judged = [v for v in vs if not v.abstained]
    if not judged:
        return make(Action.CONTINUE, "no checks judge this watch: nothing is known, so nothing passes"
                    + (f" ({reasons(vs)})" if vs else "")), False
    unknown = [v for v in judged if v.result in (Result.ERROR, Result.INCONCLUSIVE)]
    if unknown:
        return make(Action.CONTINUE, "inconclusive, watching on (a watch pauses nothing): " + reasons(unknown)), False
    waiting = ""
    if state.scaled_replicas and scaling:
        since = "" if state.calm_since is None else f" back on its forecast for {ago(now - state.calm_since)};"
        waiting = (f" scaled {state.scaled_replicas:+d} by the watch,{since} scaling back after "
                   f"{ago(rules.scale_in_after)}:")
    return make(Action.CONTINUE, f"all checks pass;{waiting} " + reasons(vs)), False


def judged_at(state: RolloutState, tick: int | None, now: float) -> float:
    """The time a watch's tick is judged at: the tick's end (`now` for a decision that is no tick's)."""
    return now if tick is None else state.tick_bounds(tick)[1]


def decide_watch(verdicts: Sequence[Verdict], state: RolloutState, now: float, rules: Watch = DEFAULT_WATCH, *,
                 tick: int | None = None) -> Decision:
    """A watch's decision for one tick (the module docstring)."""
    return judge(verdicts, state, now, rules, tick=tick)[0]


def step(verdicts: Sequence[Verdict], state: RolloutState, now: float, rules: Watch = DEFAULT_WATCH, *,
         tick: int | None = None) -> tuple[Decision, RolloutState]:
    """The decision and the watch's state after judging this tick (before its action takes effect): since when
    its scaling checks have been calm, and when a scaling was last refused."""
    decision, refused = judge(verdicts, state, now, rules, tick=tick)
    at = judged_at(state, tick, now)
    calm_since = (state.calm_since if state.calm_since is not None else at) if calm(verdicts, rules) else None
    return decision, state.evolve(calm_since=calm_since, refused_at=at if refused else state.refused_at)


def reported_replicas(outcome: Outcome) -> int | None:
    """The replica count an actuator's outcome tells, if any: swarm's `to` / `replicas`, docker's replica lists,
    kubernetes' "scaled to N replicas"; None when it does not say."""
    data = outcome.data or {}
    to = data.get("to")
    if isinstance(to, int) and not isinstance(to, bool):
        return to
    if isinstance(data.get("stable"), list):
        canary = data.get("canary")
        return len(data["stable"]) + (len(canary) if isinstance(canary, list) else 0)
    replicas = data.get("replicas")
    if isinstance(replicas, int) and not isinstance(replicas, bool):
        return replicas
    m = _SCALED_TO.search(outcome.detail or "")
    return int(m.group(1)) if m else None


def after_action(before: RolloutState, after: RolloutState, decision: Decision, outcome: Outcome,
                 now: float) -> RolloutState:
    """The watch once `decision` was carried out with `outcome` (`after`: the rollout state machine's result): its
    replicas as the actuator reported them, else tracked by the scaling's delta; what the watch added; and the
    scale-in hysteresis starting over after any scaling."""
    if not outcome.ok:
        return after
    seen = reported_replicas(outcome)
    at = judged_at(before, decision.tick, now)
    changes: dict = {}
    if decision.action is Action.SCALE:
        have = before.replicas if before.replicas is not None else 0
        changes = {"replicas": seen if seen is not None else have + decision.replicas,
                   "replicas_reported": seen is not None,
                   "scaled_replicas": before.scaled_replicas + decision.replicas,
                   "last_scale_at": at, "calm_since": None}
    elif seen is not None and decision.action in (Action.START, Action.ROLLBACK):
        changes = {"replicas": seen, "replicas_reported": True}
        if decision.action is Action.START:
            changes["replicas_at_start"] = seen
    return after.evolve(**changes) if changes else after


__all__ = ["CANNOT_RESTORE", "DEFAULT_WATCH", "RESTORES", "after_action", "ago", "calm", "decide_watch", "judge",
           "judged_at", "reported_replicas", "restorable", "step", "suspect_words"]
