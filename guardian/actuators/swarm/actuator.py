"""The `swarm` actuator: guards Docker Swarm's own rolling update of a service (START starts it, start-first;
PAUSE holds it; PROMOTE waits for it; BAKE waits for it and keeps the previous spec for a rollback; ROLLBACK
reverses it, with Swarm's rollback=previous when it can).
What each action does, the labels, Prometheus and the watcher: docs/actuators.md#swarm."""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Hashable
from typing import Any

import docker

from guardian.actuators.base import MAX_REMEMBERED_KEYS, ActionRequest, BaseActuator, Remembered
from guardian.actuators.swarm import spec as specs
from guardian.actuators.swarm.client import SwarmClient, SwarmError
from guardian.actuators.swarm.spec import (
    HOLD_CONSTRAINT,
    PREVIOUS_LABEL,
    ROLLOUT_LABEL,
    SwarmSettings,
    image_of,
    update_configs,
)
from guardian.actuators.swarm.state import IN_PROGRESS, SWARM_PAUSED, Snapshot, TaskInfo, UpdateInfo, update_info
from guardian.actuators.swarm.target import validate_target
from guardian.domain import Action, Outcome, Strategy
from guardian.images import normalise_image

MAX_PROGRESS = 60  # progress entries kept in an Outcome's data


class SwarmActuator(BaseActuator):
    """Actions on one service run one at a time; different services' at once. A key that succeeded
    returns its Outcome unchanged; a key that failed is carried out again."""

    name = "swarm"

    def __init__(
        self,
        service: str | None = None,
        *,
        client: docker.DockerClient | None = None,
        base_url: str | None = None,
        settings: SwarmSettings | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`service`: the Swarm service to act on (default: each request's service). `client`: a
        DockerClient to use; else one is made for `base_url` (default: DOCKER_HOST / the local socket)."""
        super().__init__()
        if service is not None:
            problem = validate_target(service)
            if problem:
                raise SwarmError(f"swarm: {problem}")
        self.service = service or None
        self.settings = settings or SwarmSettings()
        self.engine = SwarmClient(client, base_url)
        self._sleep, self._clock = sleep, clock
        self._previous: dict[tuple[str, str], dict[str, Any]] = {}  # (service, rollout) -> template START replaced
        self._scaled: Remembered[str, int] = Remembered(MAX_REMEMBERED_KEYS)  # SCALE key -> the replicas it set

    @property
    def api(self) -> docker.APIClient:
        """docker-py's low-level client (made on first use). Raises SwarmError if it cannot be made."""
        return self.engine.api

    # -- queries -----------------------------------------------------------------------------------
    def tasks_by_image(self, service: str, *, running_only: bool = True) -> dict[str, list[TaskInfo]]:
        """The service's tasks grouped by image: only those running and meant to (default), or all
        Swarm still lists (its task history included). Raises SwarmError (not found, unreachable, ...)."""
        snap = self.engine.snapshot(service)
        out: dict[str, list[TaskInfo]] = {}
        for t in sorted(snap.tasks, key=lambda t: (t.slot or 0, t.created_at)):
            if not running_only or t.serving:
                out.setdefault(t.image, []).append(t)
        return dict(sorted(out.items()))

    def detect_update(self, service: str) -> UpdateInfo | None:
        """The service's update as Swarm reports it, or None if Swarm has none to report (the service was
        created, or last changed without replacing tasks) and all its tasks run the spec's image.
        Raises SwarmError (not found, unreachable, not a manager)."""
        return update_info(self.engine.snapshot(service))

    # -- protocol ----------------------------------------------------------------------------------
    def _target(self, request: ActionRequest) -> str:
        return self.service or request.service

    def lock_key(self, request: ActionRequest) -> Hashable:
        return self._target(request)

    def carry_out(self, request: ActionRequest) -> Outcome:
        service = self._target(request)
        started = self._clock()
        progress: list[dict[str, Any]] = []
        data: dict[str, Any] = {"key": request.key, "service": service, "image": request.image}
        try:
            detail, extra = self._do(request, service, progress)
            ok, detail = True, f"swarm: {detail}"
        except SwarmError as e:
            ok, detail, extra = False, f"swarm: {request.action.value} {service}: {e}", e.data
        data |= extra
        data["elapsed"] = round(self._clock() - started, 2)
        if progress:
            data["progress"] = progress[-MAX_PROGRESS:]
        return Outcome(ok, request.action.value, detail, data=data)

    def _do(self, request: ActionRequest, service: str,
            progress: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        a = request.action
        observe = request.strategy == Strategy.OBSERVE.value
        if a is Action.START:
            return self._observe(service) if observe else self._start(request, service, progress)
        if a in (Action.ADVANCE, Action.RESUME):
            return self._resume(request, service, progress)
        if a is Action.PAUSE:
            return self._pause(request, service)
        if a is Action.PROMOTE:
            return self._promote(request, service, progress)
        if a is Action.BAKE:
            return self._bake(request, service, progress, observe=observe)
        if a is Action.ROLLBACK:
            return self._rollback(request, service, progress, native_only=observe)
        if a is Action.SCALE:
            return self._scale(request, service, progress)
        snap = self.engine.snapshot(service)  # CONTINUE, NOTIFY: nothing to do but look
        return f"{a.value}: nothing to do on {service}", self._state_data(snap)

    # -- waiting -----------------------------------------------------------------------------------
    @staticmethod
    def _state_data(snap: Snapshot) -> dict[str, Any]:
        return {"update": snap.state, "tasks": snap.running(), "replicas": snap.replicas,
                "spec_image": snap.image, "held": snap.held}

    def _wait(self, service: str, check: Callable[[Snapshot], str | None], timeout: float, what: str,
              progress: list[dict[str, Any]]) -> Snapshot:
        """Poll until `check` returns "" (done); a non-empty string is a failure; None goes on waiting.
        Raises SwarmError with the reason (and the progress) on failure or timeout."""
        started = self._clock()
        deadline = started + timeout
        last: tuple[Any, ...] | None = None
        while True:
            snap = self.engine.snapshot(service)
            seen = (snap.state, snap.running(), snap.held)
            if seen != last:
                progress.append({"t": round(self._clock() - started, 2), "update": snap.state,
                                 "tasks": snap.running()})
                last = seen
            verdict = check(snap)
            if verdict == "":
                return snap
            if verdict is not None or self._clock() >= deadline:
                reason = verdict or f"timed out after {timeout:g}s waiting for {what}"
                raise SwarmError(f"{reason} (running tasks per image: {snap.running()}, "
                                 f"update {snap.state or 'none'})", self._state_data(snap))
            self._sleep(self.settings.poll_interval)

    def _check_progress(self, image: str) -> Callable[[Snapshot], str | None]:
        def check(snap: Snapshot) -> str | None:
            if snap.state in SWARM_PAUSED:
                return (f"Swarm paused the update ({snap.message}): tasks of {image} fail: "
                        f"{self.engine.why(snap, image)}")
            if snap.state in ("rollback_started", "rollback_completed") and snap.image != image:
                return f"Swarm rolled the update back ({snap.message}): {self.engine.why(snap, image)}"
            return None
        return check

    # -- START -------------------------------------------------------------------------------------
    def _observe(self, service: str) -> tuple[str, dict[str, Any]]:
        snap = self.engine.snapshot(service)
        info = update_info(snap)
        state = f"update {info.state} to {info.new_image}" if info else "no update in progress"
        return (f"observing {service}: running {snap.running()}, {state}",
                {**self._state_data(snap), "info": info.to_dict() if info else None})

    def _start(self, request: ActionRequest, service: str,
               progress: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        image = normalise_image(request.image)
        snap = self.engine.snapshot(service)
        if snap.replicas is None:
            raise SwarmError("a global service has no replica count to keep; the swarm actuator rolls out "
                             "replicated services only")
        if self.settings.require_local_image and not self.engine.image_present(request.image):
            raise SwarmError(f"image {request.image!r} is not present locally on this engine, and nothing is "
                             "pulled (no registry): build or load it first; the service is unchanged")
        update_cfg, rollback_cfg = update_configs(self.settings)
        key = (snap.name, request.rollout_id)
        if snap.image != image or snap.held:
            # 1. the update/rollback configuration on the old spec: replaces no task, and makes Swarm's
            #    PreviousSpec (what rollback=previous restores) roll back start-first
            self.engine.update(service, lambda s: None if s.image == image else specs.configured(
                s.spec, update_cfg, rollback_cfg))

            # 2. the new image, labelled per task with its version
            def deploy(s: Snapshot) -> dict[str, Any] | None:
                if s.image == image and not s.held:
                    return None
                if s.image != image:
                    self._previous.setdefault(key, specs.unheld(s.spec)["TaskTemplate"])
                return specs.with_image(s.spec, request.image, (update_cfg, rollback_cfg), rollout=request.rollout_id,
                                        replaces=s.image if s.image != image else None)

            self.engine.update(service, deploy)
        if snap.replicas == 0:
            snap = self.engine.snapshot(service)
            return f"{service} now runs {image} (0 replicas: nothing to start)", self._state_data(snap)

        failing = self._check_progress(image)

        def first_task(s: Snapshot) -> str | None:
            # the old task it replaces stopped too (start-first overlaps them for a moment)
            if s.serving(image) >= 1 and s.serving() <= (s.replicas or 0):
                return ""
            return failing(s)

        snap = self._wait(service, first_task, self.settings.start_timeout,
                          f"a task of {image} to run and pass its healthcheck", progress)
        return (f"updating {service} to {image} (start-first, {self.settings.update_parallelism} at a time): "
                f"running {snap.running()}", self._state_data(snap))

    # -- PAUSE / RESUME ------------------------------------------------------------------------------
    def _pause(self, request: ActionRequest, service: str) -> tuple[str, dict[str, Any]]:
        snap = self.engine.snapshot(service)
        if snap.held:
            return f"{service}: the update is already held", self._state_data(snap)
        if snap.state in SWARM_PAUSED:
            return f"{service}: Swarm already paused the update ({snap.message})", self._state_data(snap)
        if snap.state == "rollback_started":
            raise SwarmError("a rollback is in progress; Swarm cannot pause it and the guardian does not hold "
                             "a rollback")
        info = update_info(snap)
        if info is None or info.state not in IN_PROGRESS:
            return (f"{service}: no update in progress, nothing to pause (running {snap.running()})",
                    self._state_data(snap))

        self.engine.update(service, lambda s: None if s.held else specs.held(s.spec, request.key))
        snap = self.engine.snapshot(service)
        return (f"holding the update of {service} at {snap.running()} (Swarm cannot pause on demand: the next "
                f"task is held unschedulable by the constraint {HOLD_CONSTRAINT})", self._state_data(snap))

    def _resume(self, request: ActionRequest, service: str,
                progress: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        snap = self.engine.snapshot(service)
        if snap.held:
            self.engine.update(service, _unhold)
            what = "lifted the hold"
        elif snap.state in SWARM_PAUSED:
            # Posting the spec again resets UpdateStatus: Swarm's updater continues with the dirty tasks
            self.engine.update(service, lambda s: copy.deepcopy(s.spec) if s.state in SWARM_PAUSED else None)
            what = f"re-triggered the update Swarm paused ({snap.message})"
        else:
            snap = self.engine.snapshot(service)
            state = f"update {snap.state}" if snap.state else "no update"
            return (f"{request.action.value}: nothing paused on {service} ({state}; Swarm advances by itself), "
                    f"running {snap.running()}", self._state_data(snap))
        paused_at = (snap.service.get("UpdateStatus") or {}).get("StartedAt")

        def moving(s: Snapshot) -> str | None:
            if s.held:
                return None
            if s.state in SWARM_PAUSED and (s.service.get("UpdateStatus") or {}).get("StartedAt") != paused_at:
                return f"Swarm paused the update again ({s.message}): {self.engine.why(s, s.image)}"
            if s.state in IN_PROGRESS or s.state in ("completed", "rollback_completed"):
                return ""
            return None

        snap = self._wait(service, moving, self.settings.wait_timeout, "Swarm to resume the update", progress)
        return f"{what} on {service}: update {snap.state}, running {snap.running()}", self._state_data(snap)

    # -- PROMOTE -----------------------------------------------------------------------------------
    def _promote(self, request: ActionRequest, service: str,
                 progress: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        snap = self.engine.snapshot(service)
        image = normalise_image(request.image) if request.image else snap.image
        if snap.image != image:
            raise SwarmError(f"the service's spec runs {snap.image}, not {image}: nothing to promote "
                             f"(update {snap.state or 'none'})")
        if snap.state in SWARM_PAUSED and not snap.held:
            raise SwarmError(f"Swarm paused the update ({snap.message}): tasks of {image} fail: "
                             f"{self.engine.why(snap, image)}; RESUME to push on, or ROLLBACK")
        if snap.held:
            self.engine.update(service, _unhold)
        failing = self._check_progress(image)

        def complete(s: Snapshot) -> str | None:
            if s.state in (None, "completed") and s.converged_on(image):
                return ""
            return failing(s)

        snap = self._wait(service, complete, self.settings.wait_timeout,
                          f"the update to {image} to complete", progress)
        return f"{service} runs {image} on all {snap.serving()} tasks (update completed)", self._state_data(snap)

    # -- BAKE --------------------------------------------------------------------------------------
    def _bake(self, request: ActionRequest, service: str, progress: list[dict[str, Any]], *,
              observe: bool) -> tuple[str, dict[str, Any]]:
        """PROMOTE's wait (the update completes: every task on the new image) while the previous version
        stays where a ROLLBACK finds it: Swarm's PreviousSpec (rollback=previous) as long as no spec was
        posted since START, else the template START kept. Swarm has no weights: its old tasks cannot run
        out of rotation (every running task of a service is behind its VIP), so they stop as the update
        completes, and a ROLLBACK starts them again, start-first, from the image on the node."""
        snap = self.engine.snapshot(service)
        if self._rollback_target(request, snap, native_only=observe)[0] is None:
            raise SwarmError(f"nothing to go back to during a bake: rollout {request.rollout_id} never changed "
                             f"{service} and Swarm keeps no PreviousSpec for it; PROMOTE instead, or START first")
        detail, data = self._promote(request, service, progress)
        snap = self.engine.snapshot(service)
        target, _ = self._rollback_target(request, snap, native_only=observe)
        how = ("Swarm's rollback=previous (PreviousSpec)" if self._native_rollback(snap, target)
               else "an update back to the template START kept")
        warm = {"previous_image": target, "rollback": how, "running": snap.serving(target) if target else 0}
        return (f"{detail}; {target} kept for a rollback during the bake by {how}, start-first: its tasks are "
                "stopped, not warm (Swarm has no out-of-rotation task), and start again from the local image",
                {**data, "warm": warm, "previous_image": target})

    # -- ROLLBACK ----------------------------------------------------------------------------------
    def _rollback_target(self, request: ActionRequest, snap: Snapshot, *,
                         native_only: bool) -> tuple[str | None, bool]:
        """The image a ROLLBACK goes back to (None: none known), and whether this rollout changed the
        service at all (False: it never did, and there is nothing of its own to roll back)."""
        kept = self._previous.get((snap.name, request.rollout_id))
        if native_only:
            return snap.previous_image, True
        if kept is not None:
            return image_of({"TaskTemplate": kept}), True
        if snap.labels.get(ROLLOUT_LABEL) == request.rollout_id and snap.labels.get(PREVIOUS_LABEL):
            return normalise_image(snap.labels[PREVIOUS_LABEL]), True  # kept in the service: survives a restart
        return None, False

    @staticmethod
    def _native_rollback(snap: Snapshot, target: str | None) -> bool:
        """Whether Swarm's own rollback=previous goes back to `target` (PreviousSpec runs it)."""
        return target is not None and snap.previous_image == target and not snap.held and snap.image != target

    def _rollback(self, request: ActionRequest, service: str, progress: list[dict[str, Any]], *,
                  native_only: bool) -> tuple[str, dict[str, Any]]:
        snap = self.engine.snapshot(service)
        kept = self._previous.get((snap.name, request.rollout_id))
        target, changed = self._rollback_target(request, snap, native_only=native_only)
        if not changed:
            return (f"nothing to roll back: rollout {request.rollout_id} never changed {service} (it runs "
                    f"{snap.running()})", {**self._state_data(snap), "previous_image": snap.image})
        if target is None:
            raise SwarmError("no previous version to roll back to: Swarm keeps no PreviousSpec for this service")
        if snap.image == target and not snap.held and snap.converged_on(target) and snap.state not in IN_PROGRESS:
            return (f"nothing to roll back: {service} already runs {target}",
                    {**self._state_data(snap), "previous_image": target})

        native = self._native_rollback(snap, target)
        if native:
            self.engine.update(service, lambda s: copy.deepcopy(s.spec) if s.previous_image == target else None,
                               rollback=True)
            how = "Swarm rollback (rollback=previous)"
        else:
            _, rollback_cfg = update_configs(self.settings)
            self.engine.update(service, lambda s: specs.rolled_back(s.spec, target, rollback_cfg, template=kept))
            how = "update back to the previous template"

        def rolled_back(s: Snapshot) -> str | None:
            if s.state in SWARM_PAUSED:
                return f"the rollback paused ({s.message}): tasks of {target} fail: {self.engine.why(s, target)}"
            if s.image == target and s.state not in IN_PROGRESS and s.converged_on(target):
                return ""
            return None

        snap = self._wait(service, rolled_back, self.settings.wait_timeout,
                          f"every task to run {target} again", progress)
        return (f"rolled {service} back to {target} ({how}): running {snap.running()}",
                {**self._state_data(snap), "previous_image": target})

    # -- SCALE -------------------------------------------------------------------------------------
    def _scale(self, request: ActionRequest, service: str,
               progress: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        snap = self.engine.snapshot(service)
        if snap.replicas is None:
            raise SwarmError("a global service runs one task per node and cannot be scaled")
        if snap.held:
            raise SwarmError("the update is held (PAUSE): new tasks could not be scheduled; RESUME first")
        want = self._scaled.get(request.key)
        if want is None:
            want = max(1, snap.replicas + request.replicas)
            self._scaled.put(request.key, want)
        before = snap.replicas
        self.engine.update(service, lambda s: None if s.replicas == want else specs.with_replicas(s.spec, want))

        def converged(s: Snapshot) -> str | None:
            if s.serving() == want:
                return ""
            return None

        snap = self._wait(service, converged, self.settings.wait_timeout, f"{want} running tasks", progress)
        return f"scaled {service} from {before} to {want} replicas: running {snap.running()}", {
            **self._state_data(snap), "from": before, "to": want}

    # -- verify ------------------------------------------------------------------------------------
    def verify(self, request: ActionRequest) -> Outcome:
        """Compare what runs (spec image, replicas, running tasks per image) with what the action asked."""
        a = request.action
        service = self._target(request)
        try:
            snap = self.engine.snapshot(service)
        except SwarmError as e:
            return Outcome(False, a.value, f"swarm: verify {a.value} {service}: {e}")
        data = self._state_data(snap)
        image = normalise_image(request.image) if request.image else snap.image
        observe = request.strategy == Strategy.OBSERVE.value
        problem = ""
        if a is Action.START and not observe:
            if snap.image != image:
                problem = f"the spec runs {snap.image}, not {image}"
            elif snap.replicas and snap.serving(image) < 1:
                problem = f"no task of {image} is running"
        elif a in (Action.PROMOTE, Action.BAKE):
            if snap.image != image or not snap.converged_on(image):
                problem = f"expected {snap.replicas} tasks of {image} only"
            elif a is Action.BAKE and self._rollback_target(request, snap, native_only=observe)[0] is None:
                problem = "nothing is kept to roll back to (no PreviousSpec, no template START kept)"
        elif a is Action.ROLLBACK:
            last = self.outcomes.done(request.key)
            target = (last.data.get("previous_image") if last else None) or (
                snap.image if snap.image != image else None)
            if target is None or snap.image != target:
                problem = f"the spec runs {snap.image}, not the previous version"
            elif not snap.converged_on(target):
                problem = f"expected {snap.replicas} tasks of {target} only"
        elif a is Action.SCALE:
            want = self._scaled.get(request.key)
            if want is not None and (snap.replicas != want or snap.serving() != want):
                problem = f"expected {want} running tasks (spec says {snap.replicas})"
        elif a is Action.PAUSE:
            if not snap.held and snap.state in IN_PROGRESS:
                problem = "the update is in progress and not held"
        elif a in (Action.RESUME, Action.ADVANCE) and snap.held:
            problem = "the update is still held"
        if problem:
            return Outcome(False, a.value, f"swarm: {service}: {problem}; running {snap.running()}", data=data)
        return Outcome(True, a.value, f"swarm: {service} as asked: running {snap.running()}, "
                                      f"update {snap.state or 'none'}", data=data)

    # -- lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        self.engine.close()


def _unhold(s: Snapshot) -> dict[str, Any] | None:
    return specs.unheld(s.spec) if s.held else None
