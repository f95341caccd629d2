"""Fixed statements run at the driver level, for the lookups on every request's path and for
ingest's batch inserts (:class:`DriverInsert`).

A Core ``select`` costs tens of microseconds to execute through SQLAlchemy's machinery; the same
statement handed to the DBAPI connection costs a few. Only the placeholder style differs between
sqlite3 (``?``) and psycopg (``%s``); values are always bound, never formatted into the SQL.
Timestamps come back as SQLAlchemy stores them: :func:`timestamp` reads either form.

Neither backend reads through SQLAlchemy's pool. On SQLite each thread keeps one connection of its
own for these statements (:class:`HeldReaders`): checking a connection out of the pool and back in
cost more than the statement. On PostgreSQL a pool checkout made one read four round trips (the
ping, the driver's ``BEGIN``, the statement, the rollback on check-in): the reads share
autocommit connections instead (:class:`AutocommitReaders`), one round trip each.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    String,
    Table,
    TypeDecorator,
    event,
)
from sqlalchemy.engine import Connection
from sqlalchemy.pool import QueuePool
from sqlalchemy.types import TypeEngine

from courierguard.timeutil import utc


class _Held:
    """A thread's held connection, kept in its thread-local storage."""

    __slots__ = ("__weakref__", "driver")

    def __init__(self, driver: Any) -> None:
        self.driver = driver


def _own_connection(engine_ref: weakref.ref[Engine]) -> Any:
    """A driver connection taken out of the engine's pool for good (made by the engine, so it has
    the engine's connect-time settings, and never handed back)."""
    engine = engine_ref()
    if engine is None:  # pragma: no cover - a query outliving its engine
        raise RuntimeError("engine is gone")
    pooled = engine.raw_connection()
    driver = pooled.driver_connection
    if driver is None:  # pragma: no cover - a closed connection
        raise RuntimeError("connection is closed")
    pooled.detach()
    return driver


