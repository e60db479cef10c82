"""Target URI -> actuator, through an explicit table of names (as Argo Rollouts' metricproviders.go
and Flagger's provider factory do).

Why a table and not plugins or import-by-name: the set of things that may move production traffic
should be readable in one place, and a target that names nothing known must fail loudly, listing
what is known, instead of importing code named by a user-supplied string.

Targets: `noop`, `noop:`, `noop://anything`; `webhook+http://host:port/path`, `webhook+https://...`;
`docker:...`, `nginx:...`, `swarm:NAME`, `kubernetes:NAMESPACE/NAME[?router=gateway:NS/HTTPROUTE]` (see each
module).
The name is the text before the first `+` or `:` (or the whole target), compared in lower case.
Each entry builds its actuator from the rest of the target and the `ActuatorDeps`.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from guardian.actuators.base import Actuator
from guardian.actuators.deps import ActuatorDeps
from guardian.actuators.noop import NoopActuator
from guardian.actuators.targets import parse_target
from guardian.actuators.webhook import WebhookActuator, redact_userinfo, validate_url
from guardian.errors import ActuatorError, UnknownActuator

Factory = Callable[[str, ActuatorDeps], Actuator]  # factory(rest, deps) -> Actuator
Validator = Callable[[str], "str | None"]  # validate(rest) -> problem, or None

_NAME = re.compile(r"[a-z][a-z0-9_-]*")

__all__ = ["Factory", "Validator", "create", "names", "parse_target", "register", "validate_target"]


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    validate: Validator | None


_REGISTRY: dict[str, _Entry] = {}


def register(
    name: str, factory: Callable[..., Actuator], *, validate: Validator | None = None, replace: bool = False
) -> None:
    """Add an actuator. `factory(rest, deps)` gets the target after the name and its separator, and the
    ActuatorDeps given to `create`, of which it takes what it needs. `validate(rest)` checks without
    building. A factory written as `factory(rest, **deps)` (before ActuatorDeps) gets `deps.extra`: the
    dependencies given by a name ActuatorDeps has no field for."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"actuator name {name!r} must match {_NAME.pattern}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"actuator {name!r} is already registered")
    _REGISTRY[name] = _Entry(_typed(factory), validate)


def _typed(factory: Callable[..., Actuator]) -> Factory:
    """`factory` as factory(rest, deps): one that takes `rest` and **keywords gets `deps.extra` as keywords."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a builtin): called as factory(rest, deps)
        return factory
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) == 1 and any(p.kind is p.VAR_KEYWORD for p in params):
        return lambda rest, deps: factory(rest, **deps.extra)
    return factory


def names() -> list[str]:
    return sorted(_REGISTRY)


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


def create(uri: str, deps: ActuatorDeps | None = None, /, **keywords: Any) -> Actuator:
    """Build the actuator `uri` names with `deps` (or the same given as keywords by their names of before:
    see `ActuatorDeps.from_keywords`). Raises UnknownActuator for an unknown name, ActuatorError for a
    known name with a bad rest (e.g. a webhook URL without a host)."""
    if deps is not None and keywords:
        raise TypeError("create: give an ActuatorDeps or keywords, not both")
    entry, rest = _resolve(uri)
    return entry.factory(rest, deps if deps is not None else ActuatorDeps.from_keywords(**keywords))


# -- the table ------------------------------------------------------------------------------------------------
def _noop(rest: str, deps: ActuatorDeps) -> NoopActuator:
    return NoopActuator()


def _webhook(rest: str, deps: ActuatorDeps) -> WebhookActuator:
    o = deps.webhook
    return WebhookActuator(rest, timeout=o.timeout, retries=o.retries, backoff=o.backoff, headers=o.headers,
                           transport=o.transport, sleep=o.sleep)


def _docker(rest: str, deps: ActuatorDeps) -> Actuator:
    from guardian.actuators import docker  # the Docker SDK is imported only when used

    return docker.from_target(rest, client=deps.docker_client)


def _docker_validate(rest: str) -> str | None:
    from guardian.actuators import docker

    return docker.validate_target(rest)


def _nginx(rest: str, deps: ActuatorDeps) -> Actuator:
    from guardian.actuators.nginx import NginxActuator

    return NginxActuator.from_target(rest, deps.nginx)


def _nginx_validate(rest: str) -> str | None:
    from guardian.actuators.nginx import validate_target

    return validate_target(rest)


def _swarm(rest: str, deps: ActuatorDeps) -> Actuator:
    from guardian.actuators.swarm import SwarmActuator, target_service  # the Docker SDK is imported only when used

    return SwarmActuator(target_service(rest), client=deps.docker_client, base_url=deps.docker_url,
                         settings=deps.swarm)


def _swarm_validate(rest: str) -> str | None:
    from guardian.actuators.swarm import validate_target

    return validate_target(rest)


def _kubernetes(rest: str, deps: ActuatorDeps) -> Actuator:
    from guardian.actuators.kube_gateway import from_target  # the kubernetes client is imported only when used

    return from_target(rest, connection=deps.kube_connection, api_client=deps.kube_client)


def _kubernetes_validate(rest: str) -> str | None:
    from guardian.actuators.kube_target import validate_target

    return validate_target(rest)


register("noop", _noop)
register("webhook", _webhook, validate=validate_url)
register("docker", _docker, validate=_docker_validate)
register("nginx", _nginx, validate=_nginx_validate)
register("swarm", _swarm, validate=_swarm_validate)
register("kubernetes", _kubernetes, validate=_kubernetes_validate)
