"""The scheduler is dumb on purpose: it wakes due rollouts and runs their tick in a worker thread.

A rollout is never ticked twice at once (its tick runs under the guard's per-rollout lock, and the
scheduler does not start a second one while the first is running). Rule files are re-read when
they change; an invalid change keeps the last good rules. With several replicas on one store, a
rollout is ticked only by the replica holding its lease (engine/leases.py): acquired or renewed
before each tick, renewed every lease_seconds / 3, released when the rollout ends.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

from loguru import logger

from guardian.engine.guard import Guard
from guardian.engine.leases import Leases, LocalLeases
from guardian.errors import LeaseLost
from guardian.rules.book import RuleBook


class Scheduler:
    def __init__(self, guard: Guard, rulebook: RuleBook, *, poll_seconds: float = 0.2,
                 rules_check_seconds: float = 2.0, leases: Leases | None = None):
        self.guard, self.rulebook = guard, rulebook
        self.leases = leases or LocalLeases()
        self.poll_seconds, self.rules_check_seconds = poll_seconds, rules_check_seconds
        self._running: dict[str, asyncio.Task] = {}
        self._stop = asyncio.Event()
        self._last_rules_check = 0.0
        self._active: set[str] = set()

    async def run(self) -> None:
        logger.info("scheduler started")
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception as e:  # noqa: BLE001 - the loop must survive anything one pass throws
                logger.exception("scheduler pass failed: {}", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.poll_seconds)
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        for rollout_id in self.leases.held():  # a replica stopping hands its rollouts over at once
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.leases.release, rollout_id)
        logger.info("scheduler stopped")

    async def run_once(self) -> None:
        if time.monotonic() - self._last_rules_check >= self.rules_check_seconds:
            self._last_rules_check = time.monotonic()
            await asyncio.to_thread(self.rulebook.reload, only_if_changed=True)
        states = await asyncio.to_thread(self.guard.store.list, active_only=True)
        await asyncio.to_thread(self._keep_leases, {s.id for s in states})
        for state in states:
            if state.id in self._running or not self.guard.due(state):
                continue
            if not await asyncio.to_thread(self.leases.acquire, state.id):
                continue  # another replica holds it
            self._running[state.id] = asyncio.create_task(self._tick(state.id))

    async def _tick(self, rollout_id: str) -> None:
        try:
            await asyncio.to_thread(self.guard.tick, rollout_id)
        except LeaseLost as e:
            logger.warning("tick of rollout {} stopped: {}", rollout_id, e)
        except Exception as e:  # noqa: BLE001 - one rollout's failure must not stop the others
            logger.exception("tick of rollout {} failed: {}", rollout_id, e)
        finally:
            self._running.pop(rollout_id, None)

    def _keep_leases(self, active: set[str]) -> None:
        ended = self._active - active  # (not merely unseen: one created since the list was read is held already)
        self._active = active
        for rollout_id in set(self.leases.held()) & ended - set(self._running):
            self.leases.release(rollout_id)
        for rollout_id in self.leases.renew():
            logger.warning("lost the lease of rollout {}: another replica acts on it now", rollout_id)

    def stop(self) -> None:
        self._stop.set()
