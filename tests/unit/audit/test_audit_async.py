"""Coroutine appends to the audit log (``append_async``) and group-commit linger.

The SQL log is exercised on SQLite and on the real PostgreSQL server. Several tests hold the writer
thread inside ``_write`` (the transaction of one batch) so that what queues behind it is known
exactly: that is how a batch with callers of two event loops, or of threads and coroutines, or a
batch whose transaction fails, is built deterministically.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

import courierguard.audit.sql as sql_module
from courierguard.audit import AuditLog, EntryKind, MemoryAuditLog, SqlAuditLog, verify
from courierguard.audit.tables import audit_entries
from courierguard.clock import FixedClock
from courierguard.db import create_db_engine
from courierguard.errors import AuditUnavailable
from courierguard.events import AccessEvent
from courierguard.vault.keys import LocalKeyFile

from .conftest import OpenLog, refusing_actor


def _event(i: int) -> AccessEvent:
    return AccessEvent.model_validate(
        {
            "id": f"ev-{i}",
            "ts": datetime(2025, 11, 11, 8, 0, tzinfo=UTC),
            "actor": {"id": f"E{i}", "role": "courier"},
            "action": "waybill.reveal",
            "resource": {"type": "waybill", "id": f"YT{i:010d}"},
            "fields": ["recipient.phone"],
            "purpose": "delivery",
            "outcome": {"decision": "allow"},
        }
    )


def _body(actor: str, waybill: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"actor": {"id": actor}}
    if waybill is not None:
        body["resource"] = {"type": "waybill", "id": waybill}
    return body


def _stored(engine: Engine) -> dict[int, str | None]:
    """``seq -> actor`` of every stored entry, read through a fresh engine (not the log's pool)."""
    fresh = create_db_engine(engine.url.render_as_string(hide_password=False))
    try:
        with fresh.connect() as conn:
            return {
                int(seq): actor
                for seq, actor in conn.execute(select(audit_entries.c.seq, audit_entries.c.actor))
            }
    finally:
        fresh.dispose()


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_entries)).scalar_one())


def _verified(engine: Engine, key_provider: LocalKeyFile) -> None:
    report = verify(engine, key_provider.signer().public_key)
    assert report.ok, report.summary()


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


class HeldWriter:
    """Wraps ``log._write``: records every batch, and holds the writer inside it while ``held``.

    ``plug()`` appends one entry from a helper thread and returns once the writer holds its batch,
    so that everything appended afterwards queues up as the next batch.
    """

    def __init__(self, log: SqlAuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log = log
        self.batches: list[list[dict[str, Any]]] = []
        self.entered = threading.Event()
        self.released = threading.Event()
        self.fail: BaseException | None = None
        self.plug_result: list[object] = []
        self._plug_thread: threading.Thread | None = None
        original = log._write

        def write(batch: list[Any], *, force_head: bool = False) -> None:
            self.batches.append([json.loads(r.body) for r in batch if r.kind is not None])
            if not self.released.is_set():
                self.entered.set()
                assert self.released.wait(30), "test never released the writer"
            if self.fail is not None:
                raise self.fail
            original(batch, force_head=force_head)

        monkeypatch.setattr(log, "_write", write)

    def plug(self) -> None:
        def run() -> None:
            try:
                self.plug_result.append(self.log.append(EntryKind.SYSTEM, {"actor": "plug"}))
            except AuditUnavailable as exc:
                self.plug_result.append(exc)

        self._plug_thread = threading.Thread(target=run, daemon=True)
        self._plug_thread.start()
        assert self.entered.wait(10), "writer never started the plug batch"

    def pending(self) -> int:
        with self.log._wakeup:
            return len(self.log._pending)

    def release(self) -> None:
        self.released.set()
        if self._plug_thread is not None:
            self._plug_thread.join(10)

    @property
    def entry_batches(self) -> list[list[dict[str, Any]]]:
        return [b for b in self.batches if b]


# ---- correctness -------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_concurrent_async_appends_get_unique_consecutive_durable_indices(
    open_log: OpenLog, engine: Engine, key_provider: LocalKeyFile
) -> None:
    log = open_log()
    n = 200

    async def main() -> list[int]:
        return await asyncio.gather(*(log.append_async(EntryKind.ACCESS, _body(f"A{i}")) for i in range(n)))

    got = asyncio.run(main())
    assert sorted(got) == list(range(n))
    assert log.size == n
    stored = _stored(engine)
    # Every returned index is the caller's own entry, committed and visible to another connection.
    assert {index: stored[index] for index in got} == {index: f"A{i}" for i, index in enumerate(got)}
    log.close()
    _verified(engine, key_provider)


