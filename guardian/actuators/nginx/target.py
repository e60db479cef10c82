"""`nginx:` targets: which file to write, which nginx to reload, which servers per track.

    nginx:/etc/nginx/guardian/app.conf?conf=/etc/nginx/nginx.conf&upstream=app
         &canary=127.0.0.1:8002&stable=127.0.0.1:8001,127.0.0.1:8003&status=9145[&timeout=5]

A target may come from an API user: every part is checked before anything is built (absolute paths
without '..', the upstream file not nginx.conf itself, addresses that cannot break out of nginx's syntax).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from guardian.actuators.nginx.upstream import CANARY, NAME, STABLE
from guardian.actuators.targets import target_body
from guardian.errors import ActuatorError

_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?):([0-9]{1,5})")
_UNIX = re.compile(r"unix:/[A-Za-z0-9._/-]+")
TARGET_HINT = ("write nginx:/path/to/upstream.conf?conf=/path/to/nginx.conf&upstream=NAME"
               "&canary=HOST:PORT[,HOST:PORT...]&stable=HOST:PORT[,HOST:PORT...][&status=PORT][&timeout=SECONDS]")
_REQUIRED = ("conf", "upstream", "canary", "stable")
_OPTIONAL = ("status", "timeout")


@dataclass(frozen=True)
class NginxTarget:
    """A parsed `nginx:` target: which file to write, which nginx to reload, which servers per track."""

    upstream_file: str
    conf_file: str
    upstream: str
    canary: tuple[str, ...]
    stable: tuple[str, ...]
    status_port: int | None = None
    timeout: float | None = None


def address_problem(address: str) -> str | None:
    """Why `address` cannot be an nginx upstream server here, or None. HOST:PORT ([IPv6]:PORT) with an
    explicit port 1..65535, or unix:/absolute/path."""
    if _UNIX.fullmatch(address):
        return None
    match = _HOST_PORT.fullmatch(address)
    if match is None:
        return f"{address!r} is not HOST:PORT, [IPv6]:PORT or unix:/path"
    if not 0 < int(match.group(2)) < 65536:
        return f"{address!r} has port {match.group(2)}, not 1..65535"
    return None


def _path_problem(name: str, value: str) -> str | None:
    if not value.startswith("/"):
        return f"{name} must be an absolute path, not {value!r}"
    if "\0" in value or any(part == ".." for part in value.split("/")):
        return f"{name} {value!r} must not contain '..' or NUL"
    return None


def parse_nginx_target(rest: str) -> NginxTarget:
    """The part of a target after `nginx:`. Raises ActuatorError naming the bad part."""
    if not rest:
        raise ActuatorError(f"no upstream file; {TARGET_HINT}")
    if any(c.isspace() for c in rest):
        raise ActuatorError("the target contains whitespace")
    path, _, query = rest.partition("?")
    path = target_body(path)  # nginx:///etc/nginx/app.conf, URL style
    problem = _path_problem("the upstream file", path)
    if problem:
        raise ActuatorError(f"{problem}; {TARGET_HINT}")
    if not path.endswith(".conf"):
        raise ActuatorError(f"the upstream file must end in .conf (nginx includes it), not {path!r}")
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _REQUIRED + _OPTIONAL:
            raise ActuatorError(f"unknown parameter {key!r}; known: {', '.join(_REQUIRED + _OPTIONAL)}")
        if key in params:
            raise ActuatorError(f"parameter {key!r} is given twice")
        params[key] = value
    for key in _REQUIRED:
        if not params.get(key):
            raise ActuatorError(f"missing parameter {key!r}; {TARGET_HINT}")
    problem = _path_problem("parameter 'conf'", params["conf"])
    if problem:
        raise ActuatorError(problem)
    if os.path.normpath(params["conf"]) == os.path.normpath(path):
        raise ActuatorError("parameter 'conf' names the upstream file itself: the guardian would overwrite nginx.conf")
    if not NAME.fullmatch(params["upstream"]):
        raise ActuatorError(f"parameter 'upstream': {params['upstream']!r} is not a name ({NAME.pattern})")
    tracks: dict[str, tuple[str, ...]] = {}
    for key in (CANARY, STABLE):
        addresses = tuple(a for a in params[key].split(","))
        for address in addresses:
            problem = address_problem(address)
            if problem:
                raise ActuatorError(f"parameter {key!r}: {problem}")
        if len(set(addresses)) != len(addresses):
            raise ActuatorError(f"parameter {key!r} lists a server twice")
        tracks[key] = addresses
    both = sorted(set(tracks[CANARY]) & set(tracks[STABLE]))
    if both:
        raise ActuatorError(f"parameters 'canary' and 'stable' both list {', '.join(both)}")
    status: int | None = None
    if "status" in params:
        text = params["status"]
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ActuatorError(f"parameter 'status': {text!r} is not a port 1..65535")
        status = int(text)
        if any(a.endswith(f":{status}") and (a.startswith("127.") or a.startswith("localhost:"))
               for a in tracks[CANARY] + tracks[STABLE]):
            raise ActuatorError(f"parameter 'status': port {status} is also a backend's port")
    timeout: float | None = None
    if "timeout" in params:
        try:
            timeout = float(params["timeout"])
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= 120:
            raise ActuatorError(f"parameter 'timeout': {params['timeout']!r} is not seconds in (0, 120]")
    return NginxTarget(path, params["conf"], params["upstream"], tracks[CANARY], tracks[STABLE], status, timeout)


def validate_target(rest: str) -> str | None:
    """Why `rest` (the target after `nginx:`) is unusable, or None. Touches no file."""
    try:
        parse_nginx_target(rest)
    except ActuatorError as exc:
        return str(exc)
    return None

