"""One contract suite for every AuditLog: in memory, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from courierguard.audit import (
    AuditLog,
    EntryKind,
    MemoryAuditLog,
    MerkleTree,
    open_audit_log,
    verify,
    verify_consistency,
    verify_inclusion,
)
from courierguard.audit._internal.core import read_witness
from courierguard.errors import AuditUnavailable, InvalidInput
from courierguard.events import AccessEvent
from courierguard.vault.keys import LocalKeyFile

from .conftest import refusing_actor


def _event(i: int) -> AccessEvent:
    return AccessEvent.model_validate(
        {
            "id": f"ev-{i}",
            "ts": datetime(2025, 11, 11, 8, 0, tzinfo=UTC),
            "actor": {"id": f"E{i % 3}", "role": "courier"},
            "action": "waybill.reveal",
            "resource": {"type": "waybill", "id": f"YT{i:010d}"},
            "fields": ["recipient.phone"],
            "purpose": "delivery",
            "outcome": {"decision": "allow"},
        }
    )


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def audit_log(request: pytest.FixtureRequest, key_provider: LocalKeyFile) -> Iterator[AuditLog]:
    log: AuditLog
    if request.param == "memory":
        log = MemoryAuditLog(key_provider, head_interval=0.05)
    else:
        engine = request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")
        log = open_audit_log(engine, key_provider, head_interval=0.05)
    yield log
    log.close()


def test_is_an_audit_log(audit_log: AuditLog) -> None:
    assert isinstance(audit_log, AuditLog)


def test_indices_are_sequential_and_heads_verify(audit_log: AuditLog, key_provider: LocalKeyFile) -> None:
    assert [audit_log.append(EntryKind.ADMIN, {"actor": "root", "n": i}) for i in range(5)] == list(range(5))
    assert audit_log.append_event(_event(5)) == 5
    head = audit_log.checkpoint()
    assert head.size == 6 == audit_log.size
    assert head.verify_signature(key_provider.signer().public_key)
    tree = MerkleTree(audit_log.leaf_hash(i) for i in range(6))
    assert tree.root() == head.root
    for i in range(6):
        verify_inclusion(i, 6, audit_log.leaf_hash(i), audit_log.inclusion_proof(i, 6), head.root)


def test_consistency_between_heads(audit_log: AuditLog) -> None:
    for i in range(3):
        audit_log.append(EntryKind.SYSTEM, {"i": i})
    first = audit_log.checkpoint()
    for i in range(10):
        audit_log.append(EntryKind.ALERT, {"i": i})
    second = audit_log.checkpoint()
    prf = audit_log.consistency_proof(first.size, second.size)
    verify_consistency(first.size, second.size, prf, first.root, second.root)
    assert second.timestamp_ms >= first.timestamp_ms


def test_concurrent_appends_get_unique_indices(audit_log: AuditLog) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(50):
            index = audit_log.append(EntryKind.ACCESS, {"actor": {"id": f"E{t}"}, "i": i})
            with lock:
                got.append(index)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(400))
    assert audit_log.checkpoint().size == 400


def test_head_signed_within_a_second_without_checkpoint(audit_log: AuditLog) -> None:
    audit_log.append(EntryKind.SYSTEM, {"boot": True})
    time.sleep(0.1)
    audit_log.append(EntryKind.SYSTEM, {"boot": False})
    deadline = time.monotonic() + 2
    while audit_log.tree_head().size < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert audit_log.tree_head().size == 2


def test_bad_input_is_refused(audit_log: AuditLog) -> None:
    with pytest.raises(InvalidInput):
        audit_log.append("gossip", {})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        audit_log.append(EntryKind.ADMIN, {"x": object()})
    assert audit_log.size == 0


def test_closed_log_fails_closed(audit_log: AuditLog) -> None:
    audit_log.append(EntryKind.SYSTEM, {})
    audit_log.close()
    with pytest.raises(AuditUnavailable):
        audit_log.append(EntryKind.SYSTEM, {})
    assert audit_log.tree_head().size == 1


# ---- SQL only ---------------------------------------------------------------------------------


def test_reopen_keeps_tree_and_verifies(engine: Engine, key_provider: LocalKeyFile, tmp_path: Path) -> None:
    witness = tmp_path / "witness.jsonl"
    log = open_audit_log(engine, key_provider, witness_file=witness)
    for i in range(20):
        log.append_event(_event(i))
    log.close()
    again = open_audit_log(engine, key_provider, witness_file=witness)
    assert again.size == 20
    assert again.append(EntryKind.SYSTEM, {"restart": 1}) == 20
    again.close()
    report = verify(engine, key_provider.signer().public_key, witness_file=witness)
    assert report.ok, report.summary()
    assert report.entries == 21
    heads = read_witness(witness)
    assert heads[-1].size == 21
    assert all(h.verify_signature(key_provider.signer().public_key) for h in heads)


def test_storage_failure_raises_audit_unavailable(engine: Engine, key_provider: LocalKeyFile) -> None:
    log = open_audit_log(engine, key_provider)
    assert log.append(EntryKind.SYSTEM, {}) == 0
    with refusing_actor(engine, "E1"):
        with pytest.raises(AuditUnavailable):
            log.append_event(_event(1))  # actor E1: the database refuses the row
        assert log.size == 1  # the failed leaf was undone
        assert log.append(EntryKind.SYSTEM, {"after": 1}) == 1
    log.close()
    assert verify(engine, key_provider.signer().public_key).ok


def test_failing_storage_does_not_spin_the_writer(sqlite_engine: Engine, key_provider: LocalKeyFile) -> None:
    """A disk that stays full: the writer retries the overdue tree head once a head interval, not in
    a loop (seen on a full tmpfs: thousands of failed head-only batches a second, each logged)."""
    log = open_audit_log(sqlite_engine, key_provider, head_interval=0.05)
    log.append(EntryKind.SYSTEM, {})
    log.append(EntryKind.SYSTEM, {"unsigned": 1})  # within the interval: no head covers it yet
    attempts = 0

    def full(*args: object, **kwargs: object) -> None:
        nonlocal attempts
        attempts += 1
        raise OSError(28, "No space left on device")

    log._write = full  # type: ignore[method-assign]
    time.sleep(0.5)
    assert 1 <= attempts <= 20  # about one per interval (10), where a spin made thousands
    del log._write  # space again: the next head goes through
    log.close()
    assert verify(sqlite_engine, key_provider.signer().public_key).ok


def test_migration_creates_audit_tables(tmp_path: Path) -> None:
    from sqlalchemy import inspect

    from courierguard.db import create_db_engine, migrate

    engine = create_db_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    migrate(engine)
    names = set(inspect(engine).get_table_names())
    assert {"audit_entries", "audit_waybills", "audit_tree_heads"} <= names
    engine.dispose()


def test_append_many_numbers_consecutively(audit_log: AuditLog) -> None:
    assert audit_log.append(EntryKind.SYSTEM, {"first": True}) == 0
    bodies = [{"actor": {"id": f"E{i}"}, "waybills": [f"YT{i:010d}"], "i": i} for i in range(25)]
    assert audit_log.append_many(EntryKind.ACCESS, bodies) == list(range(1, 26))
    assert audit_log.append_many(EntryKind.ACCESS, []) == []
    head = audit_log.checkpoint()
    assert head.size == 26
    proof = audit_log.inclusion_proof(13, 26)
    verify_inclusion(13, 26, audit_log.leaf_hash(13), proof, head.root)


def test_append_many_refuses_bad_input_whole(audit_log: AuditLog) -> None:
    with pytest.raises(InvalidInput):
        audit_log.append_many(EntryKind.ACCESS, [{"ok": 1}, {"bad": object()}])
    assert audit_log.size == 0


def test_batches_larger_than_max_batch_are_split(engine: Engine, key_provider: LocalKeyFile) -> None:
    log = open_audit_log(engine, key_provider, max_batch=3)
    got: list[int] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(5):
            indices = log.append_many(
                EntryKind.ACCESS, [{"actor": {"id": f"E{t}"}, "i": i, "j": j} for j in range(4)]
            )
            with lock:
                got.extend(indices)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert sorted(got) == list(range(120))
    report = verify(engine, key_provider.signer().public_key)
    assert report.ok, report.summary()
    assert report.entries == 120


def test_append_after_close_never_hangs(engine: Engine, key_provider: LocalKeyFile) -> None:
    log = open_audit_log(engine, key_provider)
    results: list[object] = []

    def worker() -> None:
        for i in range(200):
            try:
                results.append(log.append(EntryKind.SYSTEM, {"i": i}))
            except AuditUnavailable as exc:
                results.append(exc)
                return

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.01)
    log.close()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()
    indices = sorted(r for r in results if isinstance(r, int))
    assert indices == list(range(len(indices)))
    assert verify(engine, key_provider.signer().public_key).entries == len(indices)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_writer_death_fails_closed(engine: Engine, key_provider: LocalKeyFile) -> None:
    log = open_audit_log(engine, key_provider)
    assert log.append(EntryKind.SYSTEM, {}) == 0

    def die(*args: object, **kwargs: object) -> None:
        raise SystemExit  # escapes the writer's error handling and ends its thread

    log._write = die  # type: ignore[method-assign]
    with pytest.raises(AuditUnavailable):
        log.append(EntryKind.SYSTEM, {"lost": 1})
    log._thread.join(5)  # let its exception be reported inside this test
    with pytest.raises(AuditUnavailable):
        log.append(EntryKind.SYSTEM, {"after": 1})
    assert log.size == 1
