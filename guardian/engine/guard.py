"""One tick of one rollout: fetch -> record -> judge -> decide -> act. Where the logic lives.

Every step that changes the world is written down first: the tick's evidence, verdicts and
decision are stored before the actuator is called; an action's intent is in the operation log
before `apply` and its outcome after. A crash between any two steps is resumed on the next tick
(a pending operation is re-applied with its idempotency key). Ticking twice for the same tick
changes nothing more.

The guard's collaborators, each in a module of its own: start.py (the StartSpec and the state a rollout
starts in), arms.py (a tick's arm selection, made once: by `plan` or by the tick), alert_book.py (the
firing alerts, what they ask of a rollout, release freezes), log_evidence.py (the arms' logs mined for a
failing decision, in a worker pool of its own), store.py (the StateStore it writes everything to) and
transitions.py (the pure state machine).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from guardian.actuators import ActionRequest, Actuator, Reconciling
from guardian.clock import Clock
from guardian.crashpoints import crash_point
from guardian.domain import (
    ARMS,
    BAKE_REFERENCE_KEY,
    BEFORE_ROLLOUT_KEY,
    Action,
    Decision,
    Evidence,
    Outcome,
    Phase,
    Result,
    RolloutState,
    SignalType,
    Strategy,
    Verdict,
)
from guardian.engine.alert_book import AlertBook
from guardian.engine.alerts import DEFAULT_LABELS, StoredAlert
from guardian.engine.arms import ArmSelection, ArmSelections
from guardian.engine.bake_reference import BakeReference, before_requests, level_signals
from guardian.engine.log_evidence import LogEvidence
from guardian.engine.start import StartSpec, first_state
from guardian.engine.store import StateStore
from guardian.engine.transitions import transition, weight_after
from guardian.engine.watch_rules import WatchRulesets, watch_gauges, watch_request, watch_rules
from guardian.errors import ActuatorError, LeaseLost, NoData, RolloutConflict, SourceUnavailable
from guardian.files import atomic_write
from guardian.forecast.model_files import ModelDirectory, ModelLoader, thaw
from guardian.judge import steady
from guardian.judge.checks import evaluate, with_power
from guardian.judge.policy import Policy, bake_counts, decide, power_due
from guardian.metrics import GuardianMetrics
from guardian.notifiers import LogNotifier, Notifier
from guardian.rules.book import RuleBook
from guardian.rules.loader import RuleSet
from guardian.sources import MetricSource, Planning, SignalQuery

GIVE_WAY_SECONDS = 10.0  # after a rollout's start ended a watch, no new watch of the service for this long
# the recording file (recordings_dir) is rewritten at tick 0, every this many ticks and at every decision other than
# "continue" (and when an action ends the rollout): writing it every tick cost a fifth of a replica's CPU with 500
# rollouts (it is the whole rollout, read back and serialized); the store has every tick at once (…/recording)
RECORDING_EVERY_TICKS = 10
BEFORE_ATTEMPT_TICKS = 3  # ticks at which an unanswered pre-rollout window is asked for again
ACTUATED = {Action.START, Action.ADVANCE, Action.BAKE, Action.PROMOTE, Action.ROLLBACK, Action.PAUSE, Action.RESUME,
            Action.SCALE}


@dataclass(frozen=True)
class GuardConfig:
    evaluation_delay: float = 1.0  # seconds after a tick's end before it is fetched (lets the last scrape land)
    catch_up_ticks: int = 30  # missed ticks fetched after a restart; older ones are recorded as gaps
    max_scale: int = 3  # at most this many replicas added by scale-out decisions
    policy: Policy = Policy()
    recordings_dir: Path | None = None
    alert_labels: tuple[tuple[str, str], ...] = tuple(DEFAULT_LABELS.items())  # rollout attribute -> alert label
    log_window: float = 300.0  # seconds of the arms' logs read for log evidence
    log_seconds: float = 2.0  # the longest an action waits for its log evidence
    # start each rollout's ticks on the grid of its tick length (the next multiple of step_seconds since the
    # epoch), so rollouts with the same tick length share tick windows and a batching source answers them
    # with one query per signal
    align_ticks: bool = False


def _arms_read(check: Any) -> tuple[str, ...]:
    """The arms a check reads: its `arm`, or both (compare checks, and `arm: total`)."""
    arm = getattr(check, "arm", "total")
    return ARMS if arm == "total" else (arm,)


def _judge(check: Any, ev: Evidence, t: int, unresolved: dict[str, str]) -> Verdict:
    """The check's verdict; inconclusive (never a pass) when it reads an arm that cannot be selected."""
    missing = [unresolved[arm] for arm in _arms_read(check) if arm in unresolved]
    if missing:
        return Verdict(check.name, Result.INCONCLUSIVE, "; ".join(missing), action=check.action_enum)
    return evaluate(check, ev, t)


