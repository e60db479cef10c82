"""The steady-state guard: services judged between rollouts. A watch IS a rollout row (Strategy.WATCH, one step of
100%, open-ended analysis), so the tick, the store, recordings, leases, the notifier, /metrics and `rollout
explain` treat it as any rollout; only its decision differs (judge/steady.py, called by Guard._tick).

`WatchKeeper.run_once` (each scheduler pass) makes sure every watched service — a rule file with a `watch:`
section, or one the settings' `watch_services` name — has a watch in flight whenever no rollout of it is. A
rollout's start ends the service's watch in the transaction that creates the rollout's row (Guard.start, through
`StateStore.create(state, ending)`: the store refuses two rows in flight for one service), phase ENDED, "ended:
rollout X started"; when the rollout ends the next watch starts, carrying what runs (`carried`): the promoted
rollout's image, the image it replaced, its id and promotion time (the attribution), and the replicas the last
watch knew.

A watch that cannot be evaluated says so when it would start: a gating forecast check (rollback / pause) without
its model refuses it (ModelMissing, logged, tried again every `retry_seconds` or when the rules change), an
advisory one abstains, named in the START decision's reason; so does a watch with no check to run.

Actions reach the actuator as strategy `observe` (`watch_request`, in watch_rules.py): someone else deployed
what runs. A START and a SCALE name no image (every replica is the stable version: docker scales them all,
publishes none as a canary), a ROLLBACK names the suspect's image (the release to undo; the actuator restores
the one it replaced).
"""
from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger

from guardian.domain import OPEN_ENDED_ANALYSIS, Action, Outcome, Phase, RolloutState, Strategy
from guardian.engine.store import WATCH_KEY
from guardian.engine.watch_rules import watch_rules, watch_ruleset
from guardian.errors import ActuatorError, LeaseLost, ModelMissing, RolloutConflict
from guardian.judge.steady import ago
from guardian.rules.loader import RuleSet
from guardian.rules.models import Watch

if TYPE_CHECKING:
    from guardian.engine.guard import Guard
    from guardian.rules.book import RuleBook

# a watch older than this is ended and the next one carries on from it (its replicas, its scalings, what runs and
# the suspect): its recording, rebuilt after every tick, and its evidence in memory stay bounded
ROTATE_SECONDS = 86400.0
ROTATED = "ended: rotated"


class WatchDefaults(Protocol):
    """What the settings give a watch: its tick, its target when the rule file names none, and the services
    watched without a `watch:` section."""

    default_target: str
    tick_seconds: float
    watch_services: list[str]


# -- starting -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Carried:
    """What a new watch of a service starts from: what runs (the last promotion's, or what the last watch knew)
    and the replicas the last watch knew."""

    image: str = ""
    previous_image: str | None = None
    suspect: str | None = None
    promoted_at: float | None = None
    replicas: int | None = None
    replicas_reported: bool = False
    scaled_replicas: int = 0
    last_scale_at: float | None = None
    calm_since: float | None = None
    refused_at: float | None = None
    words: str = "what runs is not known (no rollout of it was guarded)"


def promoted_at(guard: Guard, state: RolloutState) -> float:
    """When a promoted rollout's PROMOTE took effect (its decision log), else when its state last changed."""
    for d in reversed(guard.store.decisions(state.id)):
        if d.get("action") == Action.PROMOTE.value and (d.get("outcome") or {}).get("ok", True) and d.get("at"):
            return float(d["at"])
    return state.updated_at


def carried(guard: Guard, service: str) -> Carried:
    """Read from the service's rows, newest first: the release running is the last promoted rollout's (rolled
    back rollouts left what ran before them), or what the last watch knew (after its own rollback: the version
    it restored); the replicas are the last watch's."""
    rows = sorted((s for s in guard.store.list() if s.service == service), key=lambda s: s.created_at, reverse=True)
    release: dict[str, Any] | None = None
    counts: dict[str, Any] | None = None
    for s in rows:
        if s.strategy is Strategy.WATCH and s.phase.terminal:
            if counts is None and s.replicas is not None:
                rolled_back = s.phase is Phase.ROLLED_BACK  # the watch's additions went with the release (docker)
                counts = {"replicas": s.replicas, "replicas_reported": s.replicas_reported,
                          "scaled_replicas": 0 if rolled_back else s.scaled_replicas, "last_scale_at": s.last_scale_at}
                if s.reason.startswith(ROTATED):  # the same service, uninterrupted: the scale-in wait goes on
                    counts |= {"calm_since": s.calm_since, "refused_at": s.refused_at}
            if release is None and s.phase is Phase.ROLLED_BACK:
                release = {"image": s.previous_image or "", "words": f"running {s.previous_image or 'the version'} "
                           f"watch {s.id} restored (it rolled back rollout {s.suspect})"}
            elif release is None:
                release = {"image": s.image, "previous_image": s.previous_image, "suspect": s.suspect,
                           "promoted_at": s.promoted_at, "words": f"running {s.image or 'a version not known'} "
                           f"(as watch {s.id} knew it)"}
        elif release is None and s.strategy is not Strategy.WATCH and s.phase is Phase.PROMOTED:
            at = promoted_at(guard, s)
            release = {"image": s.image, "previous_image": s.previous_image, "suspect": s.id, "promoted_at": at,
                       "words": f"running {s.image}, promoted by rollout {s.id}"}
        if release is not None and counts is not None:
            break
    return Carried(**(release or {}), **(counts or {}))


