"""Notifiers tell the world what the guardian decided. `notify` never raises into the engine."""
from __future__ import annotations

import contextlib
from typing import Any, Protocol

from loguru import logger


class Notifier(Protocol):
    def notify(self, event: dict[str, Any]) -> None: ...


class LogNotifier:
    """Writes each decision as one structured log line."""

    def notify(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # a notifier must never break a tick
            logger.bind(event=event).info(
                "rollout {id} ({service}): {action} -> {phase}: {reason}",
                id=event.get("rollout_id"), service=event.get("service"), action=event.get("action"),
                phase=event.get("phase"), reason=event.get("reason"),
            )


class FanOut:
    def __init__(self, *notifiers: Notifier):
        self.notifiers = notifiers

    def notify(self, event: dict[str, Any]) -> None:
        for n in self.notifiers:
            try:
                n.notify(event)
            except Exception as e:  # noqa: BLE001
                logger.warning("notifier {} failed: {}", type(n).__name__, e)

    def close(self, timeout: float = 5.0) -> None:
        """Close the notifiers that hold resources (threads, clients)."""
        for n in self.notifiers:
            close = getattr(n, "close", None)
            if callable(close):
                try:
                    close(timeout)
                except Exception as e:  # noqa: BLE001
                    logger.warning("notifier {} did not close: {}", type(n).__name__, e)
