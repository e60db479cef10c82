"""Log evidence for a failing decision: the log templates new in, or far more frequent in, the canary than
in the baseline (guardian/engine/logmine.py), attached to a rollback or pause when the rollout's actuator can read
the arms' logs (the LogSource capability).

Bounded, off the action's own path: the last `window` seconds of logs, 2 MB per arm (the actuator's
bound), and at most `seconds` of waiting in a worker pool this object owns (made on first use, shut down
by `close`). A failure or a timeout only loses the evidence, never the action.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from loguru import logger

from guardian.actuators import ActionRequest, Actuator, LogSource
from guardian.clock import Clock
from guardian.domain import Decision, RolloutState


class LogEvidence:
    def __init__(self, actuator_for: Callable[[str], Actuator], clock: Clock, *, window: float = 300.0,
                 seconds: float = 2.0, workers: int = 2) -> None:
        self.actuator_for, self.clock = actuator_for, clock
        self.window, self.seconds, self.workers = window, seconds, workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def attach(self, state: RolloutState, decision: Decision, request: ActionRequest) -> Decision:
        """`decision` with the canary's new log templates, when its actuator reads logs and they came in time."""
        try:
            actuator = self.actuator_for(state.target)
        except Exception:  # noqa: BLE001 - an unknown target fails when the action is applied, with its reason
            return decision
        if not isinstance(actuator, LogSource):
            return decision
        since = max(state.created_at, self.clock.now() - self.window)

        def mine() -> tuple[dict[str, Any], ...]:
            from guardian.engine.logmine import diff_logs

            arms = actuator.arm_logs(request, since=since)
            return tuple(d.to_dict() for d in diff_logs(arms.get("canary", []), arms.get("baseline", [])))

        future = self._workers().submit(mine)
        try:
            logs = future.result(timeout=self.seconds)
        except Exception as e:  # noqa: BLE001 - evidence is a bonus: never block or fail the action for it
            logger.warning("rollout {}: no log evidence: {}", state.id, type(e).__name__ if isinstance(
                e, TimeoutError) else e)
            return decision
        return dataclasses.replace(decision, logs=logs) if logs else decision

    def _workers(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="log-evidence")
            return self._pool

    def close(self) -> None:
        """Stop the workers (a log read still running is not waited for: its evidence was given up already)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["LogEvidence"]
