"""Leases: which guardian replica acts on which rollout.

Several replicas can share one PostgreSQL store. Each rollout has at most one *holder* at a time: the
replica whose lease on it has not expired. The scheduler acquires (or renews) a rollout's lease
before ticking it and skips rollouts leased to another replica; a held lease is renewed every
`lease_seconds / 3`, so a replica that dies loses its leases within `lease_seconds` and another
replica takes them over and carries on from the stored state (pending operations are resumed with
their idempotency key by the tick).

Expiry is computed by the database's clock (`now()`), never a replica's. Each takeover increments
the lease's *fencing token*; the store's writes for a rollout (state, ticks, the operation log)
check in the same transaction that this replica still holds the lease with the token it was granted,
so a replica that lost its lease (paused, partitioned) cannot write, and above all cannot begin an
action (`begin_op`): it gets `LeaseLost`.

Spread (`balance`): each replica writes a heartbeat to `replicas` at most every second (`lease_seconds / 3` if
shorter); the live ones are those seen within LIVE_SECONDS. A replica's share is ceil(rollouts in flight / live
replicas). Over its share it releases the excess (not those mid-tick); under it, it takes free rollouts (no
lease, or an expired one) up to its share, found in one query; it asks about no other rollout it does not hold.
So rollouts spread over the live replicas, a joining replica takes its share from the others within a few
passes, and a leaving one's rollouts (released at a clean stop, expired after a kill) are taken by the rest.

`LocalLeases` is the single-process implementation used with SQLite: always granted.
"""
from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from guardian.errors import LeaseRefused

LEASES_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    rollout_id TEXT PRIMARY KEY, holder TEXT NOT NULL, token BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS replicas (
    holder TEXT PRIMARY KEY, started_at TIMESTAMPTZ NOT NULL, seen_at TIMESTAMPTZ NOT NULL);
