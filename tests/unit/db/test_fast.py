"""Driver-level reads (``db.fast``): SQLite connections held per thread and PostgreSQL autocommit
connections stay fresh, recover from a dropped connection and get closed."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, text

from courierguard.db import create_db_engine
from courierguard.db.fast import AutocommitReaders, DriverQuery, autocommit_readers, held_readers


@pytest.fixture
def table(tmp_path: Path) -> Engine:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'fast.sqlite3'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES ('a', 1)"))
    return engine


def test_each_read_sees_every_commit_made_before_it(table: Engine) -> None:
    query = DriverQuery(table, "SELECT v FROM t WHERE k = ?")
    assert query.fetch(table, ("a",)) == [(1,)]
    # A revocation committed by another connection must show on the very next request's read.
    with table.begin() as conn:
        conn.execute(text("UPDATE t SET v = 2 WHERE k = 'a'"))
    assert query.fetch(table, ("a",)) == [(2,)]
    with table.begin() as conn:
        conn.execute(text("DELETE FROM t"))
    assert query.fetch(table, ("a",)) == []
    table.dispose()


def test_a_read_leaves_no_transaction_open(table: Engine) -> None:
    DriverQuery(table, "SELECT v FROM t WHERE k = ?").fetch(table, ("a",))
    held = held_readers(table)
    driver = held._local.held.driver
    assert driver.in_transaction is False
    # So a writer on another connection is never kept from checkpointing or committing.
    with table.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES ('b', 3)"))
    table.dispose()


def test_one_connection_per_thread_shared_by_the_engines_statements(table: Engine) -> None:
    first, second = DriverQuery(table, "SELECT v FROM t"), DriverQuery(table, "SELECT k FROM t")
    first.fetch(table, ())
    second.fetch(table, ())
    held = held_readers(table)
    mine = held._local.held.driver
    assert len(held._open) == 1
    seen: list[object] = []

    def other() -> None:
        first.fetch(table, ())
        seen.append(held._local.held.driver)

    worker = threading.Thread(target=other)
    worker.start()
    worker.join()
    assert seen[0] is not mine
    gc.collect()
    # The ended thread's connection is closed and forgotten; this thread's stays.
    assert held._open == [mine]
    table.dispose()


def test_a_thread_that_ends_closes_its_connection(table: Engine) -> None:
    query = DriverQuery(table, "SELECT v FROM t WHERE k = ?")
    held = held_readers(table)
    drivers: list[object] = []

    def one_request() -> None:
        assert query.fetch(table, ("a",)) == [(1,)]
        drivers.append(held._local.held.driver)

    for _ in range(20):  # a thread pool replacing idle threads, over and over
        worker = threading.Thread(target=one_request)
        worker.start()
        worker.join()
    gc.collect()
    assert len(drivers) == 20 and held._open == []
    for driver in drivers:
        with pytest.raises(Exception, match="closed"):
            driver.execute("SELECT 1")  # type: ignore[attr-defined]
    table.dispose()


def test_disposing_the_engine_closes_them_and_reads_go_on(table: Engine) -> None:
    query = DriverQuery(table, "SELECT v FROM t WHERE k = ?")
    query.fetch(table, ("a",))
    held = held_readers(table)
    driver = held._local.held.driver
    table.dispose()
    assert held._open == []
    with pytest.raises(Exception, match="closed"):
        driver.execute("SELECT 1")
    assert query.fetch(table, ("a",)) == [(1,)]  # a new connection for this thread
    table.dispose()


@pytest.fixture
def pg_table(pg_database: str) -> Iterator[Engine]:
    engine = create_db_engine(pg_database)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS fast_t"))
        conn.execute(text("CREATE TABLE fast_t (k TEXT PRIMARY KEY, v INTEGER)"))
        conn.execute(text("INSERT INTO fast_t VALUES ('a', 1)"))
    yield engine
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE fast_t"))
    engine.dispose()


def _one_idle_reader(engine: Engine) -> tuple[DriverQuery, AutocommitReaders, Any]:
    """A PostgreSQL read made once: the query, the engine's readers and the one connection it left idle."""
    query = DriverQuery(engine, "SELECT v FROM fast_t WHERE k = ?")
    assert query.fetch(engine, ("a",)) == [(1,)]
    readers = autocommit_readers(engine)
    (driver,) = readers._idle
    return query, readers, driver


