"""An operator's command (pause, resume, promote, rollback, approve) as any replica takes it: carried out here when
this replica holds the rollout (or nobody does), else filed for the holder (engine/intents.py) and answered 202
with where to follow it. The API's routes, the web UI and the gates all send commands through `command`; a start
goes through `start_or_file` (filed only when the service's watch, which it ends, is held by another replica)."""
from __future__ import annotations

import contextlib

from fastapi.responses import JSONResponse

from guardian.api.components import Components
from guardian.domain import Action, RolloutState, Strategy
from guardian.engine.intents import HoldsIntents, Intent, file_command, file_start
from guardian.engine.start import StartSpec
from guardian.errors import LeaseRefused, RolloutEnded

START_ATTEMPTS = 3  # a start whose service's watch ends while it is being filed is tried again here


def command(c: Components, rollout_id: str, action: Action, reason: str = "", *, by: str | None = None,
            source: str = "user") -> RolloutState | Intent:
    """The rollout's new state when carried out here; the filed Intent when another replica holds it. Raises what
    `Guard.override` raises (RolloutNotFound, RolloutConflict, ActuatorError)."""
    try:
        return c.guard.override(rollout_id, action, reason, source=source, by=by)
    except LeaseRefused as refused:  # nothing was written: another replica holds the rollout
        if not isinstance(c.store, HoldsIntents):
            raise
        # (a plain LeaseLost, raised once the action was carried out, is answered 409 and never filed: twice)
        return file_command(c.store, rollout_id, action, reason, by, source, c.clock.now(), refused)


def start_or_file(c: Components, spec: StartSpec, pause: str | None) -> RolloutState | Intent:
    """Start it here; when the service's watch, which a start ends first, is held by another replica, file the
    start for that one (`pause`: the reason it is to start paused, the preflight's missing signals). When the
    watch ends between the two (the store refuses to file for it), the start is tried here again."""
    for _ in range(START_ATTEMPTS - 1):
        with contextlib.suppress(LeaseRefused, RolloutEnded):  # the watch ended meanwhile: nobody holds it now
            return _start_or_file_once(c, spec, pause)
    return _start_or_file_once(c, spec, pause)


def _start_or_file_once(c: Components, spec: StartSpec, pause: str | None) -> RolloutState | Intent:
    try:
        return c.guard.start(spec)
    except LeaseRefused as refused:  # ending the watch was refused: nothing was written
        watch = next((s for s in c.store.list(active_only=True)
                      if s.service == spec.service and s.strategy is Strategy.WATCH), None)
        if watch is None or not isinstance(c.store, HoldsIntents):  # (None: the watch ended meanwhile)
            raise
        return file_start(c.store, spec, watch, pause, c.clock.now(), refused)  # RolloutEnded: ended meanwhile


def accepted(intent: Intent) -> JSONResponse:
    """202 Accepted: the holder carries it out within a tick; GET the intent (Location) to see how it ended."""
    link = intent.to_dict()["links"]["intent"]
    what = (f"the watch of this service ({intent.rollout_id}) is held by another guardian replica: it ends the watch "
            f"and starts rollout {intent.subject}" if intent.action == "start" else
            f"rollout {intent.rollout_id} is held by another guardian replica: it carries out the {intent.action}")
    return JSONResponse(status_code=202, headers={"Location": link}, content={
        "status": "accepted", "intent": intent.to_dict(), "detail": f"{what} at its next pass; follow it at {link}"})
