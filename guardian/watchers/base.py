"""What every watcher does: start an observe rollout, once, for each change someone else made, exactly as
`POST /v1/rollouts` starts one (`start_spec`, then `Guard.start`); run its passes until stopped; and log its
problems without flooding (a repeated one at most every `repeat_errors_after` seconds, by the clock).

A watcher's own part is `run_once` (one pass: find the changes, `_start` what it plans), the words it logs
with (`name`, `watching`), and the client it reads through (`actuator`, closed with the watcher).
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from loguru import logger

from guardian.actuators import Closeable
from guardian.clock import Clock
from guardian.domain import RolloutState, Strategy
from guardian.engine.guard import Guard
from guardian.engine.start import StartDefaults, start_spec
from guardian.errors import ActuatorError, ModelMissing, RolloutConflict

MAX_GUARDED = 1_000  # changes remembered as guarded once


@dataclass(frozen=True)
class PlannedStart:
    """One observe rollout to start for a change someone else made."""

    service: str  # the rollout's service (its rule file)
    image: str  # the image the change deploys
    previous_image: str | None  # the image it replaces (None: unknown)
    target: str  # the actuator target that acts on what changed
    key: Hashable  # the change: the same key is never guarded twice
    reason: str  # why the rollout starts: its START decision says so
    what: str  # the change in a few words, for the log ("the update of checkout to app:v2")
    strategy: Strategy = Strategy.OBSERVE
    steps: tuple[int, ...] = (100,)


class Watcher:
    name = "watcher"  # how its log lines begin

    def __init__(self, guard: Guard, defaults: StartDefaults, actuator: Closeable, *, clock: Clock | None = None,
                 repeat_errors_after: float = 60.0) -> None:
        """`defaults`: what a start request leaves out (the Settings). `clock`: time (default the guard's),
        for spacing out repeated problems."""
        self.guard, self.defaults, self.actuator = guard, defaults, actuator
        self.clock = clock or guard.clock
        self.repeat_errors_after = repeat_errors_after
        self._guarded: OrderedDict[Hashable, str] = OrderedDict()  # change key -> rollout id ('' if its start failed)
        self._problems: dict[str, float] = {}  # what went wrong -> when it was last logged
        self._stop = threading.Event()

    # -- a watcher's own part ------------------------------------------------------------------------------
    def run_once(self) -> None:
        """One pass (in a worker thread): find the changes, `_start` the rollouts they ask for."""
        raise NotImplementedError

    def watching(self, every: float) -> str:
        """What it watches, in words, for the log line that says it started."""
        raise NotImplementedError

    # -- starting a rollout ----------------------------------------------------------------------------------
    def _start(self, planned: PlannedStart) -> RolloutState | None:
        """Start the planned rollout through the guard. A change whose start failed in the actuator is
        remembered (never begun again); a missing forecast model or any other trouble is logged as a problem
        and tried again on the next pass; a rollout begun meanwhile by someone else starts nothing."""
        spec = start_spec(self.defaults, service=planned.service, image=planned.image, strategy=planned.strategy,
                          steps=planned.steps, target=planned.target, previous_image=planned.previous_image,
                          reason=planned.reason, source="guardian")
        try:
            state = self.guard.start(spec)
        except RolloutConflict as e:  # a rollout began between the look at the store and this start
            logger.info("{}: {} not started: {}", self.name, planned.what, e)
            return None
        except ModelMissing as e:  # nothing stored: tried again on the next pass, once the model is fitted
            self._problem(f"start:{planned.key}", f"{self.name}: cannot guard {planned.what}: {e}")
            return None
        except ActuatorError as e:  # recorded as rolled back by the guard: this change is not begun again
            self._remember(planned.key, "")
            logger.error("{}: guarding {} failed: {}", self.name, planned.what, e)
            return None
        except Exception as e:  # noqa: BLE001 - one change's trouble must not stop the watcher
            self._problem(f"start:{planned.key}", f"{self.name}: starting a rollout for {planned.what} failed: "
                                                 f"{type(e).__name__}: {e}")
            return None
        self._remember(planned.key, state.id)
        logger.info("{}: rollout {} started: {}", self.name, state.id, planned.reason)
        return state

    def _remember(self, key: Hashable, rollout_id: str) -> None:
        self._guarded[key] = rollout_id
        while len(self._guarded) > MAX_GUARDED:
            self._guarded.popitem(last=False)

    # -- logging that does not flood ------------------------------------------------------------------------
    def _problem(self, what: str, message: str) -> None:
        """Log a problem when it is new, and again at most every `repeat_errors_after` seconds."""
        now = self.clock.now()
        last = self._problems.get(what)
        if last is None or now - last >= self.repeat_errors_after:
            logger.warning(message)
            self._problems[what] = now

    def _solved(self, what: str, message: str = "") -> None:
        """The problem is gone: said once (`message`), and a new one is logged at once."""
        if self._problems.pop(what, None) is not None and message:
            logger.info(message)

    # -- the loop ------------------------------------------------------------------------------------------
    async def run(self, every: float) -> None:
        """A pass every `every` seconds (in a worker thread: the clients block) until `stop`."""
        logger.info("{} started: {}", self.name, self.watching(every))
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.run_once)
            except Exception as e:  # noqa: BLE001 - the loop must survive anything one pass throws
                logger.exception("{}: pass failed: {}", self.name, e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(self._stop.wait, every), timeout=every + 1)
        logger.info("{} stopped", self.name)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.actuator.close()


__all__ = ["MAX_GUARDED", "PlannedStart", "Watcher"]
