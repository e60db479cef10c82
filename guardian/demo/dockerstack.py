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

from guardian.actuators.containers import SERVICE_LABEL, Containers
from guardian.actuators.docker import API_VERSION, BASELINE, DockerActuator, NginxTrafficRouter, TargetsFile
from guardian.demo.nginx import NginxServer
from guardian.demo.stack import free_port

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
                                       ports={"8000/tcp": ("127.0.0.1", None)})
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