@pytest.mark.postgres
def test_postgresql_reads_share_autocommit_connections(pg_table: Engine) -> None:
    query, readers, driver = _one_idle_reader(pg_table)
    assert query.sql == "SELECT v FROM fast_t WHERE k = %s"
    # One statement, its own transaction: nothing stays open on the server between requests.
    assert driver.autocommit and driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with pg_table.begin() as conn:  # a revocation committed elsewhere shows on the very next read
        conn.execute(text("UPDATE fast_t SET v = 2 WHERE k = 'a'"))
    assert query.fetch(pg_table, ("a",)) == [(2,)]
    assert DriverQuery(pg_table, "SELECT k FROM fast_t").fetch(pg_table, ()) == [("a",)]
    assert readers._idle == [driver] and readers._open == {driver}  # one connection did it all


@pytest.mark.postgres
def test_postgresql_read_is_one_round_trip(pg_table: Engine) -> None:
    query, readers, _ = _one_idle_reader(pg_table)
    pool_events: list[str] = []
    for name in ("checkout", "checkin"):
        event.listen(pg_table, name, lambda *_, name=name: pool_events.append(name))
    for _ in range(3):
        assert query.fetch(pg_table, ("a",)) == [(1,)]
    # No pool checkout (its ping) or check-in (its rollback), and no BEGIN: the statement alone.
    assert pool_events == []
    assert readers._idle[0].autocommit


@pytest.mark.postgres
def test_a_connection_the_server_dropped_is_replaced_and_the_read_repeated(pg_table: Engine) -> None:
    query, readers, dropped = _one_idle_reader(pg_table)
    with pg_table.begin() as conn:  # what a server restart or an idle timeout does to it
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped.info.backend_pid})
    assert query.fetch(pg_table, ("a",)) == [(1,)]
    assert dropped.closed
    (fresh,) = readers._idle
    assert fresh is not dropped and readers._open == {fresh}


@pytest.mark.postgres
def test_a_failed_statement_is_raised_and_leaves_its_connection_usable(pg_table: Engine) -> None:
    readers = autocommit_readers(pg_table)
    with pytest.raises(psycopg.errors.DivisionByZero):
        DriverQuery(pg_table, "SELECT v / 0 FROM fast_t").fetch(pg_table, ())
    (driver,) = readers._idle
    assert DriverQuery(pg_table, "SELECT v FROM fast_t").fetch(pg_table, ()) == [(1,)]
    assert readers._idle == [driver]


@pytest.mark.postgres
def test_idle_connections_beyond_keep_are_closed(pg_table: Engine) -> None:
    readers = AutocommitReaders(pg_table, keep=2)
    start = threading.Barrier(6)
    drivers: list[object] = []
    real_checkout = readers._checkout

    def checkout() -> tuple[object, bool]:
        got = real_checkout()
        drivers.append(got[0])
        start.wait()  # six reads at once: six connections
        return got

    readers._checkout = checkout  # type: ignore[method-assign]
    workers = [threading.Thread(target=readers.fetch, args=("SELECT v FROM fast_t", ())) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(set(map(id, drivers))) == 6
    assert len(readers._idle) == 2 and readers._open == set(readers._idle)
    assert sum(bool(d.closed) for d in drivers) == 4  # type: ignore[attr-defined]


@pytest.mark.postgres
def test_disposing_the_engine_closes_the_readers_and_reads_go_on(pg_table: Engine) -> None:
    query, readers, driver = _one_idle_reader(pg_table)
    pg_table.dispose()
    assert driver.closed and readers._open == set()
    assert query.fetch(pg_table, ("a",)) == [(1,)]
