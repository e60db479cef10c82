"""Actuators carry out decisions. One protocol; one module per backend; a registry of names.

`apply` is idempotent: the same `ActionRequest.key` applied twice changes nothing more. A failed
action is reported in the returned `Outcome` (ok=False, with the reason), never swallowed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from guardian.domain import Action, Outcome


@dataclass(frozen=True)
class ActionRequest:
    rollout_id: str
    service: str
    image: str
    action: Action  # ADVANCE, PROMOTE, ROLLBACK, PAUSE, RESUME, SCALE (and START for the first step)
    weight: int  # canary traffic percent after the action
    key: str  # idempotency key: "<rollout_id>:<seq>:<action>"
    strategy: str = "canary"
    replicas: int = 0  # SCALE: replica delta
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["action"] = self.action.value
        return d


class Actuator(Protocol):
    name: str
    supports: frozenset[Action]

    def apply(self, request: ActionRequest) -> Outcome: ...

    def verify(self, request: ActionRequest) -> Outcome: ...
