"""Engine factory and migrations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine.url import make_url

_MIGRATIONS = Path(__file__).with_name("migrations")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the single writer; FULL makes a committed transaction survive
    # a crash of the process or the machine, which the fail-closed audit trail relies on.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a created parent folder, PostgreSQL uses psycopg 3."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Owner-only, created before SQLite opens it: its -wal and -shm files take the same
            # mode. The file holds ciphertext, masks, blind indexes and who-read-what trails.
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        # Sized for the server's thread pool (40 threads), each request holding a connection or two,
        # so that requests never queue for a connection behind SQLAlchemy's default of 5 (+10).
        kwargs.setdefault("pool_size", 40)
        kwargs.setdefault("max_overflow", 40)
        # Most recently returned first: requests read on the event loop one at a time, so one
        # connection serves them all, its page cache and prepared statements warm; first in, first
        # out would rotate every idle connection through the request path.
        kwargs.setdefault("pool_use_lifo", True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "heads") -> None:
    """Bring the schema up to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(engine), revision)
