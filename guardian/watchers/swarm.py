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
(What every watcher shares: watchers/base.py.)
"""
from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any

import docker

from guardian.actuators.swarm import ENGINE_ERRORS, SwarmActuator, SwarmError, UpdateInfo, target_service
from guardian.actuators.targets import parse_target
from guardian.clock import Clock
from guardian.domain import RolloutState, Strategy
from guardian.engine.guard import Guard
from guardian.engine.start import StartDefaults
from guardian.watchers.base import PlannedStart, Watcher

WATCH_LABEL = "guardian.watch"
OFF_VALUES = frozenset({"false", "0", "no", "off"})  # `guardian.watch=false` opts a service out


def planned_start(service: str, info: UpdateInfo) -> PlannedStart:
    """The observe rollout that guards a service's update (the key: service, image, Swarm's StartedAt, which
    tells one update of the service from the next)."""
    replaced = f"replacing {info.old_image}" if info.old_image else "the image it replaces is unknown"
    return PlannedStart(
        service=service, image=info.new_image, previous_image=info.old_image, target=f"swarm:{service}",
        key=(service, info.new_image, info.started_at),
        reason=(f"docker service update of {service} to {info.new_image} detected (Swarm UpdateStatus "
                f"{info.state}); guarding it ({replaced})"),
        what=f"the update of {service} to {info.new_image}")


def plan(updates: Mapping[str, UpdateInfo | None], active: Mapping[str, str],
         guarded: Collection[Hashable] = ()) -> list[PlannedStart]:
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
        start = planned_start(name, info)
        if start.key not in guarded:
            planned.append(start)
    return planned


def swarm_service(target: str) -> str | None:
    """The service a `swarm:NAME` target names, else None."""
    name, rest = parse_target(target)
    return target_service(rest) if name == "swarm" else None


def active_services(states: Iterable[RolloutState]) -> dict[str, str]:
    """Service name -> id of its active rollout, for every non-terminal rollout: its service, and the Swarm
    service its `swarm:NAME` target acts on."""
    active: dict[str, str] = {}
    for state in states:
        if state.phase.terminal or state.strategy is Strategy.WATCH:  # a watch gives way to a rollout's start
            continue
        active.setdefault(state.service, state.id)
        if (named := swarm_service(state.target)) is not None:
            active[named] = state.id
    return active


class SwarmWatcher(Watcher):
    """Polls the watched Swarm services and starts observe rollouts for the updates `plan` picks.

    `defaults` are what a start request leaves out (the Settings). `client`: the Docker client to use
    (default: one for DOCKER_HOST / the local socket, made on the first poll). `clock`: time (default the
    guard's), for spacing out repeated error logs."""

    name = "Swarm watcher"
    actuator: SwarmActuator  # what it reads through (its public pieces only)

    def __init__(self, guard: Guard, defaults: StartDefaults, *, client: docker.DockerClient | None = None,
                 clock: Clock | None = None, label: str = WATCH_LABEL, repeat_errors_after: float = 60.0) -> None:
        super().__init__(guard, defaults, SwarmActuator(client=client), clock=clock,
                         repeat_errors_after=repeat_errors_after)
        self.label = label

    def watching(self, every: float) -> str:
        return f"services labelled {self.label}, every {every:g}s"

    def run_once(self) -> None:
        self.poll()

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


__all__ = ["OFF_VALUES", "WATCH_LABEL", "SwarmWatcher", "active_services", "plan", "planned_start", "swarm_service"]
