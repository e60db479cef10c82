"""Writes the upstream file nginx includes, has nginx test and reload it, and confirms it is live.

The guardian owns one file, included in nginx's `http` context, holding `upstream NAME { ... }`
(and, when a status port is given, a tiny `server` that reports what is loaded). A traffic change:

1. render the new file; identical content already live -> nothing to do (idempotent);
2. write it next to the old one and rename it in (`atomic_write`: readers see the old or the new, never half);
3. `nginx -t -c CONF`: on failure put the previous bytes back and report nginx's own message;
4. `nginx -s reload -c CONF` (graceful: old workers finish the requests they hold);
5. confirm the new config is *live*: the status endpoint reports the new generation, and the master
   has started new workers and retired the old ones (without a status port only the latter); else
   put the previous file back, reload it, and report.

A reload drops no request on a new connection (measured in the tests under load). An old worker does
close its *idle keep-alive* connections when it retires, so a client that sends on such a connection
at that very moment sees it closed without a response: the ordinary HTTP/1.1 race that clients cover
by retrying idempotent requests (browsers and most proxies do; httpx does not).

A target may come from an API user, so the guardian only ever writes a `.conf` file that is absent,
empty or written by itself (first line `# release-guardian upstream: ...`): it never overwrites a
file it does not own.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import httpx
from loguru import logger

from guardian.actuators.nginx.process import children, find_nginx, nginx_messages
from guardian.actuators.nginx.upstream import (
    MARKER,
    STATUS_PATH,
    Backend,
    UpstreamState,
    check_name,
    render_upstream,
    upstream_meta,
)
from guardian.domain import Outcome
from guardian.files import atomic_write

DEFAULT_TIMEOUT = 5.0  # seconds for the new config to be confirmed live


class _Failed(Exception):
    """A step of `NginxRouter.apply` failed; the message is the Outcome's detail."""


