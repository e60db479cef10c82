"""The `StateStore` on PostgreSQL (psycopg 3, a small connection pool), for several guardian replicas.

The same tables and semantics as `SQLiteStore` (engine/store.py): the partial unique index refuses a
second rollout in flight per service (RolloutConflict), the operation log's keys are UNIQUE, every
multi-row change is one transaction, alerts keep the latest word per fingerprint. Plus `intents`
(engine/intents.py: commands another replica received, for the holder to carry out) and `leases`
(engine/leases.py): every write for a rollout (its state, ticks, operation log and decision log)
checks in its own transaction that this replica holds the rollout's lease, so a replica that lost it
cannot write; `pending_ops` hands interrupted operations only to the holder.

The URL's password is never logged: `redact(url)` is what goes into messages.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from guardian.domain import Decision, Phase, RolloutState
from guardian.engine.alerts import StoredAlert
from guardian.engine.intents import PENDING, REFUSED, RUNNING, Intent, orphaned
from guardian.engine.leases import LEASES_SCHEMA, PostgresLeases
from guardian.engine.store import IN_FLIGHT_SQL, SQLiteStore, _dumps
from guardian.errors import RolloutConflict, RolloutEnded, RolloutNotFound, StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY, service TEXT NOT NULL, phase TEXT NOT NULL,
    state TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
DROP INDEX IF EXISTS one_in_flight_per_service;
CREATE UNIQUE INDEX IF NOT EXISTS one_in_flight_per_service_v2
    ON rollouts(service) WHERE phase IN """ + IN_FLIGHT_SQL + """;
CREATE TABLE IF NOT EXISTS ticks (
    rollout_id TEXT NOT NULL, tick BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL,
    "values" TEXT NOT NULL, unavailable TEXT, verdicts TEXT NOT NULL, decision TEXT,
    PRIMARY KEY (rollout_id, tick));
CREATE TABLE IF NOT EXISTS ops (
    rollout_id TEXT NOT NULL, seq BIGINT NOT NULL, key TEXT NOT NULL UNIQUE, request TEXT NOT NULL,
    decision TEXT NOT NULL, status TEXT NOT NULL, outcome TEXT, created_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION, PRIMARY KEY (rollout_id, seq));
CREATE TABLE IF NOT EXISTS models (
    rollout_id TEXT PRIMARY KEY, snapshot TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    rollout_id TEXT NOT NULL, seq BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL, decision TEXT NOT NULL,
    outcome TEXT, PRIMARY KEY (rollout_id, seq));
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, labels TEXT NOT NULL,
    annotations TEXT NOT NULL, starts_at DOUBLE PRECISION NOT NULL, ends_at DOUBLE PRECISION,
    received_at DOUBLE PRECISION NOT NULL, group_key TEXT NOT NULL DEFAULT '', posts INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS marks (
    rollout_id TEXT NOT NULL, name TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, PRIMARY KEY (rollout_id, name));
CREATE TABLE IF NOT EXISTS intents (
    id BIGSERIAL PRIMARY KEY, rollout_id TEXT NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL,
    by_name TEXT, source TEXT NOT NULL, filed_by TEXT NOT NULL, filed_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', done_by TEXT, done_at DOUBLE PRECISION, token BIGINT,
    payload TEXT);
ALTER TABLE intents ADD COLUMN IF NOT EXISTS payload TEXT;
CREATE INDEX IF NOT EXISTS intents_open ON intents(rollout_id) WHERE status IN ('pending', 'running');
""" + LEASES_SCHEMA

_SCHEMA_LOCK = 0x67756172  # advisory lock: two replicas starting at once create the schema one after the other


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).split("://", 1)[0] in ("postgresql", "postgres")


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for logs and messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
    except ValueError:
        return "postgresql://***"


