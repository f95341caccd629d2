"""The SQL log keeps one hash per 256-entry tile: stored with the entry that completes it, read back on
opening, checked against the latest signed head, and enough for every proof."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine, select, text

from courierguard.audit import AuditQueries, EntryKind, open_audit_log, verify
from courierguard.audit.merkle import MerkleTree, root_from_packed, verify_consistency, verify_inclusion
from courierguard.audit.models import ProblemKind
from courierguard.audit.sql import stored_tree
from courierguard.audit.tables import audit_entries, audit_tiles
from courierguard.errors import AuditUnavailable
from courierguard.vault.keys import LocalKeyFile

from .conftest import OpenLog

ENTRIES = 700  # two complete tiles and part of a third


def _fill(open_log: OpenLog, count: int = ENTRIES) -> None:
    log = open_log()
    for start in range(0, count, 100):
        log.append_many(
            EntryKind.ACCESS,
            [{"actor": {"id": f"E{i % 9}"}, "n": i} for i in range(start, min(count, start + 100))],
        )
    log.close()


def _leaves(engine: Engine) -> list[bytes]:
    with engine.connect() as conn:
        return [
            bytes(h) for (h,) in conn.execute(select(audit_entries.c.leaf_hash).order_by(audit_entries.c.seq))
        ]


def _tiles(engine: Engine) -> list[tuple[int, int, bytes]]:
    with engine.connect() as conn:
        t = audit_tiles.c
        return [(h, i, bytes(x)) for h, i, x in conn.execute(select(t.height, t.idx, t.hash).order_by(t.idx))]


def test_each_complete_tile_is_stored_with_its_hash(open_log: OpenLog, engine: Engine) -> None:
    _fill(open_log)
    leaves = _leaves(engine)
    assert len(leaves) == ENTRIES
    tiles = _tiles(engine)
    assert [(h, i) for h, i, _ in tiles] == [(8, i) for i in range(len(leaves) // 256)]
    for _, i, tile_hash in tiles:
        assert tile_hash == root_from_packed(b"".join(leaves[i * 256 : (i + 1) * 256]))
    tree = stored_tree(engine)
    assert tree.complete_tiles == len(leaves) // 256
    assert tree.root() == MerkleTree(leaves).root()


def test_proofs_from_tiles_verify_against_signed_heads(
    open_log: OpenLog, engine: Engine, key_provider: LocalKeyFile
) -> None:
    _fill(open_log)
    log = open_log()  # reopened: its tree comes from the stored tiles
    head = log.checkpoint()
    reference = MerkleTree(_leaves(engine))
    assert log.tree_head().root == reference.root(head.size)
    queries = AuditQueries(engine)
    for index in (0, 255, 256, 511, 600, head.size - 1):
        for proof in (log.inclusion_proof(index, head.size), queries.inclusion_proof(index)[1]):
            assert proof == reference.inclusion_proof(index, head.size)
            verify_inclusion(index, head.size, reference.leaf(index), proof, head.root)
    for old in (1, 256, 300, 512, head.size - 1):
        proof = log.consistency_proof(old, head.size)
        assert proof == queries.consistency_proof(old, head.size)
        verify_consistency(old, head.size, proof, reference.root(old), head.root)
    assert verify(engine, key_provider.signer().public_key).ok


def test_a_forged_tile_hash_stops_the_log_from_opening(open_log: OpenLog, engine: Engine) -> None:
    _fill(open_log)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_tiles SET hash = :x WHERE idx = 1"), {"x": b"\x07" * 32})
    with pytest.raises(AuditUnavailable, match="latest signed tree head does not match the stored entries"):
        open_log()


def test_missing_tile_hashes_are_recomputed_with_a_warning(
    open_log: OpenLog, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(open_log)
    root = stored_tree(engine).root()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_tiles"))
    with caplog.at_level(logging.WARNING, logger="courierguard.audit.sql"):
        log = open_log()
    assert "2 tile hashes were missing" in caplog.text
    assert log.size == ENTRIES and log.tree_head().root == root  # the head signed at close covers all
    log.close()


def test_missing_entries_stop_the_log_from_opening(open_log: OpenLog, engine: Engine) -> None:
    _fill(open_log)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE seq = 650"))  # in the incomplete last tile
    with pytest.raises(AuditUnavailable, match="missing from storage"):
        open_log()


def test_a_failed_tile_insert_fails_the_batch_and_the_tree_forgets_it(
    sqlite_engine: Engine, key_provider: LocalKeyFile
) -> None:
    """The batch that completes a tile cannot commit: its callers get AuditUnavailable, the tree is
    as before, and once storage recovers the same indices are written and verify."""
    log = open_audit_log(sqlite_engine, key_provider, head_interval=60)
    log.append_many(EntryKind.SYSTEM, [{"n": i} for i in range(250)])
    size = log.size
    with sqlite_engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER refuse_tiles BEFORE INSERT ON audit_tiles "
                "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
            )
        )
    with pytest.raises(AuditUnavailable):
        log.append_many(EntryKind.SYSTEM, [{"m": i} for i in range(10)])  # would complete tile 0
    assert log.size == size
    with sqlite_engine.begin() as conn:
        conn.execute(text("DROP TRIGGER refuse_tiles"))
    assert log.append_many(EntryKind.SYSTEM, [{"k": i} for i in range(10)]) == list(range(size, size + 10))
    log.close()
    assert [i for _, i, _ in _tiles(sqlite_engine)] == [0]
    assert verify(sqlite_engine, key_provider.signer().public_key).ok


def test_verify_names_a_forged_tile(open_log: OpenLog, engine: Engine, key_provider: LocalKeyFile) -> None:
    _fill(open_log)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_tiles SET hash = :x WHERE idx = 1"), {"x": b"\x07" * 32})
    report = verify(engine, key_provider.signer().public_key)
    assert [(p.kind, p.index) for p in report.problems] == [(ProblemKind.BAD_TILE, 256)]
    assert "tile 1 (entries 256-511)" in report.summary()


def test_proofs_read_storage_outside_the_writers_lock(open_log: OpenLog, engine: Engine) -> None:
    """The writer takes the tree's lock inside its transaction: a proof's reads must not hold it."""
    _fill(open_log)
    log = open_log()
    tree = log._tree
    real = tree._read
    held: list[bool] = []

    def watched(start: int, end: int) -> bytes:
        held.append(log._tree_lock.locked())
        return real(start, end)

    tree._read = watched  # type: ignore[misc]
    head = log.checkpoint()
    assert log.inclusion_proof(10, head.size) == MerkleTree(_leaves(engine)).inclusion_proof(10, head.size)
    log.consistency_proof(300, head.size)
    assert log.leaf_hash(520) == _leaves(engine)[520]
    assert held and not any(held)
