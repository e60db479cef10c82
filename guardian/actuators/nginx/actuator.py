"""The `nginx` actuator: canary traffic through an upstream that the guardian rewrites (router.py)."""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from guardian.actuators.base import ActionRequest, BaseActuator
from guardian.actuators.nginx.router import DEFAULT_TIMEOUT, NginxRouter
from guardian.actuators.nginx.target import parse_nginx_target
from guardian.actuators.nginx.upstream import CANARY, STABLE, Backend, server_weights, upstream_meta
from guardian.domain import Action, Outcome

TRAFFIC_ACTIONS = frozenset({Action.START, Action.ADVANCE, Action.BAKE, Action.PROMOTE, Action.ROLLBACK})


@dataclass(frozen=True)
class NginxOptions:
    """How the nginx actuator drives nginx (ActuatorDeps.nginx). A target's own `timeout=` wins."""

    timeout: float | None = None  # seconds for a new config to be confirmed live (None: DEFAULT_TIMEOUT)
    binary: str = "nginx"  # on PATH, else /usr/sbin, /sbin
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run  # tests: count or log the calls
    http: httpx.Client | None = None  # for the status endpoint (default: the router's own)


class NginxActuator(BaseActuator):
    """Canary traffic through nginx: each action sets the canary track to the request's weight and
    the stable track to the rest. START/ADVANCE take `request.weight`, PROMOTE is 100, ROLLBACK 0;
    PAUSE, RESUME, SCALE (and CONTINUE, NOTIFY) change no traffic and succeed. Blue-green is the same
    code with a single 0 -> 100 step. Idempotent by `request.key`, and by content (see NginxRouter).
    One traffic change at a time (the router serialises too).

    BAKE is 100 too, but the stable servers stay in the upstream as `backup` (nginx rejects weight=0; a
    backup gets requests only when no canary server answers) where PROMOTE marks them `down`: warm and
    out of rotation, so a ROLLBACK during the bake is one reload back to them (a reload drops nothing).
    """

    name = "nginx"

    def __init__(self, router: NginxRouter, canary: Sequence[str], stable: Sequence[str]) -> None:
        super().__init__()
        self.router = router
        self.backends = [Backend(a, CANARY) for a in canary] + [Backend(a, STABLE) for a in stable]
        server_weights(self.backends, {CANARY: 50, STABLE: 50})  # both tracks present, no address twice

    @classmethod
    def from_target(cls, rest: str, options: NginxOptions | None = None) -> NginxActuator:
        """Build from a target (after `nginx:`). The target's `timeout` wins over the options'."""
        t = parse_nginx_target(rest)
        o = options or NginxOptions()
        router = NginxRouter(t.upstream_file, t.conf_file, upstream_name=t.upstream, status_port=t.status_port,
                             nginx_binary=o.binary, run=o.run, http=o.http,
                             timeout=t.timeout or o.timeout or DEFAULT_TIMEOUT)
        return cls(router, t.canary, t.stable)

    @staticmethod
    def canary_weight(request: ActionRequest) -> int | None:
        """The canary percent `request` asks for; None when the action moves no traffic."""
        if request.action in (Action.PROMOTE, Action.BAKE):
            return 100
        if request.action is Action.ROLLBACK:
            return 0
        if request.action in TRAFFIC_ACTIONS:
            return request.weight
        return None

    @staticmethod
    def standby(request: ActionRequest) -> frozenset[str]:
        """The tracks `request` keeps in the upstream as `backup` at 0%: the stable one during a bake."""
        return frozenset({STABLE}) if request.action is Action.BAKE else frozenset()

    def kept_warm(self) -> tuple[str, dict[str, Any]]:
        """What a bake keeps warm: the detail's words and Outcome.data["warm"]."""
        stable = [b.address for b in self.backends if b.track == STABLE]
        words = (f"all traffic on the canary; the stable servers ({', '.join(stable)}) kept warm out of rotation: "
                 f"{len(stable)} at weight 0 (nginx `backup`: passed requests only when no canary server answers)")
        return words, {"track": STABLE, "servers": stable, "weight": 0, "as": "backup"}

    def carry_out(self, request: ActionRequest) -> Outcome:
        """Set the weights (`apply`: a key already applied OK returns its Outcome without touching nginx;
        a failed one is tried again)."""
        action = request.action.value
        weight = self.canary_weight(request)
        base = {"key": request.key, "upstream_file": str(self.router.upstream_file)}
        if weight is None:
            state = self.router.current()
            shown = state.weights if state else "unknown"
            return Outcome(True, action, f"nginx: {action} {request.service}: no traffic change (weights {shown})",
                           data={**base, "weights": state.weights if state else None})
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            return Outcome(False, action, f"nginx: {action} {request.service}: weight {weight!r} is not 0..100",
                           data=base)
        result = self.router.apply(self.backends, {CANARY: weight, STABLE: 100 - weight},
                                   standby=self.standby(request))
        detail = f"nginx: {action} {request.service}: " + result.detail.removeprefix("nginx: ")
        data = {**result.data, **base}
        if request.action is Action.BAKE and result.ok:
            words, data["warm"] = self.kept_warm()
            detail += f"; {words}"
        return Outcome(result.ok, action, detail, data=data)

    def verify(self, request: ActionRequest) -> Outcome:
        """Do the weights nginx serves (its status endpoint; the file when there is none) equal the
        ones `request` asked for, on this actuator's servers?"""
        action = request.action.value
        weight = self.canary_weight(request)
        if weight is None:
            return Outcome(True, action, f"nginx: {action} changes no traffic, nothing to verify")
        wanted = {CANARY: weight, STABLE: 100 - weight}
        try:
            digest = upstream_meta(self.router.upstream_name, self.backends, wanted, self.router.status_port,
                                   self.standby(request))["digest"]
        except ValueError as exc:
            return Outcome(False, action, f"nginx: {request.key} asked for an impossible split: {exc}")
        if self.router.status_port is not None:
            seen, where = self.router.live(), f"live on {self.router.status_url}"
        else:
            seen, where = self.router.current(), f"in {self.router.upstream_file} (no status endpoint)"
            if seen is not None and self.router.master_pid() is None:
                return Outcome(False, action, f"nginx: no nginx master is running for {self.router.conf_file}")
        if seen is None:
            return Outcome(False, action, f"nginx: cannot read the weights {where}")
        data = {"key": request.key, "weights": seen.weights, "servers": seen.servers, "generation": seen.generation}
        asked = f"{wanted}" + (" with the stable servers as backup" if self.standby(request) else "")
        if seen.digest != digest:
            backups = [s["address"] for s in seen.servers if s.get("backup")]
            return Outcome(False, action, f"nginx: {request.key} asked for {asked}, but {seen.weights} "
                           f"(backup servers: {', '.join(backups) or 'none'}; generation {seen.generation}) is {where}",
                           data=data)
        return Outcome(True, action, f"nginx: {asked} is {where} (generation {seen.generation})", data=data)

    def close(self) -> None:
        self.router.close()
