"""Notifiers tell the world what the guardian decided. `notify` never raises into the engine.

What some notifiers do besides `notify` (Grafana's: a queue and a sender thread, a check of the dashboard)
is declared as small Protocols: `Closing` (close with a timeout) and `DashboardChecking`."""
from __future__ import annotations

import contextlib
from typing import Any, Protocol, runtime_checkable

from loguru import logger


class Notifier(Protocol):
    def notify(self, event: dict[str, Any]) -> None: ...


@runtime_checkable
class Closing(Protocol):
    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued within `timeout` seconds, then stop."""
        ...


@runtime_checkable
class DashboardChecking(Protocol):
    def start_dashboard_check(self) -> None:
        """In the background: does the dashboard its annotations go to exist? (the answer is logged)"""
        ...


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
            if isinstance(n, Closing):
                try:
                    n.close(timeout)
                except Exception as e:  # noqa: BLE001
                    logger.warning("notifier {} did not close: {}", type(n).__name__, e)
