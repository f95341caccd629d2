"""Each kind of tampering is caught by verify(), which names the first bad index."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from courierguard.audit import (
    EntryKind,
    ProblemKind,
    encode_entry,
    leaf_hash,
    open_audit_log,
    row_mac_key,
    verify,
)
from courierguard.audit.merkle import MerkleTree
from courierguard.audit.models import canonical_json
from courierguard.clock import FixedClock
from courierguard.errors import AuditUnavailable
from courierguard.vault.keys import LocalKeyFile

N = 20


@pytest.fixture
def stored(engine: Engine, key_provider: LocalKeyFile) -> Engine:
    """20 entries with signed heads at sizes 5, 10 and 20; 2, 7, 12 and 17 are about an employee."""
    clock = FixedClock(datetime(2025, 6, 18, tzinfo=UTC))
    log = open_audit_log(engine, key_provider, clock=clock, head_interval=3600)
    for i in range(N):
        body: dict[str, Any] = {"actor": {"id": f"E{i % 4}"}, "resource": {"id": f"W{i}"}, "i": i}
        if i % 5 == 2:
            body["employee"] = f"E{(i + 1) % 4}"
        log.append(EntryKind.ACCESS, body)
        clock.advance(timedelta(seconds=1))
        if i + 1 in (5, 10):
            log.checkpoint()
    log.close()
    return engine


def _row(conn: Connection, seq: int) -> tuple[bytes, bytes]:
    entry, leaf = conn.execute(
        text("SELECT entry, leaf_hash FROM audit_entries WHERE seq = :s"), {"s": seq}
    ).one()
    return bytes(entry), bytes(leaf)


def _set(conn: Connection, seq: int, entry: bytes, leaf: bytes) -> None:
    conn.execute(
        text("UPDATE audit_entries SET entry = :e, leaf_hash = :h WHERE seq = :s"),
        {"e": entry, "h": leaf, "s": seq},
    )


def altered(conn: Connection) -> None:
    entry, leaf = _row(conn, 7)
    _set(conn, 7, entry.replace(b'"E3"', b'"E0"'), leaf)


def altered_with_hash(conn: Connection) -> None:
    forged = encode_entry(7, 0, EntryKind.ACCESS, canonical_json({"actor": {"id": "nobody"}}))
    _set(conn, 7, forged, leaf_hash(forged))


def deleted(conn: Connection) -> None:
    conn.execute(text("DELETE FROM audit_entries WHERE seq = 7"))


def deleted_and_renumbered(conn: Connection) -> None:
    conn.execute(text("DELETE FROM audit_entries WHERE seq = 7"))
    conn.execute(text("UPDATE audit_entries SET seq = seq + 1000 WHERE seq > 7"))
    conn.execute(text("UPDATE audit_entries SET seq = seq - 1001 WHERE seq > 1000"))


def swapped(conn: Connection) -> None:
    a, b = _row(conn, 7), _row(conn, 8)
    _set(conn, 7, *b)
    _set(conn, 8, *a)


def inserted(conn: Connection) -> None:
    conn.execute(text("UPDATE audit_entries SET seq = seq + 1000 WHERE seq >= 7"))
    conn.execute(text("UPDATE audit_entries SET seq = seq - 999 WHERE seq >= 1000"))
    forged = encode_entry(7, 0, EntryKind.ACCESS, canonical_json({"actor": {"id": "alibi"}}))
    conn.execute(
        text(
            "INSERT INTO audit_entries (seq, ts_us, kind, entry, leaf_hash) VALUES (7, 0, 'access', :e, :h)"
        ),
        {"e": forged, "h": leaf_hash(forged)},
    )


def truncated(conn: Connection) -> None:
    conn.execute(text("DELETE FROM audit_entries WHERE seq >= 15"))


def forged_head(conn: Connection) -> None:
    conn.execute(text("UPDATE audit_tree_heads SET root = :r WHERE size = 10"), {"r": b"\x42" * 32})


def head_size_changed(conn: Connection) -> None:
    conn.execute(text("UPDATE audit_tree_heads SET size = 12 WHERE size = 10"))


def archived_leaf_changed(conn: Connection) -> None:
    conn.execute(
        text("UPDATE audit_entries SET entry = NULL, leaf_hash = :h WHERE seq = 3"), {"h": b"\x01" * 32}
    )


CASES: list[tuple[Callable[[Connection], None], ProblemKind, int]] = [
    (altered, ProblemKind.ALTERED, 7),
    (altered_with_hash, ProblemKind.ROOT_MISMATCH, 5),
    (deleted, ProblemKind.MISSING, 7),
    (deleted_and_renumbered, ProblemKind.MISSING, 7),
    (swapped, ProblemKind.REORDERED, 7),
    (inserted, ProblemKind.INSERTED, 7),
    (truncated, ProblemKind.TRUNCATED, 15),
    (forged_head, ProblemKind.BAD_SIGNATURE, 10),
    (head_size_changed, ProblemKind.BAD_SIGNATURE, 12),
    (archived_leaf_changed, ProblemKind.ROOT_MISMATCH, 0),
]


def test_untouched_log_verifies(stored: Engine, key_provider: LocalKeyFile) -> None:
    report = verify(stored, key_provider.signer().public_key)
    assert report.ok, report.summary()
    assert report.entries == N
    assert report.tree_heads == 4  # sizes 0, 5, 10, 20


@pytest.mark.parametrize("tamper,kind,index", CASES, ids=[c[0].__name__ for c in CASES])
def test_tampering_is_named(
    stored: Engine,
    key_provider: LocalKeyFile,
    tamper: Callable[[Connection], None],
    kind: ProblemKind,
    index: int,
) -> None:
    with stored.begin() as conn:
        tamper(conn)
    report = verify(stored, key_provider.signer().public_key)
    assert not report.ok
    first = report.first_problem
    assert first is not None
    assert (first.kind, first.index) == (kind, index), report.problems
    assert str(index) in report.summary()


def test_wrong_public_key_fails_every_head(stored: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = LocalKeyFile(tmp_path / "other.json")
    report = verify(stored, other.signer().public_key)
    assert {p.kind for p in report.problems} == {ProblemKind.BAD_SIGNATURE}
    assert len(report.problems) == 4


def test_witness_catches_rewritten_database(engine: Engine, key_provider: LocalKeyFile, tmp_path) -> None:  # type: ignore[no-untyped-def]
    witness = tmp_path / "witness.jsonl"
    log = open_audit_log(engine, key_provider, witness_file=witness, head_interval=3600)
    for i in range(6):
        log.append(EntryKind.ADMIN, {"i": i})
    log.close()
    with engine.begin() as conn:
        # A DBA drops the last entries *and* the heads that signed them: the database alone looks fine.
        conn.execute(text("DELETE FROM audit_entries WHERE seq >= 3"))
        conn.execute(text("DELETE FROM audit_tree_heads WHERE size > 0"))
        conn.execute(text("UPDATE audit_index_mark SET upto = 3"))  # a careful DBA
    assert verify(engine, key_provider.signer().public_key).ok
    report = verify(engine, key_provider.signer().public_key, witness_file=witness)
    assert report.first_problem is not None
    assert (report.first_problem.kind, report.first_problem.index) == (ProblemKind.TRUNCATED, 3)


@pytest.mark.parametrize("tamper,kind,index", CASES, ids=[c[0].__name__ for c in CASES])
def test_tampering_is_named_across_fetch_chunks(
    stored: Engine,
    key_provider: LocalKeyFile,
    monkeypatch: pytest.MonkeyPatch,
    tamper: Callable[[Connection], None],
    kind: ProblemKind,
    index: int,
) -> None:
    # verify() checks whole chunks at once and re-scans a failing chunk row by row: with chunks of
    # 3 rows the bad entry sits in a later chunk, away from its start, and must still be named.
    monkeypatch.setattr(importlib.import_module("courierguard.audit.verify"), "_FETCH", 3)
    with stored.begin() as conn:
        tamper(conn)
    first = verify(stored, key_provider.signer().public_key).first_problem
    assert first is not None
    assert (first.kind, first.index) == (kind, index)


def test_archived_entries_are_counted_across_fetch_chunks(
    stored: Engine, key_provider: LocalKeyFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.import_module("courierguard.audit.verify"), "_FETCH", 3)
    with stored.begin() as conn:  # archiving purges the oldest bodies: a prefix, here over two chunks
        conn.execute(text("UPDATE audit_entries SET entry = NULL WHERE seq < 5"))
    report = verify(stored, key_provider.signer().public_key)
    assert report.ok, report.summary()
    assert (report.entries, report.archived) == (N, 5)


def test_a_body_removed_after_a_kept_one_is_not_taken_for_archived(
    stored: Engine, key_provider: LocalKeyFile
) -> None:
    """The leaf hash of a purged body still matches (it is all that is left), so only the prefix rule
    tells a deleted entry, say a reveal someone wants forgotten, from an archived one."""
    with stored.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET entry = NULL WHERE seq IN (0, 1, 6)"))
    report = verify(stored, key_provider.signer().public_key)
    assert [(p.kind.value, p.index) for p in report.problems] == [("altered", 6)]


# verify() hands ranges to worker processes (fork) only in a process with no other thread running;
# the test runner has threads, so each check runs in a fresh interpreter with tiny ranges.
# The row key goes along, so the workers check row MACs too ("mac problems": every bad_mac found).
_PARALLEL_SCRIPT = """
import importlib, json, sys
from sqlalchemy import create_engine
from courierguard.audit._internal.rowmac import MacScan
v = importlib.import_module("courierguard.audit.verify")
v._RANGE, v._FETCH, v._PARALLEL_FROM = 4, 3, 8
engine = create_engine(sys.argv[1])
key, row_key = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
fed = bytearray()
macs = MacScan()
prefix = v._parallel_prefix(engine, v._Stream([]), 2, v._log_key(engine, row_key), macs, v._Archived())
out = {"prefix": list(prefix), "legacy": [macs.legacy]}
for workers in (1, 2):
    r = v.verify(engine, key, workers=workers, row_key=row_key)
    first = r.first_problem
    out[str(workers)] = [r.ok, r.entries, r.archived, r.root.hex(), first and [first.kind.value, first.index]]
    out[f"{workers} mac problems"] = [[p.index, p.detail] for p in r.problems if p.kind.value == "bad_mac"]
