"""The last-use writer behind the idle timeout: off the request path, batched, only forward, and a
failed write is kept rather than lost."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select

from courierguard.db.tables import sessions
from courierguard.gateway.last_use import LastUse

T0 = datetime(2026, 12, 7, 8, tzinfo=UTC)


def _engine(tmp_path: Path) -> Engine:
    # Just the sessions table (no foreign keys enforced without the product's pragmas).
    engine = create_engine(f"sqlite:///{tmp_path / 'cg.sqlite3'}")
    sessions.create(engine)
    with engine.begin() as conn:
        for sid in ("s1", "s2"):
            conn.execute(
                insert(sessions).values(
                    id=sid, tenant="t", employee="C1", device_id="d", auth="sso", created_at=T0, last_seen=T0
                )
            )
    return engine


def _stored(engine: Engine, sid: str) -> datetime:
    with engine.connect() as conn:
        value: datetime = conn.execute(select(sessions.c.last_seen).where(sessions.c.id == sid)).scalar_one()
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_the_thread_writes_noted_uses_within_about_a_second(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    uses = LastUse(engine, "t")
    try:
        uses.note("s1", T0 + timedelta(minutes=3))
        uses.note("s2", T0 + timedelta(minutes=4))
        uses.note("s1", T0 + timedelta(minutes=2))  # an older reading does not win
        assert uses.of("s1", T0) == T0 + timedelta(minutes=3)
        deadline = time.monotonic() + 5
        while _stored(engine, "s2") == T0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stored(engine, "s1") == T0 + timedelta(minutes=3)
        assert _stored(engine, "s2") == T0 + timedelta(minutes=4)
        assert uses.of("s1", T0) == T0  # written: nothing left noted, the stored time is the answer
    finally:
        uses.close()


def test_a_write_never_moves_last_use_back(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    uses = LastUse(engine, "t")
    uses.note("s1", T0 - timedelta(hours=1))
    uses.flush()
    assert _stored(engine, "s1") == T0
    uses.close()


def test_a_failed_write_is_kept_for_the_next_one(tmp_path: Path) -> None:
    empty = create_engine(f"sqlite:///{tmp_path / 'no-tables.sqlite3'}")  # no sessions table
    uses = LastUse(empty, "t")
    uses._noted["s1"] = T0 + timedelta(minutes=5)
    with pytest.raises(Exception, match="no such table"):
        uses.flush()
    assert uses.of("s1", T0) == T0 + timedelta(minutes=5)
    engine = _engine(tmp_path)
    uses.engine = engine
    uses.flush()
    assert _stored(engine, "s1") == T0 + timedelta(minutes=5)


def test_close_writes_what_is_noted_and_later_uses_are_ignored(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    uses = LastUse(engine, "t")
    uses.note("s1", T0 + timedelta(minutes=7))
    started = time.monotonic()
    uses.close()
    assert time.monotonic() - started < 1.0  # the thread's wait is cut short, not slept out
    assert _stored(engine, "s1") == T0 + timedelta(minutes=7)
    uses.note("s2", T0 + timedelta(minutes=8))
    uses.flush()
    assert _stored(engine, "s2") == T0


@pytest.mark.parametrize("after", [0.0, 0.3])
def test_close_never_waits_for_the_thread(tmp_path: Path, after: float) -> None:
    """Closed at once, or while the thread gathers a second's uses (it once then waited for ever)."""
    engine = _engine(tmp_path)
    uses = LastUse(engine, "t")
    uses.note("s1", T0 + timedelta(minutes=9))
    time.sleep(after)
    started = time.monotonic()
    uses.close()
    assert time.monotonic() - started < 0.5
    assert uses._thread is not None and not uses._thread.is_alive()
    assert _stored(engine, "s1") == T0 + timedelta(minutes=9)


def test_a_use_being_written_still_counts_until_committed(tmp_path: Path) -> None:
    # A write takes the noted uses, then commits: a request reading the session in between read
    # the older stored time and, the noted use gone, was refused as idle (the renter e2e test's
    # owner got a 401 under load, with the simulated clock 25 minutes on).
    engine = _engine(tmp_path)
    uses = LastUse(engine, "t")
    uses.note("s1", T0 + timedelta(minutes=20))
    inside, release = threading.Event(), threading.Event()
    real_begin = engine.begin

    @contextlib.contextmanager
    def slow_begin() -> Iterator[Any]:
        inside.set()
        assert release.wait(10)
        with real_begin() as conn:
            yield conn

    uses.engine = SimpleNamespace(begin=slow_begin)  # type: ignore[assignment]
    writer = threading.Thread(target=uses.flush)
    writer.start()
    assert inside.wait(10)
    assert uses.of("s1", T0) == T0 + timedelta(minutes=20)  # taken for the write, not yet committed
    release.set()
    writer.join(10)
    assert _stored(engine, "s1") == T0 + timedelta(minutes=20)
    assert uses.of("s1", _stored(engine, "s1")) == T0 + timedelta(minutes=20)
