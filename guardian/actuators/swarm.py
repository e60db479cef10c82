"""The `swarm` actuator: guards Docker Swarm's own rolling update of a service.

Target: `swarm:` (the Swarm service is the rollout's service) or `swarm:SERVICE_NAME`.

Swarm replaces a service's tasks itself when the service's spec changes; this actuator starts that
update, watches it task by task, and reverses it. Everything goes through the Engine API
(`POST /services/{id}/update?version=N` with a whole spec, as `docker service update` does), through
docker-py's low-level client, because `APIClient.update_service` can neither send a spec as read nor
ask for `rollback=previous`. No registry is needed: docker-py does not resolve image digests (what the CLI's
`--no-resolve-image` turns off; the Engine API >= 1.30 leaves that to the client), and START refuses an
image the engine does not hold. (A worker still tries to pull a *tag* before starting a task, and runs
the local image when that fails: offline this costs nothing but a line in dockerd's log.)

Actions (request.strategy other than `observe`):
- START     the update itself: the spec's image becomes request.image with UpdateConfig parallelism 1,
            order start-first (a new task is healthy before an old one stops: never below the desired
            replicas), failure_action pause, a short monitor. The update/rollback configuration is first
            set on the *old* spec (no task is replaced by that), so that Swarm's PreviousSpec, which
            `rollback=previous` restores, rolls back start-first too. The previous task template is kept
            (in memory, and its image in the service label `guardian.previous-image`). START returns once
            the first new task runs (healthcheck passed), or fails with the tasks' error (Swarm paused).
- ADVANCE / RESUME
            Swarm advances an update by itself (`update_delay` between tasks); these only undo a pause:
            the guardian's hold (see PAUSE) is lifted, and an update Swarm paused (a task failed) is
            re-triggered by posting the current spec again (that resets UpdateStatus and Swarm continues
            with the dirty tasks; it is what `docker service update SERVICE` without flags does).
- PAUSE     Swarm has no way to pause an update on demand (moby/moby#26159, #31374, #37256: its
            "paused" state is only set by the updater itself, when a task fails with
            failure_action=pause), and `--update-parallelism 0` does not pause: 0 means *unlimited*.
            What this does instead is a *hold*: the spec gets a placement constraint no node satisfies
            (`node.id==guardian-hold`; node IDs never contain '-'). The updater, start-first, creates the
            next task, which stays pending ("no suitable node"), and waits for it: no old task is
            stopped, the mix of old and new tasks (and so the traffic split) stays as it is. Swarm still
            reports "updating"; `detect_update` reports `held`. Costs, honestly: one pending task; a task
            that crashes during a hold is restarted from the held spec and stays pending too (capacity
            drops until RESUME); SCALE refuses while held. RESUME removes exactly that constraint, so the
            tasks already updated are not replaced again. PAUSE with no update in progress changes nothing.
- PROMOTE   waits for the update to complete (UpdateStatus completed, every running task on the new
            image, as many as the replicas); lifts a hold first; fails if Swarm paused the update.
- ROLLBACK  `docker service rollback` (`?rollback=previous`) when Swarm's PreviousSpec is still the spec
            START replaced; otherwise (a RESUME, SCALE or PAUSE posted a spec since, and PreviousSpec then
            holds the *new* image) an update back to the kept template. Then waits until every running
            task is on the previous image again. Nothing to roll back (START never changed the service)
            is a success.
- SCALE     replicas += request.replicas (never below 1), waits until that many tasks run.
With strategy `observe` someone else deploys: START only checks the service exists and reports what
runs; ROLLBACK is always Swarm's own `rollback=previous`; PROMOTE waits for their update to complete.

Every action is idempotent by request.key (a key that succeeded returns its Outcome and changes
nothing; a key that failed is tried again) and every failure is an Outcome(ok=False) whose detail says
why: service not found, image not present locally, daemon unreachable, not a swarm manager, tasks
failing to start or to pass their healthcheck (with Swarm's task error). Waits are bounded
(`SwarmSettings`) and their Outcome's data carries the progress: running tasks per image over time.

Old versus new tasks in Prometheus. The guardian's arms are selected by a label, and all tasks of a
service share the service's labels, so the version must come from the *task*: START sets the container
labels `guardian.image` (the image reference) and `guardian.version` (its tag) in the task template;
each task keeps the template it was created from, so during the update old tasks carry the old values
and new ones the new. Prometheus' `dockerswarm_sd_configs` (role: tasks) exposes them per task as
`__meta_dockerswarm_container_label_guardian_version`:

    - job_name: swarm-tasks
      dockerswarm_sd_configs: [{host: unix:///var/run/docker.sock, role: tasks, port: 8000}]
      relabel_configs:
        - {source_labels: [__meta_dockerswarm_task_desired_state], regex: running, action: keep}
        - {source_labels: [__meta_dockerswarm_service_name], target_label: service}
        - {source_labels: [__meta_dockerswarm_container_label_guardian_version], target_label: version}

with the rule file's `arms: {label: version, canary: "{version}", baseline: "{previous_version}"}`: the
guard fills `{version}` with the tag of the rollout's image and `{previous_version}` with the tag of the
image it replaces (`image_version`, the value START writes), per rollout, so one rule file serves every
release; fixed values (`canary: v3, baseline: v1`) work too. A rollout that does not know the image it
replaces (no `previous_image` in its start request) leaves `{previous_version}` unresolved, and the
checks reading that arm inconclusive (the rollout pauses; it is never promoted for it). Create services
with the container label already set (`docker service create --container-label guardian.version=v1 ...`):
tasks started before the guardian first touched a service have no such label. (Tasks are discovered
through their network attachments or published ports: the service needs one or the other.)

Guarding someone else's `docker service update` by itself (guardian/engine/swarm_watch.py). With
`GUARDIAN_WATCH_SWARM=true` the guardian polls (every `GUARDIAN_WATCH_SECONDS`, 2 s) the services labelled
`guardian.watch` (`GUARDIAN_WATCH_LABEL`), and for an update in progress that it did not start itself
(`detect_update`'s `rollout`: the `guardian.rollout` label START writes) and that no active rollout guards,
starts an `observe` rollout (target `swarm:SERVICE`, one step of 100%, image and previous image from
`detect_update`), exactly as `POST /v1/rollouts` would. Rollbacks, updates Swarm paused and updates the
guardian holds start nothing. What a user does:

    docker service create --name checkout --label guardian.watch=true --container-label guardian.version=v1 \\
        --update-order start-first --replicas 2 app:v1
    docker service update --image app:v2 --container-label-add guardian.version=v2 checkout

with the relabelling above (the container label becomes Prometheus' `version`) and the rule file's
`arms: {label: version, canary: "{version}", baseline: "{previous_version}"}`. A failing check then rolls
the update back with Swarm's own `rollback=previous`.

Limits: the local-image check asks the manager this actuator talks to; on a multi-node swarm each node
needs the image, and a node without it fails its task ("No such image"), which START then reports.
"""
from __future__ import annotations

