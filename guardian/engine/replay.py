"""Replay recordings through the live engine: the same Guard, store, judges and policy; only the
source (a RecordingSource), the clock (a FakeClock) and the actuator (noop) differ.

Causal by construction: at tick t the guard can only have fetched ticks <= t. `labels` never reach a
decision: only the image, the previous image and the rules the rollout ran under are read from them, to
be shown (in the explanation, and in `guardian replay`'s note about the policy it judged with).

A replayed rollout is never promoted by the engine (its analysis spans the whole recording, so that every
tick is judged); a recording that ends with no rollback and no pause is replayed as "promote": its reason
says so ("no check failed in 40 ticks (400 s) …") with what each check could have detected (judge/power.py),
and `explanation` tells the same story. Unless its evidence lacked the power to see a check's `min_detectable`
and the rules say `underpowered: pause` (the default is `promote`): then, as a live rollout would after its
`max_analysis` (the recording is all the analysis there is), it is replayed as "pause" at its last tick, with
the canary requests still needed.
"""
from __future__ import annotations

import dataclasses
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guardian.actuators.noop import NoopActuator
from guardian.clock import FakeClock
from guardian.domain import OPEN_ENDED_ANALYSIS, Action, Decision, Phase, Result, RolloutState, Strategy
from guardian.engine.guard import Guard, GuardConfig
from guardian.engine.start import StartSpec
from guardian.engine.store import SQLiteStore
from guardian.errors import ModelMissing, RecordingError
from guardian.forecast.model_files import RecordedModels
from guardian.judge.policy import UNDERPOWERED, power_said, weak
from guardian.rules.loader import DEFAULT_RULESET, RuleSet
from guardian.sources.recording import RecordingSource, load_recording


class _Silent:
    def notify(self, event: dict[str, Any]) -> None:
        pass


class _FixedRules:
    def __init__(self, ruleset: RuleSet):
        self.ruleset = ruleset

    def for_service(self, service: str) -> RuleSet:
        return self.ruleset


@dataclass(frozen=True)
class ReplayResult:
    file: str
    decision: str  # "rollback" | "promote" | "pause"; a watch's recording: "rollback" | "watch"
    tick: int | None
    reason: str
    decisions: tuple[dict[str, Any], ...] = ()
    rollout: dict[str, Any] | None = None  # the replayed rollout's final state
    policy: str = DEFAULT_RULESET.source  # the rules it was judged with: "built-in default" or a file
    shown: dict[str, Any] = field(default_factory=dict)  # labels shown, never judged: image, previous_image, rules
    last_verdicts: tuple[dict[str, Any], ...] = ()  # the verdicts of the recording's last tick
    ended_at: float | None = None  # the end of the recording's last tick

    def to_json(self) -> dict[str, Any]:
        out = {"file": self.file, "decision": self.decision, "tick": self.tick, "reason": self.reason}
        if (self.rollout or {}).get("strategy") == Strategy.WATCH.value:  # what the watch did, tick by tick
            out["actions"] = [{"tick": d.get("tick"), "action": d["action"], "replicas": d.get("replicas", 0)}
                              for d in self.decisions if d["action"] not in ("start", "continue")]
        return out


class _RecordedArms(NoopActuator):
    """The recording holds each arm by name: the kubernetes placeholders are stand-ins too."""

    def arm_values(self, state: Any) -> dict[str, str | None]:
        return {"pod_template_hash": "recorded", "previous_pod_template_hash": "recorded"}


def _replaying_guard(recording: dict[str, Any], ruleset: RuleSet
                     ) -> tuple[RecordingSource, FakeClock, SQLiteStore, Guard]:
    """The live engine on the recording: its source, a fake clock at its start, a store in memory, the noop."""
    source = RecordingSource(recording)
    clock = FakeClock(source.start)
    store = SQLiteStore(":memory:")
    noop = _RecordedArms()
    guard = Guard(store, source, _FixedRules(ruleset), lambda target: noop, clock,
                  GuardConfig(evaluation_delay=0.0, catch_up_ticks=1), notifier=_Silent(),
                  models=RecordedModels(recording.get("models")))
    return source, clock, store, guard


