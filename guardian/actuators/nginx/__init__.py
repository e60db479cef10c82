"""The `nginx` actuator: moves traffic with weighted servers in an `upstream` block the guardian rewrites,
tests with `nginx -t`, reloads, and confirms live. upstream.py renders the file (pure), process.py knows
nginx the process, router.py changes traffic safely, target.py parses `nginx:` targets, actuator.py maps
actions to weights. See docs/actuators.md#nginx.
"""
from guardian.actuators.nginx.actuator import NginxActuator
from guardian.actuators.nginx.process import find_nginx, nginx_messages
from guardian.actuators.nginx.router import NginxRouter
from guardian.actuators.nginx.target import NginxTarget, parse_nginx_target, validate_target
from guardian.actuators.nginx.upstream import (
    Backend,
    UpstreamState,
    render_placeholder,
    render_upstream,
    server_weights,
)

__all__ = ["Backend", "NginxActuator", "NginxRouter", "NginxTarget", "UpstreamState", "find_nginx", "nginx_messages",
           "parse_nginx_target", "render_placeholder", "render_upstream", "server_weights", "validate_target"]