import contextlib
import copy
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Self

import docker
import requests

from guardian.actuators import ActionRequest
from guardian.domain import Action, Outcome, Strategy
from guardian.errors import ActuatorError

API_VERSION = "1.41"  # Docker Engine 20.10; newer engines speak it too
IMAGE_LABEL = "guardian.image"  # container label: the image reference the task was created with
VERSION_LABEL = "guardian.version"  # container label: that image's tag (what Prometheus relabels to `version`)
ROLLOUT_LABEL = "guardian.rollout"  # service label: the rollout that last started an update
PREVIOUS_LABEL = "guardian.previous-image"  # service label: the image START replaced
HOLD_LABEL = "guardian.hold"  # service label: the key of the PAUSE that holds the update
HOLD_ORDER_LABEL = "guardian.hold-order"  # service label: the update order the hold replaced
HOLD_CONSTRAINT = "node.id==guardian-hold"  # satisfied by no node: Swarm node IDs never contain '-'
MAX_REMEMBERED_KEYS = 10_000
MAX_PROGRESS = 60  # progress entries kept in an Outcome's data
IN_PROGRESS = frozenset({"updating", "rollback_started"})
SWARM_PAUSED = frozenset({"paused", "rollback_paused"})
FAILED_STATES = frozenset({"failed", "rejected", "orphaned"})
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_HINT = "write swarm: or swarm:SERVICE_NAME"
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


class SwarmError(ActuatorError):
    """An action or query could not be carried out; the message says why, `data` what was running."""

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.data = data or {}


def validate_target(rest: str) -> str | None:
    """Why `swarm:<rest>` is not a usable target, or None. `rest` is empty or a service name."""
    name = rest[2:] if rest.startswith("//") else rest
    if name and not _SERVICE_NAME.fullmatch(name):
        return f"{name!r} is not a Swarm service name (letters, digits, '_', '.', '-'; at most 63); {_HINT}"
    return None


@dataclass(frozen=True)
class SwarmSettings:
    """How updates are run and how long the actuator waits. Durations in seconds."""

    update_parallelism: int = 1  # tasks replaced at a time
    update_delay: float = 10.0  # between one task and the next: time for the guardian to judge both
    update_monitor: float = 5.0  # a new task failing within this counts as an update failure
    max_failure_ratio: float = 0.0  # failures tolerated (as a fraction of the tasks) before Swarm pauses
    rollback_parallelism: int = 0  # 0 = every task at once (still start-first: never below the replicas)
    start_timeout: float = 120.0  # START: until the first new task runs
    wait_timeout: float = 300.0  # PROMOTE, ROLLBACK, SCALE, RESUME: until Swarm converges
    poll_interval: float = 0.25
    require_local_image: bool = True  # START refuses an image this engine does not hold (nothing is pulled)

    def __post_init__(self) -> None:
        if self.update_parallelism < 1 or self.rollback_parallelism < 0:
            raise ValueError("swarm: need update_parallelism >= 1 and rollback_parallelism >= 0")
        if min(self.update_delay, self.update_monitor) < 0 or not 0 <= self.max_failure_ratio <= 1:
            raise ValueError("swarm: delays must be >= 0 and max_failure_ratio within [0, 1]")
        if min(self.start_timeout, self.wait_timeout, self.poll_interval) <= 0:
            raise ValueError("swarm: timeouts and poll_interval must be positive")