class Guard:
    alerts_refresh_seconds: float | None = None  # re-read the firing alerts from the store this often (replicas)

    def __init__(
        self,
        store: StateStore,
        source: MetricSource,
        rulebook: RuleBook,
        actuator_for: Callable[[str], Actuator],
        clock: Clock,
        config: GuardConfig = GuardConfig(),
        notifier: Notifier | None = None,
        metrics: GuardianMetrics | None = None,
        models: ModelLoader | None = None,
    ):
        self.store, self.source, self.rulebook = store, source, rulebook
        self.models = models or ModelDirectory()
        self.actuator_for, self.clock, self.config = actuator_for, clock, config
        self.notifier = notifier or LogNotifier()
        self.metrics = metrics or GuardianMetrics()
        self.alerts = AlertBook(store, rulebook, dict(config.alert_labels), clock,
                                refresh_seconds=self.alerts_refresh_seconds)
        self.arms = ArmSelections(actuator_for)
        self.log_evidence = LogEvidence(actuator_for, clock, window=config.log_window, seconds=config.log_seconds)
        self.bake_reference = BakeReference(source)
        self.watch_ruleset = WatchRulesets()
        # service -> monotonic time until which no new watch of it starts (a rollout's start ended its watch)
        self.giving_way: dict[str, float] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._evidence: dict[str, Evidence] = {}
        self._verdict_counters: dict[tuple, Any] = {}
        self._weighted: set[tuple[str, str]] = set()  # (service, rollout) with a canary-weight series
        self._checked: set[str] = set()  # rollouts checked for a decision lost in a crash, by this process

    def _lock(self, rollout_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(rollout_id, threading.Lock())

    @contextlib.contextmanager
    def idle(self, rollout_id: str) -> Iterator[bool]:
        """True, holding the rollout's lock for the block, when no thread acts on it (a tick, an override, a start);
        False, at once, when one does. The scheduler releases a lease only inside it: a replica must not give a
        rollout away while one of its API threads acts on it."""
        lock = self._lock(rollout_id)
        got = lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                lock.release()

    # -- starting -----------------------------------------------------------------------------------
    def start(self, spec: StartSpec) -> RolloutState:
        """Create the rollout and deploy the new version at the first step.

        Raises RolloutConflict (one in flight already), ModelMissing (a forecast check has no usable
        model; nothing is stored) or ActuatorError (the start failed; the actuator was then told to
        roll back, and the rollout is recorded as rolled back)."""
        now = self.clock.now()
        self.alerts.hold_release(spec.service, force=spec.force)  # ReleaseFrozen
        ruleset = self.rulebook.for_service(spec.service)
        models = self.models.freeze(spec.service, ruleset, now)  # frozen here: refits never reach this rollout
        state = first_state(spec, ruleset, now, align_ticks=self.config.align_ticks)
        self.actuator_for(spec.target)  # an unknown actuator fails here, before anything is stored
        arms = self.arms.select(state, ruleset)
        if (unresolved := arms.unresolved):
            logger.warning("rollout {} of {}: {}", state.id, spec.service, "; ".join(unresolved.values()))
        # the service before it, for the bake (judge/bake.py; refused here when it could never be judged), and
        # the rate test's level reference (judge/compare.py), which a rollout without a bake fetches at tick 0
        if state.bake_seconds > 0 and BAKE_REFERENCE_KEY not in models:
            baseline = arms.selectors.get("baseline")
            window = models.setdefault(BEFORE_ROLLOUT_KEY, self.bake_reference.window(state, ruleset, baseline))
            models[BAKE_REFERENCE_KEY] = self.bake_reference.before(state, ruleset, baseline, window)
        with self._lock(state.id), contextlib.ExitStack() as watches:  # a tick must not see it before its START
            # a watch gives way (watches.py): ended in the create's transaction, so the start that ends it is the
            # one that takes its place, never a start another replica slipped in between the two
            ending = self._watches_ending(spec.service, f"ended: rollout {state.id} started", watches)
            self.store.create(state, ending)
            for ended, decision in ending:
                self._watch_ended(ended, decision)
            if models:
                self.store.save_models(state.id, models)
            self._checked.add(state.id)
            decision = Decision(Action.START, spec.start_reason, at=now, source=spec.source)
            state, outcome = self._act(state, decision)
            self.metrics.decisions.labels(decision.action.value).inc()
            if not outcome.ok:
                undo = Decision(Action.ROLLBACK, f"start failed: {outcome.detail}", at=self.clock.now(),
                                source="guardian")
                state, undo_outcome = self._act(state, undo)
                self.metrics.decisions.labels(undo.action.value).inc()
                if not undo_outcome.ok:  # still record it as ended: nothing is progressing
                    state = state.evolve(phase=Phase.ROLLED_BACK, reason=f"start failed: {outcome.detail}; "
                                         f"rollback failed too: {undo_outcome.detail}")
                    self.store.save(state)
                    self._refresh_gauges()
                raise ActuatorError(f"rollout {state.id}: start failed: {outcome.detail}")
        self._refresh_gauges()
        return state

    # -- the tick -------------------------------------------------------------------------------------
    def due(self, state: RolloutState) -> bool:
        return not state.phase.terminal and state.due_tick(self.clock.now(), self.config.evaluation_delay) > (
            state.last_tick)

    def due_at(self, state: RolloutState, t: int) -> float:
        """When tick t became due: its window's end plus the evaluation delay."""
        return state.tick_bounds(t)[1] + self.config.evaluation_delay

    def plan(self, states: Sequence[RolloutState]) -> None:
        """Tell the source which fetches the due ticks of `states` will make (a batching source then asks
        for all of them in its first query); a no-op for sources that do not plan (Planning). The arms
        selected here are the ones those ticks fetch (`ArmSelections`: once per tick)."""
        if not isinstance(self.source, Planning):
            return
        now, requests, selections, earlier = self.clock.now(), [], {}, set()
        for state in states:
            t = state.due_tick(now, self.config.evaluation_delay)
            if state.phase.terminal or t <= state.last_tick:
                continue
            if self.arms.planned_tick(state.id) == t:  # planned by an earlier pass, its tick not started yet (of
                earlier.add(state.id)  # 500 due at once, 32 start a pass: each pass planned all the rest again)
                continue
            ruleset = self.rulebook.for_service(state.service)
            arms = self.arms.select(state, ruleset)
            selections[state.id] = (t, arms)
            start, end = state.tick_bounds(t)
            requests += [(SignalQuery(name, q.type, q.promql), state.service, selector, start, end)
                         for name, q in ruleset.queries.items() for selector in arms.selectors.values()]
            if state.last_tick < 0 and state.strategy is not Strategy.WATCH and state.bake_seconds <= 0 \
                    and level_signals(ruleset):  # and its first tick reads the pre-rollout window (a rollout
                # with a bake read it at its start, frozen with its models: its tick reads none)
                requests += before_requests(state, ruleset, arms.selectors.get("baseline"))
        self.arms.plan(selections, keep=earlier)
        self.source.plan(requests)

    def tick(self, rollout_id: str) -> Decision | None:
        """Evaluate the newest due tick of a rollout. Returns its decision, or None if nothing was due."""
        with self._lock(rollout_id):
            self._resume_pending_ops(rollout_id)
            state = self.store.get(rollout_id)
            if state.phase.terminal:
                return None
            t = state.due_tick(self.clock.now(), self.config.evaluation_delay)
            if t <= state.last_tick:
                return None
            self.metrics.tick_lag.observe(max(0.0, self.clock.now() - self.due_at(state, t)))
            began = time.perf_counter()
            decision, state = self._tick(state, t)
            self.metrics.tick_seconds.observe(time.perf_counter() - began)
            self.metrics.ticks.inc()
        if state.phase.terminal:
            self.forget(rollout_id)
        return decision

    def with_power(self, rollout_id: str, decision: Decision) -> Decision:
        """`decision` (of one of the rollout's ticks) with what each passing check could have seen (judge/power.py),
        from the evidence in memory, whatever policy.power_due said: a replay's end asks it of its last tick."""
        ev = self._evidence.get(rollout_id)
        if ev is None or decision.tick is None or decision.tick >= ev.ticks:
            return decision
        checks = {c.name: c for c in self.rulebook.for_service(self.store.get(rollout_id).service).rules.checks}
        return dataclasses.replace(decision, verdicts=tuple(
            with_power(checks[v.check], v, ev, decision.tick) if v.check in checks else v for v in decision.verdicts))

    def forget(self, rollout_id: str) -> None:
        """Drop what is cached for an ended rollout (its history stays in the store)."""
        self._evidence.pop(rollout_id, None)
        self.arms.forget(rollout_id)

    def close(self) -> None:
        """Release what the guard holds of its own: the log evidence's workers. (The store, the source and
        the actuators are closed by whoever made them.)"""
        self.log_evidence.close()

    def _tick(self, state: RolloutState, t: int) -> tuple[Decision, RolloutState]:
        ruleset = self.rulebook.for_service(state.service)
        if state.strategy is Strategy.WATCH:  # a watch judges its threshold and baseline checks (engine/watches.py)
            ruleset = self.watch_ruleset(ruleset)
        arms = self.arms.for_tick(state, ruleset, t)
        ev = self._evidence_of(state, ruleset)
        if ev.before is None and state.strategy is not Strategy.WATCH and level_signals(ruleset):
            self._fetch_before(state, ruleset, arms, ev, t)
        first = max(state.last_tick + 1, t - self.config.catch_up_ticks + 1)
        while ev.ticks < first:
            ev.append({}, unavailable="not fetched: the guardian was not running")
        for i in range(first, t):  # catch up on ticks missed while the guardian was down: record, don't judge
            values, unavailable, why = self._fetch(ruleset, state, i, arms)
            ev.append(values, unavailable, why)
            self.store.record_tick(state.evolve(last_tick=i), i, self.clock.now(), values, unavailable, [], None)
        self._reconcile(state)
        values, unavailable, why = self._fetch(ruleset, state, t, arms)
        ev.append(values, unavailable, why)
        if unavailable:
            self.metrics.source_errors.inc()
        verdicts = [_judge(check, ev, t, arms.unresolved) for check in ruleset.rules.checks]
        if power_due(state, self.clock.now()):  # what each passing check could have seen, where it decides
            verdicts = [with_power(c, v, ev, t) for c, v in zip(ruleset.rules.checks, verdicts, strict=True)]
        verdicts += self.alerts.verdicts(state, ruleset)
        for v in verdicts:
            counter = self._verdict_counters.get((v.check, v.result))
            if counter is None:  # prometheus-client's labels() is slow enough to matter in replays
                counter = self._verdict_counters[(v.check, v.result)] = self.metrics.verdicts.labels(
                    v.check, v.result.value)
            counter.inc()
        now = self.clock.now()
        if state.phase is Phase.PAUSED and state.paused_by == "user":
            decision = Decision(Action.CONTINUE, "paused by a user: watching, not acting", tick=t, at=now,
                                verdicts=tuple(verdicts))
        elif state.strategy is Strategy.WATCH:  # between rollouts: scale, notify, attribute (judge/steady.py)
            decision, state = steady.step(verdicts, state, now, watch_rules(ruleset), tick=t)
        else:
            decision = decide(verdicts, state, now, self.config.policy, tick=t, last_scale_at=state.last_scale_at)
        failing = [v for v in decision.verdicts if v.result is Result.FAIL]
        if decision.action in (Action.ROLLBACK, Action.PAUSE) and failing and all(
                v.check.startswith("alert:") for v in failing):  # the tick came before the webhook's own reaction
            decision = dataclasses.replace(decision, source="alertmanager")
        if decision.action is Action.PAUSE and state.phase is Phase.PAUSED:
            decision = Decision(Action.CONTINUE, f"still paused: {decision.reason}", tick=t, at=now,
                                verdicts=decision.verdicts)
        if decision.action is Action.SCALE and state.scaled_replicas >= self.config.max_scale and (
                state.strategy is not Strategy.WATCH):  # a watch keeps its own min/max
            decision = Decision(Action.NOTIFY, f"scale-out limit ({self.config.max_scale}) reached: {decision.reason}",
                                tick=t, at=now, verdicts=decision.verdicts)
        state = state.evolve(last_tick=t, updated_at=now)
        if decision.action is Action.APPROVAL:  # the step's end waits for a human "go" from now on
            state = transition(state, decision, now, self.config.max_scale)
        if state.phase is Phase.BAKING and decision.action in (Action.CONTINUE, Action.PROMOTE) and bake_counts(
                verdicts):
            state = state.evolve(baked_ticks=state.baked_ticks + 1)  # the bake's clock: passing ticks only
        self.store.record_tick(state, t, now, values, unavailable, verdicts, decision)
        crash_point("after_record_tick", decision.action.value)
        if decision.action is not Action.CONTINUE or t % RECORDING_EVERY_TICKS == 0:
            self._write_recording(state)
        if decision.action in ACTUATED:
            state, _ = self._act(state, decision)
        elif decision.action in (Action.NOTIFY, Action.APPROVAL):
            self.store.log_decision(state.id, decision, None, now)
            self._notify(state, decision, None)
        self.metrics.decisions.labels(decision.action.value).inc()
        return decision, state

    # -- alerts (the alert book: engine/alert_book.py) --------------------------------------------------
    def firing_alerts(self) -> list[StoredAlert]:
        return self.alerts.firing()

    def receive_alerts(self, alerts: list[StoredAlert]) -> dict[str, Any]:
        """Store Alertmanager's alerts (a repeat changes nothing) and act at once on the rollouts that a
        newly firing alert asks to roll back or pause; the next ticks keep judging with them (a resolved
        alert stops counting, and a rollout it paused resumes when everything passes again)."""
        return self.receive_alert_posts([alerts])[0]

    def receive_alert_posts(self, posts: list[list[StoredAlert]]) -> list[dict[str, Any]]:
        """`receive_alerts` for several webhook posts at once, as if they came one after the other (the
        API's intake hands over the posts that arrived while the previous batch was being stored): one
        store transaction for all their alerts, one pass over the rollouts in flight, and each post's own
        answer: its alerts received and changed, and what was done to the rollouts its newly firing
        alerts are about."""
        return self.alerts.receive(posts, self._react)

    def _react(self, rollout_id: str, verdicts: list[Verdict]) -> dict[str, Any] | None:
        with self._lock(rollout_id):
            self._resume_pending_ops(rollout_id)
            state = self.store.get(rollout_id)
            if state.phase.terminal or state.strategy is Strategy.WATCH:  # a watch: its next tick judges the alert
                return None
            decision = decide(verdicts, state, self.clock.now(), self.config.policy)
            if decision.action not in (Action.ROLLBACK, Action.PAUSE) or (
                    decision.action is Action.PAUSE and state.phase is Phase.PAUSED):
                return None
            decision = Decision(decision.action, decision.reason, at=decision.at, verdicts=decision.verdicts,
                                source="alertmanager")
            new_state, outcome = self._act(state, decision)
            self.metrics.decisions.labels(decision.action.value).inc()
        if new_state.phase.terminal:
            self.forget(rollout_id)
        return {"rollout": rollout_id, "action": decision.action.value, "ok": outcome.ok,
                "detail": outcome.detail, "reason": decision.reason}

    def _evidence_of(self, state: RolloutState, ruleset: RuleSet) -> Evidence:
        counters = frozenset(n for n, q in ruleset.queries.items() if q.type is SignalType.COUNTER)
        ev = self._evidence.get(state.id)
        if ev is None or ev.ticks != state.last_tick + 1:
            ev = self.store.evidence(state.id, state.step_seconds, counters)
            ev.started_at = state.origin
            snapshot = dict(self.store.models(state.id))
            ev.bake = snapshot.pop(BAKE_REFERENCE_KEY, None)
            ev.before = snapshot.pop(BEFORE_ROLLOUT_KEY, None)
            ev.models = thaw(snapshot)
            self._evidence[state.id] = ev
        ev.counters = counters
        return ev

    def _fetch_before(self, state: RolloutState, ruleset: RuleSet, arms: ArmSelection, ev: Evidence, t: int) -> None:
        """The service's pre-rollout window (the rate test's level reference), fetched once at the rollout's first
        ticks and frozen with its models, so a recording carries it and a replay judges the same. A source that
        did not answer is asked again at the next tick, up to BEFORE_ATTEMPT_TICKS; after that (or with an
        answer that lacks a signal) the rate test runs without its level test."""
        window = self.bake_reference.window(state, ruleset, arms.selectors.get("baseline"))
        unanswered = any(why.startswith("the source did not answer") for why in window["missing"].values())
        if unanswered and t < BEFORE_ATTEMPT_TICKS:
            return
        snapshot = dict(self.store.models(state.id))
        snapshot[BEFORE_ROLLOUT_KEY] = window
        self.store.save_models(state.id, snapshot)
        ev.before = window

    def _bake_begins(self, state: RolloutState) -> None:
        """The bake's BAKE took effect: from its first tick on, compare checks also judge against the service
        before the rollout (frozen with the models, so a replay of the recording judges the same)."""
        snapshot = dict(self.store.models(state.id))
        snapshot[BAKE_REFERENCE_KEY] = {**(snapshot.get(BAKE_REFERENCE_KEY) or {}), "from_tick": state.bake_tick,
                                        "ticks": max(1, round(state.bake_seconds / state.step_seconds))}
        self.store.save_models(state.id, snapshot)
        if (ev := self._evidence.get(state.id)) is not None:
            ev.bake = snapshot[BAKE_REFERENCE_KEY]

    def _reconcile(self, state: RolloutState) -> None:
        """Before judging a tick, let the actuator put its routing back in line with what runs (the
        Docker daemon restarted the replicas on new ports, say): only Reconciling actuators; a failure
        is logged and the tick goes on (its data then tells what is missing)."""
        if state.strategy is Strategy.OBSERVE:
            return
        try:
            actuator = self.actuator_for(state.target)
            if not isinstance(actuator, Reconciling):
                return
            done = actuator.reconcile(ActionRequest(
                rollout_id=state.id, service=state.service, image=state.image, action=Action.CONTINUE,
                weight=state.weight, key=f"{state.id}:reconcile", strategy=state.strategy.value))
        except Exception as e:  # noqa: BLE001 - the daemon may be down: the next tick tries again
            logger.warning("rollout {}: could not check the replicas against the routing: {}", state.id, e)
            return
        if done:
            logger.warning("rollout {}: {}", state.id, done)
            self.store.log_decision(state.id, Decision(Action.NOTIFY, done, at=self.clock.now()), None,
                                    self.clock.now())

    def _fetch(self, ruleset: RuleSet, state: RolloutState, t: int, arms: ArmSelection
               ) -> tuple[dict, str | None, dict[tuple[str, str], str]]:
        """Tick t's values, why the source could not answer at all (None: it did), and why each missing
        (signal, arm) is missing in the source's words (NoData: no series, no value in the window …)."""
        start, end = state.tick_bounds(t)
        selectors = arms.selectors
        values: dict[str, dict[str, float | None]] = {}
        why: dict[tuple[str, str], str] = {}
        unavailable: str | None = None
        for name, q in ruleset.queries.items():
            query = SignalQuery(name, q.type, q.promql)
            values[name] = {}
            for arm in ARMS:
                values[name][arm] = None
                if unavailable or arm not in selectors:
                    continue  # the source is down (do not wait for a timeout per query), or the arm is unknown
                try:
                    values[name][arm] = self.source.fetch(query, state.service, selectors[arm], start, end)
                except NoData as e:
                    if str(e):
                        why[(name, arm)] = str(e)
                except SourceUnavailable as e:
                    unavailable = str(e) or "source unavailable"
        return values, unavailable, why

    # -- acting ---------------------------------------------------------------------------------------
    def _act(self, state: RolloutState, decision: Decision) -> tuple[RolloutState, Outcome]:
        now = self.clock.now()
        seq = self.store.next_op_seq(state.id)
        request = ActionRequest(
            rollout_id=state.id, service=state.service, image=state.image, action=decision.action,
            weight=weight_after(state, decision.action), key=f"{state.id}:{seq}:{decision.action.value}",
            strategy=state.strategy.value, replicas=decision.replicas, reason=decision.reason,
        )
        if state.strategy is Strategy.WATCH:
            request = watch_request(request)  # in the actuators' words: observe what runs (engine/watches.py)
        if decision.action in (Action.ROLLBACK, Action.PAUSE) and any(
                v.result is Result.FAIL for v in decision.verdicts):
            decision = self.log_evidence.attach(state, decision, request)
        self.store.begin_op(state.id, request.key, request.to_dict(), decision, now)
        crash_point("after_begin_op", decision.action.value)
        return self._complete(state, seq, request, decision)

    def _complete(self, state: RolloutState, seq: int, request: ActionRequest,
                  decision: Decision) -> tuple[RolloutState, Outcome]:
        outcome = self._apply(state.target, request)
        crash_point("after_apply", request.action.value)
        try:
            new_state = self._record(state, seq, request, decision, outcome)
        except LeaseLost as lost:  # not a LeaseRefused: the action was carried out, its new holder records it
            raise LeaseLost(f"{request.action.value} of rollout {state.id} was carried out "
                            f"({'ok' if outcome.ok else 'failed: ' + outcome.detail}) but this replica lost the "
                            f"rollout before recording it; its new holder records it ({lost})") from lost
        crash_point("after_finish_op", request.action.value)
        if new_state.phase is not state.phase:  # the tick's recording was written before the action: its phase too
            self._write_recording(new_state)
        self._notify(new_state, decision, outcome)
        self._refresh_gauges()
        return new_state, outcome

    def _record(self, state: RolloutState, seq: int, request: ActionRequest, decision: Decision,
                outcome: Outcome) -> RolloutState:
        """The operation's outcome and the rollout's state after it, written (fenced by the lease)."""
        now = self.clock.now()
        if outcome.ok:
            new_state = transition(state, decision, now, self.config.max_scale)
            if request.action is Action.BAKE:
                self._bake_begins(new_state)
            if state.strategy is Strategy.WATCH:  # its replicas as reported, else tracked (judge/steady.py)
                new_state = steady.after_action(state, new_state, decision, outcome, now)
        else:
            self.metrics.actuator_failures.labels(request.action.value).inc()
            new_state = state.evolve(updated_at=now, reason=f"{request.action.value} failed: {outcome.detail}")
            logger.error("rollout {}: {} failed: {}", state.id, request.action.value, outcome.detail)
        self.store.finish_op(state.id, seq, outcome, decision, new_state, now)
        return new_state

    def _apply(self, target: str, request: ActionRequest) -> Outcome:
        try:
            actuator = self.actuator_for(target)
            outcome = actuator.apply(request)
            if outcome.ok:
                check = actuator.verify(request)
                if not check.ok:
                    return Outcome(False, request.action.value, f"applied but not verified: {check.detail}",
                                   outcome.attempts)
            return outcome
        except Exception as e:  # noqa: BLE001 - an actuator bug is a failed action, reported
            return Outcome(False, request.action.value, f"{type(e).__name__}: {e}")

    def _resume_pending_ops(self, rollout_id: str) -> None:
        """Finish actions whose intent was written but whose outcome was not (a crash in between); then,
        the first time this process touches the rollout, carry out a decision that was stored without
        its intent (a crash between a tick's record and the operation log, or between a start's
        create and its START)."""
        self._resume_ops(rollout_id)
        if rollout_id not in self._checked:
            self._checked.add(rollout_id)
            self._resume_lost_decision(rollout_id)

    def _resume_lost_decision(self, rollout_id: str) -> None:
        state = self.store.get(rollout_id)
        if state.phase.terminal:
            return
        logged = self.store.decisions(rollout_id)
        if not any(d["action"] == Action.START.value for d in logged):
            decision = Decision(Action.START, f"start {state.strategy.value} rollout of {state.image} "
                                "(its START was lost in a crash)", at=self.clock.now(), source="guardian")
        else:
            latest = self.store.latest_tick(rollout_id)
            d = latest and latest.get("decision")
            if not d or Action(d["action"]) not in ACTUATED or any(
                    x.get("tick") == latest["tick"] and x["action"] == d["action"] for x in logged):
                return
            decision = Decision.from_dict(d)
        logger.warning("rollout {}: carrying out {} decided before a crash, never begun", rollout_id,
                       decision.action.value)
        self._act(state, decision)
        self.metrics.decisions.labels(decision.action.value).inc()

    def _resume_ops(self, rollout_id: str) -> None:
        for op in self.store.pending_ops(rollout_id):
            state = self.store.get(rollout_id)
            r = op["request"]
            request = ActionRequest(**{**r, "action": Action(r["action"])})
            decision = Decision.from_dict(op["decision"])
            logger.warning("rollout {}: resuming interrupted {} (key {})", rollout_id, request.action.value,
                           request.key)
            self._complete(state, op["seq"], request, decision)

    # -- watches (engine/watches.py keeps them running) -------------------------------------------------------
    def begin_watch(self, state: RolloutState, models: dict[str, Any], reason: str) -> tuple[RolloutState, Outcome]:
        """Store a watch's row and its frozen models (what it starts from among them), and carry out its START."""
        with self._lock(state.id):
            self.store.create(state)
            self.store.save_models(state.id, models)
            self._checked.add(state.id)
            decision = Decision(Action.START, reason, at=self.clock.now(), source="guardian")
            started, outcome = self._act(state, decision)
            self.metrics.decisions.labels(decision.action.value).inc()
        return started, outcome

    def end_watch(self, watch_id: str, reason: str) -> RolloutState | None:
        """End one watch (phase ENDED, a NOTIFY decision with `reason`), after finishing an action a crash left
        half done. None if it had ended already."""
        with contextlib.ExitStack() as held:
            ending = self._watch_ending(watch_id, reason, held)
            if ending is None:
                return None
            ended, decision = ending
            self.store.log_decision(watch_id, decision, None, ended.updated_at, state=ended)
        self._watch_ended(ended, decision)
        return ended

    def _watches_ending(self, service: str, reason: str,
                        held: contextlib.ExitStack) -> list[tuple[RolloutState, Decision]]:
        """The service's watches in flight, each as it is once ended, holding their locks in `held` until the
        caller has written them; no new watch of the service starts for GIVE_WAY_SECONDS meanwhile."""
        watches = [s for s in self.store.list(active_only=True) if s.service == service
                   and s.strategy is Strategy.WATCH]
        if watches:
            self.giving_way[service] = time.monotonic() + GIVE_WAY_SECONDS
        return [ending for s in watches if (ending := self._watch_ending(s.id, reason, held)) is not None]

    def _watch_ending(self, watch_id: str, reason: str,
                      held: contextlib.ExitStack) -> tuple[RolloutState, Decision] | None:
        held.enter_context(self._lock(watch_id))
        self._resume_pending_ops(watch_id)
        state = self.store.get(watch_id)
        if state.phase.terminal or state.strategy is not Strategy.WATCH:
            return None
        now = self.clock.now()
        return (state.evolve(phase=Phase.ENDED, paused_by=None, reason=reason, updated_at=now),
                Decision(Action.NOTIFY, reason, at=now, source="guardian"))

    def _watch_ended(self, ended: RolloutState, decision: Decision) -> None:
        """What follows a watch's end once it is written: its decision counted, recording, notice, gauges."""
        self.metrics.decisions.labels(decision.action.value).inc()
        self._write_recording(ended)
        self._notify(ended, decision, None)
        self.forget(ended.id)
        self._refresh_gauges()
        logger.info("watch {} of {} {}", ended.id, ended.service, decision.reason)

    # -- manual overrides -------------------------------------------------------------------------------
    def override(self, rollout_id: str, action: Action, reason: str = "", *, source: str = "user",
                 by: str | None = None) -> RolloutState:
        """pause / resume / promote / rollback by a user (or by `source`: a gate's client, "flagger" / "gate").
        Raises RolloutConflict when the rollout's phase does not allow it, ActuatorError when the actuator
        failed (the state is then unchanged). `by`: the operator's name, recorded with the decision."""
        with self._lock(rollout_id):
            self._resume_pending_ops(rollout_id)
            state = self.store.get(rollout_id)
            if state.phase.terminal:
                raise RolloutConflict(f"rollout {rollout_id} is already {state.phase.value}")
            if action is Action.PAUSE and state.phase is Phase.PAUSED and state.paused_by == "user":
                return state
            if action is Action.RESUME and state.phase is not Phase.PAUSED:
                raise RolloutConflict(f"rollout {rollout_id} is not paused")
            if action is Action.PROMOTE and state.strategy is Strategy.WATCH:
                raise RolloutConflict(f"{rollout_id} is a watch: it has nothing to promote")
            if action is Action.APPROVE:
                return self._approve(state, reason, source, by)
            decision = Decision(action, reason or f"{action.value} by {by or 'a user'}", at=self.clock.now(),
                                source=source, by=by)
            new_state, outcome = self._act(state, decision)
            self.metrics.decisions.labels(decision.action.value).inc()
            if not outcome.ok:
                raise ActuatorError(f"{action.value} failed: {outcome.detail}")
            return new_state

    def _approve(self, state: RolloutState, reason: str, source: str, by: str | None) -> RolloutState:
        """A human's "go" for the step that waits for it (judge/policy.py): logged with who gave it; the next tick
        goes on if the checks still pass. Nothing for an actuator to do."""
        if not state.awaiting_approval:
            waits = [f"{state.steps[i]}%" for i in state.approvals if i not in state.approved]
            raise RolloutConflict(f"rollout {state.id} is not waiting for approval (at {state.weight}%, "
                                  + (f"its next approval is at the end of {', '.join(waits)})" if waits
                                     else "no step of it waits for approval)"))
        now = self.clock.now()
        decision = Decision(Action.APPROVE, reason or f"approved by {by or source} at {state.weight}%", at=now,
                            source=source, tick=state.last_tick, by=by)  # given after this tick: the next one goes on
        new_state = transition(state, decision, now, self.config.max_scale)
        self.store.log_decision(state.id, decision, None, now, state=new_state)
        self.metrics.decisions.labels(decision.action.value).inc()
        self._notify(new_state, decision, None)
        self._refresh_gauges()
        return new_state

    # -- side outputs -----------------------------------------------------------------------------------
    def _notify(self, state: RolloutState, decision: Decision, outcome: Outcome | None) -> None:
        self.notifier.notify({
            "rollout_id": state.id, "service": state.service, "image": state.image, "phase": state.phase.value,
            "started_at": state.created_at,
            "weight": state.weight, "action": decision.action.value, "reason": decision.reason,
            "baking": state.bake_tick is not None,
            "source": decision.source, "by": decision.by, "tick": decision.tick, "at": decision.at,
            "verdicts": [v.to_dict() for v in decision.verdicts],
            "outcome": outcome.to_dict() if outcome else None,
            "logs": list(decision.logs),
        })

    def _write_recording(self, state: RolloutState) -> None:
        if self.config.recordings_dir is None:
            return
        try:
            self.config.recordings_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.config.recordings_dir / f"{state.id}.json", json.dumps(self.store.recording(state.id)))
        except OSError as e:
            logger.warning("could not write the recording of {}: {}", state.id, e)

    def _refresh_gauges(self) -> None:
        counts = {p: 0 for p in Phase}
        states = [s for s in self.store.list() if not watch_gauges(self.metrics, s)]  # a watch: its own gauge
        for s in states:
            counts[s.phase] += 1
        for phase, n in counts.items():
            self.metrics.rollouts.labels(phase.value).set(n)
        for s in states:  # the canary's weight while a rollout is in flight; its series is removed when it ends
            if not s.phase.terminal:
                self.metrics.canary_weight.labels(s.service, s.id).set(s.weight)
                self._weighted.add((s.service, s.id))
            elif (s.service, s.id) in self._weighted:
                self._weighted.discard((s.service, s.id))
                self.metrics.canary_weight.remove(s.service, s.id)


__all__ = ["ACTUATED", "Guard", "GuardConfig", "StartSpec"]  # StartSpec: what `Guard.start` takes (start.py)
