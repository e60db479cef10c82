"""Commands sent to a replica that does not hold the rollout: filed as an *intent*, carried out by the holder.

With several replicas behind one address (a load balancer), an operator's pause, resume, promote, rollback or
approve reaches any of them, but only the replica holding the rollout's lease may act on it (engine/leases.py).
The receiving replica tries the command itself; when the store refuses it the lease (LeaseLost: another replica
holds the rollout, and nothing was written), it files the command as a row of the store's `intents` table and
answers 202 with where to follow it (`GET /v1/intents/{id}`). The holder's scheduler reads the pending intents of
the rollouts it holds at every pass (one query) and carries each out through `Guard.override`, as if it had been
sent to it, with the operator's name and reason.

Each intent goes pending -> running -> done | refused | failed:
- *claimed* (pending -> running) in a transaction fenced by the rollout's lease, so only the holder can take it
  and two replicas never both do; a holder that loses the lease or dies after claiming leaves it running with
  its fencing token, and the next holder (a greater token) takes it again; when the store shows the last holder
  carried it out (the rollout a start started, or the action's decision by that sender since it was filed), the
  next holder says it is done, not refused because the rollout's phase has moved on (`_carried_out_before`);
- *done*: carried out (the rollout's decision log names the operator); *refused*: the rollout's phase does not
  allow it (e.g. it ended meanwhile), with the reason, as a direct call answers 409; *failed*: the actuator
  failed and nothing changed, as a direct call answers 502;
- a rollout that ends before its holder's pass (a second start filed on one watch, a rollback filed as it was
  promoted) leaves no holder to take its open intents: every replica, every SWEEP_SECONDS, refuses them with why
  (`orphaned`), and the store refuses to file one for a rollout that ended already (409).

A rollout's *start* can need another replica too: it ends the service's watch, in the transaction creating its row
(engine/watches.py), and the watch is a rollout leased like the others. A start refused that way is filed as a
`start` intent on the watch, with the start's request (a StartSpec, its id chosen already, so the 202 names the
rollout to come) and, when the preflight found signals with no data and the request allowed it, the reason to start
it paused.

A replica alone (SQLite) holds every rollout: it never files an intent.
"""
from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, runtime_checkable

from loguru import logger

from guardian.domain import Action, RolloutState, Strategy
from guardian.engine.start import StartSpec
from guardian.errors import ActuatorError, LeaseLost, ModelMissing, RolloutConflict, RolloutNotFound

PENDING, RUNNING, DONE, REFUSED, FAILED = "pending", "running", "done", "refused", "failed"
FINISHED = frozenset({DONE, REFUSED, FAILED})
START = "start"  # the action of a start filed on the service's watch
SWEEP_SECONDS = 2.0  # how often a replica refuses the open intents of rollouts that ended (IntentKeeper.sweep)


@dataclass(frozen=True)
class Intent:
    id: int
    rollout_id: str
    action: str
    reason: str
    by: str | None  # the operator's name
    source: str  # who sent it: "user", "gate", "flagger" …
    filed_by: str  # the replica that received it
    filed_at: float
    status: str = PENDING
    detail: str = ""  # the outcome in words, once finished
    done_by: str | None = None  # the replica that carried it out
    done_at: float | None = None
    token: int | None = None  # the fencing token of the claim (running)
    payload: dict[str, Any] | None = None  # a start's request: {"spec": StartSpec fields, "pause": reason | None}

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def subject(self) -> str:
        """The rollout it is about: the one a start starts (`rollout_id` is then the watch it ends)."""
        return self.payload["spec"]["id"] if self.action == START and self.payload else self.rollout_id

    def to_dict(self) -> dict[str, Any]:
        view = asdict(self)
        view.pop("token")
        view.pop("payload")
        if self.action == START:
            view["starts"] = self.subject
        view["links"] = {"intent": f"/v1/intents/{self.id}", "rollout": f"/v1/rollouts/{self.subject}"}
        return view


def start_payload(spec: StartSpec, pause: str | None) -> dict[str, Any]:
    return {"spec": {**asdict(spec), "strategy": spec.strategy.value}, "pause": pause}


def spec_of(payload: dict[str, Any]) -> StartSpec:
    fields = payload["spec"]
    return StartSpec(**{**fields, "strategy": Strategy(fields["strategy"]), "steps": tuple(fields["steps"]),
                        "approvals": tuple(fields["approvals"])})


@runtime_checkable
class HoldsIntents(Protocol):
    """A store shared by replicas (store_pg.py) keeps the intents; SQLite, used by one process, has none."""

    def file_intent(self, rollout_id: str, action: str, reason: str, by: str | None, source: str,
                    at: float, payload: dict[str, Any] | None = None) -> Intent:
        """Store a command for the rollout's holder (RolloutNotFound when there is no such rollout)."""
        ...

    def intent(self, intent_id: int) -> Intent:
        """One intent; RolloutNotFound (404) when there is none."""
        ...

    def pending_intents(self, rollout_ids: list[str]) -> list[Intent]:
        """The intents of these rollouts still to carry out (pending, or running under an older token than
        the lease this replica holds), oldest first."""
        ...

    def claim_intent(self, intent: Intent) -> bool:
        """Mark it running, fenced by the rollout's lease; False when another replica took it or holds the rollout."""
        ...

    def finish_intent(self, intent_id: int, status: str, detail: str, at: float) -> None: ...

    def refuse_orphaned_intents(self, at: float) -> list[Intent]:
        """Refuse the open intents of rollouts no longer in flight (ended before their holder's pass: no replica
        would ever take them), saying why (`orphaned`); returns them."""
        ...


