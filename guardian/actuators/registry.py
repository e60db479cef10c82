"""Target URI -> actuator, through an explicit table of names (as Argo Rollouts' metricproviders.go
and Flagger's provider factory do).

Why a table and not plugins or import-by-name: the set of things that may move production traffic
should be readable in one place, and a target that names nothing known must fail loudly, listing
what is known, instead of importing code named by a user-supplied string.

Targets: `noop`, `noop:`, `noop://anything`; `webhook+http://host:port/path`, `webhook+https://...`;
`docker:...`, `nginx:...`, `swarm:NAME`, `kubernetes:NAMESPACE/NAME` (see each module).
The name is the text before the first `+` or `:` (or the whole target), compared in lower case.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from guardian.actuators import Actuator
from guardian.actuators.noop import NoopActuator
from guardian.actuators.webhook import WebhookActuator, redact_userinfo, validate_url
from guardian.errors import ActuatorError, UnknownActuator

Factory = Callable[..., Actuator]  # factory(rest, **deps) -> Actuator
Validator = Callable[[str], "str | None"]  # validate(rest) -> problem, or None

_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_SEPARATOR = re.compile(r"[+:]")


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    validate: Validator | None


_REGISTRY: dict[str, _Entry] = {}


def register(
    name: str, factory: Factory, *, validate: Validator | None = None, replace: bool = False
) -> None:
    """Add an actuator. `factory(rest, **deps)` gets the target after the name and its separator, and
    every dependency passed to `create`: it must ignore the ones it does not use, because the caller
    does not know which actuator a user's target picks. `validate(rest)` checks without building."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"actuator name {name!r} must match {_NAME.pattern}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"actuator {name!r} is already registered")
    _REGISTRY[name] = _Entry(factory, validate)


def names() -> list[str]:
    return sorted(_REGISTRY)


def parse_target(uri: str) -> tuple[str, str]:
    """Split a target at its first `+` or `:`.

    `webhook+http://h/p` -> ("webhook", "http://h/p"); `noop://x` -> ("noop", "//x"); `noop` -> ("noop", "").
    """
    text = uri.strip()
    match = _SEPARATOR.search(text)
    if match is None:
        return text.lower(), ""
    return text[: match.start()].lower(), text[match.end():]


def _resolve(uri: str) -> tuple[_Entry, str]:
    known = ", ".join(names())
    if not isinstance(uri, str) or not uri.strip():
        raise UnknownActuator(f"empty actuator target; known: {known}")
    name, rest = parse_target(uri)
    shown = redact_userinfo(uri.strip())  # the target may carry user:pass@
    entry = _REGISTRY.get(name)
    if entry is None:
        raise UnknownActuator(f"unknown actuator {name!r} in target {shown!r}; known: {known}")
    problem = entry.validate(rest) if entry.validate else None
    if problem:
        raise ActuatorError(f"invalid {name} target {shown!r}: {problem}")
    return entry, rest


def validate_target(uri: str) -> str | None:
    """The reason `uri` is not a usable target (for a 422), or None. Builds nothing, opens nothing."""
    try:
        _resolve(uri)
    except ActuatorError as exc:
        return str(exc)
    return None


def create(uri: str, **deps: Any) -> Actuator:
    """Build the actuator `uri` names. Raises UnknownActuator for an unknown name, ActuatorError for
    a known name with a bad rest (e.g. a webhook URL without a host)."""
    entry, rest = _resolve(uri)
    return entry.factory(rest, **deps)


def _noop(rest: str, **deps: Any) -> NoopActuator:
    return NoopActuator()


_WEBHOOK_DEPS = frozenset({"timeout", "retries", "backoff", "headers", "transport", "sleep"})


def _webhook(rest: str, **deps: Any) -> WebhookActuator:
    return WebhookActuator(rest, **{k: v for k, v in deps.items() if k in _WEBHOOK_DEPS})


register("noop", _noop)
register("webhook", _webhook, validate=validate_url)


def _docker(rest: str, **deps: Any) -> Actuator:
    from guardian.actuators import docker as docker_actuator  # the Docker SDK is imported only when used

    return docker_actuator.create(rest, **deps)


def _docker_validate(rest: str) -> str | None:
    from guardian.actuators import docker as docker_actuator

    return docker_actuator.validate(rest)


register("docker", _docker, validate=_docker_validate)


def _nginx(rest: str, **deps: Any) -> Actuator:
    from guardian.actuators.nginx import NginxActuator

    return NginxActuator.from_target(rest, **deps)  # takes timeout, nginx_binary, run, http; ignores the rest


def _nginx_validate(rest: str) -> str | None:
    from guardian.actuators.nginx import validate_target as nginx_validate

    return nginx_validate(rest)


register("nginx", _nginx, validate=_nginx_validate)


def _swarm(rest: str, **deps: Any) -> Actuator:
    from guardian.actuators.swarm import from_target

    return from_target(rest, **deps)  # takes docker_client, docker_url, swarm_settings; ignores the rest


def _swarm_validate(rest: str) -> str | None:
    from guardian.actuators.swarm import validate_target as swarm_validate

    return swarm_validate(rest)


register("swarm", _swarm, validate=_swarm_validate)


def _kubernetes(rest: str, **deps: Any) -> Actuator:
    from guardian.actuators.kubernetes import from_target  # the kubernetes client is imported only when used

    return from_target(rest, **deps)  # takes kube_connection, kube_client; ignores the rest


def _kubernetes_validate(rest: str) -> str | None:
    from guardian.actuators.kubernetes import validate_target as kube_validate

    return kube_validate(rest)


register("kubernetes", _kubernetes, validate=_kubernetes_validate)
