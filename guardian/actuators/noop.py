"""An actuator that changes nothing and remembers what it was asked to do.

Why it exists: dry runs ("what would the guardian have done?"), replaying recordings, and tests that
need an actuator without a backend. It keeps the same idempotency contract as the real ones, so code
that works against it does not silently rely on an action being applied twice.
"""
from __future__ import annotations

from guardian.actuators.base import ActionRequest, BaseActuator
from guardian.domain import Action, Outcome

NOTHING_WARM = "noop: nothing kept warm (no actuator)"  # BAKE's detail


class NoopActuator(BaseActuator):
    name = "noop"

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[ActionRequest] = []  # each distinct key once, in the order first applied

    def carry_out(self, request: ActionRequest) -> Outcome:
        """Record the request (`apply`: a key seen before returns its first Outcome and records nothing)."""
        detail = f"noop: would {request.action.value} {request.service} to weight {request.weight}"
        data: dict[str, object] = {"key": request.key}
        if request.action == Action.SCALE:
            detail += f" (replicas {request.replicas:+d})"
        if request.action == Action.BAKE:  # nothing runs behind a noop, so nothing can be kept warm
            detail, data["warm"] = NOTHING_WARM, None
        self.applied.append(request)
        return Outcome(ok=True, action=request.action.value, detail=detail, data=data)

    def verify(self, request: ActionRequest) -> Outcome:
        """Nothing was changed, so there is nothing that could have drifted: always ok."""
        detail = f"noop: nothing to verify for {request.key}"
        return Outcome(ok=True, action=request.action.value, detail=detail)