def file_command(store: HoldsIntents, rollout_id: str, action: Action, reason: str, by: str | None,
                 source: str, at: float, refused: LeaseLost) -> Intent:
    """File a command the store refused this replica (`refused`) for the holder to carry out."""
    intent = store.file_intent(rollout_id, action.value, reason, by, source, at)
    logger.info("{} of rollout {} filed as intent {} for its lease holder ({})", action.value, rollout_id,
                intent.id, refused)
    return intent


def file_start(store: HoldsIntents, spec: StartSpec, watch: RolloutState, pause: str | None, at: float,
               refused: LeaseLost) -> Intent:
    """File a start whose service's watch another replica holds: that one ends the watch and starts it."""
    spec = replace(spec, id=spec.id or new_id())
    intent = store.file_intent(watch.id, START, spec.start_reason, None, spec.source, at, start_payload(spec, pause))
    logger.info("start of {} ({}) filed as intent {} for the replica holding its watch {} ({})", spec.service,
                spec.id, intent.id, watch.id, refused)
    return intent


def orphaned(intent: Intent, phase: str) -> str:
    """Why an open intent of a rollout that ended (`phase`) is refused."""
    if intent.action == START and intent.status == PENDING:
        return (f"the watch {intent.rollout_id} ended ({phase}) before the replica holding it carried out the start "
                f"of {intent.subject}, which was not started: send the start again")
    if intent.action == START:
        return (f"replica {intent.done_by} was carrying out the start of {intent.subject} (the watch "
                f"{intent.rollout_id} is {phase}) and stopped before saying how it went: see rollout {intent.subject}, "
                "which may have started")
    if intent.status == PENDING:
        return (f"rollout {intent.rollout_id} is already {phase}: it ended before its holder carried out the "
                f"{intent.action}")
    return (f"rollout {intent.rollout_id} ended ({phase}) while replica {intent.done_by} was carrying out the "
            f"{intent.action} and that replica stopped before saying how it went: see the rollout's decision log")


def new_id() -> str:
    return uuid.uuid4().hex[:12]


class IntentKeeper:
    """The holder's side: carries out the pending intents of the rollouts this replica holds (the scheduler
    asks it every pass). `guard` is the replica's Guard; `clock` its clock."""

    def __init__(self, guard: Any, store: HoldsIntents) -> None:
        self.guard, self.store = guard, store
        self._swept = float("-inf")

    def due(self, held: list[str]) -> list[Intent]:
        return self.store.pending_intents(held) if held else []

    def sweep(self) -> None:
        """Every SWEEP_SECONDS (by the guard's clock): refuse the open intents of rollouts that ended."""
        now = self.guard.clock.now()
        if now - self._swept < SWEEP_SECONDS:
            return
        self._swept = now
        for intent in self.store.refuse_orphaned_intents(now):
            logger.info("intent {} ({} of rollout {} by {}): refused: {}", intent.id, intent.action,
                        intent.rollout_id, intent.by or intent.source, intent.detail)

    def carry_out(self, intent: Intent) -> None:
        """Claim it (fenced) and do it through Guard.override, recording how it ended."""
        if not self.store.claim_intent(intent):
            return  # another replica holds the rollout now, or took the intent: it is theirs
        status, detail = DONE, ""
        try:
            state = self._start(intent) if intent.action == START else self.guard.override(
                intent.rollout_id, Action(intent.action), intent.reason, source=intent.source, by=intent.by)
            detail = f"{intent.action}: rollout {state.id} is {state.phase.value} at {state.weight}%"
        except LeaseLost as e:
            logger.warning("intent {} ({} of {}) left running for the next holder: {}", intent.id, intent.action,
                           intent.rollout_id, e)
            return
        except (RolloutConflict, RolloutNotFound, ModelMissing) as e:
            status, detail = REFUSED, str(e)
            if intent.status == RUNNING and (before := self._carried_out_before(intent)) is not None:
                status, detail = DONE, before  # its last holder did it, then lost the rollout before saying so
        except ActuatorError as e:
            status, detail = FAILED, str(e)
        except Exception as e:  # noqa: BLE001 - said, never left running for ever (the holder would not retry it)
            logger.exception("intent {} ({} of {}) failed: {}", intent.id, intent.action, intent.rollout_id, e)
            status, detail = FAILED, f"{type(e).__name__}: {e}"
        self.store.finish_intent(intent.id, status, detail, self.guard.clock.now())
        logger.info("intent {} ({} of rollout {} by {}): {}: {}", intent.id, intent.action, intent.rollout_id,
                    intent.by or intent.source, status, detail)

    def _carried_out_before(self, intent: Intent) -> str | None:
        """How the replica that claimed it before (and lost the rollout before finishing it) carried it out, as
        the store shows it: the rollout a start started, or the rollout's decision of that action by that sender
        since it was filed. None when nothing shows it was."""
        store = self.guard.store
        if intent.action == START:
            try:
                state = store.get(intent.subject)
            except RolloutNotFound:
                return None
            return (f"start: rollout {state.id} was started by replica {intent.done_by}, which lost the watch before "
                    f"saying so; it is {state.phase.value} at {state.weight}%")
        for d in reversed(store.decisions(intent.rollout_id)):
            if (d["action"] == intent.action and d.get("source") == intent.source and d.get("by") == intent.by
                    and d["at"] >= intent.filed_at):
                return (f"{intent.action}: carried out by replica {intent.done_by}, which lost the rollout before "
                        f"saying so (decision {d['seq']}: {d['reason']})")
        return None

    def _start(self, intent: Intent) -> RolloutState:
        assert intent.payload is not None
        state = self.guard.start(spec_of(intent.payload))
        if (why := intent.payload.get("pause")) is not None:  # the preflight's missing signals, allowed
            state = self.guard.override(state.id, Action.PAUSE, why, source="guardian")
        return state
