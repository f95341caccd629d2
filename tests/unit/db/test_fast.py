"""Driver-level reads (``db.fast``): SQLite connections held per thread stay fresh and get closed."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from courierguard.db import create_db_engine
from courierguard.db.fast import DriverQuery, held_readers


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


def test_postgresql_reads_use_the_pool() -> None:
    engine = create_db_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    assert DriverQuery(engine, "SELECT 1")._held is None
    assert DriverQuery(engine, "SELECT ? ").sql == "SELECT %s "
    engine.dispose()
