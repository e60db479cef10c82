"""The scheduler is dumb on purpose: it wakes due rollouts and runs their tick in a worker thread.

A rollout is never ticked twice at once (its tick runs under the guard's per-rollout lock, and the
scheduler does not start a second one while the first is running). Rule files are re-read when
they change; an invalid change keeps the last good rules. With several replicas on one store, a
rollout is ticked only by the replica holding its lease (engine/leases.py): acquired or renewed
before each tick, renewed every lease_seconds / 3, released when the rollout ends; each pass also keeps this
replica's share of the rollouts in flight (`Leases.balance`) and carries out the commands other replicas filed
for the rollouts it holds (engine/intents.py), each in the tick pool and never beside a tick of its rollout.

Ticks run in the scheduler's own pool of `max_concurrent_ticks` threads, so one slow Prometheus answer,
actuator or webhook holds up one thread, not the others. Due rollouts start oldest-due first; when the
pool is full the rest wait for the next pass (their lag is measured, guardian_tick_lag_seconds). Before
starting a pass's ticks the guard tells the source what they will fetch (`Guard.plan`: a batching
source asks for all of them in one query per signal). Each pass also lets the watch keeper start the watches
of watched services with nothing in flight (engine/watches.py): they are ticked from the next pass on.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

from loguru import logger

from guardian.engine.guard import Guard
from guardian.engine.intents import Intent, IntentKeeper
from guardian.engine.leases import Leases, LocalLeases
from guardian.engine.watches import WatchKeeper
from guardian.errors import LeaseLost, RolloutNotFound
from guardian.rules.book import RuleBook


class Scheduler:
    def __init__(self, guard: Guard, rulebook: RuleBook, *, poll_seconds: float = 0.2,
                 rules_check_seconds: float = 2.0, leases: Leases | None = None, max_concurrent_ticks: int = 32,
                 watches: WatchKeeper | None = None, intents: IntentKeeper | None = None):
        self.guard, self.rulebook, self.watches, self.intents = guard, rulebook, watches, intents
        self.leases = leases or LocalLeases()
        self.poll_seconds, self.rules_check_seconds = poll_seconds, rules_check_seconds
        self._running: dict[str, asyncio.Task] = {}
        self._stop = asyncio.Event()
        self._last_rules_check = 0.0
        self._active: set[str] = set()
        self._ending: set[str] = set()  # rollouts that ended whose lease this replica has yet to let go
        self.max_concurrent_ticks = max_concurrent_ticks
        self._pool = ThreadPoolExecutor(max_concurrent_ticks, thread_name_prefix="tick")

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
        self._pool.shutdown(wait=False)
        with contextlib.suppress(Exception):  # a replica stopping hands its rollouts over at once
            await asyncio.to_thread(self.leases.leave)
        logger.info("scheduler stopped")

    async def run_once(self) -> None:
        if time.monotonic() - self._last_rules_check >= self.rules_check_seconds:
            self._last_rules_check = time.monotonic()
            await asyncio.to_thread(self.rulebook.reload, only_if_changed=True)
        states = await asyncio.to_thread(self.guard.store.list, active_only=True)
        if self.watches is not None:
            try:
                await asyncio.to_thread(self.watches.run_once, states)
            except Exception as e:  # noqa: BLE001 - the rollouts' ticks go on
                logger.exception("watch keeper pass failed: {}", e)
        await asyncio.to_thread(self._keep_leases, {s.id for s in states}, set(self._running))
        if self.intents is not None:
            try:
                await asyncio.to_thread(self.intents.sweep)
            except Exception as e:  # noqa: BLE001 - the pass's ticks go on; the next pass sweeps again
                logger.exception("refusing the intents of ended rollouts failed: {}", e)
            held = [rid for rid in self.leases.held() if rid not in self._running]
            for intent in await asyncio.to_thread(self.intents.due, held):
                if intent.rollout_id not in self._running:  # one at a time per rollout, never beside its tick
                    self._running[intent.rollout_id] = asyncio.create_task(self._carry_out(intent))
        due = [s for s in states if s.id not in self._running and self.guard.due(s)]
        due.sort(key=lambda s: self.guard.due_at(s, s.last_tick + 1))  # the longest waiting first
        mine = []
        for state in due[:max(0, self.max_concurrent_ticks - len(self._running))]:  # the rest: next pass
            if await asyncio.to_thread(self.leases.acquire, state.id):  # else another replica holds it
                mine.append(state)
        if mine:  # all due ones this replica holds (not only this pass's): the first batch query covers them
            held = self.leases.held()
            await asyncio.to_thread(self.guard.plan, [s for s in due if s.id in held])
        for state in mine:
            self._running[state.id] = asyncio.create_task(self._tick(state.id))

    async def _tick(self, rollout_id: str) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self.guard.tick, rollout_id)
        except LeaseLost as e:
            logger.warning("tick of rollout {} stopped: {}", rollout_id, e)
        except Exception as e:  # noqa: BLE001 - one rollout's failure must not stop the others
            logger.exception("tick of rollout {} failed: {}", rollout_id, e)
        finally:
            self._running.pop(rollout_id, None)

    async def _carry_out(self, intent: Intent) -> None:
        assert self.intents is not None
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self.intents.carry_out, intent)
        except Exception as e:  # noqa: BLE001 - the claim or the finish failed (carry_out says how the command ended)
            logger.exception("intent {} of rollout {} failed: {}", intent.id, intent.rollout_id, e)
        finally:
            self._running.pop(intent.rollout_id, None)

    def _keep_leases(self, active: set[str], busy: set[str]) -> None:
        # ended: not merely unseen (one created since the list was read is held already); kept until let go (one
        # mid-tick or acted on by a thread is let go at a later pass)
        self._ending |= self._active - active
        self._active = active
        held = set(self.leases.held())
        self._ending &= held
        for rollout_id in held - active - self._ending - busy:  # held, yet never seen in flight: ended within one
            # pass (a start that failed, a command on an ended rollout took its lease back), or created since the
            # list was read (in flight: kept)
            if self._ended(rollout_id):
                self._ending.add(rollout_id)
        for rollout_id in self._ending - busy:
            if self._let_go(rollout_id):
                self._ending.discard(rollout_id)
        for rollout_id in self.leases.renew():
            logger.warning("lost the lease of rollout {}: another replica acts on it now", rollout_id)
        self.leases.balance(active, busy, self._let_go)

    def _ended(self, rollout_id: str) -> bool:
        try:
            return self.guard.store.get(rollout_id).phase.terminal
        except RolloutNotFound:
            return True

    def _let_go(self, rollout_id: str) -> bool:
        """Release the rollout's lease unless a thread acts on it (an API override, a start): False then, and it
        stays held until the next pass. Released under the rollout's lock, so no action begins meanwhile."""
        with self.guard.idle(rollout_id) as idle:
            if idle:
                self.leases.release(rollout_id)
            return idle

    def stop(self) -> None:
        self._stop.set()
