"""Engine factory and migrations."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine.url import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from courierguard.errors import ConfigError

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


def _owner_only(database: Path) -> None:
    """Take group and other permissions off an SQLite database made before files were owner-only
    (or loosened since), with its -wal and -shm files; say so once on stderr, naming the file.

    A file that is not ours to change is left as it is, with a warning: refusing to start would
    stop the service over a mode an operator may have set on purpose (a backup group, say).
    """
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            continue  # not there (no -wal yet), or not ours to look at: SQLite will say
        if not mode & 0o077:
            continue
        try:
            os.chmod(path, mode & 0o700)
        except OSError:
            print(
                f"courierguard: warning: {path} is mode {mode:o}, not ours to change; chmod 600 it",
                file=sys.stderr,
            )
        else:
            print(
                f"courierguard: {path} was mode {mode:o}, now {mode & 0o700:o} (owner only)", file=sys.stderr
            )


DATABASE_URL_RULE = "must be a PostgreSQL (postgresql://...) or SQLite (sqlite:///...) URL"


def parse_database_url(url: str) -> URL:
    """``url`` parsed, if it names a database Courier Guard runs on; else a one-line ConfigError that
    never repeats it (it may hold a password). ``Settings`` checks its URLs with this too."""
    try:
        parsed: URL | None = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is None or parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"the database URL {DATABASE_URL_RULE}")
    return parsed


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a created parent folder, PostgreSQL uses psycopg 3."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Owner-only, created before SQLite opens it: its -wal and -shm files take the same
            # mode. The file holds ciphertext, masks, blind indexes and who-read-what trails.
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            _owner_only(path)
        # Sized for the server's thread pool (40 threads), each request holding a connection or two,
        # so that requests never queue for a connection behind SQLAlchemy's default of 5 (+10).
        kwargs.setdefault("pool_size", 40)
        kwargs.setdefault("max_overflow", 40)
        # Most recently returned first: requests read on the event loop one at a time, so one
        # connection serves them all, its page cache and prepared statements warm; first in, first
        # out would rotate every idle connection through the request path.
        kwargs.setdefault("pool_use_lifo", True)
        engine = _create(url, parsed, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    return _create(url, parsed, **kwargs)


def _create(url: str, parsed: URL, **kwargs: Any) -> Engine:
    try:
        return create_engine(url, **kwargs)
    except (NoSuchModuleError, ImportError):  # postgresql+asyncpg, sqlite+foo: a driver not installed
        raise ConfigError(
            f"the database URL names driver {parsed.drivername!r}, which is not installed "
            "(use postgresql+psycopg or sqlite)"
        ) from None


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "heads") -> None:
    """Bring the schema up to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(engine), revision)
