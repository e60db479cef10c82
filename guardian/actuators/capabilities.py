"""What some actuators can do besides `apply` and `verify`: each capability a small Protocol, so a caller
asks `isinstance(actuator, LogSource)` instead of looking for a method by name.

    capability    method                                  who has it
    ArmValues     arm_values(state)                       kubernetes: the arms' pod-template-hashes (router=gateway:
                                                          the canary Deployment's and the stable's)
    Reconciling   reconcile(request)                      docker: routing put back in line with what runs
    LogSource     arm_logs(request, since=)               docker: the arms' recent log lines
    Closeable     close()                                 every BaseActuator (clients, connections)

`runtime_checkable` checks that the method is there, not its signature: the signatures below are the
contract an actuator that declares the capability keeps.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from guardian.actuators.base import ActionRequest
from guardian.domain import RolloutState


@runtime_checkable
class ArmValues(Protocol):
    def arm_values(self, state: RolloutState) -> dict[str, str | None]:
        """Values for the rule file's arm placeholders this actuator knows for `state` (None: unknown,
        and every check of that arm inconclusive)."""
        ...


@runtime_checkable
class Reconciling(Protocol):
    def reconcile(self, request: ActionRequest) -> str:
        """Between actions: put the routing back in line with what runs. Returns what it did ('' for
        nothing); raises when it could not look."""
        ...


@runtime_checkable
class LogSource(Protocol):
    def arm_logs(self, request: ActionRequest, *, since: float) -> dict[str, list[bytes]]:
        """Recent log lines of each arm ('canary', 'baseline') since `since` (epoch seconds), bounded."""
        ...


@runtime_checkable
class Closeable(Protocol):
    def close(self) -> None: ...
