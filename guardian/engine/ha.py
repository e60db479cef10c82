"""Running as one of several replicas: the store the settings name (SQLite, or PostgreSQL with leases)
and the few things a Guard does differently when other replicas share its store."""
from __future__ import annotations

from typing import Any

from loguru import logger

from guardian.engine.guard import Guard
from guardian.engine.leases import Leases, LocalLeases
from guardian.engine.store import SQLiteStore, StateStore
from guardian.errors import LeaseLost


def open_store(settings: Any) -> tuple[StateStore, Leases]:
    """The store and leases for these settings: PostgreSQL when `database_url` (or a postgresql:// `db_path`)
    is set, else SQLite at `db_path` with single-process leases."""
    from guardian.engine.store_pg import is_postgres_url

    url = settings.database_url.get_secret_value() if settings.database_url else None
    if url is None and is_postgres_url(settings.db_path):
        url = settings.db_path
    if url is None:
        return SQLiteStore(settings.db_path), LocalLeases(settings.replica_id)
    from guardian.engine.store_pg import PostgresStore

    store = PostgresStore(url, holder=settings.replica_id, lease_seconds=settings.lease_seconds,
                          pool_size=settings.database_pool_size)
    logger.info("state store: {} (replica {}, leases of {} s)", store.path, store.leases.holder,
                settings.lease_seconds)
    return store, store.leases


class ReplicaGuard(Guard):
    """A Guard sharing its store with other replicas: Alertmanager may post to any of them, so the
    firing alerts are re-read from the store (at most every `alerts_refresh_seconds` by the guard's
    clock: its alert book), and an alert about a rollout leased to another replica is left to that
    replica (its next tick judges it)."""

    alerts_refresh_seconds = 1.0

    def _react(self, rollout_id: str, verdicts: list) -> dict[str, Any] | None:
        try:
            return super()._react(rollout_id, verdicts)
        except LeaseLost as e:
            logger.info("alert for rollout {} left to its lease holder: {}", rollout_id, e)
            return None