print(json.dumps(out))
"""


def _verify_in_fresh_process(engine: Engine, key_provider: LocalKeyFile) -> dict[str, list[object]]:
    import json
    import subprocess
    import sys

    url = engine.url.render_as_string(hide_password=False)
    public_key, row_key = key_provider.signer().public_key.hex(), row_mac_key(key_provider).hex()
    done = subprocess.run(
        [sys.executable, "-c", _PARALLEL_SCRIPT, url, public_key, row_key],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, list[object]] = json.loads(done.stdout)
    return result


def test_worker_processes_confirm_an_untouched_log(stored: Engine, key_provider: LocalKeyFile) -> None:
    out = _verify_in_fresh_process(stored, key_provider)
    assert out["prefix"] == [N, 0]  # every range confirmed by a worker
    assert out["legacy"] == [0]  # and every row's MAC
    assert out["2"] == out["1"] and out["2"][:3] == [True, N, 0]


@pytest.mark.parametrize("tamper,kind,index", CASES, ids=[c[0].__name__ for c in CASES])
def test_worker_processes_name_the_same_first_problem(
    stored: Engine,
    key_provider: LocalKeyFile,
    tamper: Callable[[Connection], None],
    kind: ProblemKind,
    index: int,
) -> None:
    with stored.begin() as conn:
        tamper(conn)
    out = _verify_in_fresh_process(stored, key_provider)
    assert out["2"] == out["1"]
    assert out["2 mac problems"] == out["1 mac problems"]
    assert out["2"][4] == [kind.value, index]
    confirmed = out["prefix"][0]
    assert isinstance(confirmed, int)
    if kind in (ProblemKind.ALTERED, ProblemKind.MISSING, ProblemKind.REORDERED, ProblemKind.INSERTED):
        # Damaged rows: the workers stop short and the scan from there names the problem.
        assert confirmed <= index + 1 < N


# Row MACs checked by the workers: (tampering, first bad_mac index, what it says).
MAC_CASES = [
    # A row without a MAC, once the head over it is gone (only heads vouch for MAC-less rows).
    (
        "UPDATE audit_entries SET mac = NULL WHERE seq = 15; DELETE FROM audit_tree_heads WHERE size = 20",
        15,
        "no MAC",
    ),
    (
        "UPDATE audit_entries SET mac = (SELECT mac FROM audit_entries WHERE seq = 3) WHERE seq = 14",
        14,
        "not match",
    ),
]


@pytest.mark.parametrize(("statements", "index", "detail"), MAC_CASES, ids=["no_mac", "copied_mac"])
def test_worker_processes_check_row_macs(
    stored: Engine, key_provider: LocalKeyFile, statements: str, index: int, detail: str
) -> None:
    with stored.begin() as conn:
        for statement in statements.split("; "):
            conn.execute(text(statement))
    out = _verify_in_fresh_process(stored, key_provider)
    assert out["prefix"][0] == N  # the rows are intact: the workers confirmed them, MACs included
    assert out["2"] == out["1"] and out["2"][4] == ["bad_mac", index]
    found = out["2 mac problems"]
    assert out["1 mac problems"] == found and len(found) == 1
    assert isinstance(found[0], list) and found[0][0] == index and detail in found[0][1]


# Head sizes across many tiles (256 entries each): unaligned and aligned ends, a head alone in its
# tile, and gaps wider than the 64 tiles the tree keeps cached, so the consistency proofs need the
# leaves verify kept at the previous head's end.
LONG_HEADS = (1, 255, 256, 257, 300, 17_000, 17_152, 17_153, 17_400)


@pytest.fixture
def long_log(sqlite_engine: Engine, key_provider: LocalKeyFile, tmp_path: Path) -> tuple[Engine, Path]:
    witness = tmp_path / "witness.jsonl"
    log = open_audit_log(sqlite_engine, key_provider, head_interval=3600, witness_file=witness)
    done = 0
    for size in LONG_HEADS:
        log.append_many(EntryKind.ACCESS, [{"actor": {"id": f"E{i % 7}"}, "i": i} for i in range(done, size)])
        log.checkpoint()
        done = size
    log.close()
    return sqlite_engine, witness


def test_a_long_log_verifies_head_by_head(long_log: tuple[Engine, Path], key_provider: LocalKeyFile) -> None:
    engine, witness = long_log
    report = verify(engine, key_provider.signer().public_key, witness_file=witness, workers=1)
    assert report.ok, report.summary()
    assert report.entries == LONG_HEADS[-1]
    with engine.connect() as conn:
        leaves = [bytes(h) for (h,) in conn.execute(text("SELECT leaf_hash FROM audit_entries ORDER BY seq"))]
    assert report.root == MerkleTree.from_packed(b"".join(leaves)).root()


def test_a_long_log_rewritten_between_far_heads(
    long_log: tuple[Engine, Path], key_provider: LocalKeyFile
) -> None:
    engine, witness = long_log
    with engine.begin() as conn:  # rewritten with its hash: only the roots can tell
        forged = encode_entry(9_000, 0, EntryKind.ACCESS, canonical_json({"actor": {"id": "nobody"}}))
        _set(conn, 9_000, forged, leaf_hash(forged))
    report = verify(engine, key_provider.signer().public_key, witness_file=witness, workers=1)
    found = [(p.kind, p.index) for p in report.problems]
    # Every later head of both sources (4 each) is refused, naming the range after the last head
    # that still fits (300); the stored hash of the tile holding entry 9,000 no longer fits either.
    assert found[0] == (ProblemKind.ROOT_MISMATCH, 300)
    assert found.count((ProblemKind.ROOT_MISMATCH, 300)) == 8
    assert (ProblemKind.BAD_TILE, 9_000 // 256 * 256) in found
    # ... and its searchable actor and time no longer match the forged body.
    assert (ProblemKind.INDEX_MISMATCH, 9_000) in found
    assert len(found) == 10


# Worker ranges over whole tiles: the workers send each whole tile's hash, and the leaves only of
# the tiles cut by a range's ends or holding a head's end (of the database or the witness). Ranges
# of 1,003 entries end at odd places inside tiles, fetches of 97 rows inside ranges; 1, 2 and 3
# workers must say exactly the same of every tampering, wherever it falls.
_RANGES_SCRIPT = """
import importlib, json, sys
from pathlib import Path
from sqlalchemy import create_engine
v = importlib.import_module("courierguard.audit.verify")
v._RANGE, v._FETCH, v._PARALLEL_FROM = int(sys.argv[4]), 97, 8
engine = create_engine(sys.argv[1])
key, row_key, witness = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3]), Path(sys.argv[5])
by_hash = []
feed_tiles = v._Stream.feed_tiles
def counted(self, hashes):
    by_hash.append(len(hashes) // 32)
    feed_tiles(self, hashes)
v._Stream.feed_tiles = counted
out = {}
for workers in (1, 2, 3):
    r = v.verify(engine, key, workers=workers, row_key=row_key, witness_file=witness)
    problems = [[p.kind.value, p.index, p.detail] for p in r.problems]
    out[str(workers)] = [r.ok, r.entries, r.archived, r.root.hex(), problems]
out["tiles by hash"] = sum(by_hash)
print(json.dumps(out))
"""


def _verify_ranges(engine: Engine, key_provider: LocalKeyFile, witness: Path, size: int) -> dict[str, Any]:
    import json
    import subprocess
    import sys

    url = engine.url.render_as_string(hide_password=False)
    public_key, row_key = key_provider.signer().public_key.hex(), row_mac_key(key_provider).hex()
    done = subprocess.run(
        [sys.executable, "-c", _RANGES_SCRIPT, url, public_key, row_key, str(size), str(witness)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["1"] == result["2"] == result["3"]
    return result


@pytest.mark.parametrize("size", [1003, 512])
def test_worker_ranges_of_whole_tiles_verify_a_long_log(
    long_log: tuple[Engine, Path], key_provider: LocalKeyFile, size: int
) -> None:
    engine, witness = long_log
    out = _verify_ranges(engine, key_provider, witness, size)
    assert out["1"][:2] == [True, LONG_HEADS[-1]]
    assert out["tiles by hash"] > 0  # the whole tiles of a range crossed as their hashes


def _altered_at(index: int) -> Callable[[Connection], None]:
    def tamper(conn: Connection) -> None:
        entry, leaf = _row(conn, index)
        _set(conn, index, entry[:-1] + b" ", leaf)

    return tamper


def _rewritten_with_hash_at(index: int) -> Callable[[Connection], None]:
    def tamper(conn: Connection) -> None:
        forged = encode_entry(index, 0, EntryKind.ACCESS, canonical_json({"actor": {"id": "nobody"}}))
        _set(conn, index, forged, leaf_hash(forged))

    return tamper


def _run(*statements: str) -> Callable[[Connection], None]:
    def tamper(conn: Connection) -> None:
        for statement in statements:
            conn.execute(text(statement))

    return tamper


# (tampering, first problem kind, its index, words of its detail): the first and last entries of the
# log and of a range (1,002 | 1,003), one in the middle of a tile fed by hash, and across heads; a
# body removed at the start of a range, after the archived prefix ended in the range before.
LONG_CASES: list[tuple[str, Callable[[Connection], None], ProblemKind, int, str]] = [
    ("first_entry", _altered_at(0), ProblemKind.ALTERED, 0, "does not match its stored leaf hash"),
    ("range_end", _altered_at(1002), ProblemKind.ALTERED, 1002, "does not match its stored leaf hash"),
    ("range_start", _altered_at(1003), ProblemKind.ALTERED, 1003, "does not match its stored leaf hash"),
    ("mid_tile", _altered_at(9000), ProblemKind.ALTERED, 9000, "does not match its stored leaf hash"),
    ("last_entry", _altered_at(17_399), ProblemKind.ALTERED, 17_399, "does not match its stored leaf hash"),
    ("with_hash", _rewritten_with_hash_at(9000), ProblemKind.ROOT_MISMATCH, 300, "rewritten with its hash"),
    ("deleted", _run("DELETE FROM audit_entries WHERE seq = 5000"), ProblemKind.MISSING, 5000, "no entry"),
    (
        "body_removed",
        _run("UPDATE audit_entries SET entry = NULL WHERE seq < 600 OR seq = 1003"),
        ProblemKind.ALTERED,
        1003,
        "removed outside the archived prefix",
    ),
    (
        "archived_early",
        _run("UPDATE audit_entries SET entry = NULL WHERE seq < 1500"),
        ProblemKind.ALTERED,
        1499,
        "archived too early",
    ),
    (
        "copied_mac",
        _run(
            "UPDATE audit_entries SET mac = (SELECT mac FROM audit_entries WHERE seq = 3) WHERE seq = 12000"
        ),
        ProblemKind.BAD_MAC,
        12_000,
        "does not match",
    ),
]


@pytest.mark.parametrize(
    ("tamper", "kind", "index", "detail"), [c[1:] for c in LONG_CASES], ids=[c[0] for c in LONG_CASES]
)
def test_worker_ranges_of_whole_tiles_name_the_first_problem(
    long_log: tuple[Engine, Path],
    key_provider: LocalKeyFile,
    tamper: Callable[[Connection], None],
    kind: ProblemKind,
    index: int,
    detail: str,
) -> None:
    engine, witness = long_log
    with engine.begin() as conn:
        tamper(conn)
    out = _verify_ranges(engine, key_provider, witness, 1003)
    ok, _, _, _, problems = out["1"]
    assert not ok
    assert problems[0][:2] == [kind.value, index]
    assert detail in problems[0][2]


def test_an_entry_rewritten_as_text_is_checked_not_a_crash(
    stored: Engine, key_provider: LocalKeyFile
) -> None:
    """SQLite lets a BLOB column hold TEXT, whose bytes are not UTF-8: verify reads them as bytes
    (the same bytes verify; edited ones are named). PostgreSQL's bytea refuses text outright."""
    if stored.dialect.name != "sqlite":
        with pytest.raises(DBAPIError), stored.begin() as conn:
            conn.execute(text("UPDATE audit_entries SET entry = CAST(entry AS TEXT) WHERE seq = 5"))
        return
    with stored.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET entry = CAST(entry AS TEXT) WHERE seq = 5"))
    assert verify(stored, key_provider.signer().public_key).ok
    with stored.begin() as conn:
        conn.execute(
            text("UPDATE audit_entries SET entry = CAST(replace(entry, 'E', 'F') AS TEXT) WHERE seq = 6")
        )
    report = verify(stored, key_provider.signer().public_key)
    assert [(p.kind.value, p.index) for p in report.problems] == [("altered", 6)]


@pytest.mark.parametrize(
    ("statement", "kind", "index"),
    [
        ("UPDATE audit_tree_heads SET signature = 'x' WHERE size = 10", ProblemKind.BAD_SIGNATURE, 10),
        ("UPDATE audit_tree_heads SET root = 'abc' WHERE size = 10", ProblemKind.BAD_SIGNATURE, 10),
        ("UPDATE audit_tree_heads SET signature = 42 WHERE size = 5", ProblemKind.BAD_SIGNATURE, 5),
    ],
)
def test_text_in_a_head_is_reported_not_a_crash(
    stored: Engine, key_provider: LocalKeyFile, statement: str, kind: ProblemKind, index: int
) -> None:
    # "verify never raises for a tampered log": a TEXT signature stopped it with a TypeError, and
    # a deletion made at the same time went unreported (the audit review's D9).
    if stored.dialect.name != "sqlite":  # bytea takes text as its bytes, but not a number
        statement = statement.replace("= 42", "= '42'")
    with stored.begin() as conn:
        conn.execute(text(statement))
        conn.execute(text("DELETE FROM audit_entries WHERE seq = 3"))
    report = verify(stored, key_provider.signer().public_key)
    assert (ProblemKind.MISSING, 3) in [(p.kind, p.index) for p in report.problems]
    assert any(p.kind is kind for p in report.problems) or report.problems[0].kind is ProblemKind.MISSING


def test_text_in_a_tile_hash_is_a_bad_tile_not_a_crash(
    long_log: tuple[Engine, Path], key_provider: LocalKeyFile
) -> None:
    engine, _ = long_log
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_tiles SET hash = 'abc' WHERE idx = 1"))
    report = verify(engine, key_provider.signer().public_key)
    assert [(p.kind, p.index) for p in report.problems] == [(ProblemKind.BAD_TILE, 256)]


COPIES = [
    ("DELETE FROM audit_actors WHERE actor = 'E3'", 3, "missing from the actor search index"),
    ("DELETE FROM audit_waybills WHERE waybill = 'W7'", 7, "missing from the waybill search index"),
    ("INSERT INTO audit_actors (actor, seq) VALUES ('E9', 4)", 4, "misfiled in the actor search index"),
    ("DELETE FROM audit_subjects WHERE seq = 12", 12, "missing from the subject search index"),
    ("INSERT INTO audit_subjects (subject, seq) VALUES ('E9', 4)", 4, "misfiled in the subject search index"),
    ("UPDATE audit_index_mark SET upto = 999999999 WHERE id = 2", 20, "mark says 999999999"),
    ("UPDATE audit_entries SET ts_us = ts_us - 31536000000000 WHERE seq = 5", 5, "time"),
    ("UPDATE audit_entries SET kind = 'system' WHERE seq = 6", 6, "kind"),
    ("UPDATE audit_entries SET actor = 'E0' WHERE seq = 7", 7, "actor"),
    ("UPDATE audit_entries SET tenant = 'other' WHERE seq = 8", 8, "tenant"),
    ("UPDATE audit_index_mark SET upto = 999999999", 20, "mark says 999999999"),
]


@pytest.mark.parametrize(("statement", "index", "detail"), COPIES, ids=[c[2].split()[0] for c in COPIES])
def test_tampered_search_copies_are_named(
    stored: Engine, key_provider: LocalKeyFile, statement: str, index: int, detail: str
) -> None:
    # Searches, exports and the HTTP audit search read these copies; the hashes never covered them,
    # so verify passed while an actor's reads vanished from every search (the audit review's D1, D2).
    with stored.begin() as conn:
        conn.execute(text(statement))
    report = verify(stored, key_provider.signer().public_key)
    assert [(p.kind, p.index) for p in report.problems] == [(ProblemKind.INDEX_MISMATCH, index)], (
        report.problems
    )
    assert detail in report.problems[0].detail


def test_a_mark_moved_past_the_log_is_undone_when_the_log_opens(
    stored: Engine, key_provider: LocalKeyFile
) -> None:
    with stored.begin() as conn:
        conn.execute(text("UPDATE audit_index_mark SET upto = 999999999"))
    log = open_audit_log(stored, key_provider, head_interval=3600)
    log.append(EntryKind.ACCESS, {"actor": {"id": "E5"}, "resource": {"id": "W99"}, "i": 99})
    log.close()
    from courierguard.audit import AuditQueries

    assert [r.index for r in AuditQueries(stored).by_actor("E5").records] == [N]
    assert verify(stored, key_provider.signer().public_key).ok


def test_a_log_rolled_back_behind_its_witness_refuses_to_open(
    engine: Engine, key_provider: LocalKeyFile, tmp_path: Path
) -> None:
    # It re-issued the lost indices for other entries and signed them into the witness file: a
    # forked history (the audit review's D8).
    witness = tmp_path / "witness.jsonl"
    log = open_audit_log(engine, key_provider, witness_file=witness, head_interval=3600)
    for i in range(6):
        log.append(EntryKind.ADMIN, {"i": i})
    log.close()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE seq >= 3"))
        conn.execute(text("DELETE FROM audit_tree_heads WHERE size > 3"))
        conn.execute(text("DELETE FROM audit_actors WHERE seq >= 3"))
        conn.execute(text("UPDATE audit_index_mark SET upto = 3"))
    with pytest.raises(AuditUnavailable, match="witness file signs 6 entries but only 3 are stored"):
        open_audit_log(engine, key_provider, witness_file=witness, head_interval=3600)
    # Without the witness the database alone looks whole: that is what the witness is for.
    open_audit_log(engine, key_provider, head_interval=3600).close()


def test_bodies_blanked_before_the_retention_period_ended_are_not_an_archive(
    engine: Engine, key_provider: LocalKeyFile
) -> None:
    # Blank everything before the gang's reads and it passed as one big archive (the audit review's
    # D3): a head signed before the newest blanked entry, within 180 days, proves it was too young.
    clock = FixedClock(datetime.now(UTC) - timedelta(days=10))
    log = open_audit_log(engine, key_provider, clock=clock, head_interval=3600)
    for i in range(8):
        log.append(EntryKind.ACCESS, {"actor": {"id": "E1"}, "i": i})
        clock.advance(timedelta(days=1))
        log.checkpoint()
    log.close()
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET entry = NULL WHERE seq < 5"))
    report = verify(engine, key_provider.signer().public_key)
    assert [(p.kind, p.index) for p in report.problems] == [(ProblemKind.ALTERED, 4)]
    assert "archived too early" in report.problems[0].detail
    # The same blanking of entries whose heads are all older than the period is an archive.
    assert verify(engine, key_provider.signer().public_key, retention_days=5).ok


def test_a_deletion_in_the_middle_is_not_also_a_truncated_tail(
    stored: Engine, key_provider: LocalKeyFile
) -> None:
    # The review's D10: "missing at 7" came with a false "truncated at 19".
    with stored.begin() as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE seq = 7"))
    report = verify(stored, key_provider.signer().public_key)
    assert [p.kind for p in report.problems if p.kind is not ProblemKind.INDEX_MISMATCH] == [
        ProblemKind.MISSING
    ]
