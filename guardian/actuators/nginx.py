"""Move traffic with nginx: weighted servers in an `upstream` block that the guardian rewrites.

The guardian owns one file, included in nginx's `http` context, holding `upstream NAME { ... }`
(and, when a status port is given, a tiny `server` that reports what is loaded). A traffic change:

1. render the new file; identical content already live -> nothing to do (idempotent);
2. write it next to the old one and `os.replace` it in (readers see the old or the new, never half);
3. `nginx -t -c CONF`: on failure put the previous bytes back and report nginx's own message;
4. `nginx -s reload -c CONF` (graceful: old workers finish the requests they hold);
5. confirm the new config is *live*: the status endpoint reports the new generation, and the master
   has started new workers and retired the old ones (without a status port only the latter); else
   put the previous file back, reload it, and report.

A reload drops no request on a new connection (measured in the tests under load). An old worker does
close its *idle keep-alive* connections when it retires, so a client that sends on such a connection
at that very moment sees it closed without a response: the ordinary HTTP/1.1 race that clients cover
by retrying idempotent requests (browsers and most proxies do; httpx does not).

Traffic per track follows the percentages whatever the number of servers per track: each server
gets `track% × its share of the track`, scaled to integers and reduced by their gcd (10% canary on
one server, 90% stable on three -> weights 1, 3, 3, 3). nginx rejects `weight=0`, so a track at 0%
has its servers marked `down`. The file's first line carries the state as JSON (generation, digest,
weights, servers), so `current()` reads back exactly what was written, after a restart too.

Targets (see `parse_nginx_target`):

    nginx:/etc/nginx/guardian/app.conf?conf=/etc/nginx/nginx.conf&upstream=app
         &canary=127.0.0.1:8002&stable=127.0.0.1:8001,127.0.0.1:8003&status=9145[&timeout=5]

A target may come from an API user, so the guardian only ever writes a `.conf` file that is absent,
empty or written by itself (first line `# release-guardian upstream: ...`): it never overwrites a
file it does not own.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from math import gcd, lcm
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl

import httpx
from loguru import logger

from guardian.actuators import ActionRequest
from guardian.domain import Action, Outcome
from guardian.errors import ActuatorError

MARKER = "# release-guardian upstream: "  # first line of every file the guardian writes, then JSON
STATUS_PATH = "/guardian/upstream"
CANARY, STABLE = "canary", "stable"
TRAFFIC_ACTIONS = frozenset({Action.START, Action.ADVANCE, Action.PROMOTE, Action.ROLLBACK})
MAX_REMEMBERED_KEYS = 10_000
DEFAULT_TIMEOUT = 5.0  # seconds for the new config to be confirmed live
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # upstream and track names
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?):([0-9]{1,5})")
_UNIX = re.compile(r"unix:/[A-Za-z0-9._/-]+")
_UNSAFE = re.compile(r"[\s;{}'\"$#\\]")  # would break out of an nginx token or the status JSON
_LOG_PREFIX = re.compile(r"^(?:\d{4}/\d\d/\d\d \d\d:\d\d:\d\d |nginx: )?(?:\[(\w+)\] )?(?:\d+#\d+: )?")
_SERIOUS = ("emerg", "alert", "crit", "error")


# -- rendering ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backend:
    """One nginx `server`: `address` is `HOST:PORT` or `unix:/path`; `weight_share` is its share of
    its track's traffic relative to the track's other servers (2 = twice as much as a 1)."""

    address: str
    track: str
    weight_share: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address or _UNSAFE.search(self.address):
            raise ValueError(f"backend address {self.address!r} is empty or holds a space or one of ;{{}}'\"$#\\")
        if not _NAME.fullmatch(self.track or ""):
            raise ValueError(f"backend track {self.track!r} must match {_NAME.pattern}")
        if not isinstance(self.weight_share, int) or isinstance(self.weight_share, bool) or self.weight_share < 1:
            raise ValueError(f"backend {self.address}: weight_share must be an integer >= 1, not {self.weight_share!r}")


def server_weights(backends: Sequence[Backend], weights_by_track: Mapping[str, int]) -> list[int | None]:
    """The nginx weight of each backend (None = `down`), so that each track gets its percentage.

    Raises ValueError when the percentages are not integers 0..100 summing to 100, a backend's track
    has no percentage, a track with traffic has no server, an address repeats, or no server is up.
    """
    if not backends:
        raise ValueError("no backends")
    for track, pct in weights_by_track.items():
        if not isinstance(pct, int) or isinstance(pct, bool) or not 0 <= pct <= 100:
            raise ValueError(f"track {track!r}: weight must be an integer percent 0..100, not {pct!r}")
    total = sum(weights_by_track.values())
    if total != 100:
        raise ValueError(f"track weights must sum to 100, not {total} ({dict(weights_by_track)})")
    seen: set[str] = set()
    shares: dict[str, int] = {}
    for b in backends:
        if b.address in seen:
            raise ValueError(f"backend {b.address} is listed twice")
        seen.add(b.address)
        if b.track not in weights_by_track:
            raise ValueError(f"backend {b.address} is on track {b.track!r}, which has no weight "
                             f"(tracks: {', '.join(sorted(weights_by_track))})")
        shares[b.track] = shares.get(b.track, 0) + b.weight_share
    for track, pct in weights_by_track.items():
        if pct > 0 and track not in shares:
            raise ValueError(f"track {track!r} should get {pct}% of the traffic but has no server")
    exact = [Fraction(weights_by_track[b.track] * b.weight_share, shares[b.track]) for b in backends]
    scale = lcm(*(f.denominator for f in exact))
    scaled = [int(f * scale) for f in exact]
    common = gcd(*scaled)
    if common == 0:
        raise ValueError("at least one server must be up (every track with servers is at 0%)")
    return [w // common if w else None for w in scaled]


def _meta(name: str, backends: Sequence[Backend], weights_by_track: Mapping[str, int],
          status_port: int | None) -> dict[str, Any]:
    weights = server_weights(backends, weights_by_track)
    servers = [{"address": b.address, "track": b.track, "weight": w, "down": w is None}
               for b, w in zip(backends, weights, strict=True)]
    content = {"upstream": name, "weights": dict(sorted(weights_by_track.items())), "servers": servers,
               "status_port": status_port}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    return {**content, "digest": digest}


def render_upstream(name: str, backends: Sequence[Backend], weights_by_track: Mapping[str, int], *,
                    status_port: int | None = None, generation: int = 1) -> str:
    """The file's text: a state line, `upstream NAME {...}`, and a status `server` when `status_port`
    is set, whose `GET /guardian/upstream` answers the generation, digest and weights as JSON."""
    if not _NAME.fullmatch(name or ""):
        raise ValueError(f"upstream name {name!r} must match {_NAME.pattern}")
    if status_port is not None and not 0 < status_port < 65536:
        raise ValueError(f"status port {status_port} is not 1..65535")
    meta = {"generation": generation, **_meta(name, backends, weights_by_track, status_port)}
    lines = [
        MARKER + json.dumps(meta, sort_keys=True),
        "# Written by Release Guardian at each traffic change: edits here are overwritten.",
        f"upstream {name} {{",
    ]
    for s in meta["servers"]:
        state = "down" if s["down"] else f"weight={s['weight']}"
        lines.append(f"    server {s['address']} {state};  # {s['track']}")
    lines.append("}")
    if status_port is not None:
        status = {k: meta[k] for k in ("generation", "digest", "upstream", "weights", "servers")}
        lines += [
            "server {",
            f"    listen 127.0.0.1:{status_port};",
            "    access_log off;",
            f"    location = {STATUS_PATH} {{",
            "        default_type application/json;",
            f"        return 200 '{json.dumps(status, sort_keys=True)}';",
            "    }",
            "    location / { return 404; }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def render_placeholder(name: str) -> str:
    """A guardian-owned upstream with no usable server (requests get 502): lets nginx start before
    the first traffic change, which may then overwrite it."""
    if not _NAME.fullmatch(name or ""):
        raise ValueError(f"upstream name {name!r} must match {_NAME.pattern}")
    meta = {"generation": 0, "digest": "", "upstream": name, "weights": {}, "servers": [], "status_port": None}
    return (f"{MARKER}{json.dumps(meta, sort_keys=True)}\n"
            f"# Placeholder until Release Guardian sets the first weights.\n"
            f"upstream {name} {{\n    server 127.0.0.1:9 down;\n}}\n")


@dataclass(frozen=True)
class UpstreamState:
    """What a guardian-written upstream file (or its status endpoint) says is configured."""

    generation: int
    digest: str
    upstream: str
    weights: dict[str, int]
    servers: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> UpstreamState:
        return cls(int(meta["generation"]), str(meta.get("digest", "")), str(meta.get("upstream", "")),
                   dict(meta.get("weights") or {}), list(meta.get("servers") or []))

    @classmethod
    def parse(cls, text: str) -> UpstreamState | None:
        """The state line of a file the guardian wrote; None for any other text."""
        first = text.split("\n", 1)[0]
        if not first.startswith(MARKER):
            return None
        try:
            return cls.from_meta(json.loads(first[len(MARKER):]))
        except (ValueError, KeyError, TypeError):
            return None

    def to_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "digest": self.digest, "upstream": self.upstream,
                "weights": dict(self.weights), "servers": [dict(s) for s in self.servers]}


# -- nginx itself -------------------------------------------------------------------------------------
def find_nginx(name: str = "nginx") -> str | None:
    """The nginx binary: `name` on PATH, else in /usr/sbin or /sbin (not on a non-root user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def nginx_messages(output: str) -> str:
    """nginx's own complaint from its stderr: the [emerg]/[alert]/[crit]/[error] lines, without
    timestamps and pids, joined by '; ' (all of the output if none is marked)."""
    found = []
    for line in output.splitlines():
        match = _LOG_PREFIX.match(line)
        level = match.group(1) if match else None
        if level in _SERIOUS:
            found.append(f"[{level}] {line[match.end():].strip()}")
    if found:
        return "; ".join(found)
    return " ".join(output.split())[:500] or "(no output)"


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of the live processes whose parent is `pid` (nginx's workers)."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
    return found


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` beside `path` and rename it over `path`: readers see the old or the new file.
    The temporary name starts with '.' and ends in '.tmp', so `include dir/*.conf` never picks it up."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
        if not _NAME.fullmatch(upstream_name or ""):
            raise ValueError(f"upstream name {upstream_name!r} must match {_NAME.pattern}")
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
    def apply(self, backends: Sequence[Backend], weights_by_track: Mapping[str, int]) -> Outcome:
        """Make nginx route `weights_by_track` percent of traffic to each track's backends.

        ok: the new config is live (data: weights, servers, generation, digest, reloaded). Not ok: the
        detail says why, and the file holds its previous bytes again; nothing is half-applied."""
        started = time.monotonic()
        with self._lock:
            try:
                with self._directory_lock():
                    outcome = self._apply(list(backends), dict(weights_by_track))
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

    def _apply(self, backends: list[Backend], weights: dict[str, int]) -> Outcome:
        try:
            wanted = _meta(self.upstream_name, backends, weights, self.status_port)
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
            return Outcome(True, "apply", f"nginx: {self._describe(weights)} already live "
                           f"(generation {old.generation}), not reloaded",
                           data={**data, "generation": old.generation, "reloaded": False})
        generation = (old.generation if old else 0) + 1
        try:
            text = render_upstream(self.upstream_name, backends, weights, status_port=self.status_port,
                                   generation=generation)
        except ValueError as exc:
            raise _Failed(f"cannot route {weights}: {exc}") from None
        _atomic_write(self.upstream_file, text.encode(), mode)
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
        return Outcome(True, "apply", f"nginx: {self._describe(weights)} live (generation {generation})",
                       data={**data, "generation": generation, "reloaded": True})

    def _describe(self, weights: Mapping[str, int]) -> str:
        split = " / ".join(f"{track} {pct}%" for track, pct in sorted(weights.items()))
        return f"upstream {self.upstream_name}: {split}"

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
        return set(_children(master)) if master is not None else set()

    def _workers_retired(self, before: set[int]) -> bool | None:
        """After a reload: has the master started workers it did not have `before`, and is every one
        of those older workers gone or shutting down (no longer accepting)? None: no master found.

        nginx starts the new workers, sleeps 100 ms, then tells the old ones to quit: until then an
        old worker still accepts connections, with the old weights."""
        master = self.master_pid()
        if master is None:
            return None
        workers = _children(master)
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
                _atomic_write(self.upstream_file, previous, mode)
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


# -- targets ------------------------------------------------------------------------------------------
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
    if path.startswith("//"):  # nginx:///etc/nginx/app.conf, URL style
        path = path[2:]
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
    if not _NAME.fullmatch(params["upstream"]):
        raise ActuatorError(f"parameter 'upstream': {params['upstream']!r} is not a name ({_NAME.pattern})")
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


# -- the actuator -------------------------------------------------------------------------------------
class NginxActuator:
    """Canary traffic through nginx: each action sets the canary track to the request's weight and
    the stable track to the rest. START/ADVANCE take `request.weight`, PROMOTE is 100, ROLLBACK 0;
    PAUSE, RESUME, SCALE (and CONTINUE, NOTIFY) change no traffic and succeed. Blue-green is the same
    code with a single 0 -> 100 step. Idempotent by `request.key`, and by content (see NginxRouter).
    """

    name = "nginx"
    supports: frozenset[Action] = frozenset(Action)

    def __init__(self, router: NginxRouter, canary: Sequence[str], stable: Sequence[str]) -> None:
        self.router = router
        self.backends = [Backend(a, CANARY) for a in canary] + [Backend(a, STABLE) for a in stable]
        server_weights(self.backends, {CANARY: 50, STABLE: 50})  # both tracks present, no address twice
        self._results: OrderedDict[str, Outcome] = OrderedDict()
        self._lock = threading.Lock()  # one traffic change at a time; the router serialises too

    @classmethod
    def from_target(
        cls,
        rest: str,
        *,
        timeout: float | None = None,
        nginx_binary: str = "nginx",
        run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
        http: httpx.Client | None = None,
        **_unused: Any,
    ) -> NginxActuator:
        """Build from a target (after `nginx:`). The target's `timeout` wins over the `timeout` dep."""
        t = parse_nginx_target(rest)
        router = NginxRouter(t.upstream_file, t.conf_file, upstream_name=t.upstream, status_port=t.status_port,
                             nginx_binary=nginx_binary, run=run, http=http,
                             timeout=t.timeout or timeout or DEFAULT_TIMEOUT)
        return cls(router, t.canary, t.stable)

    @staticmethod
    def canary_weight(request: ActionRequest) -> int | None:
        """The canary percent `request` asks for; None when the action moves no traffic."""
        if request.action is Action.PROMOTE:
            return 100
        if request.action is Action.ROLLBACK:
            return 0
        if request.action in TRAFFIC_ACTIONS:
            return request.weight
        return None

    def apply(self, request: ActionRequest) -> Outcome:
        """A key already applied OK returns its Outcome without touching nginx; a failed one is retried."""
        with self._lock:
            last = self._results.get(request.key)
            if last is not None and last.ok:
                return last
            outcome = self._apply(request)
            self._results[request.key] = outcome
            self._results.move_to_end(request.key)
            while len(self._results) > MAX_REMEMBERED_KEYS:
                self._results.popitem(last=False)
            return outcome

    def _apply(self, request: ActionRequest) -> Outcome:
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
        result = self.router.apply(self.backends, {CANARY: weight, STABLE: 100 - weight})
        detail = f"nginx: {action} {request.service}: " + result.detail.removeprefix("nginx: ")
        return Outcome(result.ok, action, detail, data={**result.data, **base})

    def verify(self, request: ActionRequest) -> Outcome:
        """Do the weights nginx serves (its status endpoint; the file when there is none) equal the
        ones `request` asked for, on this actuator's servers?"""
        action = request.action.value
        weight = self.canary_weight(request)
        if weight is None:
            return Outcome(True, action, f"nginx: {action} changes no traffic, nothing to verify")
        wanted = {CANARY: weight, STABLE: 100 - weight}
        try:
            digest = _meta(self.router.upstream_name, self.backends, wanted, self.router.status_port)["digest"]
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
        if seen.digest != digest:
            return Outcome(False, action, f"nginx: {request.key} asked for {wanted}, but {seen.weights} "
                           f"(generation {seen.generation}) is {where}", data=data)
        return Outcome(True, action, f"nginx: {wanted} is {where} (generation {seen.generation})", data=data)

    def close(self) -> None:
        self.router.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
