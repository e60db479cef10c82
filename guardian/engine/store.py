"""State and history of rollouts in SQLite (WAL), the embedded default `StateStore`.

Tables: `alerts` (every Alertmanager alert, the latest word per fingerprint), `rollouts` (the
current RolloutState), `models` (the forecast models frozen at its start),
`ticks` (what each tick fetched, the verdicts and the decision: the body of the rollout's
recording), `ops` (the operation log: an action's intent is written before the actuator is called
and its outcome after, so a crash in between is resumed with the same idempotency key) and
`decisions` (the decision log: every decision that acted, with its evidence and outcome). Every
multi-row change is one transaction.

At most one rollout of a service is in flight: a partial unique index makes the database itself
refuse a second one, even from two guardian processes.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from guardian.domain import ARMS, Action, Decision, Evidence, Outcome, Phase, RolloutState, Verdict
from guardian.engine.alerts import StoredAlert
from guardian.errors import RolloutConflict, RolloutNotFound
from guardian.redact import redact

RECORDING_FORMAT = "guardian-recording/v1"
# a watch's frozen snapshot (`models` table) also holds what it started from under this key; its recording carries
# that as `watch` (engine/watches.py `watch_snapshot`), so a replay starts the watch where it started live
WATCH_KEY = "#watch"


def _dumps(obj: Any) -> str:
    """JSON text for a column (orjson: the tick rows are written on every tick of every rollout)."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()

# the phases of a rollout in flight (not ended): at most one per service, the scheduler's to tick
IN_FLIGHT_SQL = "(" + ", ".join(f"'{p.value}'" for p in Phase if not p.terminal) + ")"

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY, service TEXT NOT NULL, phase TEXT NOT NULL,
    state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
DROP INDEX IF EXISTS one_in_flight_per_service;
CREATE UNIQUE INDEX IF NOT EXISTS one_in_flight_per_service_v2
    ON rollouts(service) WHERE phase IN """ + IN_FLIGHT_SQL + """;
CREATE TABLE IF NOT EXISTS ticks (
    rollout_id TEXT NOT NULL, tick INTEGER NOT NULL, at REAL NOT NULL,
    "values" TEXT NOT NULL, unavailable TEXT, verdicts TEXT NOT NULL, decision TEXT,
    PRIMARY KEY (rollout_id, tick));
CREATE TABLE IF NOT EXISTS ops (
    rollout_id TEXT NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL UNIQUE, request TEXT NOT NULL,
    decision TEXT NOT NULL, status TEXT NOT NULL, outcome TEXT, created_at REAL NOT NULL, finished_at REAL,
    PRIMARY KEY (rollout_id, seq));
CREATE TABLE IF NOT EXISTS models (
    rollout_id TEXT PRIMARY KEY, snapshot TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    rollout_id TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL, decision TEXT NOT NULL,
    outcome TEXT, PRIMARY KEY (rollout_id, seq));
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, labels TEXT NOT NULL,
    annotations TEXT NOT NULL, starts_at REAL NOT NULL, ends_at REAL, received_at REAL NOT NULL,
    group_key TEXT NOT NULL DEFAULT '', posts INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS marks (
    rollout_id TEXT NOT NULL, name TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (rollout_id, name));
"""


class StateStore(Protocol):
    """Everything the engine, the API and the CLI ask of a store. SQLiteStore (here) and PostgresStore
    (store_pg.py) implement it; nothing outside the two is typed against either: they take a StateStore."""

    path: str  # where it is, as it may be shown (a PostgreSQL URL without its password)

    # rollouts
    def create(self, state: RolloutState, ending: Sequence[tuple[RolloutState, Decision]] = ()) -> None:
        """Store a new rollout; RolloutConflict when its service has one in flight already. `ending`: the
        service's watches that give way to it, each ended (its state after, the decision saying why) in the same
        transaction, so a start that ends a watch is the one that takes its place (nothing written when refused)."""
        ...

    def get(self, rollout_id: str) -> RolloutState:
        """The rollout's state; RolloutNotFound when there is none."""
        ...

    def list(self, *, active_only: bool = False) -> list[RolloutState]: ...
    def save(self, state: RolloutState) -> None: ...

    # ticks and the evidence they make
    def record_tick(self, state: RolloutState, tick: int, at: float, values: dict, unavailable: str | None,
                    verdicts: list[Verdict], decision: Decision | None) -> None: ...
    def ticks(self, rollout_id: str, *, latest_only: bool = False) -> list[dict[str, Any]]: ...
    def latest_tick(self, rollout_id: str) -> dict[str, Any] | None: ...
    def evidence(self, rollout_id: str, step_seconds: float, counters: frozenset[str] = frozenset()) -> Evidence: ...
    def save_models(self, rollout_id: str, snapshot: dict[str, Any]) -> None: ...
    def models(self, rollout_id: str) -> dict[str, Any]: ...

    # the operation log (an action's intent before it is applied, its outcome after) and the decision log
    def next_op_seq(self, rollout_id: str) -> int: ...
    def begin_op(self, rollout_id: str, key: str, request: dict, decision: Decision, at: float) -> int: ...
    def finish_op(self, rollout_id: str, seq: int, outcome: Outcome, decision: Decision,
                  state: RolloutState | None, at: float) -> None: ...
    def pending_ops(self, rollout_id: str) -> list[dict[str, Any]]: ...
    def ops(self, rollout_id: str) -> list[dict[str, Any]]: ...
    def log_decision(self, rollout_id: str, decision: Decision, outcome: Outcome | None, at: float,
                     state: RolloutState | None = None) -> None: ...
    def decisions(self, rollout_id: str) -> list[dict[str, Any]]: ...
    def recording(self, rollout_id: str) -> dict[str, Any]: ...

    # alerts, marks
    def save_alerts(self, alerts: list[StoredAlert]) -> list[StoredAlert]: ...
    def alerts(self, *, firing_only: bool = False) -> list[StoredAlert]: ...
    def mark(self, rollout_id: str, name: str, at: float, *, once: bool = False) -> bool: ...
    def marked(self, rollout_id: str, name: str) -> float | None: ...

    # the connection
    def ping(self) -> bool: ...
    def close(self) -> None: ...


