"""Actuators carry out decisions. One protocol; one module per backend; a registry of names.

`apply` is idempotent per `ActionRequest.key`, and a failure is an `Outcome(ok=False)` with the reason
(base.py: the protocol, the one outcome cache, BaseActuator). What some actuators can do besides is
declared in capabilities.py; what they are built with in deps.py (ActuatorDeps); registry.py maps a
target to one.
"""
from guardian.actuators.base import ActionRequest, Actuator, BaseActuator
from guardian.actuators.capabilities import ArmValues, Closeable, LogSource, Reconciling

__all__ = ["ActionRequest", "Actuator", "ArmValues", "BaseActuator", "Closeable", "LogSource", "Reconciling"]