def _with_approvals(decisions: list[dict[str, Any]], recording: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The replay's decisions with the recording's approvals (who gave each human "go", after which tick) placed
    where they were given: a replay judges the recording's ticks, and shows the approvals as recorded."""
    recorded = [a for a in recording.get("approvals") or () if isinstance(a, dict) and isinstance(a.get("tick"), int)]
    if not recorded:
        return tuple(decisions)
    merged = list(decisions)
    for a in recorded:
        entry = {"action": "approve", "source": str(a.get("by") or "user"), "tick": a["tick"], "at": a.get("at"),
                 "reason": f"{a.get('reason') or 'approved'} (recorded)", "verdicts": []}
        at = next((i for i, d in enumerate(merged) if (d.get("tick") if d.get("tick") is not None else -1) > a["tick"]),
                  len(merged))
        merged.insert(at, entry)
    return tuple(merged)


def replay_recording(recording: dict[str, Any], name: str, ruleset: RuleSet = DEFAULT_RULESET) -> ReplayResult:
    if isinstance(recording.get("watch"), dict):  # a watch's recording: judged as the watch was (judge/steady.py)
        return replay_watch(recording, name, ruleset)
    source, clock, store, guard = _replaying_guard(recording, ruleset)
    horizon = source.ticks * source.step
    # the recording holds each arm by name, so arms whose label values follow the release ({version},
    # {previous_version}) are read all the same: both images are stand-ins
    state = guard.start(StartSpec(service=recording.get("service") or name, image="recorded", strategy=Strategy.OBSERVE,
                                  steps=(100,), step_seconds=source.step, analysis_seconds=horizon + source.step,
                                  id="replay", previous_image="recorded",
                                  bake_seconds=0.0))  # a baked rollout's bake comes with its recording's models
    labels = recording.get("labels") if isinstance(recording.get("labels"), dict) else {}
    shown = {k: labels[k] for k in ("image", "previous_image", "rules", "rollout_id")
             if isinstance(labels.get(k), str) and labels[k]}  # for the eyes only: nothing below reads them
    common = {"policy": ruleset.source, "shown": shown}
    paused_at: int | None = None
    last_reason = ""
    last: Decision | None = None
    for t in range(source.ticks):
        clock.t = source.start + (t + 1) * source.step
        decision = guard.tick(state.id)
        if decision is None:
            continue
        last, last_reason = decision, decision.reason
        if decision.action is Action.ROLLBACK:
            return ReplayResult(name, "rollback", t, decision.reason,
                                _with_approvals(store.decisions(state.id), recording), store.get(state.id).to_dict(),
                                **common)
        if decision.action is Action.PAUSE:
            paused_at = t
    final = store.get(state.id)
    decisions = _with_approvals(store.decisions(state.id), recording)
    if last is not None and final.phase is not Phase.PAUSED:  # the end decides: what each check could have seen
        last = guard.with_power(state.id, last)
    store.close()
    if final.phase is Phase.PAUSED:
        return ReplayResult(name, "pause", paused_at, final.reason or last_reason, decisions, final.to_dict(), **common)
    last_verdicts = tuple(v.to_dict() for v in last.verdicts) if last is not None else ()
    lacking = weak(last.verdicts) if last is not None else []
    if lacking and final.underpowered == "pause":  # as live after `max_analysis`: the recording is all there is
        return ReplayResult(name, "pause", source.ticks - 1, _underpowered_reason(lacking, source.ticks, source.step),
                            decisions, final.to_dict(), **common, last_verdicts=last_verdicts, ended_at=clock.t)
    return ReplayResult(name, "promote", None, _promote_reason(last, source.ticks, source.step), decisions,
                        final.to_dict(), **common, last_verdicts=last_verdicts, ended_at=clock.t)


def replay_watch(recording: dict[str, Any], name: str, ruleset: RuleSet = DEFAULT_RULESET) -> ReplayResult:
    """Replay a watch's recording: the watch starts where its recording's `watch` says it started (what ran, the
    suspect and its promotion time, the replicas, the actuator kind; its `rules` when `ruleset` has no `watch:`
    section) and is ticked through the recording. Its replicas are tracked by each scaling's delta (the
    actuator is noop): the same as live unless something else scaled the service meanwhile. "rollback" at the
    tick it rolled the suspect back, else "watch" with what it did."""
    from guardian.engine.watch_rules import watch_ruleset
    from guardian.engine.watches import begin_watch
    from guardian.rules.models import Watch

    started = recording["watch"]
    if ruleset.rules.watch is None and isinstance(started.get("rules"), dict):
        try:
            ruleset = dataclasses.replace(ruleset, rules=ruleset.rules.model_copy(
                update={"watch": Watch.model_validate(started["rules"])}))
        except ValueError as e:
            raise RecordingError(f"{name}: watch.rules: {e}") from None
    source, clock, store, guard = _replaying_guard(recording, ruleset)
    judged = watch_ruleset(ruleset)

    def number(key: str) -> float | None:
        value = started.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    replicas = started.get("replicas") if isinstance(started.get("replicas"), int) else None
    state = RolloutState(
        id="replay", service=recording.get("service") or name, image=str(started.get("image") or "recorded"),
        strategy=Strategy.WATCH, steps=(100,), target=str(started.get("target") or "noop"),
        step_seconds=source.step, analysis_seconds=OPEN_ENDED_ANALYSIS, created_at=source.start,
        step_started_at=source.start, updated_at=source.start, rules=judged.source,
        previous_image=started.get("previous_image") or None, replicas=replicas, replicas_at_start=replicas,
        replicas_reported=bool(started.get("replicas_reported")), suspect=started.get("suspect") or None,
        promoted_at=number("promoted_at"), scaled_replicas=int(started.get("scaled_replicas") or 0),
        last_scale_at=number("last_scale_at"))
    models = guard.models.freeze(state.service, judged, source.start)
    state, _ = begin_watch(guard, state, judged, models, "replay of a watch's recording")
    labels = recording.get("labels") if isinstance(recording.get("labels"), dict) else {}
    shown = {k: labels[k] for k in ("image", "previous_image", "rules", "rollout_id")
             if isinstance(labels.get(k), str) and labels[k]}
    common = {"policy": ruleset.source, "shown": shown}
    for t in range(source.ticks):
        clock.t = source.start + (t + 1) * source.step
        decision = guard.tick(state.id)
        if decision is not None and decision.action is Action.ROLLBACK:
            return ReplayResult(name, "rollback", t, decision.reason, tuple(store.decisions(state.id)),
                                store.get(state.id).to_dict(), **common)
    final = store.get(state.id)
    decisions = tuple(store.decisions(state.id))
    store.close()
    did = Counter(d["action"] for d in decisions if d["action"] not in ("start", "continue"))
    summary = ", ".join(f"{n} {action}" for action, n in sorted(did.items())) or "nothing but watching"
    return ReplayResult(name, "watch", None, f"watched {source.ticks} ticks ({source.ticks * source.step:g} s): "
                        f"{summary}; replicas {final.replicas}", decisions, final.to_dict(), **common,
                        ended_at=clock.t)


def _promote_reason(last: Decision | None, ticks: int, step: float) -> str:
    """Why a recording that ended with no rollback and no pause is a promotion: nothing failed over all of it,
    how its last tick stood (not the step's countdown: the replay's analysis spans the recording), and what each
    check could have detected with 80% power (judge/power.py), or that it could not see its `min_detectable`
    (`underpowered: promote`)."""
    span = f"no check failed in {ticks} ticks ({ticks * step:g} s)"
    if last is None:
        return span
    judged = [v for v in last.verdicts if not v.abstained]
    abstained = [v.check for v in last.verdicts if v.abstained]
    power = power_said(judged)
    lacking = weak(judged)
    if lacking:
        power = f"{power}; {UNDERPOWERED} (underpowered: promote): " + "; ".join(
            f"{v.check} {v.detectable}" for v in lacking)
    power = f"; could have detected with 80% power: {power}" if power else ""
    if judged and all(v.result is Result.PASS for v in judged):
        note = f" ({', '.join(abstained)} abstained)" if abstained else ""
        return f"{span}; all {len(judged)} checks pass at the last tick{note}{power}"
    return f"{span}{power}; at the last tick: {last.reason}"


def _underpowered_reason(lacking: list, ticks: int, step: float) -> str:
    """Why a recording that ended with no rollback and no pause is a pause: its checks passed without the power to
    see their `min_detectable` (underpowered: pause), and how much more evidence each needed."""
    return (f"{UNDERPOWERED} at the end of the recording ({ticks} ticks, {ticks * step:g} s; underpowered: pause): "
            + "; ".join(f"{v.check} {v.detectable}" for v in lacking))


def policy_words(source: str) -> str:
    """'the built-in default policy' or 'rules from FILE'."""
    return "the built-in default policy" if source == DEFAULT_RULESET.source else f"rules from {source}"


def ruled_elsewhere(result: ReplayResult) -> str | None:
    """The rules the recording says its rollout ran under (labels.rules), when they are not the ones this
    replay judged with; None when they are, or when the recording does not say."""
    ran = result.shown.get("rules")
    if ran is None:
        return None
    ran = DEFAULT_RULESET.source if ran == "default" else ran
    if ran == result.policy:
        return None
    if DEFAULT_RULESET.source not in (ran, result.policy) and Path(ran).resolve() == Path(result.policy).resolve():
        return None
    return ran


def explanation(result: ReplayResult) -> dict[str, Any]:
    """The replayed rollout explained as `rollout explain` does, telling the story the replay's decision
    tells: a recording replayed as "promote" reads "was promoted by the replay" (not "is progressing"),
    the image is the recording's own (labels.image), and the policy it was judged with is named."""
    from guardian.reporting.explain import explain

    rollout = {**(result.rollout or {}), "id": result.file}
    image = result.shown.get("image")
    rollout["image"] = image or "an image the recording does not name"
    decisions = [dict(d) for d in result.decisions]
    if decisions and decisions[0].get("action") == "start":
        decisions[0]["source"] = "replay"  # the replay started it, not a user
    if result.decision == "promote":
        rollout["phase"] = "promoted"
        decisions.append({"action": "promote", "source": "replay", "reason": result.reason, "at": result.ended_at,
                          "tick": None, "verdicts": list(result.last_verdicts), "outcome": None})
    head = (f"Replay of {result.file} ({rollout.get('service')} to {rollout['image']}; judged with "
            f"{policy_words(result.policy)})")
    return {**explain(rollout, decisions, head=head), "policy": result.policy}


def replay_file(path: Path, ruleset: RuleSet = DEFAULT_RULESET) -> ReplayResult:
    return replay_recording(load_recording(path), path.name, ruleset)


def _replay_or_error(path: Path, ruleset: RuleSet) -> ReplayResult | RecordingError:
    try:
        return replay_file(path, ruleset)
    except RecordingError as e:
        return e
    except ModelMissing as e:
        return RecordingError(f"{path.name}: models: {e}")


def replay_many(paths: list[Path], ruleset: RuleSet = DEFAULT_RULESET, *, workers: int | None = None):
    """Replay files in parallel processes (each recording is independent), yielding, in input order,
    a ReplayResult or the RecordingError that file raised."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) < 4:
        for p in paths:
            yield _replay_or_error(p, ruleset)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_replay_or_error, paths, [ruleset] * len(paths), chunksize=4)