@dataclass(frozen=True)
class TaskInfo:
    """One Swarm task, as `docker service ps` shows it."""

    id: str
    slot: int | None
    node_id: str
    node: str  # the node's hostname ('' if unknown)
    image: str  # the image its template names (normalised: no digest, no docker.io/library/)
    version: str  # its `guardian.version` container label, else the image's tag
    state: str  # running, starting, pending, failed, rejected, shutdown, complete, ...
    desired_state: str
    error: str  # Swarm's Status.Err ('' if none)
    message: str
    container_id: str
    created_at: str

    @property
    def serving(self) -> bool:
        """Running and meant to keep running (not being shut down by the update)."""
        return self.state == "running" and self.desired_state == "running"


@dataclass(frozen=True)
class UpdateInfo:
    """A service's rolling update as Swarm reports it, with the running tasks per image.

    `new_image` is what the spec now asks for (during a rollback: the image rolled back *to*);
    `old_image` the one it replaces: the image other tasks still run, else the one START replaced,
    else Swarm's PreviousSpec image (during a rollback: the image rolled back *from*)."""

    service: str
    service_id: str
    state: str  # updating, paused, completed, rollback_started, rollback_paused, rollback_completed
    message: str
    old_image: str | None
    new_image: str
    running: dict[str, int]  # image -> tasks running (and meant to), new and old
    replicas: int | None  # desired (None for a global service)
    started_at: str | None = None
    completed_at: str | None = None
    held: bool = False  # held by the guardian's PAUSE (Swarm itself still says "updating")
    rollout: str | None = None  # the service's `guardian.rollout` label: the rollout that last started an update

    @property
    def in_progress(self) -> bool:
        return self.state in IN_PROGRESS and not self.held

    @property
    def paused(self) -> bool:
        return self.held or self.state in SWARM_PAUSED

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "in_progress": self.in_progress, "paused": self.paused}


def normalise_image(ref: str) -> str:
    """`docker.io/library/x:1@sha256:..` -> `x:1`; `x` -> `x:latest`; an image ID stays as it is."""
    if ref.startswith("sha256:"):
        return ref
    ref = ref.split("@", 1)[0]
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "library/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    if ":" not in ref.rsplit("/", 1)[-1]:
        ref += ":latest"
    return ref