class HeldReaders:
    """One SQLite connection per thread, held open for single-statement reads of one engine.

    Why it is safe to hold them: Python's sqlite3 opens no transaction for a ``SELECT``, so each
    statement is a read transaction of its own that ends when its rows are fetched; the next one
    sees every commit made meanwhile (a revoked session is refused on the next request). The
    connections come from the engine, so they get its pragmas; each is closed when its thread ends
    (a thread pool replaces idle threads: every new one would otherwise leave a connection open)
    and all of them when the engine is disposed.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = weakref.ref(engine)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Any] = []
        event.listen(engine, "engine_disposed", self._close_all)

    def fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        held = getattr(self._local, "held", None)
        if held is None:
            held = self._connect()
        rows: list[Any] = held.driver.execute(sql, params).fetchall()
        return rows

    def _connect(self) -> _Held:
        driver = _own_connection(self._engine)
        held = _Held(driver)
        with self._lock:
            self._open.append(driver)
        # The thread's locals go when it ends, and with them the last reference to ``held``.
        weakref.finalize(held, self._release, driver)
        self._local.held = held
        return held

    def _release(self, driver: Any) -> None:
        """Close the connection of a thread that ended (unless the engine's disposal closed it)."""
        with self._lock:
            if driver not in self._open:
                return
            self._open.remove(driver)
        with contextlib.suppress(Exception):  # already broken: nothing left to release
            driver.close()

    def _close_all(self, _engine: Engine) -> None:
        with self._lock:
            held, self._open = self._open, []
        # A thread still holding one of these gets a fresh connection on its next read.
        self._local = threading.local()
        for driver in held:
            driver.close()


class AutocommitReaders:
    """PostgreSQL (psycopg) connections in autocommit, shared by the threads for single-statement reads.

    In autocommit the statement is a transaction of its own, so it costs one round trip and sees
    every commit made before it (a revoked session is refused on the next request). Instead of
    pinging each connection before use, as the pool does, a connection that turns out broken (a
    server restart, an idle timeout) is dropped and the read is run once more on a new one: a read
    changes nothing, so repeating it is safe. At most ``keep`` idle connections stay open (a burst
    does not hold connections for ever); all are closed when the engine is disposed.
    """

    def __init__(self, engine: Engine, *, keep: int) -> None:
        self._engine = weakref.ref(engine)
        self._keep = keep
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._open: set[Any] = set()
        event.listen(engine, "engine_disposed", self._close_all)

    def fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        driver, reused = self._checkout()
        while True:
            try:
                rows: list[Any] = driver.execute(sql, params).fetchall()
            except Exception:
                if not (driver.broken or driver.closed):
                    self._checkin(driver)  # a failed statement leaves no transaction behind here
                    raise
                self._forget(driver)
                if not reused:
                    raise
                driver, reused = self._connect(), False  # dropped while idle: once more, on a new one
                continue
            self._checkin(driver)
            return rows

    def _checkout(self) -> tuple[Any, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _connect(self) -> Any:
        driver = _own_connection(self._engine)
        driver.autocommit = True
        with self._lock:
            self._open.add(driver)
        return driver

    def _checkin(self, driver: Any) -> None:
        with self._lock:
            # Last in, first out: the busiest connections stay warm, the rest go idle and are kept
            # up to ``keep``. One the engine's disposal closed meanwhile is not kept.
            if driver in self._open and len(self._idle) < self._keep:
                self._idle.append(driver)
                return
        self._forget(driver)

    def _forget(self, driver: Any) -> None:
        with self._lock:
            self._open.discard(driver)
        with contextlib.suppress(Exception):  # already broken: nothing left to release
            driver.close()

    def _close_all(self, _engine: Engine) -> None:
        with self._lock:
            drivers, self._open, self._idle = self._open, set(), []
        for driver in drivers:
            with contextlib.suppress(Exception):
                driver.close()


Readers = HeldReaders | AutocommitReaders

_readers: weakref.WeakKeyDictionary[Engine, Readers] = weakref.WeakKeyDictionary()
_readers_lock = threading.Lock()


def held_readers(engine: Engine) -> HeldReaders:
    """The engine's :class:`HeldReaders` (one per engine, shared by its statements)."""
    readers = _readers_of(engine, lambda: HeldReaders(engine))
    assert isinstance(readers, HeldReaders)
    return readers


def autocommit_readers(engine: Engine) -> AutocommitReaders:
    """The engine's :class:`AutocommitReaders` (one per engine, shared by its statements)."""
    # As many idle connections as the pool keeps: as many threads as that may read at once.
    keep = engine.pool.size() if isinstance(engine.pool, QueuePool) else 5
    readers = _readers_of(engine, lambda: AutocommitReaders(engine, keep=keep))
    assert isinstance(readers, AutocommitReaders)
    return readers


def _readers_of(engine: Engine, make: Callable[[], Readers]) -> Readers:
    with _readers_lock:
        readers = _readers.get(engine)
        if readers is None:
            readers = _readers[engine] = make()
        return readers


class DriverQuery:
    """One fixed SQL statement with ``?`` placeholders, adapted to the engine's driver."""

    __slots__ = ("_readers", "sql")

    def __init__(self, engine: Engine, sql: str) -> None:
        self.sql = sql if engine.dialect.paramstyle == "qmark" else sql.replace("?", "%s")
        self._readers: Readers | None = None
        if engine.dialect.name == "sqlite" and isinstance(engine.pool, QueuePool):
            # A file database only: an in-memory one lives in its (per-thread) pooled connection, and
            # taking that connection out of the pool would leave the pool a new, empty database.
            self._readers = held_readers(engine)
        elif engine.dialect.driver == "psycopg":
            self._readers = autocommit_readers(engine)

    def fetch(self, engine: Engine, params: tuple[Any, ...]) -> list[Any]:
        """The rows of a single-statement read, on a connection taken for this statement alone.

        SQLite: the thread's held connection (:class:`HeldReaders`); PostgreSQL: a shared
        autocommit connection (:class:`AutocommitReaders`). Otherwise (an in-memory SQLite) the
        pool's own connection, not a SQLAlchemy ``Connection`` around it: the wrapper costs more
        than the statement, and one statement needs none of its transaction handling.
        """
        if self._readers is not None:
            return self._readers.fetch(self.sql, params)
        pooled = engine.raw_connection()
        try:
            driver = pooled.driver_connection
            if driver is None:  # pragma: no cover - a closed connection
                raise RuntimeError("connection is closed")
            return list(driver.execute(self.sql, params).fetchall())
        finally:
            pooled.close()

    def all(self, conn: Connection, params: tuple[Any, ...]) -> list[Any]:
        driver = conn.connection.driver_connection
        if driver is None:  # pragma: no cover - a closed connection
            raise RuntimeError("connection is closed")
        return list(driver.execute(self.sql, params).fetchall())


def timestamp(value: Any) -> datetime | None:
    """A stored timestamp as aware UTC: SQLite hands back text, PostgreSQL a datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return utc(value)


_PG_ARRAY_TYPES: tuple[tuple[type[TypeEngine[Any]], str], ...] = (
    (LargeBinary, "bytea"),
    (DateTime, "timestamptz"),
    (BigInteger, "bigint"),
    (Integer, "bigint"),
    (String, "text"),
)
"""Element type of each column's array in a PostgreSQL batch insert. Base types only: a cast to
``varchar(64)[]`` would truncate a long value silently, where inserting ``text`` into the column
refuses it as a plain INSERT does."""


def _pg_array_type(column: Column[Any]) -> str:
    impl = column.type
    if isinstance(impl, TypeDecorator):
        impl = impl.impl_instance
    for kind, name in _PG_ARRAY_TYPES:
        if isinstance(impl, kind):
            return name
    raise TypeError(f"no array type for {column.table}.{column.name} ({column.type})")


class DriverInsert:
    """A batch INSERT of fixed columns of one table, each row a tuple of driver-ready values.

    Core's ``insert(table)`` with a list of dicts costs about 15 µs per row of SQLAlchemy's own
    work (parameter processing per value, per row) before the driver sees it: more than the
    driver's insert itself, and ingest writes four rows per waybill. Here SQLite gets one
    ``executemany`` of a fixed statement, PostgreSQL one statement of binary column arrays
    (``unnest``, as the audit writer does), both through :meth:`Connection.exec_driver_sql`, so the
    statement runs in the caller's transaction and a constraint violation is still SQLAlchemy's
    :class:`~sqlalchemy.exc.IntegrityError`.

    Values must be what SQLAlchemy would hand the driver: text and bytes as they are, and a
    timestamp through :func:`bind_value` (SQLite stores it as text). A column left out is NULL;
    so leave out those that are NULL in every row, as an all-NULL array has no element type.
    """

    __slots__ = ("_pg", "sql")

    def __init__(self, engine: Engine, table: Table, columns: Sequence[str]) -> None:
        named = ", ".join(columns)
        self._pg = engine.dialect.driver == "psycopg"
        if self._pg:
            arrays = ", ".join(f"%b::{_pg_array_type(table.c[name])}[]" for name in columns)
            self.sql = f"INSERT INTO {table.name} ({named}) SELECT * FROM unnest({arrays})"  # noqa: S608
        elif engine.dialect.paramstyle == "qmark":
            self.sql = f"INSERT INTO {table.name} ({named}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608
        else:
            raise NotImplementedError(f"DriverInsert on {engine.dialect.name}+{engine.dialect.driver}")

    def run(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self._pg:
            conn.exec_driver_sql(self.sql, tuple(list(column) for column in zip(*rows, strict=True)))
        else:
            conn.exec_driver_sql(self.sql, list(rows))


def bind_value(engine: Engine, column: Column[Any]) -> Callable[[Any], Any]:
    """What SQLAlchemy does to a value of ``column`` before the driver sees it (the column type's
    own conversion, then the dialect's: SQLite stores a timestamp as text)."""
    # The dialect's form of the type: a generic DateTime has no conversion, SQLite's has.
    process = column.type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
    if process is None:
        return _same
    return process


def _same(value: Any) -> Any:
    return value
