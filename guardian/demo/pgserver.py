"""A throwaway PostgreSQL 15 cluster on a free loopback port (Debian's `postgresql`), for the tests
and benchmarks/failover.py. No systemd: `initdb` + `pg_ctl` run as the `postgres` user into a
temporary folder; password authentication over TCP (scram), so the URL carries a real secret.

    with PostgresServer() as pg:
        store = PostgresStore(pg.url)
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from guardian.demo.stack import free_port

BIN = Path(os.environ.get("GUARDIAN_PG_BIN", "/usr/lib/postgresql/15/bin"))
INSTALL_HINT = ("PostgreSQL 15 is not installed (no {bin}/initdb): run `bash scripts/setup.sh postgresql` "
                "(Debian's package `postgresql`), or set GUARDIAN_PG_BIN to its bin folder")


class PostgresServer:
    def __init__(self, workdir: Path | None = None, *, user: str = "guardian", database: str = "guardian"):
        if not (BIN / "initdb").exists():
            raise RuntimeError(INSTALL_HINT.format(bin=BIN))
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="guardian-pg-"))
        self.user, self.database = user, database
        self.password = secrets.token_hex(8)
        self.port = free_port()
        self.data = self.workdir / "data"
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _as_postgres(self, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)

    def start(self) -> PostgresServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pwfile = self.workdir / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        r = self._as_postgres(str(BIN / "initdb"), "-D", str(self.data), "-U", self.user, "--pwfile", str(pwfile),
                              "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr or r.stdout}")
        pwfile.unlink()
        # throwaway: no fsync (the tests measure leases and failover, not durability)
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.workdir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        r = self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.workdir / "postgres.log"),
                              "-o", opts, "-w", "-t", "30", "start")
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stderr or r.stdout}\n{self.log_tail()}")
        self.started = True
        r = self._as_postgres(str(BIN / "createdb"), "-h", str(self.workdir), "-p", str(self.port), "-U", self.user,
                              self.database)
        if r.returncode != 0:
            raise RuntimeError(f"createdb failed: {r.stderr or r.stdout}")
        return self

    def stop(self) -> None:
        if self.started:
            self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.started = False
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.workdir / "postgres.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
