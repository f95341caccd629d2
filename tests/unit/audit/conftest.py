"""Fixtures of the audit tests: vectors, keys, and the SQL backends (SQLite and real PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from courierguard.audit import SqlAuditLog, open_audit_log
from courierguard.audit.tables import AUDIT_TABLES
from courierguard.db import create_db_engine
from courierguard.db.tables import metadata
from courierguard.vault.keys import LocalKeyFile

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "audit"
sys.path.insert(0, str(VECTORS))

PG_ADMIN_URL = os.environ.get("COURIERGUARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def key_provider(tmp_path: Path) -> LocalKeyFile:
    return LocalKeyFile(tmp_path / "keys.json")


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    # Only the audit tables: other capabilities' migrations may be mid-edit; test_migration covers 0002.
    metadata.create_all(engine, tables=AUDIT_TABLES)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A private database for this test session on the shared server, dropped at the end."""
    import psycopg

    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required under CI")
        pytest.skip("PostgreSQL not reachable")
    name = f"cg_audit_{secrets.token_hex(6)}"
    conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = create_db_engine(pg_url)
    metadata.create_all(engine, tables=AUDIT_TABLES)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE " + ", ".join(t.name for t in AUDIT_TABLES)))
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Engine:
    name = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    result: Engine = request.getfixturevalue(name)
    return result


@contextlib.contextmanager
def refusing_actor(engine: Engine, actor: str, table: str = "audit_entries") -> Iterator[None]:
    """While open, the database itself refuses rows of ``actor`` in ``table`` (a trigger), so the
    transaction writing one fails for real, on either backend."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    f"CREATE TRIGGER refuse_actor BEFORE INSERT ON {table} "
                    f"WHEN NEW.actor = '{actor}' BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_actor() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.actor = '{actor}' THEN RAISE EXCEPTION 'refused by test'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    f"CREATE TRIGGER refuse_actor BEFORE INSERT ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_actor()"
                )
            )
    try:
        yield
    finally:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.execute(text("DROP TRIGGER refuse_actor"))
            else:
                conn.execute(text(f"DROP TRIGGER refuse_actor ON {table}"))
                conn.execute(text("DROP FUNCTION refuse_actor()"))


OpenLog = Callable[..., SqlAuditLog]


@pytest.fixture
def open_log(engine: Engine, key_provider: LocalKeyFile) -> Iterator[OpenLog]:
    """Opens SQL logs on the parametrised backend; closes them all at the end."""
    logs: list[SqlAuditLog] = []

    def factory(**options: Any) -> SqlAuditLog:
        options.setdefault("head_interval", 0.05)
        log = open_audit_log(engine, key_provider, **options)
        logs.append(log)
        return log

    yield factory
    for log in logs:
        log.close()
