"""An actuator that changes nothing and remembers what it was asked to do.

Why it exists: dry runs ("what would the guardian have done?"), replaying recordings, and tests that
need an actuator without a backend. It keeps the same idempotency contract as the real ones, so code
that works against it does not silently rely on an action being applied twice.
"""
from __future__ import annotations

import threading

from guardian.actuators import ActionRequest
from guardian.domain import Action, Outcome


class NoopActuator:
    name = "noop"
    supports: frozenset[Action] = frozenset(Action)

    def __init__(self) -> None:
        self.applied: list[ActionRequest] = []  # each distinct key once, in the order first applied
        self._outcomes: dict[str, Outcome] = {}
        self._lock = threading.Lock()  # the engine may apply from several threads

    def apply(self, request: ActionRequest) -> Outcome:
        """Record the request; a key seen before returns its first Outcome and records nothing."""
        with self._lock:
            known = self._outcomes.get(request.key)
            if known is not None:
                return known
            detail = f"noop: would {request.action.value} {request.service} to weight {request.weight}"
            if request.action == Action.SCALE:
                detail += f" (replicas {request.replicas:+d})"
            outcome = Outcome(ok=True, action=request.action.value, detail=detail, data={"key": request.key})
            self.applied.append(request)
            self._outcomes[request.key] = outcome
            return outcome

    def verify(self, request: ActionRequest) -> Outcome:
        """Nothing was changed, so there is nothing that could have drifted: always ok."""
        detail = f"noop: nothing to verify for {request.key}"
        return Outcome(ok=True, action=request.action.value, detail=detail)
