"""One actuator instance per target URI, created on first use through the registry."""
from __future__ import annotations

import threading
from typing import Any

from guardian.actuators import registry
from guardian.actuators.base import Actuator
from guardian.actuators.capabilities import Closeable
from guardian.actuators.deps import ActuatorDeps


class ActuatorPool:
    """`deps`: what every actuator is built with (`ActuatorDeps.from_settings(settings)`); or the same as
    keywords by their names of before (`ActuatorDeps.from_keywords`)."""

    def __init__(self, deps: ActuatorDeps | None = None, /, **keywords: Any):
        if deps is not None and keywords:
            raise TypeError("ActuatorPool: give an ActuatorDeps or keywords, not both")
        self.deps = deps if deps is not None else ActuatorDeps.from_keywords(**keywords)
        self._pool: dict[str, Actuator] = {}
        self._lock = threading.Lock()

    def __call__(self, target: str) -> Actuator:
        with self._lock:
            if target not in self._pool:
                self._pool[target] = registry.create(target, self.deps)
            return self._pool[target]

    def close(self) -> None:
        with self._lock:
            for actuator in self._pool.values():
                if isinstance(actuator, Closeable):
                    actuator.close()
            self._pool.clear()
