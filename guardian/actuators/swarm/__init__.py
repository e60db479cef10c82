"""The `swarm` actuator: guards Docker Swarm's own rolling update of a service, through the Engine API.

Target `swarm:` (the rollout's service) or `swarm:SERVICE_NAME`. START starts the update start-first,
PAUSE holds it (Swarm cannot pause on demand), PROMOTE waits for it, ROLLBACK reverses it. The manual
(actions, labels for Prometheus, the watcher, limits): docs/actuators.md#swarm. spec.py: pure spec edits ·
state.py: what Swarm reports · client.py: the Engine API · target.py: `swarm:` targets · actuator.py: the
actions. Image references and their versions: guardian/images.py.
"""
from guardian.actuators.docker_engine import API_VERSION, ENGINE_ERRORS
from guardian.actuators.swarm.actuator import SwarmActuator
from guardian.actuators.swarm.client import SwarmError
from guardian.actuators.swarm.spec import HOLD_CONSTRAINT, SwarmSettings
from guardian.actuators.swarm.state import TaskInfo, UpdateInfo
from guardian.actuators.swarm.target import target_service, validate_target

__all__ = ["API_VERSION", "ENGINE_ERRORS", "HOLD_CONSTRAINT", "SwarmActuator", "SwarmError", "SwarmSettings",
           "TaskInfo", "UpdateInfo", "target_service", "validate_target"]
