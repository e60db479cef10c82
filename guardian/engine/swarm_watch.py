"""The Swarm watcher: an `observe` rollout starts by itself when someone runs `docker service update`.

Every `watch_seconds` (`GUARDIAN_WATCH_SWARM=true`) the watcher lists the Swarm services that carry the
watch label (`guardian.watch`; `label=value` filters on the value too, and a service labelled
`guardian.watch=false` is skipped), reads each one's update as Swarm reports it
(`SwarmActuator.detect_update`), and `plan` says which updates to guard. Each is started exactly as
`POST /v1/rollouts` starts a rollout (`start_spec`, then `Guard.start`): strategy `observe`, target
`swarm:SERVICE`, one step of 100%, the new image and the image it replaces (`previous_image`, which
fills `{previous_version}` in the rule file's arms). Its START decision says why it began
("docker service update of checkout to app:v2 detected (Swarm UpdateStatus updating); guarding it"):
it is in the rollout's decision log, its `reason`, and the guardian's log.

What `plan` starts a rollout for, and what not:
- an update Swarm is running (UpdateStatus `updating`, or a spec just posted that Swarm has not
  picked up yet): yes, unless
- the guardian started it itself: the swarm actuator labels the service `guardian.rollout=ID` when
  *it* starts an update, and an update whose ID is an active rollout is one the guardian already guards;
- the service already has an active rollout (whatever started it: one rollout per service);
- the same update (service, image, Swarm's StartedAt) was already guarded once by this watcher, so a
  rollout that ended while Swarm still reports the update (its start failed, say) is not begun again;
- a rollback (`rollback_started`), a finished update (`completed`, `rollback_completed`) or none;
- an update Swarm paused (`paused`, `rollback_paused`: a task failed and `failure_action` is pause) or
  one the guardian holds: nothing is moving, and Swarm already stopped it for a failing task. When
  someone pushes it on (`docker service update SERVICE` re-triggers it), it is `updating` again and
  is guarded from there.

An update that starts and completes between two polls is not seen. Errors talking to Docker are
logged (a repeated one once a minute) and the next poll tries again; the loop never stops for them.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import docker
from loguru import logger

from guardian.actuators import registry
from guardian.actuators.swarm import ENGINE_ERRORS, SwarmActuator, SwarmError, UpdateInfo
from guardian.clock import Clock
from guardian.domain import RolloutState, Strategy
from guardian.engine.guard import Guard, StartDefaults, start_spec
from guardian.errors import ActuatorError, ModelMissing, RolloutConflict

WATCH_LABEL = "guardian.watch"
OFF_VALUES = frozenset({"false", "0", "no", "off"})  # `guardian.watch=false` opts a service out
MAX_GUARDED = 1_000  # updates remembered as guarded once


@dataclass(frozen=True)
class PlannedStart:
    """One observe rollout to start for an update someone else began."""

    service: str  # the Swarm service (and the rollout's service)
    image: str  # the image the update deploys
    previous_image: str | None  # the image it replaces (None if Swarm does not say)
    state: str  # Swarm's UpdateStatus state when the update was seen
    started_at: str | None  # Swarm's UpdateStatus StartedAt: tells one update of the service from the next
    strategy: Strategy = Strategy.OBSERVE
    steps: tuple[int, ...] = (100,)

    @property
    def target(self) -> str:
        return f"swarm:{self.service}"

    @property
    def key(self) -> tuple[str, str, str | None]:
        """The update this guards: the same key is never guarded twice."""
        return self.service, self.image, self.started_at

    @property
    def reason(self) -> str:
        replaced = f"replacing {self.previous_image}" if self.previous_image else "the image it replaces is unknown"
        return (f"docker service update of {self.service} to {self.image} detected (Swarm UpdateStatus "
                f"{self.state}); guarding it ({replaced})")


def plan(updates: Mapping[str, UpdateInfo | None], active: Mapping[str, str],
         guarded: Collection[tuple[str, str, str | None]] = ()) -> list[PlannedStart]:
    """The observe rollouts to start (pure: no I/O), in service order.

    `updates`: each watched Swarm service's update (`detect_update`), None when it has none.
    `active`: the Swarm services that already have an active (non-terminal) rollout, each with that
    rollout's id (`active_services`). `guarded`: the keys of updates already guarded once."""
    ours = set(active.values())
    planned = []
    for name, info in sorted(updates.items()):
        if info is None or not info.in_progress or info.state != "updating":
            continue  # none, finished, a rollback, paused by Swarm, or held by the guardian
        if name in active or (info.rollout is not None and info.rollout in ours):
            continue  # already guarded, or the guardian's own update
        start = PlannedStart(service=name, image=info.new_image, previous_image=info.old_image, state=info.state,
                             started_at=info.started_at)
        if start.key not in guarded:
            planned.append(start)
    return planned


def swarm_service(target: str) -> str | None:
    """The service a `swarm:NAME` target names, else None."""
    name, rest = registry.parse_target(target)
    if name != "swarm":
        return None
    return (rest[2:] if rest.startswith("//") else rest) or None


def active_services(states: Iterable[RolloutState]) -> dict[str, str]:
    """Service name -> id of its active rollout, for every non-terminal rollout: its service, and the Swarm
    service its `swarm:NAME` target acts on."""
    active: dict[str, str] = {}
    for state in states:
        if state.phase.terminal:
            continue
        active.setdefault(state.service, state.id)
        if (named := swarm_service(state.target)) is not None:
            active[named] = state.id
    return active


