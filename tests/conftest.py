"""Shared fixtures: migrated databases on SQLite and on the real PostgreSQL server.

PostgreSQL tests create a database of their own per test session (other suites may run beside
them) and drop it at the end. Under ``CI=true`` a missing server is an error, never a skip.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from courierguard.db import create_db_engine, migrate

PG_ADMIN_URL = os.environ.get("COURIERGUARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextmanager
def _fresh_pg_database() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped afterwards (a failure under CI=true)."""
    if not _pg_available():
        if IN_CI:
            pytest.fail("PostgreSQL is not reachable and CI=true: backend tests may not skip")
        pytest.skip("PostgreSQL not reachable")
    name = f"cg_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL database for this test session."""
    with _fresh_pg_database() as url:
        engine = create_db_engine(url)
        migrate(engine)
        engine.dispose()
        yield url


@pytest.fixture
def pg_empty_database() -> Iterator[str]:
    """URL of a new PostgreSQL database with no schema at all (for migration tests)."""
    with _fresh_pg_database() as url:
        yield url


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'cg.sqlite3'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(pg_database: str) -> Iterator[Engine]:
    engine = create_db_engine(pg_database)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Engine:
    """The same test on both backends."""
    name = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What ``os.fsync`` is called on from here on, in order: ``"file"`` or ``"dir"`` (Linux)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced
