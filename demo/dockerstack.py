"""A containerised service behind a real nginx, as the demo, the tests and the benchmarks run it.

    stack = DockerStack(workdir, "checkout", replicas=2).start()   # 2 × guardian-demo:v1, nginx in front
    stack.url                      # nginx: http://127.0.0.1:PORT/
    stack.target                   # the actuator target: docker:?nginx_conf=...&targets_dir=...
    stack.actuator()               # a DockerActuator on that target
    stack.stop()                   # removes every container of the service, stops nginx

The replicas are labelled `guardian.service=SERVICE`, publish their port 8000 on a free loopback
port, and are listed for Prometheus as file_sd targets in `workdir/targets/SERVICE.json` (arm
`track=baseline`); the docker actuator rewrites that file as it moves replicas between the arms.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlencode

import docker

from demo.loadgen import LoadGenerator
from demo.nginx import NginxServer
from demo.stack import GuardianServer, PrometheusServer, free_port, wait_until
from guardian.actuators.containers import SERVICE_LABEL, Containers
from guardian.actuators.docker import API_VERSION, BASELINE, DockerActuator, NginxTrafficRouter, TargetsFile

IMAGE = "guardian-demo"


class DockerStack:
    def __init__(self, workdir: str | Path, service: str, *, replicas: int = 2, version: str = "v1",
                 drain_seconds: float = 1.0, health_timeout: float = 30.0):
        self.workdir = Path(workdir).resolve()
        self.service, self.replicas, self.version = service, replicas, version
        self.drain_seconds, self.health_timeout = drain_seconds, health_timeout
        self.client = docker.from_env(version=API_VERSION)
        self.nginx = NginxServer(self.workdir / "nginx", service)
        self.status_port = free_port()
        self.targets_dir = self.workdir / "targets"

    @property
    def url(self) -> str:
        return self.nginx.url + "/"

    @property
    def target(self) -> str:
        return "docker:?" + urlencode({
            "nginx_conf": str(self.nginx.conf_file), "upstream_file": str(self.nginx.upstream_file),
            "upstream": self.service, "status_port": self.status_port, "targets_dir": str(self.targets_dir),
            "drain_seconds": self.drain_seconds, "health_timeout": self.health_timeout,
        })

    def containers(self) -> Containers:
        return Containers(self.client, drain_seconds=self.drain_seconds, health_timeout=self.health_timeout,
                          stop_timeout=5)

    def router(self) -> NginxTrafficRouter:
        return NginxTrafficRouter(self.nginx.upstream_file, self.nginx.conf_file, upstream_name=self.service,
                                  status_port=self.status_port)

    def actuator(self) -> DockerActuator:
        return DockerActuator(self.containers(), self.router(), TargetsFile(self.targets_dir))

    def start(self) -> DockerStack:
        self.remove_containers()  # what an earlier run left behind
        for i in range(self.replicas):
            self.client.containers.run(f"{IMAGE}:{self.version}", name=f"{self.service}-{self.version}-{i}",
                                       detach=True, labels={SERVICE_LABEL: self.service},
                                       ports={"8000/tcp": ("127.0.0.1", None)},
                                       restart_policy={"Name": "unless-stopped"})  # as a compose `restart:`
        containers = self.containers()
        replicas = containers.replicas(self.service)
        for r in replicas:
            containers.wait_healthy(r.id)
        replicas = containers.replicas(self.service)
        members = [(r.address, BASELINE) for r in replicas if r.address]
        self.nginx.start()
        outcome = self.router().route(members, {BASELINE: 100})
        if not outcome.ok:
            raise RuntimeError(f"nginx did not take the upstream: {outcome.detail}")
        TargetsFile(self.targets_dir).write(self.service, members)
        return self

    def images(self) -> list[str]:
        return sorted(r.image for r in self.containers().replicas(self.service))

    def remove_containers(self) -> None:
        for c in self.client.containers.list(all=True, filters={"label": f"{SERVICE_LABEL}={self.service}"}):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)

    def stop(self) -> None:
        self.nginx.stop()
        self.remove_containers()


class GuardedStack:
    """A DockerStack with everything that guards it: a Prometheus scraping every replica each second
    (arms from the actuator's file_sd), a load generator through nginx, and `guardian serve` with its
    built-in policy (2 s ticks) whose default target is the stack. The demo, the benchmark and the
    end-to-end test run this.

        with GuardedStack(workdir, "checkout", rps=50) as g:
            state = g.wait(g.start_rollout("guardian-demo:v2"))      # rolled back by the guardian
            g.load.versions["v2"]                                      # when v2 answered clients
            g.load.answers                                             # every request: (time, version, status)
    """

    def __init__(self, workdir: str | Path, service: str, *, replicas: int = 2, rps: float = 50.0,
                 tick_seconds: float = 2.0, analysis_seconds: float = 10.0, say=lambda text: None):
        self.workdir = Path(workdir).resolve()
        self.service, self.replicas, self.rps = service, replicas, rps
        self.tick_seconds, self.analysis_seconds, self.say = tick_seconds, analysis_seconds, say
        self.stack: DockerStack | None = None
        self.prometheus = self.load = self.guardian = None
        self._started: list = []

    def start(self) -> GuardedStack:

        try:
            self.say(f"starting {self.service} v1: {self.replicas} containers of {IMAGE}:v1 behind nginx")
            self.stack = DockerStack(self.workdir / "stack", self.service, replicas=self.replicas).start()
            self._started.append(self.stack)
            self.say("starting Prometheus: scrapes every container each second, arms from the actuator's file_sd")
            self.prometheus = PrometheusServer([], "1s", workdir=self.workdir / "prometheus",
                                               file_sd=self.stack.targets_dir).start()
            self._started.append(self.prometheus)
            self.say(f"starting the load generator: {self.rps:g} requests/s through nginx, a new connection each")
            self.load = LoadGenerator([self.stack.url], rps=self.rps, keepalive=False, max_seconds=3600,
                                      record=True).start()
            self._started.append(self.load)
            self.prometheus.wait_for_series(
                f'http_requests_total{{service="{self.service}",track="baseline"}}', timeout=30)
            self.say(f"starting the guardian: built-in policy (no rule file), {self.tick_seconds:g} s ticks, "
                     f"{self.analysis_seconds:g} s of analysis per step")
            (self.workdir / "rules").mkdir(parents=True, exist_ok=True)
            (self.workdir / "guardian").mkdir(parents=True, exist_ok=True)
            self.guardian = GuardianServer(
                self.workdir / "guardian", prometheus_url=self.prometheus.url, rules=[str(self.workdir / "rules")],
                tick_seconds=self.tick_seconds, evaluation_delay=1, min_window=4,
                analysis_seconds=self.analysis_seconds, default_target=self.stack.target).start()
            self._started.append(self.guardian)
        except BaseException:
            self.stop()
            raise
        return self

    def start_rollout(self, image: str, **body) -> str:
        # the guardian's preflight needs the baseline arm's series: right after a promotion the new replicas are
        # published as the baseline, and Prometheus has them once it re-read the targets and scraped them
        if self.prometheus.running:
            self.prometheus.wait_for_series(f'http_requests_total{{service="{self.service}",track="baseline"}}',
                                            timeout=30)
        r = self.guardian.api("POST", "/v1/rollouts", json={"service": self.service, "image": image, **body})
        if r.is_error:
            raise RuntimeError(f"POST /v1/rollouts: {r.status_code} {r.text}")
        return r.json()["id"]

    def wait(self, rollout_id: str, timeout: float = 300.0) -> dict:
        """The rollout's state once it is promoted or rolled back."""
        return wait_until(lambda: (s := self.guardian.rollout(rollout_id))["phase"] in ("promoted", "rolled_back")
                          and s, timeout, 0.5, f"rollout {rollout_id} to end")

    def exposure(self, version: str) -> float | None:
        """Seconds between the first and the last answer `version` gave the load generator."""
        v = self.load.versions.get(version)
        return None if v is None else round(v["last"] - v["first"], 1)

    def stop(self) -> None:
        for thing in reversed(self._started):
            with contextlib.suppress(Exception):
                thing.stop()
        self._started = []

    def __enter__(self) -> GuardedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
