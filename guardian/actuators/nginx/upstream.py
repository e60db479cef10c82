"""The upstream file nginx includes, as text: pure, no I/O.

Traffic per track follows the percentages whatever the number of servers per track: each server
gets `track% × its share of the track`, scaled to integers and reduced by their gcd (10% canary on
one server, 90% stable on three -> weights 1, 3, 3, 3). nginx rejects `weight=0`, so a track at 0%
has its servers marked `down` — or `backup` when the track is a *standby* one (a bake keeps the previous
version there: out of rotation, still in the upstream, and nginx passes it requests only when no primary
server answers; nginx's docs: `backup` "will be passed requests when the primary servers are unavailable").
The file's first line carries the state as JSON (generation, digest,
weights, servers), so `UpstreamState.parse` reads back exactly what was written, after a restart too.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from math import gcd, lcm
from typing import Any

MARKER = "# release-guardian upstream: "  # first line of every file the guardian writes, then JSON
STATUS_PATH = "/guardian/upstream"
CANARY, STABLE = "canary", "stable"
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # upstream and track names
_UNSAFE = re.compile(r"[\s;{}'\"$#\\]")  # would break out of an nginx token or the status JSON


def check_name(name: str) -> None:
    """ValueError unless `name` can be an upstream's name."""
    if not NAME.fullmatch(name or ""):
        raise ValueError(f"upstream name {name!r} must match {NAME.pattern}")


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
        if not NAME.fullmatch(self.track or ""):
            raise ValueError(f"backend track {self.track!r} must match {NAME.pattern}")
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


def _server(backend: Backend, weight: int | None, standby: Collection[str]) -> dict[str, Any]:
    """One server's line, as data: weighted, `down`, or (a standby track at 0%) `backup`. The `backup` key
    is only written when true, so the digests of files without standby servers stay what they were."""
    server = {"address": backend.address, "track": backend.track, "weight": weight, "down": weight is None}
    if weight is None and backend.track in standby:
        server |= {"down": False, "backup": True}
    return server


def upstream_meta(name: str, backends: Sequence[Backend], weights_by_track: Mapping[str, int],
                  status_port: int | None, standby: Collection[str] = ()) -> dict[str, Any]:
    """What a file for these servers and weights says about itself (no generation): its servers with their
    nginx weights, and a digest of it all, by which a router tells whether the same is live already.
    `standby`: tracks whose servers, at 0%, stay in the upstream as `backup` instead of `down`."""
    weights = server_weights(backends, weights_by_track)
    servers = [_server(b, w, standby) for b, w in zip(backends, weights, strict=True)]
    content = {"upstream": name, "weights": dict(sorted(weights_by_track.items())), "servers": servers,
               "status_port": status_port}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    return {**content, "digest": digest}


def render_upstream(name: str, backends: Sequence[Backend], weights_by_track: Mapping[str, int], *,
                    status_port: int | None = None, generation: int = 1, standby: Collection[str] = ()) -> str:
    """The file's text: a state line, `upstream NAME {...}`, and a status `server` when `status_port`
    is set, whose `GET /guardian/upstream` answers the generation, digest and weights as JSON.
    `standby`: tracks whose servers, at 0%, are written `backup` instead of `down` (see the module)."""
    check_name(name)
    if status_port is not None and not 0 < status_port < 65536:
        raise ValueError(f"status port {status_port} is not 1..65535")
    meta = {"generation": generation, **upstream_meta(name, backends, weights_by_track, status_port, standby)}
    lines = [
        MARKER + json.dumps(meta, sort_keys=True),
        "# Written by Release Guardian at each traffic change: edits here are overwritten.",
        f"upstream {name} {{",
    ]
    for s in meta["servers"]:
        state = "backup" if s.get("backup") else "down" if s["down"] else f"weight={s['weight']}"
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
    check_name(name)
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

