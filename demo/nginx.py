"""A real nginx in front of demo services, on a free loopback port, for the demo and the tests.

    server = NginxServer(workdir, "app").start()       # proxies http://127.0.0.1:PORT/ to upstream `app`
    router = NginxRouter(server.upstream_file, server.conf_file, upstream_name="app", status_port=...)
    router.apply([Backend("127.0.0.1:8001", "stable"), ...], {"stable": 90, "canary": 10})
    httpx.get(server.url)
    server.stop()

Everything nginx writes (pid, error log, temp files) stays in `workdir`. nginx runs in the foreground
(`daemon off`) as our child, with its master process, so `nginx -s reload -c CONF` works as in
production. Until the first traffic change the upstream file is a placeholder whose only server is
`down` (requests get 502). Failed upstream attempts (connection refused, timeout, 502, 503) are
retried on the next server, with a short connect timeout.
"""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import httpx

from demo.stack import free_port, terminate, wait_until
from guardian.actuators.nginx import find_nginx, render_placeholder

READY_PATH = "/guardian/nginx-ready"


def nginx_binary() -> str:
    path = find_nginx()
    if path is None:
        raise RuntimeError("the nginx binary is not installed: run scripts/setup.sh (Debian's 'nginx')")
    return path


class NginxServer:
    def __init__(self, workdir: str | os.PathLike[str], upstream_name: str, port: int | None = None, *,
                 binary: str | None = None, worker_processes: int = 1) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.upstream_name = upstream_name
        self.port = port or free_port()
        self.binary = binary or nginx_binary()
        self.worker_processes = worker_processes
        self.conf_file = self.workdir / "nginx.conf"
        self.upstream_file = self.workdir / f"{upstream_name}.upstream.conf"
        self.pid_file = self.workdir / "nginx.pid"
        self.error_log = self.workdir / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._token = uuid.uuid4().hex  # tells our nginx from another one that took the port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        """nginx.conf, the temp dirs, and a placeholder upstream file unless one is there already."""
        w = self.workdir
        (w / "temp").mkdir(exist_ok=True)
        if not self.upstream_file.exists():
            self.upstream_file.write_text(render_placeholder(self.upstream_name))
        temp = "\n".join(f"    {kind}_temp_path {w / 'temp' / kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.conf_file.write_text(f"""\
# Written by demo.nginx.NginxServer
daemon off;
master_process on;
worker_processes {self.worker_processes};
pid {self.pid_file};
error_log {self.error_log} notice;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
{temp}
    include {self.upstream_file};
    server {{
        listen 127.0.0.1:{self.port};
        location = {READY_PATH} {{
            default_type text/plain;
            return 200 '{self._token}';
        }}
        location / {{
            proxy_pass http://{self.upstream_name};
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 1s;
            proxy_send_timeout 10s;
            proxy_read_timeout 10s;
            proxy_set_header Host $host;
        }}
    }}
}}
""")

    def start(self, timeout: float = 10.0) -> NginxServer:
        self.write_config()
        log = self.error_log.open("ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf_file), "-e", str(self.error_log)],
                                     stdout=log, stderr=log, cwd=self.workdir)
        log.close()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited ({self.proc.returncode}): {self.log_tail()}")
            response = httpx.get(f"{self.url}{READY_PATH}", timeout=1, headers={"Connection": "close"})
            if response.status_code == 200 and response.text != self._token:
                raise RuntimeError(f"port {self.port} is served by another nginx")
            return response.status_code == 200 and self.pid_file.exists()

        try:
            wait_until(ready, timeout, 0.05, f"nginx on {self.url}", ignore=(httpx.HTTPError,))
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{self.log_tail()}") from None
        return self

    def reload(self) -> None:
        subprocess.run([self.binary, "-s", "reload", "-c", str(self.conf_file)], check=True,
                       capture_output=True, timeout=30)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM: nginx's fast shutdown; the master takes its workers with it."""
        terminate(self.proc)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.error_log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
