"""One actuator instance per target URI, created on first use through the registry."""
from __future__ import annotations

import threading
from typing import Any

from guardian.actuators import Actuator, registry


class ActuatorPool:
    def __init__(self, **deps: Any):
        self._deps = deps
        self._pool: dict[str, Actuator] = {}
        self._lock = threading.Lock()

    def __call__(self, target: str) -> Actuator:
        with self._lock:
            if target not in self._pool:
                self._pool[target] = registry.create(target, **self._deps)
            return self._pool[target]

    def close(self) -> None:
        with self._lock:
            for actuator in self._pool.values():
                close = getattr(actuator, "close", None)
                if callable(close):
                    close()
            self._pool.clear()