class SQLiteStore:
    def __init__(self, path: str | Path = ":memory:"):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def ping(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1").fetchone()[0] == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- alerts -----------------------------------------------------------------------------------
    def save_alerts(self, alerts: list[StoredAlert]) -> list[StoredAlert]:
        """Keep each alert's latest word (by fingerprint) in one transaction; returns the alerts that
        changed something (new, or a new status, start or end): a repeated post changes nothing."""
        changed = []
        with self._tx() as db:
            for a in alerts:
                row = db.execute("SELECT status, starts_at, ends_at FROM alerts WHERE fingerprint = ?",
                                 (a.fingerprint,)).fetchone()
                if row is not None and (row["status"], row["starts_at"], row["ends_at"]) == (
                        a.status, a.starts_at, a.ends_at):
                    db.execute("UPDATE alerts SET posts = posts + 1 WHERE fingerprint = ?", (a.fingerprint,))
                    continue
                db.execute(
                    "INSERT INTO alerts (fingerprint, name, status, labels, annotations, starts_at, ends_at, "
                    "received_at, group_key) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(fingerprint) DO UPDATE SET "
                    "name=excluded.name, status=excluded.status, labels=excluded.labels, "
                    "annotations=excluded.annotations, starts_at=excluded.starts_at, ends_at=excluded.ends_at, "
                    "received_at=excluded.received_at, group_key=excluded.group_key, posts=posts+1",
                    (a.fingerprint, a.name, a.status, _dumps(dict(a.labels)), _dumps(dict(a.annotations)),
                     a.starts_at, a.ends_at, a.received_at, a.group_key))
                changed.append(a)
        return changed

    def alerts(self, *, firing_only: bool = False) -> list[StoredAlert]:
        where = " WHERE status = 'firing'" if firing_only else ""
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM alerts{where} ORDER BY received_at, fingerprint").fetchall()
        return [StoredAlert(fingerprint=r["fingerprint"], name=r["name"], status=r["status"],
                            labels=orjson.loads(r["labels"]), annotations=orjson.loads(r["annotations"]),
                            starts_at=r["starts_at"], ends_at=r["ends_at"], received_at=r["received_at"],
                            group_key=r["group_key"]) for r in rows]

    # -- rollouts ---------------------------------------------------------------------------------
    def create(self, state: RolloutState, ending: Sequence[tuple[RolloutState, Decision]] = ()) -> None:
        try:
            with self._tx() as db:
                self._end(db, ending)
                db.execute(
                    "INSERT INTO rollouts (id, service, phase, state, created_at, updated_at) VALUES (?,?,?,?,?,?)",
                    (state.id, state.service, state.phase.value, _dumps(state.to_dict()),
                     state.created_at, state.updated_at),
                )
        except sqlite3.IntegrityError:
            active = [s.id for s in self.list(active_only=True) if s.service == state.service]
            raise RolloutConflict(
                f"service {state.service!r} already has a rollout in flight: {', '.join(active) or '?'}"
            ) from None

    def _end(self, db: Any, ending: Sequence[tuple[RolloutState, Decision]]) -> None:
        """Write each watch's end (its decision, its state after) in the caller's transaction (create's); on
        PostgreSQL `_save` fences it by the watch's lease."""
        for ended, decision in ending:
            self._log_decision(db, ended.id, decision, None, ended.updated_at)
            self._save(db, ended)

    def get(self, rollout_id: str) -> RolloutState:
        with self._lock:
            row = self._db.execute("SELECT state FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        if row is None:
            raise RolloutNotFound(f"no rollout with id {rollout_id!r}")
        return RolloutState.from_dict(orjson.loads(row["state"]))

    def list(self, *, active_only: bool = False) -> list[RolloutState]:
        sql = "SELECT state FROM rollouts"
        if active_only:
            sql += " WHERE phase IN " + IN_FLIGHT_SQL
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created_at").fetchall()
        return [RolloutState.from_dict(orjson.loads(r["state"])) for r in rows]

    def _save(self, db: sqlite3.Connection, state: RolloutState) -> None:
        cur = db.execute(
            "UPDATE rollouts SET phase = ?, state = ?, updated_at = ? WHERE id = ?",
            (state.phase.value, _dumps(state.to_dict()), state.updated_at, state.id),
        )
        if cur.rowcount != 1:
            raise RolloutNotFound(f"no rollout with id {state.id!r}")

    def save(self, state: RolloutState) -> None:
        with self._tx() as db:
            self._save(db, state)

    # -- ticks and evidence -----------------------------------------------------------------------
    def record_tick(self, state, tick, at, values, unavailable, verdicts, decision) -> None:
        with self._tx() as db:
            db.execute(
                'INSERT OR REPLACE INTO ticks (rollout_id, tick, at, "values", unavailable, verdicts, decision) '
                "VALUES (?,?,?,?,?,?,?)",
                (state.id, tick, at, _dumps(values), unavailable, _dumps([v.to_dict() for v in verdicts]),
                 _dumps(decision.to_dict()) if decision else None),
            )
            self._save(db, state)

    def ticks(self, rollout_id: str, *, latest_only: bool = False) -> list[dict[str, Any]]:
        sql = 'SELECT tick, at, "values", unavailable, verdicts, decision FROM ticks WHERE rollout_id = ? '
        sql += "ORDER BY tick DESC LIMIT 1" if latest_only else "ORDER BY tick"
        with self._lock:
            rows = self._db.execute(sql, (rollout_id,)).fetchall()
        return [
            {"tick": r["tick"], "at": r["at"], "values": orjson.loads(r["values"]), "unavailable": r["unavailable"],
             "verdicts": orjson.loads(r["verdicts"]),
             "decision": orjson.loads(r["decision"]) if r["decision"] else None}
            for r in rows
        ]

    def evidence(self, rollout_id: str, step_seconds: float, counters: frozenset[str] = frozenset()) -> Evidence:
        ev = Evidence(step_seconds=step_seconds, counters=counters)
        for row in self.ticks(rollout_id):
            while ev.ticks < row["tick"]:  # ticks never fetched (the guardian was not running)
                ev.append({}, unavailable="not fetched: the guardian was not running")
            ev.append(row["values"], unavailable=row["unavailable"])
        return ev

    def save_models(self, rollout_id: str, snapshot: dict[str, Any]) -> None:
        """The forecast models frozen at the rollout's start (written once, before its first tick)."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO models (rollout_id, snapshot) VALUES (?, ?)",
                       (rollout_id, _dumps(snapshot)))

    def models(self, rollout_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT snapshot FROM models WHERE rollout_id = ?", (rollout_id,)).fetchone()
        return orjson.loads(row["snapshot"]) if row else {}

    # -- marks: when something happened to a rollout, outside its state (not fenced: no lease needed) ------
    def mark(self, rollout_id: str, name: str, at: float, *, once: bool = False) -> bool:
        """Note that `name` happened to the rollout at `at` (e.g. a gate's client called). `once`: only if it
        never did before; returns whether this call wrote it (the one caller that wins, across replicas)."""
        conflict = "DO NOTHING" if once else "DO UPDATE SET at = excluded.at"
        with self._tx() as db:
            cur = db.execute(f"INSERT INTO marks (rollout_id, name, at) VALUES (?, ?, ?) "
                             f"ON CONFLICT (rollout_id, name) {conflict}", (rollout_id, name, at))
            return cur.rowcount == 1

    def marked(self, rollout_id: str, name: str) -> float | None:
        """When `name` last happened to the rollout (None: never)."""
        with self._tx() as db:
            row = db.execute("SELECT at FROM marks WHERE rollout_id = ? AND name = ?", (rollout_id, name)).fetchone()
        return None if row is None else float(row["at"])

    def latest_tick(self, rollout_id: str) -> dict[str, Any] | None:
        rows = self.ticks(rollout_id, latest_only=True)
        return rows[0] if rows else None

    # -- operation log ----------------------------------------------------------------------------
    def begin_op(self, rollout_id, key, request, decision, at) -> int:
        with self._tx() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM ops WHERE rollout_id = ?",
                             (rollout_id,)).fetchone()[0]
            db.execute(
                "INSERT INTO ops (rollout_id, seq, key, request, decision, status, created_at) "
                "VALUES (?,?,?,?,?,'pending',?)",
                (rollout_id, seq, key, _dumps(request), _dumps(decision.to_dict()), at),
            )
        return seq

    def next_op_seq(self, rollout_id: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM ops WHERE rollout_id = ?",
                                    (rollout_id,)).fetchone()[0]

    def finish_op(self, rollout_id, seq, outcome, decision, state, at) -> None:
        """Write an action's outcome, the decision log entry and (if it took effect) the new state."""
        with self._tx() as db:
            db.execute(
                "UPDATE ops SET status = ?, outcome = ?, finished_at = ? WHERE rollout_id = ? AND seq = ?",
                ("done" if outcome.ok else "failed", _dumps(outcome.to_dict()), at, rollout_id, seq),
            )
            self._log_decision(db, rollout_id, decision, outcome, at)
            if state is not None:
                self._save(db, state)

    def log_decision(self, rollout_id: str, decision: Decision, outcome: Outcome | None, at: float,
                     state: RolloutState | None = None) -> None:
        with self._tx() as db:
            self._log_decision(db, rollout_id, decision, outcome, at)
            if state is not None:
                self._save(db, state)

    def _log_decision(self, db, rollout_id, decision, outcome, at) -> None:
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM decisions WHERE rollout_id = ?",
                         (rollout_id,)).fetchone()[0]
        db.execute(
            "INSERT INTO decisions (rollout_id, seq, at, decision, outcome) VALUES (?,?,?,?,?)",
            (rollout_id, seq, at, _dumps(decision.to_dict()),
             _dumps(outcome.to_dict()) if outcome else None),
        )

    def pending_ops(self, rollout_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, key, request, decision FROM ops WHERE rollout_id = ? AND status = 'pending' "
                "ORDER BY seq", (rollout_id,)).fetchall()
        return [{"seq": r["seq"], "key": r["key"], "request": orjson.loads(r["request"]),
                 "decision": orjson.loads(r["decision"])} for r in rows]

    def ops(self, rollout_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM ops WHERE rollout_id = ? ORDER BY seq", (rollout_id,)).fetchall()
        return [{**dict(r), "request": orjson.loads(r["request"]), "decision": orjson.loads(r["decision"]),
                 "outcome": orjson.loads(r["outcome"]) if r["outcome"] else None} for r in rows]

    def decisions(self, rollout_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT seq, at, decision, outcome FROM decisions WHERE rollout_id = ? "
                                    "ORDER BY seq", (rollout_id,)).fetchall()
        return [{"seq": r["seq"], "at": r["at"], **orjson.loads(r["decision"]),
                 "outcome": orjson.loads(r["outcome"]) if r["outcome"] else None} for r in rows]

    # -- recordings ---------------------------------------------------------------------------------
    def recording(self, rollout_id: str) -> dict[str, Any]:
        """The rollout as a guardian-recording/v1 document (SPEC.md §3, the contract outside this repository)."""
        state = self.get(rollout_id)
        ev = self.evidence(rollout_id, state.step_seconds)
        series = {
            signal: {arm: list(ev.column(signal, arm)) for arm in ARMS}
            for signal in ev.series
        }
        doc = {
            "format": RECORDING_FORMAT,
            "service": state.service,
            "step_seconds": state.step_seconds,
            "start": datetime.fromtimestamp(state.origin, UTC).isoformat().replace("+00:00", "Z"),
            "series": series,
            "labels": {"rollout_id": state.id, "image": state.image, "phase": state.phase.value,
                       "rules": state.rules,  # the rules it ran under (shown by replay and report, never judged)
                       "unavailable_ticks": [i for i, u in enumerate(ev.unavailable) if u]},
        }
        if state.previous_image:  # labels are free-form: a recording without it reads as before
            doc["labels"]["previous_image"] = state.previous_image
        logged = self.decisions(rollout_id) if state.approvals else ()  # written every tick: the log only then
        approvals = [{"tick": d.get("tick"), "by": d.get("source"), "reason": d.get("reason"), "at": d.get("at")}
                     for d in logged if d.get("action") == Action.APPROVE.value]
        if approvals:  # who gave each human "go", after which tick (replay shows them where they were given)
            doc["approvals"] = approvals
        models = dict(self.models(rollout_id))
        if isinstance(watch := models.pop(WATCH_KEY, None), dict):  # a watch: what it started from (docs/rules.md)
            doc["watch"] = watch
        if models:
            doc["models"] = models  # the frozen forecast models, so a replay judges against the same ones
        return redact(doc)  # no token or URL credentials in a recording (guardian/redact.py)
