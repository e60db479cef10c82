"""A Docker engine's Swarm API, through docker-py's low-level client: `POST /services/{id}/update?version=N`
with a whole spec, as `docker service update` does, because `APIClient.update_service` can neither send a
spec as read nor ask for `rollback=previous`. Every failure is a SwarmError saying what to do about it."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import docker
import requests

from guardian.actuators.docker_engine import API_VERSION, ENGINE_ERRORS
from guardian.actuators.swarm.spec import VERSION_LABEL
from guardian.actuators.swarm.state import Snapshot, TaskInfo
from guardian.errors import ActuatorError
from guardian.images import image_version, normalise_image


class SwarmError(ActuatorError):
    """An action or query could not be carried out; the message says why, `data` what was running."""

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.data = data or {}


class SwarmClient:
    """`client`: a DockerClient to use; else one is made on first use for `base_url` (default: DOCKER_HOST /
    the local socket), and closed by `close`."""

    def __init__(self, client: docker.DockerClient | None = None, base_url: str | None = None) -> None:
        self._client = client
        self._owns_client = client is None
        self._base_url = base_url
        self._nodes: dict[str, str] = {}  # node ID -> hostname

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
                raise self.engine_error(e) from e
        return self._client.api

    def where(self) -> str:
        return self._base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def engine_error(self, exc: Exception, service: str | None = None) -> SwarmError:
        """A Docker error as a reason a person can act on."""
        text = str(getattr(exc, "explanation", None) or exc)
        if isinstance(exc, docker.errors.NotFound) and service is not None:
            return SwarmError(f"service {service!r} not found on this swarm")
        if isinstance(exc, docker.errors.APIError):
            if "not a swarm manager" in text or "not part of a swarm" in text:
                return SwarmError(f"the Docker engine at {self.where()} is not a swarm manager: {text} "
                                  "(run `docker swarm init` or point the actuator at a manager)")
            return SwarmError(f"Docker engine refused: {text}")
        if isinstance(exc, requests.exceptions.ConnectionError) or "connection" in text.lower():
            return SwarmError(f"Docker daemon unreachable at {self.where()}: {text}")
        return SwarmError(f"Docker engine: {type(exc).__name__}: {text}")

    def call(self, fn: Callable[[], Any], service: str | None = None) -> Any:
        try:
            return fn()
        except ENGINE_ERRORS as e:
            raise self.engine_error(e, service) from e

    def inspect(self, service: str) -> dict[str, Any]:
        api = self.api
        return self.call(lambda: api._result(api._get(api._url("/services/{0}", service),
                                                          params={"insertDefaults": False}), True), service)

    def tasks(self, service_id: str) -> list[TaskInfo]:
        api = self.api
        raw = self.call(lambda: api.tasks(filters={"service": service_id}))
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

    def snapshot(self, service: str) -> Snapshot:
        """One look at the service and its tasks."""
        svc = self.inspect(service)
        return Snapshot(svc, self.tasks(svc["ID"]))

    def post(self, snap: Snapshot, spec: dict[str, Any], *, rollback: bool = False) -> None:
        """`POST /services/{id}/update?version=N[&rollback=previous]` with a whole spec."""
        api = self.api
        params: dict[str, Any] = {"version": snap.service["Version"]["Index"]}
        if rollback:
            params["rollback"] = "previous"

        def post() -> Any:
            return api._result(api._post_json(api._url("/services/{0}/update", snap.service["ID"]), data=spec,
                                              params=params), True)

        self.call(post, snap.name)

    def update(self, service: str, change: Callable[[Snapshot], dict[str, Any] | None], *,
               rollback: bool = False) -> bool:
        """Read the spec, change it, post it; again (at most 3 times) if someone else updated in between.
        `change` returns the spec to post, or None for nothing to do. True if something was posted."""
        for attempt in range(3):
            snap = self.snapshot(service)
            spec = change(snap)
            if spec is None:
                return False
            try:
                self.post(snap, spec, rollback=rollback)
                return True
            except SwarmError as e:
                if "out of sequence" not in str(e) or attempt == 2:
                    raise
        return False  # pragma: no cover - the loop returns or raises

    def image_present(self, image: str) -> bool:
        api = self.api
        try:
            api.inspect_image(image)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.NotFound:
            return False
        except ENGINE_ERRORS as e:
            raise self.engine_error(e) from e

    def why(self, snap: Snapshot, image: str) -> str:
        """Why the tasks of `image` do not run: Swarm's task errors, and the containers' own story (Swarm
        reports a task stopped for failing its healthcheck as merely "complete")."""
        since = (snap.service.get("UpdateStatus") or {}).get("StartedAt")
        failed = snap.failures(image, since) or snap.failures(image)
        text = "; ".join(dict.fromkeys(f"task {t.id[:12]} {t.state}: {self.task_error(t)}" for t in failed[:3]))
        pending = snap.pending()
        if pending:
            text = "; ".join(filter(None, [text, *pending[:2]]))
        return text or "no task error reported"

    def task_error(self, task: TaskInfo) -> str:
        """What happened to a task: Swarm's error, and its container's health, exit code or end."""
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

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None
