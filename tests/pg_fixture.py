"""A real PostgreSQL 15 for the tests (Debian's `postgresql`, started by hand: tests/fixtures/pgserver.py).

`pg_server` is one throwaway cluster per test session (per xdist worker); `pg_url` is a fresh empty
database in it for each test. A missing PostgreSQL is an error, never a skip: CI installs it
(scripts/test.sh).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest

from tests.fixtures.pgserver import PostgresServer

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer().start()  # in a /tmp folder of its own: the postgres user must reach it
    except RuntimeError as e:
        pytest.fail(f"cannot start the test PostgreSQL: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A URL to a new, empty database of the session's cluster."""
    name = f"t{next(_databases)}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_server.url.rsplit("/", 1)[0] + f"/{name}"