@pytest.mark.timeout(60)
def test_each_index_is_durable_when_its_await_returns(open_log: OpenLog, engine: Engine) -> None:
    log = open_log()
    fresh = create_db_engine(engine.url.render_as_string(hide_password=False))
    seen: dict[int, str | None] = {}

    async def caller(i: int) -> None:
        index = await log.append_async(EntryKind.ACCESS, _body(f"D{i}"))
        # Read at once, before any other task can run: the row must already be committed.
        with fresh.connect() as conn:
            row = conn.execute(select(audit_entries.c.actor).where(audit_entries.c.seq == index)).first()
        seen[index] = None if row is None else row.actor
        assert seen[index] == f"D{i}"

    async def main() -> None:
        await asyncio.gather(*(caller(i) for i in range(40)))

    try:
        asyncio.run(main())
    finally:
        fresh.dispose()
    assert sorted(seen) == list(range(40))


@pytest.mark.timeout(60)
def test_appends_of_one_loop_turn_reach_the_writer_together(
    open_log: OpenLog, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server answers many requests per turn of its loop; the writer, on the same core, must not be
    # woken for each of them (batches of one or two made the commits eat the CPU).
    log = open_log()
    held = HeldWriter(log, monkeypatch)
    held.released.set()

    async def request(name: str) -> int:
        # Blocking work that releases the GIL, as a database read does: a writer woken by the
        # previous request's entry would commit that entry alone in the meantime.
        time.sleep(0.002)
        return await log.append_async(EntryKind.ACCESS, _body(name))

    async def main() -> list[int]:
        first = await asyncio.gather(*(request(f"T{i}") for i in range(50)))
        second = await asyncio.gather(*(request(f"U{i}") for i in range(7)))
        return [*first, *second]

    got = asyncio.run(main())
    assert got == list(range(57))
    assert [len(batch) for batch in held.entry_batches] == [50, 7]
    assert [e["actor"]["id"] for e in held.entry_batches[0]] == [f"T{i}" for i in range(50)]


@pytest.mark.timeout(60)
def test_appends_staged_when_the_log_closes_fail_closed(open_log: OpenLog) -> None:
    log = open_log()

    async def main() -> list[object]:
        pending = [
            asyncio.ensure_future(log.append_async(EntryKind.ACCESS, _body(f"C{i}"))) for i in range(3)
        ]
        await asyncio.sleep(0)  # staged, not yet handed over
        log.close()
        return list(await asyncio.gather(*pending, return_exceptions=True))

    results = asyncio.run(main())
    assert all(isinstance(r, AuditUnavailable) for r in results), results


@pytest.mark.timeout(60)
def test_async_and_threaded_callers_share_batches_and_numbering(
    open_log: OpenLog, engine: Engine, key_provider: LocalKeyFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log()
    held = HeldWriter(log, monkeypatch)
    held.plug()
    sync_got: dict[str, int] = {}
    lock = threading.Lock()

    def sync_caller(name: str) -> None:
        index = log.append(EntryKind.ACCESS, _body(name))
        with lock:
            sync_got[name] = index

    async def main() -> list[int]:
        tasks = [asyncio.ensure_future(log.append_async(EntryKind.ACCESS, _body(f"A{i}"))) for i in range(30)]
        threads = [threading.Thread(target=sync_caller, args=(f"S{t}",)) for t in range(5)]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(_wait_until, lambda: held.pending() == 35, "35 queued entries")
        held.release()
        got = await asyncio.gather(*tasks)
        for thread in threads:
            await asyncio.to_thread(thread.join)
        return list(got)

    async_got = asyncio.run(main())
    assert held.plug_result == [0]
    everyone = async_got + list(sync_got.values())
    assert sorted(everyone) == list(range(1, 36))
    # The queued coroutines and threads went into one batch, one transaction.
    assert len(held.entry_batches) == 2 and len(held.entry_batches[1]) == 35
    stored = _stored(engine)
    assert all(stored[index] == f"A{i}" for i, index in enumerate(async_got))
    assert all(stored[index] == name for name, index in sync_got.items())
    log.close()
    _verified(engine, key_provider)


@pytest.mark.timeout(60)
def test_async_and_threaded_callers_free_running(
    open_log: OpenLog, engine: Engine, key_provider: LocalKeyFile
) -> None:
    log = open_log()
    sync_got: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(25):
            name = f"S{t}-{i}"
            index = log.append(EntryKind.ACCESS, _body(name))
            with lock:
                sync_got.append((name, index))

    async def main() -> list[int]:
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        got = await asyncio.gather(*(log.append_async(EntryKind.ACCESS, _body(f"A{i}")) for i in range(100)))
        for thread in threads:
            await asyncio.to_thread(thread.join)
        return list(got)

    async_got = asyncio.run(main())
    assert sorted(async_got + [i for _, i in sync_got]) == list(range(200))
    stored = _stored(engine)
    assert all(stored[index] == f"A{i}" for i, index in enumerate(async_got))
    assert all(stored[index] == name for name, index in sync_got)
    log.close()
    _verified(engine, key_provider)


@pytest.mark.timeout(60)
def test_one_batch_answers_two_event_loops(
    open_log: OpenLog, engine: Engine, key_provider: LocalKeyFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log()
    held = HeldWriter(log, monkeypatch)
    held.plug()
    results: dict[str, list[int] | BaseException] = {}

    def run_loop(tag: str) -> None:
        async def main() -> list[int]:
            return list(
                await asyncio.gather(
                    *(log.append_async(EntryKind.ACCESS, _body(f"{tag}{i}")) for i in range(40))
                )
            )

        try:
            results[tag] = asyncio.run(main())
        except BaseException as exc:  # reported by the assertion below
            results[tag] = exc

    threads = [threading.Thread(target=run_loop, args=(tag,)) for tag in ("L", "M")]
    for thread in threads:
        thread.start()
    _wait_until(lambda: held.pending() == 80, "80 queued entries")
    with log._wakeup:
        assert len(log._waiting) == 2  # one waiting group per event loop
    held.release()
    for thread in threads:
        thread.join(20)
    got_l, got_m = results["L"], results["M"]
    assert isinstance(got_l, list) and isinstance(got_m, list), results
    assert sorted(got_l + got_m) == list(range(1, 81))
    second = held.entry_batches[1]
    assert {b["actor"]["id"][0] for b in second} == {"L", "M"} and len(second) == 80
    stored = _stored(engine)
    assert all(stored[index] == f"L{i}" for i, index in enumerate(got_l))
    assert all(stored[index] == f"M{i}" for i, index in enumerate(got_m))
    log.close()
    _verified(engine, key_provider)


@pytest.mark.timeout(60)
def test_two_event_loops_free_running(open_log: OpenLog, engine: Engine, key_provider: LocalKeyFile) -> None:
    log = open_log()
    start = threading.Barrier(2)
    results: dict[str, list[int]] = {}

    def run_loop(tag: str) -> None:
        async def main() -> list[int]:
            start.wait(10)
            out = []
            for burst in range(5):
                out += await asyncio.gather(
                    *(log.append_async(EntryKind.ACCESS, _body(f"{tag}{burst}-{i}")) for i in range(20))
                )
            return out

        results[tag] = asyncio.run(main())

    threads = [threading.Thread(target=run_loop, args=(tag,)) for tag in ("L", "M")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results["L"] + results["M"]) == list(range(200))
    stored = _stored(engine)
    for tag, got in results.items():
        assert [stored[i] for i in got] == [f"{tag}{b}-{i}" for b in range(5) for i in range(20)]
    log.close()
    _verified(engine, key_provider)


# ---- failure: fail closed ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_failed_transaction_fails_every_caller_of_the_batch(
    open_log: OpenLog, engine: Engine, key_provider: LocalKeyFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real failing transaction: the database refuses one entry of the batch (a trigger)."""
    log = open_log()
    before = [log.append(EntryKind.ACCESS, _body(f"B{i}", f"W{i}")) for i in range(3)]
    assert before == [0, 1, 2]
    held = HeldWriter(log, monkeypatch)
    held.plug()  # its own batch, committed once released
    sync_errors: list[BaseException] = []

    def sync_caller() -> None:
        try:
            log.append(EntryKind.ACCESS, _body("S", "WS"))  # the database refuses actor S
        except AuditUnavailable as exc:
            sync_errors.append(exc)

    async def main() -> list[int | BaseException]:
        # First the plug batch commits; then the next batch, holding the refused entry, cannot.
        tasks = [
            asyncio.ensure_future(log.append_async(EntryKind.ACCESS, _body(f"X{i}", f"WX{i}")))
            for i in range(20)
        ]
        thread = threading.Thread(target=sync_caller)
        thread.start()
        await asyncio.to_thread(_wait_until, lambda: held.pending() == 21, "21 queued entries")
        held.release()
        got = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(thread.join)
        return list(got)

    with refusing_actor(engine, "S"):
        got = asyncio.run(main())
        assert held.plug_result == [3]
        assert all(isinstance(g, AuditUnavailable) for g in got), got
        assert len(sync_errors) == 1
        for failure in [*got, *sync_errors]:
            assert isinstance(failure, AuditUnavailable)
            assert failure.__cause__ is not None  # the database error, kept for the log
        # Nothing of the failed batch is stored, nor counted in the tree.
        assert _count(engine) == 4 and log.size == 4
        assert set(_stored(engine)) == {0, 1, 2, 3}
    # The tree was rolled back with the transaction: the next entry takes the next index and verifies.
    assert asyncio.run(log.append_async(EntryKind.ACCESS, _body("after", "WA"))) == 4
    log.close()
    _verified(engine, key_provider)


@pytest.mark.timeout(60)
def test_write_error_fails_awaiting_callers(
    open_log: OpenLog, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log()
    assert log.append(EntryKind.SYSTEM, {"n": 0}) == 0

    def broken(batch: list[Any], *, force_head: bool = False) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(log, "_write", broken)

    async def main() -> list[int | BaseException]:
        return list(
            await asyncio.gather(
                *(log.append_async(EntryKind.ACCESS, _body(f"F{i}")) for i in range(10)),
                return_exceptions=True,
            )
        )

    got = asyncio.run(main())
    assert all(isinstance(g, AuditUnavailable) for g in got), got
    assert all(isinstance(g.__cause__, RuntimeError) for g in got if isinstance(g, BaseException))
    assert log.size == 1 and _count(engine) == 1
    monkeypatch.undo()
    assert asyncio.run(log.append_async(EntryKind.SYSTEM, {"n": 1})) == 1


def test_append_async_on_a_closed_log_raises(open_log: OpenLog) -> None:
    log = open_log()
    assert asyncio.run(log.append_async(EntryKind.SYSTEM, {"n": 0})) == 0
    log.close()
    with pytest.raises(AuditUnavailable, match="closed"):
        asyncio.run(log.append_async(EntryKind.SYSTEM, {"n": 1}))
    with pytest.raises(AuditUnavailable, match="closed"):
        asyncio.run(log.append_event_async(_event(1)))
    assert log.size == 1


@pytest.mark.timeout(60)
def test_close_commits_queued_async_callers(
    open_log: OpenLog, engine: Engine, key_provider: LocalKeyFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log()
    held = HeldWriter(log, monkeypatch)
    held.plug()

    async def main() -> list[int]:
        tasks = [asyncio.ensure_future(log.append_async(EntryKind.ACCESS, _body(f"Q{i}"))) for i in range(10)]
        await asyncio.to_thread(_wait_until, lambda: held.pending() == 10, "10 queued entries")
        closer = threading.Thread(target=log.close)
        closer.start()
        await asyncio.to_thread(_wait_until, lambda: log._closing, "close to begin")
        held.release()
        got = await asyncio.gather(*tasks)
        await asyncio.to_thread(closer.join)
        return list(got)

    got = asyncio.run(main())
    assert sorted(got) == list(range(1, 11))
    stored = _stored(engine)
    assert all(stored[index] == f"Q{i}" for i, index in enumerate(got))
    _verified(engine, key_provider)


class _WriterKilled(BaseException):
    """Escapes ``_safe_write`` (which catches Exception): the writer thread dies."""


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_writer_death_fails_awaiting_callers(
    open_log: OpenLog, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log()
    held = HeldWriter(log, monkeypatch)
    held.plug()
    held.fail = _WriterKilled()

    async def main() -> list[int | BaseException]:
        tasks = [asyncio.ensure_future(log.append_async(EntryKind.ACCESS, _body(f"K{i}"))) for i in range(5)]
        await asyncio.to_thread(_wait_until, lambda: held.pending() == 5, "5 queued entries")
        held.release()  # the plug batch kills the writer; the 5 are still queued
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    got = asyncio.run(main())
    assert all(isinstance(g, AuditUnavailable) for g in got), got
    assert len(held.plug_result) == 1 and isinstance(held.plug_result[0], AuditUnavailable)
    log._thread.join(5)
    assert not log._thread.is_alive()
    with pytest.raises(AuditUnavailable):
        asyncio.run(log.append_async(EntryKind.SYSTEM, {"n": 1}))
    assert _count(engine) == 0


@pytest.mark.timeout(60)
def test_append_async_times_out_when_the_writer_hangs(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log()
    monkeypatch.setattr(sql_module, "_APPEND_TIMEOUT", 0.2)
    held = HeldWriter(log, monkeypatch)
    held.plug()

    async def main() -> tuple[BaseException | None, float]:
        started = time.monotonic()
        try:
            await asyncio.wait_for(log.append_async(EntryKind.SYSTEM, {"n": 1}), 5)
        except AuditUnavailable as exc:
            return exc, time.monotonic() - started
        return None, time.monotonic() - started

    try:
        failure, waited = asyncio.run(main())
    finally:
        held.release()
    assert isinstance(failure, AuditUnavailable) and "timed out" in str(failure)
    assert 0.15 <= waited < 2.0


@pytest.mark.timeout(60)
def test_append_async_joining_after_a_timeout_also_times_out(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every caller is bounded by ``_APPEND_TIMEOUT``, also one that arrives after another timed out.

    The timer belongs to the waiting group of the loop; once it fired, a caller joining the same
    group (the writer still busy) gets no timer of its own.
    """
    log = open_log()
    monkeypatch.setattr(sql_module, "_APPEND_TIMEOUT", 0.2)
    held = HeldWriter(log, monkeypatch)
    held.plug()

    async def attempt(n: int) -> str:
        try:
            await asyncio.wait_for(log.append_async(EntryKind.SYSTEM, {"n": n}), 3)
        except AuditUnavailable:
            return "AuditUnavailable"
        except TimeoutError:
            return "still waiting after 3 s"
        return "durable"

    async def main() -> tuple[str, str]:
        first = await attempt(1)
        second = await attempt(2)
        return first, second

    try:
        outcomes = asyncio.run(main())
    finally:
        held.release()
    assert outcomes == ("AuditUnavailable", "AuditUnavailable")


# ---- group-commit linger -----------------------------------------------------------------------------


async def _timed_append(log: SqlAuditLog, body: Mapping[str, Any]) -> float:
    started = time.perf_counter()
    await log.append_async(EntryKind.SYSTEM, body)
    return time.perf_counter() - started


def _lingers(log: SqlAuditLog, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the writer waited for companions, for every batch it lingers over from now on.

    Asking the writer itself, rather than timing the append, keeps these tests about the linger
    and not about the disk: a PostgreSQL commit on a busy disk took 27-32 ms, longer than the
    half-delay a timing test would have to use as its line.
    """
    waited: list[bool] = []
    original = log._linger

    def recording() -> bool:
        did = original()
        waited.append(did)
        return did

    monkeypatch.setattr(log, "_linger", recording)
    return waited


@pytest.mark.timeout(60)
def test_lone_caller_after_idle_does_not_wait(open_log: OpenLog, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(commit_delay=0.05)
    lingered = _lingers(log, monkeypatch)
    latencies = []
    for i in range(5):
        time.sleep(0.1)
        latencies.append(asyncio.run(_timed_append(log, {"n": i})))
    started = time.perf_counter()
    log.append(EntryKind.SYSTEM, {"n": "sync"})
    latencies.append(time.perf_counter() - started)
    assert not any(lingered), (lingered, latencies)
    # Lingering would cost the whole 50 ms delay on each append; a commit, even on a busy disk,
    # stays well under it, so the median also shows that none waited.
    assert statistics.median(latencies) < 0.05, latencies


@pytest.mark.timeout(60)
def test_lone_caller_after_activity_and_idle_does_not_wait(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Light, steady traffic (~100 entries/s) stops; 0.3 s later one request comes: it must not linger."""
    log = open_log(commit_delay=0.05)
    lingered = _lingers(log, monkeypatch)

    def steady(t: int) -> None:
        for i in range(25):
            log.append(EntryKind.SYSTEM, {"t": t, "i": i})
            time.sleep(0.01)

    lone: list[bool] = []
    for _round in range(3):
        threads = [threading.Thread(target=steady, args=(t,)) for t in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(0.3)  # idle: the next caller is alone
        lingered.clear()
        asyncio.run(_timed_append(log, {"lone": True}))
        lone.extend(lingered)
    assert not any(lone), lone


@pytest.mark.timeout(60)
def test_linger_is_observed_under_steady_traffic(open_log: OpenLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window the two tests above look through is real: steady traffic does make the writer wait."""
    log = open_log(commit_delay=0.05)
    lingered = _lingers(log, monkeypatch)

    def steady(t: int) -> None:
        for i in range(40):
            log.append(EntryKind.SYSTEM, {"t": t, "i": i})
            time.sleep(0.005)

    threads = [threading.Thread(target=steady, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert any(lingered), lingered


def _batch_sizes(log: SqlAuditLog, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of entries of every batch ``log`` writes from now on (filled as it writes)."""
    sizes: list[int] = []
    original = log._write

    def counting(batch: list[Any], *, force_head: bool = False) -> None:
        entries = sum(1 for r in batch if r.kind is not None)
        if entries:
            sizes.append(entries)
        original(batch, force_head=force_head)

    monkeypatch.setattr(log, "_write", counting)
    return sizes


@pytest.mark.timeout(60)
def test_sustained_async_load_shares_commits(
    open_log: OpenLog, engine: Engine, key_provider: LocalKeyFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(commit_delay=0.05)
    sizes = _batch_sizes(log, monkeypatch)

    async def caller(c: int) -> list[int]:
        return [await log.append_async(EntryKind.ACCESS, _body(f"C{c}-{i}")) for i in range(10)]

    async def main() -> list[list[int]]:
        return list(await asyncio.gather(*(caller(c) for c in range(64))))

    started = time.perf_counter()
    got = asyncio.run(main())
    elapsed = time.perf_counter() - started
    assert sorted(i for g in got for i in g) == list(range(640))
    assert sum(sizes) == 640
    assert statistics.mean(sizes) > 1, sizes
    # A fixed crowd of callers never reaches a rate-based count beyond its size: the writer must
    # not sit out the whole commit_delay for each of the ten rounds.
    assert elapsed < 10 * 0.05, (elapsed, sizes)
    stored = _stored(engine)
    for c, indices in enumerate(got):
        assert [stored[i] for i in indices] == [f"C{c}-{i}" for i in range(10)]
    log.close()
    _verified(engine, key_provider)


@pytest.mark.timeout(90)
def test_linger_grows_batches_of_staggered_arrivals(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callers arriving a few ms apart: lingering for companions makes batches clearly bigger."""

    def mean_batch(delay: float) -> float:
        log = open_log(commit_delay=delay)
        sizes = _batch_sizes(log, monkeypatch)

        async def caller(c: int) -> list[int]:
            rnd = random.Random(c)
            out = []
            for i in range(10):
                await asyncio.sleep(rnd.uniform(0, 0.01))
                out.append(await log.append_async(EntryKind.SYSTEM, {"c": c, "i": i}))
            return out

        async def main() -> list[list[int]]:
            return list(await asyncio.gather(*(caller(c) for c in range(32))))

        got = asyncio.run(main())
        start = log.size - 320
        assert sorted(i for g in got for i in g) == list(range(start, start + 320))
        log.close()
        return statistics.mean(sizes)

    # Typically 3-7 times bigger; timing on a busy machine varies, so up to three tries.
    tries = []
    for _ in range(3):
        tries.append((mean_batch(0.0), mean_batch(0.05)))
        if tries[-1][1] >= 2 * tries[-1][0]:
            break
    without, lingering = tries[-1]
    assert lingering >= 2 * without, tries


@pytest.mark.timeout(60)
def test_commit_delay_zero_is_correct_and_never_waits(
    open_log: OpenLog, engine: Engine, key_provider: LocalKeyFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(commit_delay=0)
    lingered = _lingers(log, monkeypatch)
    sync_got: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(20):
            index = log.append(EntryKind.ACCESS, _body(f"S{t}-{i}"))
            with lock:
                sync_got.append((f"S{t}-{i}", index))

    async def caller(c: int) -> list[int]:
        return [await log.append_async(EntryKind.ACCESS, _body(f"C{c}-{i}")) for i in range(5)]

    async def main() -> list[list[int]]:
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        got = list(await asyncio.gather(*(caller(c) for c in range(64))))
        for thread in threads:
            await asyncio.to_thread(thread.join)
        return got

    got = asyncio.run(main())
    assert sorted([i for g in got for i in g] + [i for _, i in sync_got]) == list(range(400))
    stored = _stored(engine)
    for c, indices in enumerate(got):
        assert [stored[i] for i in indices] == [f"C{c}-{i}" for i in range(5)]
    assert all(stored[i] == name for name, i in sync_got)
    # However high the rate just was, with no delay a lone caller commits at once; and the crowd
    # above never waited either.
    for _ in range(3):
        time.sleep(0.05)
        asyncio.run(_timed_append(log, {"lone": True}))
    assert not any(lingered), lingered
    log.close()
    _verified(engine, key_provider)


# ---- the memory log and the protocol -------------------------------------------------------------------


def test_memory_append_event_async_is_append_event(key_provider: LocalKeyFile) -> None:
    clock = FixedClock(datetime(2025, 11, 11, 8, 0, tzinfo=UTC))
    sync_log = MemoryAuditLog(key_provider, clock=clock)
    async_log = MemoryAuditLog(key_provider, clock=clock)
    events = [_event(i) for i in range(3)]
    assert [sync_log.append_event(e) for e in events] == [0, 1, 2]

    async def main() -> list[int]:
        return [await async_log.append_event_async(e) for e in events]

    assert asyncio.run(main()) == [0, 1, 2]
    assert async_log.entries == sync_log.entries
    assert async_log.checkpoint().root == sync_log.checkpoint().root
    async_log.close()
    with pytest.raises(AuditUnavailable):
        asyncio.run(async_log.append_event_async(_event(9)))
    assert async_log.size == 3


def test_sql_append_event_async_is_append_event(open_log: OpenLog, engine: Engine) -> None:
    log = open_log()
    assert log.append_event(_event(0)) == 0
    assert asyncio.run(log.append_event_async(_event(1))) == 1
    with engine.connect() as conn:
        kinds = dict(conn.execute(select(audit_entries.c.seq, audit_entries.c.kind)).all())
    assert kinds == {0: "access", 1: "access"}
    assert _stored(engine) == {0: "E0", 1: "E1"}


class _LegacyLog:
    """Everything of the AuditLog protocol but ``append_event_async``."""

    size = 0

    def append(self, kind: EntryKind, body: Mapping[str, Any]) -> int:
        return 0

    def append_many(self, kind: EntryKind, bodies: object) -> list[int]:
        return []

    def append_event(self, event: AccessEvent) -> int:
        return 0

    def check_writable(self) -> None: ...

    def tree_head(self) -> None: ...

    def checkpoint(self) -> None: ...

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        return []

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return []

    def leaf_hash(self, index: int) -> bytes:
        return b""

    def close(self) -> None: ...


class _CurrentLog(_LegacyLog):
    async def append_event_async(self, event: AccessEvent) -> int:
        return 0


def test_protocol_requires_append_event_async(open_log: OpenLog, key_provider: LocalKeyFile) -> None:
    assert not isinstance(_LegacyLog(), AuditLog)
    assert isinstance(_CurrentLog(), AuditLog)
    assert isinstance(open_log(), AuditLog)
    assert isinstance(MemoryAuditLog(key_provider), AuditLog)


@pytest.mark.timeout(60)
def test_sizes_and_proofs_stop_at_what_is_committed(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer puts a batch's leaves in the tree before its commit (the head needs them). Until
    # the commit returns, nobody may be told the log is longer, nor get a proof over those leaves:
    # if the commit failed, the proof would name leaves that never existed.
    log = open_log()
    for i in range(3):
        log.append(EntryKind.ACCESS, _body(f"P{i}"))
    inside, release = threading.Event(), threading.Event()
    original = log._write_in

    def write_in(cursor: Any, stored: int, entries: list[Any], wants_head: bool) -> Any:
        result = original(cursor, stored, entries, wants_head)
        if entries:
            inside.set()
            assert release.wait(30), "test never released the writer"
        return result

    monkeypatch.setattr(log, "_write_in", write_in)
    appender = threading.Thread(target=log.append, args=(EntryKind.ACCESS, _body("P3")), daemon=True)
    appender.start()
    assert inside.wait(10), "writer never reached the batch"
    try:
        assert len(log._tree) == 4  # the leaf is in the tree, its transaction still open
        assert log.size == 3
        with pytest.raises(ValueError, match="outside"):
            log.inclusion_proof(3, 4)
        with pytest.raises(ValueError, match="outside"):
            log.consistency_proof(3, 4)
        with pytest.raises(IndexError):
            log.leaf_hash(3)
        assert len(log.inclusion_proof(2, 3)) == 1  # committed sizes still prove
    finally:
        release.set()
        appender.join(10)
    assert log.size == 4
    assert log.leaf_hash(3) == log._tree.leaf(3)
    assert len(log.inclusion_proof(3, 4)) == 2