def first_watch_state(guard: Guard, service: str, ruleset: RuleSet, defaults: WatchDefaults, now: float,
                      carry: Carried) -> RolloutState:
    rules = watch_rules(ruleset)
    replicas = carry.replicas if carry.replicas is not None else (rules.replicas or rules.min_replicas)
    step = defaults.tick_seconds
    return RolloutState(
        id=f"watch-{service}-{uuid.uuid4().hex[:8]}", service=service, image=carry.image, strategy=Strategy.WATCH,
        steps=(100,), target=rules.target or defaults.default_target, step_seconds=step,
        analysis_seconds=OPEN_ENDED_ANALYSIS, created_at=now, step_started_at=now, updated_at=now,
        rules=ruleset.source, previous_image=carry.previous_image,
        tick_origin=math.ceil(now / step) * step if guard.config.align_ticks else None,
        scaled_replicas=carry.scaled_replicas, last_scale_at=carry.last_scale_at, replicas=replicas,
        replicas_at_start=replicas, replicas_reported=carry.replicas_reported, suspect=carry.suspect,
        promoted_at=carry.promoted_at, calm_since=carry.calm_since, refused_at=carry.refused_at)


def start_reason(state: RolloutState, ruleset: RuleSet, models: dict[str, Any], carry: Carried, now: float) -> str:
    """The START decision's reason: what runs, the attribution, the replicas and where they come from, the checks
    it judges and those that abstain (an advisory forecast check without its model)."""
    rules = watch_rules(ruleset)
    parts = [f"watch {state.service} between rollouts: {carry.words}"]
    if state.suspect is not None and state.promoted_at is not None:
        left = rules.attribution - (now - state.promoted_at)
        parts.append(f"breaches name rollout {state.suspect} as the suspect for {ago(left)} more"
                     if left > 0 else f"rollout {state.suspect} was promoted {ago(now - state.promoted_at)} ago, "
                     "outside the attribution window")
    where = ("as the last watch knew them" if carry.replicas is not None else
             "the rule's replicas" if rules.replicas else "min_replicas")
    tracked = "" if state.replicas_reported else "; tracked until the actuator reports them"
    parts.append(f"replicas {state.replicas} ({where}{tracked}), kept within "
                 f"{rules.min_replicas}..{rules.max_replicas}")
    parts.append("judging " + ", ".join(c.name for c in ruleset.rules.checks))
    for name, model in models.items():
        if isinstance(model, str):
            parts.append(f"{name} abstains: {model}")
    return "; ".join(parts)


def watch_snapshot(state: RolloutState, rules: Watch) -> dict[str, Any]:
    """What a watch starts from, frozen with its models (store.WATCH_KEY) and carried by its recording as `watch`:
    a replay starts the watch there, under these `rules` when the rules it is given have no `watch:` section."""
    return {"image": state.image, "previous_image": state.previous_image, "suspect": state.suspect,
            "promoted_at": state.promoted_at, "target": state.target, "replicas": state.replicas_at_start,
            "replicas_reported": state.replicas_reported, "scaled_replicas": state.scaled_replicas,
            "last_scale_at": state.last_scale_at, "rules": rules.model_dump()}


def begin_watch(guard: Guard, state: RolloutState, ruleset: RuleSet, models: dict[str, Any], reason: str
                ) -> tuple[RolloutState, Outcome]:
    """Store the watch, its frozen models and what it starts from, and carry out its START (Guard.start's part,
    for a watch: `start_watch` live, engine/replay.py for a recording)."""
    started, outcome = guard.begin_watch(state, {**models, WATCH_KEY: watch_snapshot(state, watch_rules(ruleset))},
                                         reason)
    if started.replicas_at_start != state.replicas_at_start:  # its START reported them: a replay starts there
        guard.store.save_models(state.id, {**models, WATCH_KEY: watch_snapshot(started, watch_rules(ruleset))})
    return started, outcome