def image_version(ref: str) -> str:
    """The tag of an image reference (`guardian-demo:v3` -> `v3`), or a short ID for an image ID."""
    ref = normalise_image(ref)
    if ref.startswith("sha256:"):
        return ref[7:19]
    return ref.rsplit(":", 1)[1]


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def _when(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


def _image_of(spec: dict[str, Any] | None) -> str | None:
    if not spec:
        return None
    image = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image")
    return normalise_image(image) if image else None


def _held(spec: dict[str, Any]) -> bool:
    constraints = ((spec.get("TaskTemplate") or {}).get("Placement") or {}).get("Constraints") or []
    return HOLD_CONSTRAINT in constraints


@dataclass
class _Snapshot:
    """One look at a service and its tasks."""

    service: dict[str, Any]
    tasks: list[TaskInfo]

    @property
    def spec(self) -> dict[str, Any]:
        return self.service["Spec"]

    @property
    def name(self) -> str:
        return self.spec["Name"]

    @property
    def state(self) -> str | None:
        return (self.service.get("UpdateStatus") or {}).get("State")

    @property
    def message(self) -> str:
        return (self.service.get("UpdateStatus") or {}).get("Message") or ""

    @property
    def image(self) -> str:
        return _image_of(self.spec) or ""

    @property
    def previous_image(self) -> str | None:
        return _image_of(self.service.get("PreviousSpec"))

    @property
    def replicas(self) -> int | None:
        replicated = (self.spec.get("Mode") or {}).get("Replicated")
        return None if replicated is None else int(replicated.get("Replicas") or 0)

    @property
    def held(self) -> bool:
        return _held(self.spec)

    @property
    def labels(self) -> dict[str, str]:
        return self.spec.get("Labels") or {}

    def running(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tasks:
            if t.serving:
                counts[t.image] = counts.get(t.image, 0) + 1
        return dict(sorted(counts.items()))

    def serving(self, image: str | None = None) -> int:
        return sum(1 for t in self.tasks if t.serving and (image is None or t.image == image))

    def converged_on(self, image: str) -> bool:
        """Every running task is on `image`, as many as the replicas (any number for a global service)."""
        running = self.running()
        if set(running) != {image}:
            return self.replicas == 0 and not running
        return self.replicas is None or running[image] == self.replicas

    def failures(self, image: str, since: str | None = None) -> list[TaskInfo]:
        """The tasks of `image` that failed or ended by themselves (since the update started), newest
        first. A service's task is meant to run for ever: one that completed ended early."""
        start = _when(since)
        found = []
        for t in self.tasks:
            if t.image != image:
                continue
            failed = t.state in FAILED_STATES or t.state == "complete" or (t.state == "shutdown" and t.error)
            created = _when(t.created_at)
            if failed and (start is None or created is None or created >= start):
                found.append(t)
        return sorted(found, key=lambda t: t.created_at, reverse=True)

    def pending(self) -> list[str]:
        return [f"task {t.id[:12]} {t.state}: {t.error or t.message}" for t in self.tasks
                if t.desired_state == "running" and t.state in ("pending", "assigned", "preparing") and t.error]


class SwarmActuator:
    name = "swarm"
    supports: frozenset[Action] = frozenset(Action)

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
        if service is not None:
            problem = validate_target(service)
            if problem:
                raise SwarmError(f"swarm: {problem}")
        self.service = service or None
        self.settings = settings or SwarmSettings()
        self._client = client
        self._owns_client = client is None
        self._base_url = base_url
        self._sleep, self._clock = sleep, clock
        self._done: OrderedDict[str, Outcome] = OrderedDict()  # key -> its successful Outcome
        self._previous: dict[tuple[str, str], dict[str, Any]] = {}  # (service, rollout) -> template START replaced
        self._scaled: OrderedDict[str, int] = OrderedDict()  # SCALE key -> the replica count it set
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._nodes: dict[str, str] = {}

    # -- the engine ----------------------------------------------------------------------------------
    @property
    def api(self) -> docker.APIClient:
        """docker-py's low-level client (made on first use). Raises SwarmError if it cannot be made."""
        if self._client is None:
            try:
                if self._base_url:
                    self._client = docker.DockerClient(base_url=self._base_url, version=API_VERSION, timeout=30)
                else:
                    self._client = docker.from_env(version=API_VERSION, timeout=30)
            except ENGINE_ERRORS as e:
                raise self._engine_error(e) from e
        return self._client.api

    def _where(self) -> str:
        return self._base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def _engine_error(self, exc: Exception, service: str | None = None) -> SwarmError:
        """A Docker error as a reason a person can act on."""
        text = str(getattr(exc, "explanation", None) or exc)
        if isinstance(exc, docker.errors.NotFound) and service is not None:
            return SwarmError(f"service {service!r} not found on this swarm")
        if isinstance(exc, docker.errors.APIError):
            if "not a swarm manager" in text or "not part of a swarm" in text:
                return SwarmError(f"the Docker engine at {self._where()} is not a swarm manager: {text} "
                                  "(run `docker swarm init` or point the actuator at a manager)")
            return SwarmError(f"Docker engine refused: {text}")
        if isinstance(exc, requests.exceptions.ConnectionError) or "connection" in text.lower():
            return SwarmError(f"Docker daemon unreachable at {self._where()}: {text}")
        return SwarmError(f"Docker engine: {type(exc).__name__}: {text}")

    def _call(self, fn: Callable[[], Any], service: str | None = None) -> Any:
        try:
            return fn()
        except ENGINE_ERRORS as e:
            raise self._engine_error(e, service) from e

    def _inspect(self, service: str) -> dict[str, Any]:
        api = self.api
        return self._call(lambda: api._result(api._get(api._url("/services/{0}", service),
                                                          params={"insertDefaults": False}), True), service)

    def _tasks(self, service_id: str) -> list[TaskInfo]:
        api = self.api
        raw = self._call(lambda: api.tasks(filters={"service": service_id}))
        raw = [t for t in raw if t.get("ServiceID") == service_id]  # the filter also matches name prefixes
        if any(t.get("NodeID") and t["NodeID"] not in self._nodes for t in raw):
            with contextlib.suppress(*ENGINE_ERRORS):  # node names are a nicety
                self._nodes = {n["ID"]: (n.get("Description") or {}).get("Hostname", "") for n in api.nodes()}
        out = []
        for t in raw:
            status = t.get("Status") or {}
            cspec = (t.get("Spec") or {}).get("ContainerSpec") or {}
            image = normalise_image(cspec.get("Image") or "")
            out.append(TaskInfo(
                id=t["ID"], slot=t.get("Slot"), node_id=t.get("NodeID", ""),
                node=self._nodes.get(t.get("NodeID", ""), ""),
                image=image, version=(cspec.get("Labels") or {}).get(VERSION_LABEL) or image_version(image),
                state=status.get("State", ""), desired_state=t.get("DesiredState", ""), error=status.get("Err", ""),
                message=status.get("Message", ""),
                container_id=(status.get("ContainerStatus") or {}).get("ContainerID", ""),
                created_at=t.get("CreatedAt", ""),
            ))
        return out

    def _snapshot(self, service: str) -> _Snapshot:
        svc = self._inspect(service)
        return _Snapshot(svc, self._tasks(svc["ID"]))

    def _post(self, snap: _Snapshot, spec: dict[str, Any], *, rollback: bool = False) -> None:
        """`POST /services/{id}/update?version=N[&rollback=previous]` with a whole spec."""
        api = self.api
        params: dict[str, Any] = {"version": snap.service["Version"]["Index"]}
        if rollback:
            params["rollback"] = "previous"

        def post() -> Any:
            return api._result(api._post_json(api._url("/services/{0}/update", snap.service["ID"]), data=spec,
                                              params=params), True)

        self._call(post, snap.name)

    def _update(self, service: str, change: Callable[[_Snapshot], dict[str, Any] | None], *,
                rollback: bool = False) -> bool:
        """Read the spec, change it, post it; again (at most 3 times) if someone else updated in between.
        `change` returns the spec to post, or None for nothing to do. True if something was posted."""
        for attempt in range(3):
            snap = self._snapshot(service)
            spec = change(snap)
            if spec is None:
                return False
            try:
                self._post(snap, spec, rollback=rollback)
                return True
            except SwarmError as e:
                if "out of sequence" not in str(e) or attempt == 2:
                    raise
        return False  # pragma: no cover - the loop returns or raises

    def _image_present(self, image: str) -> bool:
        api = self.api
        try:
            api.inspect_image(image)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.NotFound:
            return False
        except ENGINE_ERRORS as e:
            raise self._engine_error(e) from e

    # -- queries -----------------------------------------------------------------------------------
    def tasks_by_image(self, service: str, *, running_only: bool = True) -> dict[str, list[TaskInfo]]:
        """The service's tasks grouped by image: only those running and meant to (default), or all
        Swarm still lists (its task history included). Raises SwarmError (not found, unreachable, ...)."""
        snap = self._snapshot(service)
        out: dict[str, list[TaskInfo]] = {}
        for t in sorted(snap.tasks, key=lambda t: (t.slot or 0, t.created_at)):
            if not running_only or t.serving:
                out.setdefault(t.image, []).append(t)
        return dict(sorted(out.items()))

    def detect_update(self, service: str) -> UpdateInfo | None:
        """The service's update as Swarm reports it, or None if Swarm has none to report (the service was
        created, or last changed without replacing tasks) and all its tasks run the spec's image.
        Raises SwarmError (not found, unreachable, not a manager)."""
        return self._info(self._snapshot(service))

    @staticmethod
    def _info(snap: _Snapshot) -> UpdateInfo | None:
        status = snap.service.get("UpdateStatus") or {}
        running = snap.running()
        state = status.get("State")
        if state is None:
            if set(running) <= {snap.image}:
                return None
            state = "updating"  # a spec was just posted: Swarm has not started its updater yet
        others = {image: n for image, n in running.items() if image != snap.image}
        if others:  # the image being replaced is the one still running
            old_image: str | None = max(others, key=lambda image: others[image])
        elif snap.labels.get(PREVIOUS_LABEL):  # START's (PreviousSpec is newer after a PAUSE or SCALE)
            old_image = normalise_image(snap.labels[PREVIOUS_LABEL])
        else:
            old_image = snap.previous_image
        return UpdateInfo(
            service=snap.name, service_id=snap.service["ID"], state=state, message=status.get("Message", ""),
            old_image=old_image, new_image=snap.image, running=running, replicas=snap.replicas,
            started_at=status.get("StartedAt"), completed_at=status.get("CompletedAt"), held=snap.held,
            rollout=snap.labels.get(ROLLOUT_LABEL),
        )

    # -- protocol ----------------------------------------------------------------------------------
    def _lock(self, service: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(service, threading.Lock())

    def _target(self, request: ActionRequest) -> str:
        return self.service or request.service

    def apply(self, request: ActionRequest) -> Outcome:
        """Carry out the action once per key: a key that succeeded returns its Outcome unchanged."""
        service = self._target(request)
        with self._lock(service):
            with self._guard:
                known = self._done.get(request.key)
            if known is not None:
                return known
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
            outcome = Outcome(ok, request.action.value, detail, data=data)
            if outcome.ok:
                with self._guard:
                    self._done[request.key] = outcome
                    while len(self._done) > MAX_REMEMBERED_KEYS:
                        self._done.popitem(last=False)
            return outcome

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
        if a is Action.ROLLBACK:
            return self._rollback(request, service, progress, native_only=observe)
        if a is Action.SCALE:
            return self._scale(request, service, progress)
        snap = self._snapshot(service)  # CONTINUE, NOTIFY: nothing to do but look
        return f"{a.value}: nothing to do on {service}", self._state_data(snap)

    # -- waiting -----------------------------------------------------------------------------------
    @staticmethod
    def _state_data(snap: _Snapshot) -> dict[str, Any]:
        return {"update": snap.state, "tasks": snap.running(), "replicas": snap.replicas,
                "spec_image": snap.image, "held": snap.held}

    def _wait(self, service: str, check: Callable[[_Snapshot], str | None], timeout: float, what: str,
              progress: list[dict[str, Any]]) -> _Snapshot:
        """Poll until `check` returns "" (done); a non-empty string is a failure; None goes on waiting.
        Raises SwarmError with the reason (and the progress) on failure or timeout."""
        started = self._clock()
        deadline = started + timeout
        last: tuple[Any, ...] | None = None
        while True:
            snap = self._snapshot(service)
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

    def _why(self, snap: _Snapshot, image: str) -> str:
        """Why the tasks of `image` do not run: Swarm's task errors, and the containers' own story (Swarm
        reports a task stopped for failing its healthcheck as merely "complete")."""
        since = (snap.service.get("UpdateStatus") or {}).get("StartedAt")
        failed = snap.failures(image, since) or snap.failures(image)
        text = "; ".join(dict.fromkeys(f"task {t.id[:12]} {t.state}: {self._task_error(t)}" for t in failed[:3]))
        pending = snap.pending()
        if pending:
            text = "; ".join(filter(None, [text, *pending[:2]]))
        return text or "no task error reported"

    def _task_error(self, task: TaskInfo) -> str:
        reason = task.error or ""
        if not task.container_id:
            return reason or task.message
        try:
            state = self.api.inspect_container(task.container_id).get("State") or {}
        except (*ENGINE_ERRORS, SwarmError):  # removed already, or on another node
            return reason or task.message
        health = state.get("Health") or {}
        if health.get("Status") == "unhealthy":
            log = health.get("Log") or [{}]
            output = " ".join(str(log[-1].get("Output") or "").split())[:200]
            found = (f"healthcheck never passed (unhealthy after {health.get('FailingStreak', '?')} failing "
                     f"checks; last: exit {log[-1].get('ExitCode')}: {output or 'no output'})")
        elif state.get("ExitCode"):
            found = f"container exited with code {state['ExitCode']}" + (
                f": {state['Error']}" if state.get("Error") else "")
        elif task.state == "complete":
            found = "container exited by itself (code 0)"
        else:
            found = ""
        return "; ".join(filter(None, [reason, found])) or task.message

    def _check_progress(self, image: str) -> Callable[[_Snapshot], str | None]:
        def check(snap: _Snapshot) -> str | None:
            if snap.state in SWARM_PAUSED:
                return f"Swarm paused the update ({snap.message}): tasks of {image} fail: {self._why(snap, image)}"
            if snap.state in ("rollback_started", "rollback_completed") and snap.image != image:
                return f"Swarm rolled the update back ({snap.message}): {self._why(snap, image)}"
            return None
        return check

    # -- START -------------------------------------------------------------------------------------
    def _observe(self, service: str) -> tuple[str, dict[str, Any]]:
        snap = self._snapshot(service)
        info = self._info(snap)
        state = f"update {info.state} to {info.new_image}" if info else "no update in progress"
        return (f"observing {service}: running {snap.running()}, {state}",
                {**self._state_data(snap), "info": info.to_dict() if info else None})

    def _configs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        s = self.settings
        update = {"Parallelism": s.update_parallelism, "Delay": _ns(s.update_delay), "FailureAction": "pause",
                  "Monitor": _ns(s.update_monitor), "MaxFailureRatio": s.max_failure_ratio, "Order": "start-first"}
        rollback = {"Parallelism": s.rollback_parallelism, "Delay": 0, "FailureAction": "pause",
                    "Monitor": _ns(s.update_monitor), "MaxFailureRatio": s.max_failure_ratio, "Order": "start-first"}
        return update, rollback

    def _start(self, request: ActionRequest, service: str,
               progress: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        image = normalise_image(request.image)
        snap = self._snapshot(service)
        if snap.replicas is None:
            raise SwarmError("a global service has no replica count to keep; the swarm actuator rolls out "
                             "replicated services only")
        if self.settings.require_local_image and not self._image_present(request.image):
            raise SwarmError(f"image {request.image!r} is not present locally on this engine, and nothing is "
                             "pulled (no registry): build or load it first; the service is unchanged")
        update_cfg, rollback_cfg = self._configs()
        key = (snap.name, request.rollout_id)
        if snap.image != image or snap.held:
            # 1. the update/rollback configuration on the old spec: replaces no task, and makes Swarm's
            #    PreviousSpec (what rollback=previous restores) roll back start-first
            def configure(s: _Snapshot) -> dict[str, Any] | None:
                spec = copy.deepcopy(s.spec)
                if s.image == image or (spec.get("UpdateConfig") == update_cfg
                                        and spec.get("RollbackConfig") == rollback_cfg):
                    return None
                spec["UpdateConfig"], spec["RollbackConfig"] = update_cfg, rollback_cfg
                return spec

            self._update(service, configure)

            # 2. the new image, labelled per task with its version
            def deploy(s: _Snapshot) -> dict[str, Any] | None:
                if s.image == image and not s.held:
                    return None
                spec = copy.deepcopy(s.spec)
                self._lift_hold(spec)
                template = spec["TaskTemplate"]
                if s.image != image:
                    self._previous.setdefault(key, copy.deepcopy(template))
                    spec["Labels"] = {**spec.get("Labels", {}), ROLLOUT_LABEL: request.rollout_id,
                                      PREVIOUS_LABEL: s.image}
                container = template.setdefault("ContainerSpec", {})
                container["Image"] = request.image
                container["Labels"] = {**(container.get("Labels") or {}), IMAGE_LABEL: request.image,
                                       VERSION_LABEL: image_version(request.image)}
                spec["UpdateConfig"], spec["RollbackConfig"] = update_cfg, rollback_cfg
                return spec

            self._update(service, deploy)
        if snap.replicas == 0:
            snap = self._snapshot(service)
            return f"{service} now runs {image} (0 replicas: nothing to start)", self._state_data(snap)

        failing = self._check_progress(image)

        def first_task(s: _Snapshot) -> str | None:
            # the old task it replaces stopped too (start-first overlaps them for a moment)
            if s.serving(image) >= 1 and s.serving() <= (s.replicas or 0):
                return ""
            return failing(s)

        snap = self._wait(service, first_task, self.settings.start_timeout,
                          f"a task of {image} to run and pass its healthcheck", progress)
        return (f"updating {service} to {image} (start-first, {self.settings.update_parallelism} at a time): "
                f"running {snap.running()}", self._state_data(snap))

    # -- PAUSE / RESUME ------------------------------------------------------------------------------
    @staticmethod
    def _lift_hold(spec: dict[str, Any]) -> bool:
        """Remove the hold from a spec (in place); True if there was one."""
        template = spec.get("TaskTemplate") or {}
        placement = template.get("Placement") or {}
        constraints = placement.get("Constraints") or []
        labels = spec.get("Labels") or {}
        held = HOLD_CONSTRAINT in constraints
        if held:
            rest = [c for c in constraints if c != HOLD_CONSTRAINT]
            if rest:
                placement["Constraints"] = rest
            else:
                placement.pop("Constraints", None)
            if not placement:
                template.pop("Placement", None)
        order = labels.pop(HOLD_ORDER_LABEL, None)
        if order and spec.get("UpdateConfig"):
            spec["UpdateConfig"]["Order"] = order
        labels.pop(HOLD_LABEL, None)
        return held

    def _pause(self, request: ActionRequest, service: str) -> tuple[str, dict[str, Any]]:
        snap = self._snapshot(service)
        if snap.held:
            return f"{service}: the update is already held", self._state_data(snap)
        if snap.state in SWARM_PAUSED:
            return f"{service}: Swarm already paused the update ({snap.message})", self._state_data(snap)
        if snap.state == "rollback_started":
            raise SwarmError("a rollback is in progress; Swarm cannot pause it and the guardian does not hold "
                             "a rollback")
        info = self._info(snap)
        if info is None or info.state not in IN_PROGRESS:
            return (f"{service}: no update in progress, nothing to pause (running {snap.running()})",
                    self._state_data(snap))

        def hold(s: _Snapshot) -> dict[str, Any] | None:
            if s.held:
                return None
            spec = copy.deepcopy(s.spec)
            placement = spec["TaskTemplate"].setdefault("Placement", {})
            placement["Constraints"] = [*(placement.get("Constraints") or []), HOLD_CONSTRAINT]
            labels = spec.setdefault("Labels", {})
            labels[HOLD_LABEL] = request.key
            update = spec.setdefault("UpdateConfig", {})
            if update.get("Order") != "start-first":  # stop-first would stop a task, then wait for nothing
                labels[HOLD_ORDER_LABEL] = update.get("Order") or "stop-first"
                update["Order"] = "start-first"
            return spec

        self._update(service, hold)
        snap = self._snapshot(service)
        return (f"holding the update of {service} at {snap.running()} (Swarm cannot pause on demand: the next "
                f"task is held unschedulable by the constraint {HOLD_CONSTRAINT})", self._state_data(snap))

    def _resume(self, request: ActionRequest, service: str,
                progress: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        snap = self._snapshot(service)
        if snap.held:
            def unhold(s: _Snapshot) -> dict[str, Any] | None:
                spec = copy.deepcopy(s.spec)
                return spec if self._lift_hold(spec) else None

            self._update(service, unhold)
            what = "lifted the hold"
        elif snap.state in SWARM_PAUSED:
            # Posting the spec again resets UpdateStatus: Swarm's updater continues with the dirty tasks
            self._update(service, lambda s: copy.deepcopy(s.spec) if s.state in SWARM_PAUSED else None)
            what = f"re-triggered the update Swarm paused ({snap.message})"
        else:
            snap = self._snapshot(service)
            state = f"update {snap.state}" if snap.state else "no update"
            return (f"{request.action.value}: nothing paused on {service} ({state}; Swarm advances by itself), "
                    f"running {snap.running()}", self._state_data(snap))
        paused_at = (snap.service.get("UpdateStatus") or {}).get("StartedAt")

        def moving(s: _Snapshot) -> str | None:
            if s.held:
                return None
            if s.state in SWARM_PAUSED and (s.service.get("UpdateStatus") or {}).get("StartedAt") != paused_at:
                return f"Swarm paused the update again ({s.message}): {self._why(s, s.image)}"
            if s.state in IN_PROGRESS or s.state in ("completed", "rollback_completed"):
                return ""
            return None

        snap = self._wait(service, moving, self.settings.wait_timeout, "Swarm to resume the update", progress)
        return f"{what} on {service}: update {snap.state}, running {snap.running()}", self._state_data(snap)

    # -- PROMOTE -----------------------------------------------------------------------------------
    def _promote(self, request: ActionRequest, service: str,
                 progress: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        snap = self._snapshot(service)
        image = normalise_image(request.image) if request.image else snap.image
        if snap.image != image:
            raise SwarmError(f"the service's spec runs {snap.image}, not {image}: nothing to promote "
                             f"(update {snap.state or 'none'})")
        if snap.state in SWARM_PAUSED and not snap.held:
            raise SwarmError(f"Swarm paused the update ({snap.message}): tasks of {image} fail: "
                             f"{self._why(snap, image)}; RESUME to push on, or ROLLBACK")
        if snap.held:
            def unhold(s: _Snapshot) -> dict[str, Any] | None:
                spec = copy.deepcopy(s.spec)
                return spec if self._lift_hold(spec) else None

            self._update(service, unhold)
        failing = self._check_progress(image)

        def complete(s: _Snapshot) -> str | None:
            if s.state in (None, "completed") and s.converged_on(image):
                return ""
            return failing(s)

        snap = self._wait(service, complete, self.settings.wait_timeout,
                          f"the update to {image} to complete", progress)
        return f"{service} runs {image} on all {snap.serving()} tasks (update completed)", self._state_data(snap)

    # -- ROLLBACK ----------------------------------------------------------------------------------
    def _rollback(self, request: ActionRequest, service: str, progress: list[dict[str, Any]], *,
                  native_only: bool) -> tuple[str, dict[str, Any]]:
        snap = self._snapshot(service)
        kept = self._previous.get((snap.name, request.rollout_id))
        if native_only:
            target = snap.previous_image
        elif kept is not None:
            target = _image_of({"TaskTemplate": kept})
        elif snap.labels.get(ROLLOUT_LABEL) == request.rollout_id and snap.labels.get(PREVIOUS_LABEL):
            target = normalise_image(snap.labels[PREVIOUS_LABEL])  # kept in the service: survives a restart
        else:
            return (f"nothing to roll back: rollout {request.rollout_id} never changed {service} (it runs "
                    f"{snap.running()})", {**self._state_data(snap), "previous_image": snap.image})
        if target is None:
            raise SwarmError("no previous version to roll back to: Swarm keeps no PreviousSpec for this service")
        if snap.image == target and not snap.held and snap.converged_on(target) and snap.state not in IN_PROGRESS:
            return (f"nothing to roll back: {service} already runs {target}",
                    {**self._state_data(snap), "previous_image": target})

        native = snap.previous_image == target and not snap.held and snap.image != target
        if native:
            self._update(service, lambda s: copy.deepcopy(s.spec) if s.previous_image == target else None,
                         rollback=True)
            how = "Swarm rollback (rollback=previous)"
        else:
            _, rollback_cfg = self._configs()

            def back(s: _Snapshot) -> dict[str, Any] | None:
                spec = copy.deepcopy(s.spec)
                self._lift_hold(spec)
                if kept is not None:
                    template = copy.deepcopy(kept)
                    template["ForceUpdate"] = spec["TaskTemplate"].get("ForceUpdate", 0)
                    spec["TaskTemplate"] = template
                else:
                    container = spec["TaskTemplate"].setdefault("ContainerSpec", {})
                    container["Image"] = target
                    labels = container.get("Labels") or {}
                    if IMAGE_LABEL in labels or VERSION_LABEL in labels:
                        container["Labels"] = {**labels, IMAGE_LABEL: target, VERSION_LABEL: image_version(target)}
                spec["UpdateConfig"] = dict(rollback_cfg)
                return spec

            self._update(service, back)
            how = "update back to the previous template"

        def rolled_back(s: _Snapshot) -> str | None:
            if s.state in SWARM_PAUSED:
                return f"the rollback paused ({s.message}): tasks of {target} fail: {self._why(s, target)}"
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
        snap = self._snapshot(service)
        if snap.replicas is None:
            raise SwarmError("a global service runs one task per node and cannot be scaled")
        if snap.held:
            raise SwarmError("the update is held (PAUSE): new tasks could not be scheduled; RESUME first")
        want = self._scaled.get(request.key)
        if want is None:
            want = max(1, snap.replicas + request.replicas)
            self._scaled[request.key] = want
            while len(self._scaled) > MAX_REMEMBERED_KEYS:
                self._scaled.popitem(last=False)

        def scale(s: _Snapshot) -> dict[str, Any] | None:
            if s.replicas == want:
                return None
            spec = copy.deepcopy(s.spec)
            spec["Mode"] = {"Replicated": {"Replicas": want}}
            return spec

        before = snap.replicas
        self._update(service, scale)

        def converged(s: _Snapshot) -> str | None:
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
            snap = self._snapshot(service)
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
        elif a is Action.PROMOTE:
            if snap.image != image or not snap.converged_on(image):
                problem = f"expected {snap.replicas} tasks of {image} only"
        elif a is Action.ROLLBACK:
            last = self._done.get(request.key)
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
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SWARM_DEPS = {"docker_client": "client", "docker_url": "base_url", "swarm_settings": "settings"}


def from_target(rest: str, **deps: Any) -> SwarmActuator:
    """Registry factory: `rest` is '' or the service name; deps `docker_client`, `docker_url`,
    `swarm_settings` are used, every other one ignored."""
    name = rest[2:] if rest.startswith("//") else rest
    return SwarmActuator(name or None, **{_SWARM_DEPS[k]: v for k, v in deps.items() if k in _SWARM_DEPS})


__all__ = ["SwarmActuator", "SwarmError", "SwarmSettings", "TaskInfo", "UpdateInfo", "from_target",
           "image_version", "normalise_image", "validate_target"]
