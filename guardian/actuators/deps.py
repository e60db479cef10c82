"""What the actuators are built with, beside their target: one typed object, `ActuatorDeps`.

The registry hands it to every factory (a user's target picks the actuator, so the caller cannot know
which one it builds); each takes what is its own. Each actuator declares its own settings (WebhookOptions,
NginxOptions, SwarmSettings, KubeConnection); this gathers them, and `ActuatorDeps.from_settings` is the
one place the guardian's Settings become actuator settings.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from guardian.actuators.nginx.actuator import NginxOptions
from guardian.actuators.webhook import WebhookOptions

if TYPE_CHECKING:  # their modules import the Docker SDK or name the kubernetes client: only when used
    import docker

    from guardian.actuators.kubernetes import KubeConnection
    from guardian.actuators.swarm.spec import SwarmSettings


@dataclass(frozen=True)
class ActuatorDeps:
    webhook: WebhookOptions = WebhookOptions()
    nginx: NginxOptions = NginxOptions()
    docker_client: docker.DockerClient | None = None  # docker, swarm (default: DOCKER_HOST, the local socket)
    docker_url: str | None = None  # swarm: the engine to make a client for, when no docker_client is given
    swarm: SwarmSettings | None = None  # swarm: update configuration and waits (default SwarmSettings())
    kube_connection: KubeConnection | None = None  # kubernetes: where the API server is (default KubeConnection())
    kube_client: Any = None  # kubernetes: an ApiClient to use instead of making one
    extra: Mapping[str, Any] = field(default_factory=dict)  # for actuators registered by others, by name

    @classmethod
    def from_settings(cls, settings: Any) -> ActuatorDeps:
        """The dependencies the guardian's Settings describe (today: the Kubernetes connection)."""
        from guardian.actuators.kubernetes import KubeConnection  # a dataclass: the client is imported when used

        return cls(kube_connection=KubeConnection.from_settings(settings))

    @classmethod
    def from_keywords(cls, **deps: Any) -> ActuatorDeps:
        """The same from the keyword names used before ActuatorDeps (`registry.create(uri, timeout=2)`):
        `timeout` (webhook and nginx), `retries`, `backoff`, `headers`, `transport`, `sleep`,
        `nginx_binary`, `run`, `http`, `docker_client`, `docker_url`, `swarm_settings`, `kube_connection`,
        `kube_client`; any other name goes to `extra`."""
        given = dict(deps)

        def take(names: Mapping[str, str]) -> dict[str, Any]:
            return {field_name: given.pop(name) for name, field_name in names.items() if name in given}

        timeout = {"timeout": given.pop("timeout")} if "timeout" in given else {}
        return cls(webhook=WebhookOptions(**timeout, **take(_WEBHOOK_KEYWORDS)),
                   nginx=NginxOptions(**timeout, **take(_NGINX_KEYWORDS)), **take(_OWN_KEYWORDS), extra=given)


# the keyword names of before ActuatorDeps -> the field each fills
_WEBHOOK_KEYWORDS = {"retries": "retries", "backoff": "backoff", "headers": "headers", "transport": "transport",
                     "sleep": "sleep"}
_NGINX_KEYWORDS = {"nginx_binary": "binary", "run": "run", "http": "http"}
_OWN_KEYWORDS = {"docker_client": "docker_client", "docker_url": "docker_url", "swarm_settings": "swarm",
                 "kube_connection": "kube_connection", "kube_client": "kube_client"}