def start_watch(guard: Guard, service: str, ruleset: RuleSet, defaults: WatchDefaults) -> RolloutState:
    """Start a watch of `service` (its full rule set: the watch judges `watch_ruleset` of it). Raises
    ModelMissing (a gating forecast check has no model: nothing is stored), RolloutConflict (something is in
    flight for the service), UnknownActuator (its target), ValueError (no check to run), ActuatorError (its
    START failed: it is ended)."""
    judged = watch_ruleset(ruleset)
    if not judged.rules.checks:
        raise ValueError(f"{ruleset.source} has no threshold or baseline check to run between rollouts (compare "
                         "checks need a canary)" + (f"; watch.checks names {watch_rules(ruleset).checks}"
                                                    if watch_rules(ruleset).checks is not None else ""))
    now = guard.clock.now()
    models = guard.models.freeze(service, judged, now)  # ModelMissing for a gating check: nothing stored
    carry = carried(guard, service)
    state = first_watch_state(guard, service, judged, defaults, now, carry)
    guard.actuator_for(state.target)  # an unknown actuator fails here, before anything is stored
    reason = start_reason(state, judged, models, carry, now)
    state, outcome = begin_watch(guard, state, judged, models, reason)
    if not outcome.ok:
        guard.end_watch(state.id, f"ended: its start failed: {outcome.detail}")
        raise ActuatorError(f"its start failed: {outcome.detail}")
    logger.info("watch {} of {} started: {}", state.id, service, reason)
    return state


# -- the keeper ---------------------------------------------------------------------------------------------
class WatchKeeper:
    """Keeps a watch in flight for every watched service with no rollout in flight (called by the scheduler each
    pass, in a worker thread); ends the watches of services no longer watched."""

    def __init__(self, guard: Guard, rulebook: RuleBook, defaults: WatchDefaults, *, retry_seconds: float = 60.0,
                 rotate_seconds: float = ROTATE_SECONDS):
        self.guard, self.rulebook, self.defaults = guard, rulebook, defaults
        self.retry_seconds, self.rotate_seconds = retry_seconds, rotate_seconds
        self._refused: dict[str, tuple[RuleSet, str, float]] = {}  # service -> (its rules, why, when) not started

    def watched(self) -> dict[str, RuleSet]:
        """Service -> its rule set, for every watched service (the settings' watch_services, and each rule file
        with a `watch:` section), but those whose section says `enabled: false`."""
        out = {service: self.rulebook.for_service(service) for service in self.defaults.watch_services}
        for service, ruleset in self.rulebook.services().items():
            if service != "*" and ruleset.rules.watch is not None:
                out[service] = ruleset
        return {s: rs for s, rs in out.items() if rs.rules.watch is None or rs.rules.watch.enabled}

    def run_once(self, active: list[RolloutState] | None = None) -> list[RolloutState]:
        """One pass over `active` (the rows in flight; read from the store when not given). Returns the watches
        started."""
        states = self.guard.store.list(active_only=True) if active is None else active
        watched = self.watched()
        busy = {s.service for s in states}
        for s in states:
            why = ""
            if s.strategy is Strategy.WATCH and s.service not in watched:
                why = "ended: the service is no longer watched (its rules changed)"
            elif s.strategy is Strategy.WATCH and self.guard.clock.now() - s.created_at >= self.rotate_seconds:
                why = f"{ROTATED} after {ago(self.rotate_seconds)}: the next watch carries on from it"
            if why:
                try:
                    if self.guard.end_watch(s.id, why) is not None and s.service in watched:
                        busy.discard(s.service)
                except LeaseLost as e:  # another replica holds it: that one ends it
                    logger.debug("watch {} left to its lease holder: {}", s.id, e)
            elif s.strategy is not Strategy.WATCH:
                self.guard.giving_way.pop(s.service, None)  # its rollout's row exists: given way
        started = []
        now = time.monotonic()
        for service, ruleset in sorted(watched.items()):
            if service in busy:
                continue
            if self.guard.giving_way.get(service, 0.0) > now:
                continue
            refused = self._refused.get(service)
            if refused is not None and refused[0] is ruleset and (
                    self.guard.clock.now() - refused[2] < self.retry_seconds):
                continue
            try:
                started.append(start_watch(self.guard, service, ruleset, self.defaults))
                if self._refused.pop(service, None) is not None:
                    logger.info("watch of {}: started after all", service)
            except RolloutConflict as e:  # a rollout began meanwhile, or another replica started the watch
                logger.debug("watch of {} not started: {}", service, e)
            except Exception as e:  # noqa: BLE001 - one service's trouble must not stop the others
                self._refuse(service, ruleset, e)
        return started

    def _refuse(self, service: str, ruleset: RuleSet, e: Exception) -> None:
        why = str(e) if isinstance(e, ModelMissing | ValueError) else f"{type(e).__name__}: {e}"
        if isinstance(e, ModelMissing):
            why = f"a gating forecast check has no model, so the watch cannot judge it: {why}"
        before = self._refused.get(service)
        self._refused[service] = (ruleset, why, self.guard.clock.now())
        if before is None or before[1] != why:
            logger.error("watch of {} refused ({}): {}; tried again every {:g}s and when the rules change", service,
                         ruleset.source, why, self.retry_seconds)

    def refused(self) -> dict[str, str]:
        """Service -> why its watch could not start (for the log and the API)."""
        return {service: why for service, (_, why, _) in self._refused.items()}


__all__ = ["ROTATE_SECONDS", "Carried", "WatchDefaults", "WatchKeeper", "begin_watch", "carried", "start_watch",
           "watch_snapshot"]