class NginxRouter:
    """Writes one guardian-owned upstream file, has nginx test and reload it, and confirms it is live.

    `run` is `subprocess.run` (or a wrapper that counts or logs calls); `http` a client for the status
    endpoint (the router makes one when not given); `timeout` bounds the wait for the new config.
    """

    def __init__(
        self,
        upstream_file: str | os.PathLike[str],
        conf_file: str | os.PathLike[str],
        *,
        upstream_name: str,
        status_port: int | None = None,
        nginx_binary: str = "nginx",
        run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
        http: httpx.Client | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        pid_file: str | os.PathLike[str] | None = None,
    ) -> None:
        check_name(upstream_name)
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.upstream_file = Path(upstream_file)
        self.conf_file = Path(conf_file)
        self.upstream_name = upstream_name
        self.status_port = status_port
        self.nginx_binary = nginx_binary if os.sep in nginx_binary else (find_nginx(nginx_binary) or nginx_binary)
        self.timeout = timeout
        self._run = run
        self._own_http = http is None
        # Connection: close on every status read: a kept-alive connection may be held by an old worker.
        self._http = http or httpx.Client(timeout=1.0)
        self._pid_file = Path(pid_file) if pid_file else None
        self._confirmed: str | None = None  # digest this router last saw live (used without a status port)
        self._lock = threading.Lock()

    @property
    def status_url(self) -> str | None:
        return None if self.status_port is None else f"http://127.0.0.1:{self.status_port}{STATUS_PATH}"

    # -- reading ---------------------------------------------------------------------------------------
    def current(self) -> UpstreamState | None:
        """What the file holds now; None when it is missing or not written by the guardian."""
        try:
            return UpstreamState.parse(self.upstream_file.read_text(errors="replace"))
        except OSError:
            return None

    def live(self) -> UpstreamState | None:
        """What nginx's workers serve, from the status endpoint; None without one or when it does not
        answer (nginx down, or a config without the status server loaded)."""
        if self.status_url is None:
            return None
        try:
            response = self._http.get(self.status_url, headers={"Connection": "close"})
            if response.status_code != 200:
                return None
            return UpstreamState.from_meta(response.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def master_pid(self) -> int | None:
        """The nginx master's pid from its pid file, if that process is alive."""
        path = self._pid_file or self._find_pid_file()
        if path is None:
            return None
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def _find_pid_file(self) -> Path | None:
        try:
            conf = self.conf_file.read_text(errors="replace")
        except OSError:
            return None
        match = re.search(r"^\s*pid\s+([^;\s]+)\s*;", conf, re.MULTILINE)
        configured = match.group(1) if match else None
        if configured and configured.startswith("/"):
            return Path(configured)
        try:  # relative, or nginx's compiled-in default: ask the binary
            info = self._run([self.nginx_binary, "-V"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        text = (info.stdout or "") + (info.stderr or "")
        if configured:
            prefix = re.search(r"--prefix=(\S+)", text)
            return Path(prefix.group(1) if prefix else "/usr/share/nginx") / configured
        default = re.search(r"--pid-path=(\S+)", text)
        return Path(default.group(1)) if default else None

    # -- writing ---------------------------------------------------------------------------------------
    def apply(self, backends: Sequence[Backend], weights_by_track: Mapping[str, int], *,
              standby: Collection[str] = ()) -> Outcome:
        """Make nginx route `weights_by_track` percent of traffic to each track's backends; the servers of
        a `standby` track at 0% stay in the upstream as `backup` (out of rotation, warm) instead of `down`.

        ok: the new config is live (data: weights, servers, generation, digest, reloaded). Not ok: the
        detail says why, and the file holds its previous bytes again; nothing is half-applied."""
        started = time.monotonic()
        with self._lock:
            try:
                with self._directory_lock():
                    outcome = self._apply(list(backends), dict(weights_by_track), frozenset(standby))
            except _Failed as exc:
                outcome = Outcome(False, "apply", f"nginx: {exc}")
            except OSError as exc:
                outcome = Outcome(False, "apply", f"nginx: cannot write {self.upstream_file}: {exc}")
        seconds = round(time.monotonic() - started, 3)
        (logger.info if outcome.ok else logger.warning)(f"{outcome.detail} ({seconds}s)")
        return replace(outcome, data={**outcome.data, "seconds": seconds, "upstream_file": str(self.upstream_file)})

    @contextlib.contextmanager
    def _directory_lock(self) -> Iterator[None]:
        """flock on the file's directory: two guardians (or processes) never interleave their swaps."""
        fd = os.open(self.upstream_file.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _apply(self, backends: list[Backend], weights: dict[str, int], standby: frozenset[str]) -> Outcome:
        try:
            wanted = upstream_meta(self.upstream_name, backends, weights, self.status_port, standby)
        except ValueError as exc:
            raise _Failed(f"cannot route {weights}: {exc}") from None
        try:
            previous: bytes | None = self.upstream_file.read_bytes()
            mode = self.upstream_file.stat().st_mode & 0o7777
        except FileNotFoundError:
            previous, mode = None, 0o644
        old = UpstreamState.parse(previous.decode(errors="replace")) if previous is not None else None
        if previous and previous.strip() and old is None:
            raise _Failed(f"refusing to overwrite {self.upstream_file}: it was not written by Release Guardian "
                          f"(no '{MARKER.strip()}' first line); move it away or empty it")
        data = {"weights": dict(sorted(weights.items())), "servers": wanted["servers"], "digest": wanted["digest"]}
        if old is not None and old.digest == wanted["digest"] and self._is_live(old):
            return Outcome(True, "apply", f"nginx: {self._describe(weights, wanted)} already live "
                           f"(generation {old.generation}), not reloaded",
                           data={**data, "generation": old.generation, "reloaded": False})
        generation = (old.generation if old else 0) + 1
        try:
            text = render_upstream(self.upstream_name, backends, weights, status_port=self.status_port,
                                   generation=generation, standby=standby)
        except ValueError as exc:
            raise _Failed(f"cannot route {weights}: {exc}") from None
        atomic_write(self.upstream_file, text.encode(), mode=mode)
        reloaded = False
        try:
            self._nginx("-t", "-q", action="config test failed")
            before = self._worker_pids()
            self._nginx("-s", "reload", action="reload failed (is nginx running with this config?)")
            reloaded = True
            self._confirm(generation, wanted["digest"], before)
        except BaseException as exc:
            self._restore(previous, mode, reload=reloaded)
            if isinstance(exc, _Failed):
                raise _Failed(f"{exc}; restored the previous {self.upstream_file.name}") from None
            raise
        self._confirmed = wanted["digest"]
        return Outcome(True, "apply", f"nginx: {self._describe(weights, wanted)} live (generation {generation})",
                       data={**data, "generation": generation, "reloaded": True})

    def _describe(self, weights: Mapping[str, int], meta: Mapping[str, Any]) -> str:
        split = " / ".join(f"{track} {pct}%" for track, pct in sorted(weights.items()))
        backups = sum(1 for s in meta["servers"] if s.get("backup"))
        kept = f" ({backups} server(s) kept as backup)" if backups else ""
        return f"upstream {self.upstream_name}: {split}{kept}"

    def _nginx(self, *args: str, action: str) -> None:
        cmd = [self.nginx_binary, *args, "-c", str(self.conf_file)]
        try:
            result = self._run(cmd, capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            raise _Failed(f"{action}: the nginx binary {self.nginx_binary!r} was not found") from None
        except OSError as exc:
            raise _Failed(f"{action}: cannot run {self.nginx_binary!r}: {exc}") from None
        except subprocess.TimeoutExpired:
            raise _Failed(f"{action}: `{' '.join(cmd)}` did not finish in 30s") from None
        if result.returncode != 0:
            raise _Failed(f"{action}: {nginx_messages((result.stderr or '') + (result.stdout or ''))}")

    def _is_live(self, state: UpstreamState) -> bool:
        """Is `state` (what the file holds) what nginx serves right now?"""
        if self.status_port is not None:
            seen = self.live()
            return seen is not None and seen.generation == state.generation and seen.digest == state.digest
        return self._confirmed == state.digest and self.master_pid() is not None

    def _worker_pids(self) -> set[int]:
        """The master's worker processes before a reload (empty when the master cannot be found)."""
        master = self.master_pid()
        return set(children(master)) if master is not None else set()

    def _workers_retired(self, before: set[int]) -> bool | None:
        """After a reload: has the master started workers it did not have `before`, and is every one
        of those older workers gone or shutting down (no longer accepting)? None: no master found.

        nginx starts the new workers, sleeps 100 ms, then tells the old ones to quit: until then an
        old worker still accepts connections, with the old weights."""
        master = self.master_pid()
        if master is None:
            return None
        workers = children(master)
        fresh = set(workers) - before
        stale = [pid for pid in set(workers) & before if "shutting down" not in workers[pid]]
        return bool(fresh) and not stale

    def _confirm(self, generation: int, digest: str, before: set[int]) -> None:
        """Wait until the new config is what every accepting worker serves: the status endpoint reports
        `generation` (when there is one) and the master's pre-reload workers are retired."""
        deadline = time.monotonic() + self.timeout
        if self.status_port is not None:
            while True:
                seen = self.live()
                if seen is not None and seen.generation == generation and seen.digest == digest:
                    break
                if time.monotonic() >= deadline:
                    raise _Failed(f"generation {generation} was not live on {self.status_url} after "
                                  f"{self.timeout}s (nginx kept its old config: see its error log)")
                time.sleep(0.02)
            # Confirmed. Also wait (briefly) for the old workers to stop accepting, unless we cannot see them.
            deadline = min(deadline, time.monotonic() + 1.0)
        retired = self._workers_retired(before)
        while retired is False and time.monotonic() < deadline:
            time.sleep(0.02)
            retired = self._workers_retired(before)
        if retired or self.status_port is not None:
            if not retired:
                logger.warning(f"nginx: generation {generation} is live, but the old workers were not seen retiring")
            return
        if retired is None:
            raise _Failed("reload sent but no nginx master is running (pid file missing or stale): "
                          f"generation {generation} was not live")
        raise _Failed(f"the nginx master started no new workers, or kept old ones accepting, for "
                      f"{self.timeout}s: generation {generation} was not live (see nginx's error log)")

    def _restore(self, previous: bytes | None, mode: int, *, reload: bool) -> None:
        """Put the previous bytes back (or remove a file that did not exist); after a reload nginx
        did not take, reload again so nginx and the file agree."""
        try:
            if previous is None:
                with contextlib.suppress(FileNotFoundError):
                    self.upstream_file.unlink()
            else:
                atomic_write(self.upstream_file, previous, mode=mode)
        except OSError as exc:
            logger.error(f"nginx: could not restore {self.upstream_file}: {exc}")
            return
        if reload:
            with contextlib.suppress(_Failed):
                self._nginx("-s", "reload", action="reload of the restored file failed")

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