"""


# a replica is live while its heartbeat (every balance, at most 1 s apart) is this recent: one that missed three
# is left out of the shares (it keeps what it holds until its leases expire; only free rollouts move)
LIVE_SECONDS = 3.0


def _q(conn: Any, sql: str, params: tuple = ()) -> Any:
    """Run one statement with tuple rows (the store's connections hand out dicts)."""
    from psycopg.rows import tuple_row

    return conn.cursor(row_factory=tuple_row).execute(sql, params)


def replica_id() -> str:
    """A holder id unique to this process: host, pid and a random suffix (a restarted pid is a new holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Leases(Protocol):
    holder: str
    lease_seconds: float
    live: int  # replicas sharing the store that are alive, this one included
    share: float  # how many of the rollouts in flight this replica should hold (inf: all, before it has looked)

    def acquire(self, rollout_id: str) -> bool:
        """Take or renew the rollout's lease; False while another replica holds it."""
        ...

    def renew(self) -> list[str]:
        """Renew the held leases that are due (every lease_seconds / 3); returns the rollouts lost."""
        ...

    def release(self, rollout_id: str) -> None: ...

    def held(self) -> dict[str, int]:
        """The rollouts this replica holds, with their fencing tokens."""
        ...

    def balance(self, active: set[str], busy: set[str], let_go: Callable[[str], bool] | None = None) -> None:
        """Keep this replica's share of the rollouts in flight (`active`): release the excess (never one of
        `busy`, mid-tick, and only through `let_go`, which releases it unless a thread acts on it and says whether
        it did; `release` when None), take free ones while under it. Every scheduler pass; it queries when due."""
        ...

    def leave(self) -> None:
        """This replica stops: release every lease and say so (the others take its share at once)."""
        ...


class LocalLeases:
    """One process owns everything (SQLite): every lease is granted, nothing expires."""

    lease_seconds = float("inf")
    live, share = 1, math.inf

    def __init__(self, holder: str | None = None):
        self.holder = holder or replica_id()
        self._held: dict[str, int] = {}

    def acquire(self, rollout_id: str) -> bool:
        self._held.setdefault(rollout_id, 1)
        return True

    def renew(self) -> list[str]:
        return []

    def release(self, rollout_id: str) -> None:
        self._held.pop(rollout_id, None)

    def held(self) -> dict[str, int]:
        return dict(self._held)

    def balance(self, active: set[str], busy: set[str], let_go: Callable[[str], bool] | None = None) -> None:
        return None

    def leave(self) -> None:
        self._held.clear()


class PostgresLeases:
    """Leases in the `leases` table of a PostgresStore (one row per rollout: holder, token, expiry)."""

    def __init__(self, pool: Any, holder: str | None = None, lease_seconds: float = 15.0):
        self.pool, self.holder, self.lease_seconds = pool, holder or replica_id(), float(lease_seconds)
        self._held: dict[str, int] = {}  # rollout id -> fencing token granted to this replica
        self._renewed = 0.0  # monotonic time of the last renewal of every held lease
        self._retry_at: dict[str, float] = {}  # rollout id -> when another replica's lease may have expired
        self._lock = threading.Lock()
        self.share = math.inf  # how many rollouts this replica should hold (balance); all until it has looked
        self.live = 1  # replicas seen within LIVE_SECONDS, itself included
        self._balanced = 0.0  # monotonic time of the last balance that asked the database

    # -- the scheduler's side -------------------------------------------------------------------------
    def acquire(self, rollout_id: str) -> bool:
        with self._lock:
            if rollout_id in self._held and time.monotonic() - self._renewed < self.lease_seconds / 3:
                return True  # held, and renewed recently enough
            if time.monotonic() < self._retry_at.get(rollout_id, 0.0):
                return False  # leased to another replica, which renewed it: no need to ask before it may expire
            if rollout_id not in self._held and self.share != math.inf:
                return False  # balancing: free rollouts are taken by `balance`, up to the replica's share
        return self._take(rollout_id)

    def _take(self, rollout_id: str) -> bool:
        with self.pool.connection() as conn, conn.transaction():
            row = _q(
                conn, "INSERT INTO leases AS l (rollout_id, holder, token, acquired_at, expires_at) "
                "VALUES (%s, %s, 1, now(), now() + make_interval(secs => %s)) "
                "ON CONFLICT (rollout_id) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at, "
                "token = CASE WHEN l.holder = EXCLUDED.holder THEN l.token ELSE l.token + 1 END, "
                "acquired_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at ELSE now() END "
                "WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now() "
                "RETURNING token", (rollout_id, self.holder, self.lease_seconds)).fetchone()
            other = None if row else _q(
                conn, "SELECT holder, GREATEST(EXTRACT(EPOCH FROM expires_at - now()), 0) FROM leases "
                "WHERE rollout_id = %s", (rollout_id,)).fetchone()
        with self._lock:
            if row is None:
                self._held.pop(rollout_id, None)
                # ask again when it may have expired, or within 1 s (it may be released earlier)
                self._retry_at[rollout_id] = time.monotonic() + min(float(other[1]) if other else 0.0, 1.0)
                return False
            self._retry_at.pop(rollout_id, None)
            self._held[rollout_id] = row[0]
            return True

    def renew(self) -> list[str]:
        with self._lock:
            if not self._held or time.monotonic() - self._renewed < self.lease_seconds / 3:
                return []
            held = dict(self._held)
            began = time.monotonic()
        with self.pool.connection() as conn, conn.transaction():
            rows = _q(
                conn, "UPDATE leases SET expires_at = now() + make_interval(secs => %s) "
                "WHERE holder = %s AND rollout_id = ANY(%s) RETURNING rollout_id, token",
                (self.lease_seconds, self.holder, list(held))).fetchall()
        kept = {r[0] for r in rows if held.get(r[0]) == r[1]}
        lost = [rid for rid in held if rid not in kept]
        with self._lock:
            self._renewed = began
            for rid in lost:
                if self._held.get(rid) == held[rid]:
                    self._held.pop(rid)
        return lost

    def release(self, rollout_id: str) -> None:
        """Let the lease expire now (the row and its token stay: tokens only ever grow)."""
        with self._lock:
            token = self._held.pop(rollout_id, None)
            self._retry_at.pop(rollout_id, None)
        if token is not None:
            with self.pool.connection() as conn:
                conn.execute("UPDATE leases SET expires_at = now() WHERE rollout_id = %s AND holder = %s "
                             "AND token = %s", (rollout_id, self.holder, token))

    def held(self) -> dict[str, int]:
        with self._lock:
            return dict(self._held)

    def balance(self, active: set[str], busy: set[str], let_go: Callable[[str], bool] | None = None) -> None:
        if time.monotonic() - self._balanced < min(1.0, self.lease_seconds / 3):
            return
        self._balanced = time.monotonic()
        with self.pool.connection() as conn:
            _q(conn, "INSERT INTO replicas (holder, started_at, seen_at) VALUES (%s, now(), now()) "
                     "ON CONFLICT (holder) DO UPDATE SET seen_at = now()", (self.holder,))
            live = _q(conn, "SELECT count(*) FROM replicas WHERE seen_at > now() - make_interval(secs => %s)",
                      (LIVE_SECONDS,)).fetchone()[0]
            self.live = max(1, int(live))
            self.share = math.ceil(len(active) / self.live)
            with self._lock:
                held = [rid for rid in self._held if rid in active]
            wanted = self.share - len(held)
            free = [] if wanted <= 0 else [r[0] for r in _q(
                conn, "SELECT r.id FROM unnest(%s::text[]) AS r(id) LEFT JOIN leases l ON l.rollout_id = r.id "
                      "WHERE l.rollout_id IS NULL OR l.expires_at <= now() ORDER BY r.id LIMIT %s",
                (sorted(active - set(held)), wanted)).fetchall()]
        excess = -wanted
        for rid in held:  # over its share: the first taken go to the others, none a thread acts on
            if excess <= 0:
                break
            if rid not in busy and (let_go(rid) if let_go is not None else self._released(rid)):
                excess -= 1
        for rid in free:
            with self._lock:
                self._retry_at.pop(rid, None)
            self._take(rid)

    def _released(self, rollout_id: str) -> bool:
        self.release(rollout_id)
        return True

    def leave(self) -> None:
        for rid in list(self.held()):
            self.release(rid)
        with self.pool.connection() as conn:
            _q(conn, "DELETE FROM replicas WHERE holder = %s", (self.holder,))

    # -- the store's side: inside a write transaction ------------------------------------------------
    def fence(self, conn: Any, rollout_id: str, *, required: bool = True) -> bool:
        """Check, in the caller's transaction, that this replica holds the rollout's lease, locking the
        lease row until the transaction ends (a takeover waits for it). A rollout nobody holds (new, or
        its holder's lease expired) is taken over here. Raises LeaseRefused (or returns False when not
        `required`) when another replica holds it or took it over since this replica was granted it."""
        with self._lock:
            mine = self._held.get(rollout_id)
        row = _q(conn, "SELECT holder, token, expires_at > now(), expires_at FROM leases WHERE rollout_id = %s "
                           "FOR UPDATE", (rollout_id,)).fetchone()
        if row is not None and row[0] == self.holder and (mine is None or row[1] == mine):
            token = row[1]  # ours (even if it just expired: nobody took it, the token proves it)
            if not row[2]:
                conn.execute("UPDATE leases SET expires_at = now() + make_interval(secs => %s) WHERE rollout_id = %s",
                             (self.lease_seconds, rollout_id))
        elif mine is None and (row is None or not row[2]):
            token = (row[1] + 1) if row else 1
            conn.execute(
                "INSERT INTO leases (rollout_id, holder, token, acquired_at, expires_at) "
                "VALUES (%s, %s, %s, now(), now() + make_interval(secs => %s)) ON CONFLICT (rollout_id) DO UPDATE "
                "SET holder = EXCLUDED.holder, token = EXCLUDED.token, acquired_at = EXCLUDED.acquired_at, "
                "expires_at = EXCLUDED.expires_at", (rollout_id, self.holder, token, self.lease_seconds))
        else:
            with self._lock:
                if mine is not None and self._held.get(rollout_id) == mine:
                    self._held.pop(rollout_id)
            if not required:
                return False
            who = f"replica {row[0]} (token {row[1]}, until {row[3]:%H:%M:%S})" if row else "nobody"
            raise LeaseRefused(f"rollout {rollout_id} is leased to {who}, not to this replica ({self.holder}); "
                            "send the request to that replica, or retry once its lease expires")
        with self._lock:
            self._held[rollout_id] = token
        return True