class SwarmWatcher:
    """Polls the watched Swarm services and starts observe rollouts for the updates `plan` picks.

    `defaults` are what a start request leaves out (the Settings). `client`: the Docker client to use
    (default: one for DOCKER_HOST / the local socket, made on the first poll). `clock`: time (default the
    guard's), for spacing out repeated error logs."""

    def __init__(self, guard: Guard, defaults: StartDefaults, *, client: docker.DockerClient | None = None,
                 clock: Clock | None = None, label: str = WATCH_LABEL, repeat_errors_after: float = 60.0) -> None:
        self.guard, self.defaults, self.label = guard, defaults, label
        self.clock = clock or guard.clock
        self.actuator = SwarmActuator(client=client)
        self.repeat_errors_after = repeat_errors_after
        self._guarded: OrderedDict[tuple[str, str, str | None], str] = OrderedDict()  # update key -> rollout id
        self._problems: dict[str, float] = {}  # what went wrong -> when it was last logged
        self._stop = asyncio.Event()

    # -- one poll ------------------------------------------------------------------------------------
    def poll(self) -> list[RolloutState]:
        """List the watched services, read their updates, start the rollouts `plan` asks for. Returns the
        rollouts started. Docker's errors are logged, never raised: the next poll tries again."""
        updates = self.updates()
        if updates is None:
            return []
        active = active_services(self.guard.store.list(active_only=True))  # read after the updates: a
        started = []  # rollout the guardian begins meanwhile is then seen as active
        for planned in plan(updates, active, self._guarded):
            state = self._start(planned)
            if state is not None:
                started.append(state)
        return started

    def updates(self) -> dict[str, UpdateInfo | None] | None:
        """Each watched service's update; None if Docker could not be asked (logged)."""
        try:
            api = self.actuator.api
            listed = api.services(filters={"label": self.label})
        except (*ENGINE_ERRORS, SwarmError) as e:
            self._problem("list", f"Swarm watcher: cannot list the services labelled {self.label}: {e}; "
                                  "trying again on the next poll")
            return None
        self._solved("list", "Swarm watcher: Docker answers again")
        updates: dict[str, UpdateInfo | None] = {}
        for service in listed:
            spec = service.get("Spec") or {}
            name = spec.get("Name")
            if not name or self._opted_out(spec.get("Labels") or {}):
                continue
            try:
                updates[name] = self.actuator.detect_update(name)
            except SwarmError as e:
                if "not found" not in str(e):  # removed since it was listed: nothing to watch
                    self._problem(f"detect:{name}", f"Swarm watcher: cannot read the update of {name}: {e}")
                continue
            self._solved(f"detect:{name}")
        return updates

    def _opted_out(self, labels: Mapping[str, Any]) -> bool:
        if "=" in self.label:  # the filter already asked for a value
            return False
        return str(labels.get(self.label, "")).strip().lower() in OFF_VALUES

    def _start(self, planned: PlannedStart) -> RolloutState | None:
        spec = start_spec(self.defaults, service=planned.service, image=planned.image, strategy=planned.strategy,
                          steps=planned.steps, target=planned.target, previous_image=planned.previous_image,
                          reason=planned.reason, source="guardian")
        try:
            state = self.guard.start(spec)
        except RolloutConflict as e:  # a rollout began between the look at the store and this start
            logger.info("Swarm watcher: {} not started: {}", planned.service, e)
            return None
        except ModelMissing as e:  # nothing stored: tried again on the next poll, once the model is fitted
            self._problem(f"start:{planned.key}", f"Swarm watcher: cannot guard the update of {planned.service} "
                                                  f"to {planned.image}: {e}")
            return None
        except ActuatorError as e:  # recorded as rolled back by the guard: this update is not begun again
            self._remember(planned, "")
            logger.error("Swarm watcher: guarding the update of {} to {} failed: {}", planned.service,
                         planned.image, e)
            return None
        except Exception as e:  # noqa: BLE001 - one service's trouble must not stop the watcher
            self._problem(f"start:{planned.key}", f"Swarm watcher: starting a rollout for {planned.service} failed: "
                                                  f"{type(e).__name__}: {e}")
            return None
        self._remember(planned, state.id)
        logger.info("Swarm watcher: rollout {} started: {}", state.id, planned.reason)
        return state

    def _remember(self, planned: PlannedStart, rollout_id: str) -> None:
        self._guarded[planned.key] = rollout_id
        while len(self._guarded) > MAX_GUARDED:
            self._guarded.popitem(last=False)

    # -- logging that does not flood ------------------------------------------------------------------
    def _problem(self, what: str, message: str) -> None:
        """Log a problem when it is new, and again at most every `repeat_errors_after` seconds."""
        now = self.clock.now()
        last = self._problems.get(what)
        if last is None or now - last >= self.repeat_errors_after:
            logger.warning(message)
            self._problems[what] = now

    def _solved(self, what: str, message: str = "") -> None:
        if self._problems.pop(what, None) is not None and message:
            logger.info(message)

    # -- the loop ------------------------------------------------------------------------------------
    async def run(self, every: float) -> None:
        """Poll every `every` seconds (in a worker thread: Docker's client blocks) until `stop`."""
        logger.info("Swarm watcher started: services labelled {}, every {:g}s", self.label, every)
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.poll)
            except Exception as e:  # noqa: BLE001 - the loop must survive anything one poll throws
                logger.exception("Swarm watcher: poll failed: {}", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=every)
        logger.info("Swarm watcher stopped")

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.actuator.close()


__all__ = ["PlannedStart", "SwarmWatcher", "active_services", "plan", "swarm_service"]
