"""Docker containers of one service: find them, clone their configuration onto a new image, start
and health-gate a replica, drain and remove one. The building blocks of the `docker` actuator.

A service's containers are found by label: `guardian.service=NAME`, or Compose's
`com.docker.compose.service=NAME` (with `com.docker.compose.project=P` when a project is given).
What a container *is* lives in Docker itself, so a guardian that restarts rediscovers everything:

    guardian.service   the service                 guardian.rollout   the rollout that started it
    guardian.image     the image it was asked to run (the rollout's version)

A new replica takes the service's configuration from a running one — environment, command,
labels, networks (with their aliases), mounts, restart policy — *minus what came from the old
image* (its own ENV, CMD, ENTRYPOINT, HEALTHCHECK and labels), so the new image's own defaults win.
Its application port is published on 127.0.0.1 at a free port (a fixed host port would clash with
the running replica); that address is what nginx and Prometheus use.
"""
from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.models.containers import Container

from guardian.errors import ActuatorError

SERVICE_LABEL = "guardian.service"
ROLLOUT_LABEL = "guardian.rollout"
IMAGE_LABEL = "guardian.image"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_PROJECT = "com.docker.compose.project"
_DROP_LABELS = ("com.docker.compose.container-number", "com.docker.compose.config-hash",
                "com.docker.compose.oneoff")


class ContainerError(ActuatorError):
    """A container could not be started, health-gated or removed; the message says why."""


@dataclass(frozen=True)
class Replica:
    id: str
    name: str
    image: str  # what it was asked to run (guardian.image label, else its config's image)
    address: str | None  # 127.0.0.1:PORT of the app port, None when it is not published
    rollout: str | None
    status: str  # running, exited, ...
    health: str | None  # healthy, unhealthy, starting, or None without a healthcheck
    labels: dict[str, str] = field(default_factory=dict)


