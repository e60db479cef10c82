"""The `docker` actuator: rolls a service's containers out on one Docker engine (plain or Compose),
with traffic through nginx and the arms published to Prometheus.

Target: `docker:` plus options, e.g.

    docker:?nginx_conf=/etc/nginx/nginx.conf&upstream_file=/etc/nginx/conf.d/app.conf&upstream=app
           &status_port=8099&targets_dir=/etc/prometheus/targets&project=shop&port=8000

Every action *converges* the containers towards what it asks, reading what runs from Docker's own
labels (guardian/actuators/containers.py): applying it again — after a crash, or a failure half way —
continues where it stopped and never does a step twice. Who is who during rollout R of image I:
the canary is every replica labelled `guardian.rollout=R` running I, the stable version all others.
The desired capacity N (the stable replicas when R started) is stored on the canary containers.

Strategies (request.strategy):
- canary:     START starts one canary and gives it the first step's share of traffic through nginx;
              ADVANCE moves the weights.
- rolling:    START / ADVANCE replace stable replicas by new ones one at a time, start-first (the new
              one healthy and in nginx before an old one leaves), until the new version has the
              step's share of the N replicas; nginx weighs every replica alike.
- blue-green: START starts N new replicas (green) next to the N old ones (blue), then switches the
              step's share (normally 100%) to green; blue stays up, idle, for an instant switch back.
- observe:    someone else deploys; START only checks the service exists; ROLLBACK replaces the
              replicas running I by the previous version.
BAKE (after the last step): new replicas until the new version has N, all traffic to them, and the
old ones kept RUNNING and WARM, out of rotation: in nginx as `backup` servers (nginx has no weight 0: a
backup gets requests only when no new replica answers), in Prometheus as the baseline arm. Rolling
replaced every old replica on the way: one of the previous version is started again (from the image the
new replicas record) and kept warm. Observe starts nothing: the arms are published as they run. A
ROLLBACK during the bake is then one nginx reload back to them; a PROMOTE after it removes them as
PROMOTE always does. See docs/actuators.md#bake.
PROMOTE (all strategies): new replicas until the new version has N, all traffic to them, the old
drained (out of nginx, `drain_seconds` for in-flight requests) and removed one at a time.
ROLLBACK: old replicas back to N if any were replaced, all traffic to them, canaries drained and
removed. SCALE: ±`replicas` of the stable version (never below one). PAUSE / RESUME change nothing:
traffic stays where it is. Capacity never drops below N healthy replicas in nginx. Whenever the new
version has all of the traffic (a step at 100%, the bake), the old replicas still running are nginx
`backup` servers, never `down` ones.

Failures (image missing, container exits, healthcheck never passes, port clash, daemon unreachable,
`nginx -t` failing) come back as Outcome(ok=False) with the reason; whatever was started for the
failed step is removed and nginx keeps (or gets back) its previous configuration.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs

import docker

from guardian.actuators.base import ActionRequest, BaseActuator
from guardian.actuators.containers import ContainerError, Containers, Replica
from guardian.actuators.docker_engine import API_VERSION, ENGINE_ERRORS
from guardian.crashpoints import crash_point
from guardian.domain import Action, Outcome
from guardian.errors import ActuatorError
from guardian.files import atomic_write

CANARY, BASELINE = "canary", "baseline"


class TrafficRouter(Protocol):
    def route(self, members: list[tuple[str, str]], weights: dict[str, int]) -> Outcome: ...


@runtime_checkable
class ShowsRoutes(Protocol):
    """A TrafficRouter that can say how it routes each address now (`verify` checks a bake with it)."""

    def routes(self) -> dict[str, str] | None:
        """address -> 'up', 'backup' or 'down' as the router serves them; None when it cannot tell."""
        ...


class NginxTrafficRouter:
    """`TrafficRouter` over nginx (guardian/actuators/nginx/): weights per track, `nginx -t`, reload,
    and confirmation that the new upstream is live; a refused config is put back as it was. The baseline
    at 0% stays in the upstream as `backup` servers: warm, out of rotation (ShowsRoutes too)."""

    def __init__(self, upstream_file: str | Path, conf_file: str | Path, *, upstream_name: str,
                 status_port: int | None = None):
        from guardian.actuators.nginx import NginxRouter

        self.nginx = NginxRouter(upstream_file, conf_file, upstream_name=upstream_name, status_port=status_port)

    def route(self, members: list[tuple[str, str]], weights: dict[str, int]) -> Outcome:
        from guardian.actuators.nginx import Backend

        tracks = {t for _, t in members}
        asked = {t: w for t, w in weights.items() if t in tracks}
        if sum(asked.values()) != 100:  # a track without servers: the others share all of the traffic
            only = next(iter(tracks))
            asked = {t: (100 if t == only else 0) for t in tracks} if len(tracks) == 1 else asked
        return self.nginx.apply([Backend(addr, track) for addr, track in members], asked, standby={BASELINE})

    def routes(self) -> dict[str, str] | None:
        state = self.nginx.live() or self.nginx.current()
        if state is None:
            return None
        return {s["address"]: "backup" if s.get("backup") else "down" if s.get("down") else "up"
                for s in state.servers}


class TargetsFile:
    """Prometheus file_sd: `<dir>/<service>.json` lists each replica's address with its arm, so the
    guardian's queries (`track="canary"` / `"baseline"`) see the arms as the actuator assigns them."""

    def __init__(self, directory: str | Path, track_label: str = "track"):
        self.dir, self.track_label = Path(directory), track_label

    def read(self, service: str) -> list[tuple[str, str]] | None:
        """The (address, track) pairs last written for `service`, sorted; None when there is no file."""
        try:
            doc = json.loads((self.dir / f"{service}.json").read_text())
            return sorted((d["targets"][0], d["labels"][self.track_label]) for d in doc)
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None

    def write(self, service: str, members: list[tuple[str, str]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        doc = [{"targets": [addr], "labels": {"service": service, self.track_label: track}}
               for addr, track in members]
        atomic_write(self.dir / f"{service}.json", json.dumps(doc, indent=1))


@dataclass
class _View:
    canary: list[Replica]
    stable: list[Replica]
    capacity: int


class DockerActuator(BaseActuator):
    """Capabilities Reconciling (`reconcile`) and LogSource (`arm_logs`). One action at a time: an action
    and a reconcile never overlap either."""

    name = "docker"
    supports = frozenset({Action.START, Action.ADVANCE, Action.BAKE, Action.PROMOTE, Action.ROLLBACK, Action.PAUSE,
                          Action.RESUME, Action.SCALE})

    def __init__(self, containers: Containers, router: TrafficRouter | None = None,
                 targets: TargetsFile | None = None):
        super().__init__()
        self.containers, self.router, self.targets = containers, router, targets
        self._dark: list[Replica] = []  # started by this action and not yet given traffic (published)

    # -- protocol -------------------------------------------------------------------------------------
    def carry_out(self, request: ActionRequest) -> Outcome:
        self._dark = []
        try:
            detail, data = self._do(request)
            return Outcome(True, request.action.value, detail, data=data)
        except ActuatorError as e:  # ContainerError too
            return Outcome(False, request.action.value, str(e) + self._undo_dark())
        except ENGINE_ERRORS as e:
            return Outcome(False, request.action.value, f"Docker engine: {e}" + self._undo_dark())

    def _undo_dark(self) -> str:
        """A failed action removes the replicas it started that never got traffic (nginx or file_sd
        never listed them), so a failure leaves what ran before: nothing half-applied."""
        removed, left = [], []
        for r in self._dark:
            try:
                self.containers.remove(r.id)
                removed.append(r.name)
            except (ContainerError, *ENGINE_ERRORS):
                left.append(r.name)
        self._dark = []
        return (f"; removed {len(removed)} new replica(s) that never got traffic ({', '.join(removed)})"
                if removed else "") + (f"; could NOT remove {', '.join(left)}" if left else "")

    def verify(self, request: ActionRequest) -> Outcome:
        try:
            v = self._view(request)
        except ENGINE_ERRORS as e:
            return Outcome(False, request.action.value, f"Docker engine: {e}")
        a = request.action
        problems = []
        if a is Action.PROMOTE and (v.stable or len(v.canary) < v.capacity):
            problems.append(f"expected {v.capacity} replicas of {request.image} only, found {len(v.canary)} "
                            f"and {len(v.stable)} of the old version")
        if a is Action.ROLLBACK and (v.canary or len(v.stable) < max(1, v.capacity)):
            problems.append(f"expected {v.capacity} old replicas and no canary, found {len(v.stable)} "
                            f"and {len(v.canary)}")
        if a in (Action.START, Action.ADVANCE) and request.strategy != "observe" and not v.canary:
            problems.append(f"no replica of {request.image} is running")
        if a is Action.BAKE and request.strategy != "observe":
            problems += self._bake_problems(request, v)
        if problems:
            return Outcome(False, a.value, "; ".join(problems))
        return Outcome(True, a.value, f"{len(v.canary)} new and {len(v.stable)} old replicas running")

    def reconcile(self, request: ActionRequest) -> str:
        """Between actions: when the running replicas' addresses no longer match what nginx and
        Prometheus were last told (the Docker daemon restarted them on new ports, a restart policy
        brought one back), publish them again with the rollout's weight (rolling: equal weights).
        Nothing when they match; returns what it did ('' for nothing). Raises the engine's errors."""
        with self.serialised(request):
            v = self._view(request)
            members = sorted((r.address, CANARY if r in v.canary else BASELINE) for r in v.canary + v.stable
                             if r.address)
            if not members or self.targets is None or members == self.targets.read(request.service):
                return ""
            rolling_step = request.strategy == "rolling" and 0 < request.weight < 100  # weights by replica count
            self._publish(request, v, None if rolling_step else request.weight)
            return f"replica addresses changed under the guardian: published again ({len(members)} replicas)"

    def arm_logs(self, request: ActionRequest, *, since: float, max_bytes: int = 2_000_000) -> dict[str, list[bytes]]:
        """Recent log lines of the canary replicas and of the stable ones (LogSource for log evidence),
        each arm bounded to `max_bytes`."""
        v = self._view(request)
        out: dict[str, list[bytes]] = {}
        for arm, replicas in ((CANARY, v.canary), (BASELINE, v.stable)):
            budget = max_bytes // max(1, len(replicas))
            lines: list[bytes] = []
            for r in replicas:
                lines += self.containers.logs(r.id, since=since, max_bytes=budget).splitlines()
            out[arm] = lines
        return out

    # -- what runs ------------------------------------------------------------------------------------
    def _view(self, request: ActionRequest) -> _View:
        reps = self.containers.replicas(request.service)
        canary = [r for r in reps if r.image == request.image and (
            r.rollout == request.rollout_id or request.strategy == "observe")]
        stable = [r for r in reps if r not in canary]
        labels = [r.labels.get("guardian.capacity") for r in canary]
        stored = next((int(x) for x in labels if x and x.isdigit()), None)
        return _View(canary, stable, stored if stored is not None else len(stable))

    def _do(self, request: ActionRequest) -> tuple[str, dict[str, Any]]:
        a, strategy = request.action, request.strategy
        v = self._view(request)
        if not v.canary and not v.stable:
            raise ActuatorError(f"no running containers of service {request.service!r} (labels "
                                f"guardian.service or com.docker.compose.service={request.service})")
        if a in (Action.PAUSE, Action.RESUME):
            return f"{a.value}: traffic left as it is", self._data(v)
        if a is Action.SCALE:
            return self._scale(request, v)
        if a is Action.BAKE:
            return self._bake(request, v)
        if a in (Action.ROLLBACK, Action.PROMOTE):  # the end: also clear what an interrupted step left
            detail, data = (self._rollback if a is Action.ROLLBACK else self._promote)(request, v)
            if gone := self.containers.remove_leftovers(request.service):
                detail += f"; removed {len(gone)} stopped container(s) an interrupted step left ({', '.join(gone)})"
            return detail, data
        if strategy == "observe":  # START / ADVANCE: someone else deploys; publish the arms as they are
            self._publish(request, v, request.weight)
            return f"observing {len(v.canary)} new and {len(v.stable)} old replicas", self._data(v)
        if strategy == "rolling":
            want = max(1, math.ceil(v.capacity * request.weight / 100)) if request.weight > 0 else 0
            v = self._replace_until(request, v, want)
            return f"rolling: {len(v.canary)} of {v.capacity} replicas on {request.image}", self._data(v)
        want = v.capacity if strategy == "blue-green" else 1
        v = self._start_until(request, v, want)
        self._publish(request, v, request.weight)
        return (f"{strategy}: {len(v.canary)} replica(s) of {request.image} get {request.weight}% of the traffic",
                self._data(v))

    # -- steps ----------------------------------------------------------------------------------------
    def _start_until(self, request: ActionRequest, v: _View, want: int) -> _View:
        """Start new replicas (health-gated, not yet in nginx unless published) until `want` run."""
        while len(v.canary) < want:
            template = (v.stable or v.canary)[0]
            new = self._clone(template, request.image, request, v.capacity)
            v = _View(v.canary + [new], v.stable, v.capacity)
        return v

    def _replace_until(self, request: ActionRequest, v: _View, want: int, *, keep_old: int = 0) -> _View:
        """Rolling: one new replica up and in nginx, then one old one out and removed, until `want` are new
        (the last `keep_old` old ones are never removed)."""
        while len(v.canary) < want:
            v = self._start_until(request, v, len(v.canary) + 1)
            self._publish(request, v, None)
            if len(v.canary) + len(v.stable) > v.capacity and len(v.stable) > keep_old:
                old, v = v.stable[0], _View(v.canary, v.stable[1:], v.capacity)
                self._publish(request, v, None)
                self.containers.drain_pause()
                self.containers.remove(old.id)
        self._publish(request, v, None)
        return v

    def _promote(self, request: ActionRequest, v: _View) -> tuple[str, dict[str, Any]]:
        v = self._start_until(request, v, v.capacity)
        self._publish(request, _View([], v.canary, v.capacity), 0)  # the new version is now the stable one
        self.containers.drain_pause()
        for old in v.stable:
            self.containers.remove(old.id)
        return f"promoted: {len(v.canary)} replica(s) of {request.image}, old ones drained and removed", \
            self._data(_View([], v.canary, v.capacity))

    def _bake(self, request: ActionRequest, v: _View) -> tuple[str, dict[str, Any]]:
        """All traffic on N new replicas; the old ones (at least one) kept running, out of rotation."""
        observe = request.strategy == "observe"  # someone else deploys: publish the arms as they are
        if request.strategy == "rolling":
            v = self._replace_until(request, v, v.capacity, keep_old=1)
        elif not observe:
            v = self._start_until(request, v, v.capacity)
        if not observe:
            v = self._keep_one_warm(request, v)
        self._publish(request, v, 100)
        detail = f"all traffic on {request.image} ({len(v.canary)} replica(s)); {self._warm_words(v)}"
        return (f"observing: {detail} (the guardian starts nothing here)" if observe else detail,
                {**self._data(v), "warm": self._warm(v)})

    def _keep_one_warm(self, request: ActionRequest, v: _View) -> _View:
        """At least one replica of the previous version running: started again if none is left (a rolling
        rollout that reached 100% replaced them all). Not in nginx until published."""
        if v.stable:
            return v
        if not v.canary:
            raise ActuatorError(f"no replica of {request.image} runs: nothing to bake (START it first)")
        warm = self._clone(v.canary[0], self._previous_image(v), request, None, rollout=f"warm-{request.rollout_id}")
        return _View(v.canary, [warm], v.capacity)

    def _warm(self, v: _View) -> dict[str, Any]:
        """What a bake keeps warm, for Outcome.data["warm"]."""
        return {"image": ", ".join(sorted({r.image for r in v.stable})) or None,
                "replicas": [r.name for r in v.stable], "weight": 0,
                "routing": "nginx backup" if self.router is not None else "none (no traffic router)"}

    def _warm_words(self, v: _View) -> str:
        if not v.stable:
            return "nothing of the previous version runs: nothing kept warm"
        old = ", ".join(sorted({r.image for r in v.stable}))
        how = " (nginx `backup`: passed requests only when no new replica answers)" if self.router else ""
        return f"{old} kept warm out of rotation: {len(v.stable)} replica(s) at weight 0{how}"

    def _bake_problems(self, request: ActionRequest, v: _View) -> list[str]:
        """Why what runs and what nginx serves is not a bake: N new replicas in rotation, old ones as backup."""
        problems = []
        if len(v.canary) < max(1, v.capacity):
            problems.append(f"expected {v.capacity} replicas of {request.image}, found {len(v.canary)}")
        if not v.stable:
            problems.append("no replica of the previous version is kept warm")
        if not isinstance(self.router, ShowsRoutes):
            return problems
        routes = self.router.routes()
        if routes is None:
            return [*problems, "cannot read the routing nginx serves"]
        for r in v.canary + v.stable:
            want = "up" if r in v.canary else "backup"
            if r.address and routes.get(r.address) != want:
                problems.append(f"{r.name} ({r.address}) is {routes.get(r.address, 'not in nginx')}, not {want}")
        return problems

    def _rollback(self, request: ActionRequest, v: _View) -> tuple[str, dict[str, Any]]:
        while len(v.stable) < v.capacity:  # rolling / observe replaced some: bring the old version back
            previous = v.stable[0].image if v.stable else self._previous_image(v)
            template = (v.stable or v.canary)[0]
            old = self._clone(template, previous, request, None, rollout=f"restore-{request.rollout_id}")
            v = _View(v.canary, v.stable + [old], v.capacity)
        self._publish(request, _View([], v.stable, v.capacity), 0)
        if v.canary:
            self.containers.drain_pause()
        for c in v.canary:
            self.containers.remove(c.id)
        return (f"rolled back: all traffic on {len(v.stable)} replica(s) of the previous version; "
                f"{len(v.canary)} canary replica(s) removed", self._data(_View([], v.stable, v.capacity)))

    def _scale(self, request: ActionRequest, v: _View) -> tuple[str, dict[str, Any]]:
        delta = request.replicas
        if delta > 0:
            for _ in range(delta):
                template = (v.stable or v.canary)[0]
                new = self._clone(template, template.image, request, None, rollout=f"scale-{request.rollout_id}")
                v = _View(v.canary, v.stable + [new], v.capacity)
        elif delta < 0:
            extra = v.stable[max(1, len(v.stable) + delta):]
            v = _View(v.canary, v.stable[: len(v.stable) - len(extra)], v.capacity)
            self._publish(request, v, request.weight)
            self.containers.drain_pause()
            for r in extra:
                self.containers.remove(r.id)
        self._publish(request, v, request.weight)
        return f"scaled the stable version to {len(v.stable)} replica(s) ({delta:+d})", self._data(v)

    def _clone(self, template: Replica, image: str, request: ActionRequest, capacity: int | None, *,
               rollout: str | None = None) -> Replica:
        """Start one replica of `image` like `template`. A new-version replica (capacity given) records
        the capacity and the image it replaces, so a restarted guardian can finish or undo the rollout."""
        labels = None
        if capacity is not None:
            labels = {"guardian.capacity": str(capacity)}
            if template.image != image:
                labels["guardian.previous-image"] = template.image
        new = self.containers.clone(template.id, image, service=request.service,
                                    rollout=rollout or request.rollout_id, extra_labels=labels)
        self._dark.append(new)
        crash_point("mid_apply", request.action.value)  # test hook (GUARDIAN_CRASH_AT): up, no traffic yet
        return new

    def _previous_image(self, v: _View) -> str:
        for r in v.canary:
            prev = r.labels.get("guardian.previous-image")
            if prev:
                return prev
        raise ActuatorError("no replica of the previous version is left and none records its image: "
                            "cannot roll back")

    # -- traffic --------------------------------------------------------------------------------------
    def _publish(self, request: ActionRequest, v: _View, weight: int | None) -> None:
        """Tell nginx and Prometheus who is who. `weight` None: every replica weighs the same."""
        members = [(r.address, CANARY) for r in v.canary if r.address] + [
            (r.address, BASELINE) for r in v.stable if r.address]
        if weight is None:
            n = len(members) or 1
            weight = round(100 * sum(1 for _, t in members if t == CANARY) / n)
        if not v.canary:
            weight = 0
        elif not v.stable:
            weight = 100
        if self.router is not None and members:
            outcome = self.router.route(members, {CANARY: weight, BASELINE: 100 - weight})
            if not outcome.ok:
                raise ActuatorError(f"nginx refused the new weights (it keeps the previous ones): {outcome.detail}")
        if self.targets is not None:
            self.targets.write(request.service, members)
        listed = {r.id for r in v.canary + v.stable}
        self._dark = [r for r in self._dark if r.id not in listed]  # they have traffic now

    @staticmethod
    def _data(v: _View) -> dict[str, Any]:
        return {"canary": [r.name for r in v.canary], "stable": [r.name for r in v.stable], "capacity": v.capacity}


# -- the target URI ----------------------------------------------------------------------------------------
_OPTIONS = {"project", "port", "nginx_conf", "upstream_file", "upstream", "status_port", "targets_dir",
            "health_timeout", "drain_seconds", "track_label"}


def parse_options(rest: str) -> dict[str, str]:
    """`?a=1&b=2` (or `//?a=1`) -> {"a": "1", "b": "2"}; unknown or repeated options are errors."""
    query = rest.split("?", 1)[1] if "?" in rest else ""
    if rest.split("?", 1)[0].strip("/"):
        raise ActuatorError(f"docker: unexpected {rest.split('?', 1)[0]!r}; options go after '?': "
                            "docker:?nginx_conf=...&upstream_file=...")
    parsed = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    out = {}
    for key, values in parsed.items():
        if key not in _OPTIONS:
            raise ActuatorError(f"docker: unknown option {key!r}; known: {', '.join(sorted(_OPTIONS))}")
        if len(values) != 1:
            raise ActuatorError(f"docker: option {key!r} is given {len(values)} times")
        out[key] = values[0]
    nginx = [k for k in ("nginx_conf", "upstream_file", "upstream") if k in out]
    if nginx and len(nginx) != 3:
        raise ActuatorError("docker: nginx needs all of nginx_conf, upstream_file and upstream")
    for key in ("port", "status_port"):
        if key in out and not out[key].isdigit():
            raise ActuatorError(f"docker: {key} must be a port number, got {out[key]!r}")
    for key in ("health_timeout", "drain_seconds"):
        if key in out:
            try:
                float(out[key])
            except ValueError:
                raise ActuatorError(f"docker: {key} must be a number of seconds, got {out[key]!r}") from None
    return out


def validate_target(rest: str) -> str | None:
    try:
        parse_options(rest)
    except ActuatorError as e:
        return str(e)
    return None


def from_target(rest: str, *, client: docker.DockerClient | None = None) -> DockerActuator:
    """The actuator a `docker:` target describes, on `client` (default: DOCKER_HOST / the local socket,
    speaking API_VERSION, so that building it never needs the daemon)."""
    opts = parse_options(rest)
    client = client or docker.from_env(version=API_VERSION)
    containers = Containers(client, project=opts.get("project"), port=int(opts["port"]) if "port" in opts else None,
                            health_timeout=float(opts.get("health_timeout", 60)),
                            drain_seconds=float(opts.get("drain_seconds", 1)))
    router = None
    if "nginx_conf" in opts:
        router = NginxTrafficRouter(opts["upstream_file"], opts["nginx_conf"], upstream_name=opts["upstream"],
                                    status_port=int(opts["status_port"]) if "status_port" in opts else None)
    targets = TargetsFile(opts["targets_dir"], opts.get("track_label", "track")) if "targets_dir" in opts else None
    return DockerActuator(containers, router, targets)
