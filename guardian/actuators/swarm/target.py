"""`swarm:` targets: `swarm:` (the Swarm service is the rollout's service) or `swarm:SERVICE_NAME`."""
from __future__ import annotations

import re

from guardian.actuators.targets import target_body

_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_HINT = "write swarm: or swarm:SERVICE_NAME"


def target_service(rest: str) -> str | None:
    """The service `swarm:<rest>` names; None for each request's own service."""
    return target_body(rest) or None


def validate_target(rest: str) -> str | None:
    """Why `swarm:<rest>` is not a usable target, or None. `rest` is empty or a service name."""
    name = target_body(rest)
    if name and not _SERVICE_NAME.fullmatch(name):
        return f"{name!r} is not a Swarm service name (letters, digits, '_', '.', '-'; at most 63); {_HINT}"
    return None