class Containers:
    """The Docker side of one engine: `client` is a docker.DockerClient (injected for tests)."""

    def __init__(self, client: docker.DockerClient, *, project: str | None = None, port: int | None = None,
                 health_timeout: float = 60.0, drain_seconds: float = 1.0, stop_timeout: int = 10,
                 sleep: Callable[[float], Any] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.client, self.project, self.port = client, project, port
        self.health_timeout, self.drain_seconds, self.stop_timeout = health_timeout, drain_seconds, stop_timeout
        self._sleep, self._clock = sleep, clock

    # -- finding ------------------------------------------------------------------------------------
    def replicas(self, service: str) -> list[Replica]:
        """The service's running containers, oldest first."""
        found: dict[str, Container] = {}
        filters = [{"label": f"{SERVICE_LABEL}={service}"}]
        compose = [f"{COMPOSE_SERVICE}={service}"] + ([f"{COMPOSE_PROJECT}={self.project}"] if self.project else [])
        filters.append({"label": compose})
        for f in filters:
            for c in self.client.containers.list(filters={**f, "status": "running"}):
                found[c.id] = c
        ordered = sorted(found.values(), key=lambda c: c.attrs.get("Created", ""))
        return [self._replica(c) for c in ordered]

    def logs(self, container_id: str, *, since: float, tail: int = 5000, max_bytes: int = 2_000_000) -> bytes:
        """The container's recent output (stdout and stderr), at most `tail` lines and `max_bytes`
        (the newest kept). Bytes as the program wrote them: decoding is the reader's business."""
        data = self.client.containers.get(container_id).logs(stdout=True, stderr=True, since=int(since), tail=tail)
        return data[-max_bytes:]

    def _replica(self, c: Container) -> Replica:
        labels = c.labels or {}
        health = (c.attrs.get("State", {}).get("Health") or {}).get("Status")
        return Replica(id=c.id, name=c.name, image=labels.get(IMAGE_LABEL) or c.attrs["Config"]["Image"],
                       address=self.address_of(c), rollout=labels.get(ROLLOUT_LABEL), status=c.status, health=health,
                       labels=dict(labels))

    def app_port(self, c: Container) -> str | None:
        """The container port the app listens on: `port` if given, else the first exposed one."""
        if self.port:
            return f"{self.port}/tcp"
        exposed = sorted(c.attrs.get("Config", {}).get("ExposedPorts") or {})
        return exposed[0] if exposed else None

    def address_of(self, c: Container) -> str | None:
        port = self.app_port(c)
        bindings = ((c.attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(port) if port else None
        for b in bindings or []:
            if b.get("HostIp") in ("127.0.0.1", "0.0.0.0", "") and b.get("HostPort"):
                return f"127.0.0.1:{b['HostPort']}"
        return None

    # -- starting -----------------------------------------------------------------------------------
    def clone(self, template_id: str, image: str, *, service: str, rollout: str,
              extra_labels: dict[str, str] | None = None) -> Replica:
        """Start one replica of `image` configured like container `template_id`, and wait until it is
        healthy (or running, without a healthcheck). On any failure it is removed and ContainerError
        raised: nothing is left behind."""
        try:
            template = self.client.containers.get(template_id)
            new_image = self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise ContainerError(f"image {image!r} is not on this Docker host (no registry is used: build or "
                                 "load it first)") from None
        except docker.errors.NotFound as e:
            raise ContainerError(f"template container {template_id[:12]} is gone: {e.explanation}") from None
        kwargs = self._config_like(template, new_image, service=service, rollout=rollout, image=image)
        kwargs["labels"] |= extra_labels or {}
        name = f"{service}-{rollout[:8]}-{uuid.uuid4().hex[:6]}"
        container = None
        try:
            container = self.client.containers.create(image, name=name, detach=True, **kwargs)
            for net, aliases in self._networks(template).items():
                self.client.networks.get(net).connect(container, aliases=aliases or None)
            container.start()
            self._wait_healthy(container)
            container.reload()
            return self._replica(container)
        except docker.errors.APIError as e:
            self._discard(container)
            raise ContainerError(f"could not start {image} for {service}: {e.explanation or e}") from None
        except ContainerError:
            self._discard(container)
            raise

    def _config_like(self, template: Container, new_image: Any, *, service: str, rollout: str,
                     image: str) -> dict[str, Any]:
        cfg, host = template.attrs["Config"], template.attrs["HostConfig"]
        old_cfg = self._image_config(cfg.get("Image"))
        env = [e for e in cfg.get("Env") or [] if e not in (old_cfg.get("Env") or [])]
        labels = {k: v for k, v in (cfg.get("Labels") or {}).items()
                  if (old_cfg.get("Labels") or {}).get(k) != v and k not in _DROP_LABELS
                  and not k.startswith("guardian.")}
        labels |= {SERVICE_LABEL: service, ROLLOUT_LABEL: rollout, IMAGE_LABEL: image}
        kwargs: dict[str, Any] = {"environment": env, "labels": labels}
        if cfg.get("Cmd") and cfg.get("Cmd") != old_cfg.get("Cmd"):
            kwargs["command"] = cfg["Cmd"]  # the user's own command, not the old image's default
        if cfg.get("Entrypoint") and cfg.get("Entrypoint") != old_cfg.get("Entrypoint"):
            kwargs["entrypoint"] = cfg["Entrypoint"]
        if cfg.get("Healthcheck") and cfg.get("Healthcheck") != old_cfg.get("Healthcheck"):
            kwargs["healthcheck"] = cfg["Healthcheck"]
        port = self.app_port(template) or next(iter(new_image.attrs["Config"].get("ExposedPorts") or {}), None)
        ports = {p: ("127.0.0.1", None) for p in (host.get("PortBindings") or {})}
        if port:
            ports[port] = ("127.0.0.1", None)  # a free loopback port: a fixed one would clash
        kwargs["ports"] = ports
        mounts = [m for m in template.attrs.get("Mounts") or [] if m.get("Type") in ("bind", "volume")]
        if mounts:
            kwargs["volumes"] = {(m.get("Name") or m["Source"]): {"bind": m["Destination"],
                                                                   "mode": "rw" if m.get("RW") else "ro"}
                                 for m in mounts}
        if (policy := host.get("RestartPolicy")) and policy.get("Name"):
            kwargs["restart_policy"] = policy
        networks = list(self._networks(template))
        kwargs["network"] = networks[0] if networks else None
        return kwargs

    def _image_config(self, ref: str | None) -> dict[str, Any]:
        try:
            return self.client.images.get(ref).attrs.get("Config") or {} if ref else {}
        except docker.errors.ImageNotFound:
            return {}

    @staticmethod
    def _networks(c: Container) -> dict[str, list[str]]:
        nets = (c.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        return {name: [a for a in (n.get("Aliases") or []) if not c.id.startswith(a)] for name, n in nets.items()}

    def wait_healthy(self, container_id: str) -> None:
        """Wait until a running container is healthy (ContainerError if it exits or gets unhealthy)."""
        self._wait_healthy(self.client.containers.get(container_id))

    def _wait_healthy(self, c: Container) -> None:
        deadline = self._clock() + self.health_timeout
        has_check = bool(c.attrs.get("Config", {}).get("Healthcheck")) or bool(
            self._image_config(c.attrs["Config"].get("Image")).get("Healthcheck"))
        while True:
            c.reload()
            state = c.attrs["State"]
            if state.get("Status") in ("exited", "dead"):
                logs = c.logs(tail=5).decode("utf-8", "replace").strip()
                raise ContainerError(f"container {c.name} exited with code {state.get('ExitCode')}"
                                     + (f": {logs}" if logs else ""))
            health = (state.get("Health") or {}).get("Status")
            if health == "healthy" or (not has_check and state.get("Running")):
                return
            if health == "unhealthy":
                raise ContainerError(f"container {c.name} is unhealthy: {_last_probe(state)}")
            if self._clock() > deadline:
                raise ContainerError(f"container {c.name} did not become healthy within {self.health_timeout:g}s "
                                     f"(health: {health or 'none'}; {_last_probe(state)})")
            self._sleep(0.2)

    # -- stopping -----------------------------------------------------------------------------------
    def remove(self, container_id: str) -> None:
        """Stop (SIGTERM, then SIGKILL after stop_timeout) and remove; a container already gone is fine."""
        try:
            c = self.client.containers.get(container_id)
        except docker.errors.NotFound:
            return
        try:
            c.stop(timeout=self.stop_timeout)
            c.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            raise ContainerError(f"could not remove {c.name}: {e.explanation or e}") from None

    def remove_leftovers(self, service: str) -> list[str]:
        """Remove the service's containers the guardian started (guardian.rollout label) that are not
        running: created, exited or dead. A guardian killed between a container's create and start,
        or between its stop and remove, leaves one; nothing lists them again. Returns their names."""
        gone = []
        for c in self.client.containers.list(all=True, filters={"label": [f"{SERVICE_LABEL}={service}",
                                                                          ROLLOUT_LABEL]}):
            if c.status in ("created", "exited", "dead"):
                with contextlib.suppress(docker.errors.NotFound):
                    c.remove(force=True)
                    gone.append(c.name)
        return gone

    def drain_pause(self) -> None:
        """After a replica left the traffic router: let its in-flight requests finish."""
        self._sleep(self.drain_seconds)

    def _discard(self, c: Container | None) -> None:
        if c is None:
            return
        with contextlib.suppress(docker.errors.APIError):
            c.remove(force=True)


def _last_probe(state: dict[str, Any]) -> str:
    log = (state.get("Health") or {}).get("Log") or []
    if not log:
        return "no probe result yet"
    last = log[-1]
    return f"last probe exit {last.get('ExitCode')}: {str(last.get('Output', '')).strip()[:200] or '(no output)'}"
