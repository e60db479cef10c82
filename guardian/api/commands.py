"""An operator's command (pause, resume, promote, rollback, approve) as any replica takes it: carried out here when
this replica holds the rollout (or nobody does), else filed for the holder (engine/intents.py) and answered 202
with where to follow it. The API's routes, the web UI and the gates all send commands through `command`."""
from __future__ import annotations

from fastapi.responses import JSONResponse

from guardian.api.components import Components
from guardian.domain import Action, RolloutState
from guardian.engine.intents import HoldsIntents, Intent, file_command
from guardian.errors import LeaseLost


def command(c: Components, rollout_id: str, action: Action, reason: str = "", *, by: str | None = None,
            source: str = "user") -> RolloutState | Intent:
    """The rollout's new state when carried out here; the filed Intent when another replica holds it. Raises what
    `Guard.override` raises (RolloutNotFound, RolloutConflict, ActuatorError)."""
    try:
        return c.guard.override(rollout_id, action, reason, source=source, by=by)
    except LeaseLost as refused:  # nothing was written: another replica holds the rollout
        if not isinstance(c.store, HoldsIntents):
            raise
        return file_command(c.store, rollout_id, action, reason, by, source, c.clock.now(), refused)


def accepted(intent: Intent) -> JSONResponse:
    """202 Accepted: the holder carries it out within a tick; GET the intent (Location) to see how it ended."""
    link = intent.to_dict()["links"]["intent"]
    return JSONResponse(status_code=202, headers={"Location": link}, content={
        "status": "accepted", "intent": intent.to_dict(),
        "detail": f"rollout {intent.rollout_id} is held by another guardian replica: it carries out the "
                  f"{intent.action} at its next pass; follow it at {link}"})