class _Conn:
    """What the SQLite-shaped helpers of SQLiteStore expect from a connection: execute(sql, params)."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def execute(self, sql: str, params: tuple = ()) -> psycopg.Cursor:
        return self.conn.execute(sql.replace("?", "%s"), params)


class PostgresStore(SQLiteStore):
    """SQLiteStore's queries (they are plain SQL) on a PostgreSQL connection pool; only what differs
    between the two dialects, the transactions and the lease checks are written here."""

    def __init__(self, url: str, *, holder: str | None = None, lease_seconds: float = 15.0, pool_size: int = 4,
                 connect_timeout: float = 10.0):
        self.path = redact(url)  # what SQLiteStore's messages call the database: never the password
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False, timeout=connect_timeout,
                                    kwargs={"autocommit": True, "row_factory": dict_row})
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except Exception as e:  # psycopg's message may quote the conninfo: name the redacted URL only
            self._pool.close()
            raise StoreError(f"cannot connect to {self.path}: {type(e).__name__}") from None
        self.leases = PostgresLeases(self._pool, holder, lease_seconds)
        self._in_flight: dict[str, tuple[str, RolloutState]] = {}  # list(active_only)'s rows as read, decoded
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[_Conn]:
        with self._pool.connection() as conn, conn.transaction():
            yield _Conn(conn)

    @contextmanager
    def _read(self) -> Iterator[_Conn]:
        with self._pool.connection() as conn:
            yield _Conn(conn)

    def _fenced(self, db: _Conn, rollout_id: str) -> None:
        self.leases.fence(db.conn, rollout_id)

    def ping(self) -> bool:
        with self._read() as db:
            return db.execute("SELECT 1 AS one").fetchone()["one"] == 1

    def close(self) -> None:
        self._pool.close()

    # -- alerts -----------------------------------------------------------------------------------
    def save_alerts(self, alerts: list[StoredAlert]) -> list[StoredAlert]:
        changed = []
        with self._tx() as db:
            for a in alerts:
                row = db.execute("SELECT status, starts_at, ends_at FROM alerts WHERE fingerprint = ? FOR UPDATE",
                                 (a.fingerprint,)).fetchone()
                if row is not None and (row["status"], row["starts_at"], row["ends_at"]) == (
                        a.status, a.starts_at, a.ends_at):
                    db.execute("UPDATE alerts SET posts = posts + 1 WHERE fingerprint = ?", (a.fingerprint,))
                    continue
                db.execute(
                    "INSERT INTO alerts AS t (fingerprint, name, status, labels, annotations, starts_at, ends_at, "
                    "received_at, group_key) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(fingerprint) DO UPDATE SET "
                    "name=excluded.name, status=excluded.status, labels=excluded.labels, "
                    "annotations=excluded.annotations, starts_at=excluded.starts_at, ends_at=excluded.ends_at, "
                    "received_at=excluded.received_at, group_key=excluded.group_key, posts=t.posts+1",
                    (a.fingerprint, a.name, a.status, _dumps(dict(a.labels)), _dumps(dict(a.annotations)),
                     a.starts_at, a.ends_at, a.received_at, a.group_key))
                changed.append(a)
        return changed

    def alerts(self, *, firing_only: bool = False) -> list[StoredAlert]:
        where = " WHERE status = 'firing'" if firing_only else ""
        with self._read() as db:
            rows = db.execute(f"SELECT * FROM alerts{where} ORDER BY received_at, fingerprint").fetchall()
        return [StoredAlert(fingerprint=r["fingerprint"], name=r["name"], status=r["status"],
                            labels=orjson.loads(r["labels"]), annotations=orjson.loads(r["annotations"]),
                            starts_at=r["starts_at"], ends_at=r["ends_at"], received_at=r["received_at"],
                            group_key=r["group_key"]) for r in rows]

    # -- rollouts ---------------------------------------------------------------------------------
    def create(self, state: RolloutState, ending: Sequence[tuple[RolloutState, Decision]] = ()) -> None:
        """Store a new rollout; the replica creating it takes its lease in the same transaction, and ends the
        watches in `ending` in it, fenced by their leases (LeaseRefused, nothing written, when another holds one)."""
        try:
            with self._tx() as db:
                self._end(db, ending)  # fenced by each watch's lease (_save): refused, nothing is written
                db.execute(
                    "INSERT INTO rollouts (id, service, phase, state, created_at, updated_at) VALUES (?,?,?,?,?,?)",
                    (state.id, state.service, state.phase.value, _dumps(state.to_dict()),
                     state.created_at, state.updated_at))
                self._fenced(db, state.id)
        except psycopg.errors.UniqueViolation:
            active = [s.id for s in self.list(active_only=True) if s.service == state.service]
            raise RolloutConflict(
                f"service {state.service!r} already has a rollout in flight: {', '.join(active) or '?'}"
            ) from None

    def get(self, rollout_id: str) -> RolloutState:
        with self._read() as db:
            row = db.execute("SELECT state FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        if row is None:
            raise RolloutNotFound(f"no rollout with id {rollout_id!r}")
        return RolloutState.from_dict(orjson.loads(row["state"]))

    def list(self, *, active_only: bool = False) -> list[RolloutState]:
        sql = "SELECT id, state FROM rollouts"
        if active_only:
            sql += " WHERE phase IN " + IN_FLIGHT_SQL
        with self._read() as db:
            rows = db.execute(sql + " ORDER BY created_at").fetchall()
        if not active_only:
            return [RolloutState.from_dict(orjson.loads(r["state"])) for r in rows]
        # every scheduler pass lists the rollouts in flight (5 a second): a row unchanged since the last list is
        # not decoded again (a thousand rollouts' decoding was a tenth of a replica's CPU); states are frozen
        known, fresh = self._in_flight, {}
        for r in rows:
            same = known.get(r["id"])
            fresh[r["id"]] = same if same is not None and same[0] == r["state"] else \
                (r["state"], RolloutState.from_dict(orjson.loads(r["state"])))
        self._in_flight = fresh
        return [state for _, state in fresh.values()]

    def _save(self, db: _Conn, state: RolloutState) -> None:
        self._fenced(db, state.id)
        super()._save(db, state)

    # -- ticks and evidence -----------------------------------------------------------------------
    def record_tick(self, state, tick, at, values, unavailable, verdicts, decision) -> None:
        with self._tx() as db:
            self._save(db, state)  # fenced first: a replica without the lease writes no tick either
            db.execute(
                'INSERT INTO ticks (rollout_id, tick, at, "values", unavailable, verdicts, decision) '
                'VALUES (?,?,?,?,?,?,?) ON CONFLICT (rollout_id, tick) DO UPDATE SET at = excluded.at, '
                '"values" = excluded."values", unavailable = excluded.unavailable, verdicts = excluded.verdicts, '
                "decision = excluded.decision",
                (state.id, tick, at, _dumps(values), unavailable, _dumps([v.to_dict() for v in verdicts]),
                 _dumps(decision.to_dict()) if decision else None))

    def ticks(self, rollout_id: str, *, latest_only: bool = False) -> list[dict[str, Any]]:
        sql = 'SELECT tick, at, "values", unavailable, verdicts, decision FROM ticks WHERE rollout_id = ? '
        sql += "ORDER BY tick DESC LIMIT 1" if latest_only else "ORDER BY tick"
        with self._read() as db:
            rows = db.execute(sql, (rollout_id,)).fetchall()
        return [
            {"tick": r["tick"], "at": r["at"], "values": orjson.loads(r["values"]), "unavailable": r["unavailable"],
             "verdicts": orjson.loads(r["verdicts"]),
             "decision": orjson.loads(r["decision"]) if r["decision"] else None}
            for r in rows
        ]

    def save_models(self, rollout_id: str, snapshot: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO models (rollout_id, snapshot) VALUES (?, ?) ON CONFLICT (rollout_id) "
                       "DO UPDATE SET snapshot = excluded.snapshot", (rollout_id, _dumps(snapshot)))

    def models(self, rollout_id: str) -> dict[str, Any]:
        with self._read() as db:
            row = db.execute("SELECT snapshot FROM models WHERE rollout_id = ?", (rollout_id,)).fetchone()
        return orjson.loads(row["snapshot"]) if row else {}

    # -- operation log ----------------------------------------------------------------------------
    def begin_op(self, rollout_id, key, request, decision, at) -> int:
        """Write an action's intent, only while this replica holds the rollout's lease (checked and the
        lease row locked in this transaction: a replica that lost its lease begins nothing)."""
        with self._tx() as db:
            self._fenced(db, rollout_id)
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM ops WHERE rollout_id = ?",
                             (rollout_id,)).fetchone()["n"]
            db.execute(
                "INSERT INTO ops (rollout_id, seq, key, request, decision, status, created_at) "
                "VALUES (?,?,?,?,?,'pending',?)",
                (rollout_id, seq, key, _dumps(request), _dumps(decision.to_dict()), at))
        return seq

    def next_op_seq(self, rollout_id: str) -> int:
        with self._read() as db:
            return db.execute("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM ops WHERE rollout_id = ?",
                              (rollout_id,)).fetchone()["n"]

    def finish_op(self, rollout_id, seq, outcome, decision, state, at) -> None:
        with self._tx() as db:
            self._fenced(db, rollout_id)
            db.execute(
                "UPDATE ops SET status = ?, outcome = ?, finished_at = ? WHERE rollout_id = ? AND seq = ?",
                ("done" if outcome.ok else "failed", _dumps(outcome.to_dict()), at, rollout_id, seq))
            self._log_decision(db, rollout_id, decision, outcome, at)
            if state is not None:
                self._save(db, state)

    def log_decision(self, rollout_id, decision, outcome, at, state=None) -> None:
        with self._tx() as db:
            self._fenced(db, rollout_id)
            self._log_decision(db, rollout_id, decision, outcome, at)
            if state is not None:
                self._save(db, state)

    def _log_decision(self, db, rollout_id, decision, outcome, at) -> None:
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM decisions WHERE rollout_id = ?",
                         (rollout_id,)).fetchone()["n"]
        db.execute("INSERT INTO decisions (rollout_id, seq, at, decision, outcome) VALUES (?,?,?,?,?)",
                   (rollout_id, seq, at, _dumps(decision.to_dict()),
                    _dumps(outcome.to_dict()) if outcome else None))

    def pending_ops(self, rollout_id: str) -> list[dict[str, Any]]:
        """The interrupted operations, for the replica holding the lease only (another gets none: the
        holder resumes them). A rollout nobody holds is taken over here."""
        with self._tx() as db:
            if not self.leases.fence(db.conn, rollout_id, required=False):
                return []
            rows = db.execute("SELECT seq, key, request, decision FROM ops WHERE rollout_id = ? "
                              "AND status = 'pending' ORDER BY seq", (rollout_id,)).fetchall()
        return [{"seq": r["seq"], "key": r["key"], "request": orjson.loads(r["request"]),
                 "decision": orjson.loads(r["decision"])} for r in rows]

    def ops(self, rollout_id: str) -> list[dict[str, Any]]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM ops WHERE rollout_id = ? ORDER BY seq", (rollout_id,)).fetchall()
        return [{**dict(r), "request": orjson.loads(r["request"]), "decision": orjson.loads(r["decision"]),
                 "outcome": orjson.loads(r["outcome"]) if r["outcome"] else None} for r in rows]

    def decisions(self, rollout_id: str) -> list[dict[str, Any]]:
        with self._read() as db:
            rows = db.execute("SELECT seq, at, decision, outcome FROM decisions WHERE rollout_id = ? "
                              "ORDER BY seq", (rollout_id,)).fetchall()
        return [{"seq": r["seq"], "at": r["at"], **orjson.loads(r["decision"]),
                 "outcome": orjson.loads(r["outcome"]) if r["outcome"] else None} for r in rows]

    # -- intents: commands for the rollout's holder (engine/intents.py) --------------------------------
    def file_intent(self, rollout_id: str, action: str, reason: str, by: str | None, source: str,
                    at: float, payload: dict[str, Any] | None = None) -> Intent:
        with self._tx() as db:
            found = db.execute("SELECT phase FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
            if found is None:
                raise RolloutNotFound(f"no rollout with id {rollout_id!r}")
            if Phase(found["phase"]).terminal:  # what the holder would answer: nothing left to file it for
                raise RolloutEnded(f"rollout {rollout_id} is already {found['phase']}")
            row = db.execute(
                "INSERT INTO intents (rollout_id, action, reason, by_name, source, filed_by, filed_at, status, "
                "payload) VALUES (?,?,?,?,?,?,?,?,?) RETURNING *",
                (rollout_id, action, reason, by, source, self.leases.holder, at, PENDING,
                 _dumps(payload) if payload is not None else None)).fetchone()
        return _intent(row)

    def intent(self, intent_id: int) -> Intent:
        with self._read() as db:
            row = db.execute("SELECT * FROM intents WHERE id = ?", (intent_id,)).fetchone()
        if row is None:
            raise RolloutNotFound(f"no intent with id {intent_id}")
        return _intent(row)

    def pending_intents(self, rollout_ids: list[str]) -> list[Intent]:
        held = self.leases.held()
        with self._read() as db:
            rows = db.execute("SELECT * FROM intents WHERE status IN ('pending', 'running') AND rollout_id = ANY(?) "
                              "ORDER BY id", (list(rollout_ids),)).fetchall()
        # running under an older token: claimed by a holder that lost the rollout before finishing it
        return [_intent(r) for r in rows if r["status"] == PENDING or (r["token"] or 0) < held.get(r["rollout_id"], 0)]

    def claim_intent(self, intent: Intent) -> bool:
        with self._tx() as db:
            if not self.leases.fence(db.conn, intent.rollout_id, required=False):
                return False
            token = self.leases.held().get(intent.rollout_id, 0)
            row = db.execute(
                "UPDATE intents SET status = ?, token = ?, done_by = ? WHERE id = ? AND (status = ? OR "
                "(status = ? AND COALESCE(token, 0) < ?)) RETURNING id",
                (RUNNING, token, self.leases.holder, intent.id, PENDING, RUNNING, token)).fetchone()
        return row is not None

    def refuse_orphaned_intents(self, at: float) -> list[Intent]:
        # pending, or running under a lease nobody holds any more (a holder stopped midway); one being carried out
        # (its holder's lease live) is left to that holder, which finishes it
        with self._tx() as db:
            rows = db.execute(
                "SELECT i.*, r.phase AS rollout_phase FROM intents i JOIN rollouts r ON r.id = i.rollout_id "
                "WHERE i.status IN ('pending', 'running') AND r.phase NOT IN " + IN_FLIGHT_SQL + " AND "
                "(i.status = 'pending' OR NOT EXISTS (SELECT 1 FROM leases l WHERE l.rollout_id = i.rollout_id "
                "AND l.expires_at > now())) ORDER BY i.id FOR UPDATE OF i SKIP LOCKED").fetchall()
            refused = [replace(_intent(r), status=REFUSED, detail=orphaned(_intent(r), r["rollout_phase"]),
                               done_by=self.leases.holder, done_at=at) for r in rows]
            for intent in refused:
                db.execute("UPDATE intents SET status = ?, detail = ?, done_by = ?, done_at = ? WHERE id = ?",
                           (intent.status, intent.detail, intent.done_by, at, intent.id))
        return refused

    def finish_intent(self, intent_id: int, status: str, detail: str, at: float) -> None:
        with self._tx() as db:
            row = db.execute("SELECT rollout_id FROM intents WHERE id = ?", (intent_id,)).fetchone()
            if row is None or not self.leases.fence(db.conn, row["rollout_id"], required=False):
                # the outcome stands in the rollout's own log; the intent stays running for the next holder
                return
            db.execute("UPDATE intents SET status = ?, detail = ?, done_by = ?, done_at = ? WHERE id = ?",
                       (status, detail, self.leases.holder, at, intent_id))


def _intent(row: dict[str, Any]) -> Intent:
    return Intent(id=row["id"], rollout_id=row["rollout_id"], action=row["action"], reason=row["reason"],
                  by=row["by_name"], source=row["source"], filed_by=row["filed_by"], filed_at=row["filed_at"],
                  status=row["status"], detail=row["detail"], done_by=row["done_by"], done_at=row["done_at"],
                  token=row["token"], payload=orjson.loads(row["payload"]) if row["payload"] else None)
