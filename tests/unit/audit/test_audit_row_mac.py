"""Row MACs: a writer adopts, and signs heads over, only rows that a writer holding the audit key
wrote (the audit review's D5). A DBA can write to the database, not read the key provider: a row
INSERTed at the next index, with no MAC, a made-up one or one copied from another row, is refused by
the next writer (every append fails closed, no head is signed over it) and named by ``verify``."""

from __future__ import annotations

import importlib
import itertools
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, inspect, text
from typer.testing import CliRunner

from courierguard.audit import (
    EntryKind,
    ProblemKind,
    SqlAuditLog,
    encode_entry,
    leaf_hash,
    open_audit_log,
    row_mac_key,
    verify,
)
from courierguard.audit._internal.rowmac import MAC_SIZE, MacScan, RowMac, log_key, row_mac
from courierguard.audit.models import VerifyReport, canonical_json
from courierguard.audit.search_index import indexed_upto
from courierguard.audit.sql import UnauthenticatedEntry
from courierguard.cli.audit import app
from courierguard.db import create_db_engine, migrate
from courierguard.db.engine import alembic_config
from courierguard.errors import AuditUnavailable
from courierguard.vault.keys import LocalKeyFile

from .conftest import OpenLog

N = 6
ALIBI = {"actor": {"id": "E7"}, "resource": {"type": "waybill", "id": "W-ALIBI"}, "purpose": "alibi"}


def _append(log: SqlAuditLog, count: int, tag: str = "E") -> list[int]:
    return [log.append(EntryKind.ACCESS, {"actor": {"id": f"{tag}{i % 3}"}, "i": i}) for i in range(count)]


def _insert(engine: Engine, seq: int, *, mac: bytes | None = None, body: dict[str, object] = ALIBI) -> bytes:
    """What a DBA can do: a well-formed entry row at ``seq`` through plain SQL; returns its leaf hash."""
    entry = encode_entry(seq, 1_750_000_000_000_000, EntryKind.ACCESS, canonical_json(body))
    leaf = leaf_hash(entry)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_entries (seq, ts_us, kind, actor, tenant, entry, leaf_hash, mac) "
                "VALUES (:s, 1750000000000000, 'access', 'E7', NULL, :e, :h, :m)"
            ),
            {"s": seq, "e": entry, "h": leaf, "m": mac},
        )
    return leaf


def _mac_of(engine: Engine, seq: int) -> bytes:
    with engine.connect() as conn:
        return bytes(
            conn.execute(text("SELECT mac FROM audit_entries WHERE seq = :s"), {"s": seq}).scalar_one()
        )


def _head_sizes(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [int(s) for (s,) in conn.execute(text("SELECT size FROM audit_tree_heads ORDER BY size"))]


def _check(engine: Engine, keys: LocalKeyFile) -> VerifyReport:
    return verify(engine, keys.signer().public_key, row_key=row_mac_key(keys))


def _bad_macs(report: VerifyReport) -> list[tuple[int, str]]:
    return [(p.index, p.detail) for p in report.problems if p.kind is ProblemKind.BAD_MAC]


def _refuses(log: SqlAuditLog, index: int) -> None:
    """Every append and checkpoint of ``log`` now fails closed, naming ``index``."""
    with pytest.raises(AuditUnavailable) as refused:
        log.append(EntryKind.ACCESS, {"actor": {"id": "E1"}, "after": True})
    assert refused.value.status == 503  # what the gateway answers: nothing is served
    assert isinstance(refused.value.__cause__, UnauthenticatedEntry)
    assert refused.value.__cause__.index == index
    with pytest.raises(AuditUnavailable):
        log.checkpoint()


@pytest.mark.parametrize("mac", ["none", "made_up", "copied"])
def test_a_row_inserted_by_a_dba_is_refused_by_the_next_writer_and_named_by_verify(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog, mac: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = open_log(head_interval=3600)
    _append(log, N)
    assert log.checkpoint().size == N
    stamp = {"none": None, "made_up": os.urandom(MAC_SIZE), "copied": _mac_of(engine, N - 1)}[mac]
    _insert(engine, N, mac=stamp)
    caplog.set_level(logging.CRITICAL, logger="courierguard.audit.sql")
    _refuses(log, N)
    # Nothing signed over it, nor appended after it, and the log's own view did not move.
    assert max(_head_sizes(engine)) == N and log.tree_head().size == N and log.size == N
    with engine.connect() as conn:
        assert conn.execute(text("SELECT max(seq) FROM audit_entries")).scalar() == N
    # One alert naming the index, nothing of the row; the second refusal is not alerted again.
    alerts = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(alerts) == 1 and f"audit entry {N} " in alerts[0]
    assert "alibi" not in alerts[0] and "E7" not in alerts[0] and "W-ALIBI" not in alerts[0]
    # A writer opening now refuses too, before it would sign its first head over the row.
    with pytest.raises(UnauthenticatedEntry) as opening:
        open_audit_log(engine, key_provider)
    assert opening.value.index == N
    report = _check(engine, key_provider)
    assert [i for i, _ in _bad_macs(report)] == [N], report.problems
    assert ("no MAC" if mac == "none" else "does not match") in _bad_macs(report)[0][1]
    assert "no head covers it" in _bad_macs(report)[0][1] or mac == "none"
    assert report.macs_checked and not report.ok


def test_removing_the_forged_row_lets_writers_go_on(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog
) -> None:
    log = open_log(head_interval=3600)
    _append(log, N)
    _insert(engine, N)
    _refuses(log, N)
    with engine.begin() as conn:  # what the runbook says, once the row is kept as evidence
        conn.execute(text("DELETE FROM audit_entries WHERE seq = :s"), {"s": N})
    assert log.append(EntryKind.ACCESS, {"actor": {"id": "E1"}}) == N
    log.close()
    assert _check(engine, key_provider).ok


def test_a_verifier_with_the_public_key_alone_cannot_see_it_and_says_so(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog
) -> None:
    log = open_log(head_interval=3600)
    _append(log, N)
    _insert(engine, N)
    report = verify(engine, key_provider.signer().public_key)
    assert report.ok and not report.macs_checked
    assert "row MACs not checked" in report.summary()


def test_a_genuine_row_of_another_writer_is_adopted(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog
) -> None:
    first, second = open_log(head_interval=3600), open_log(head_interval=3600)
    assert _append(first, 2, "A") == [0, 1]
    assert _append(second, 3, "B") == [2, 3, 4]  # adopted first's rows
    assert _append(first, 2, "A") == [5, 6]  # adopted second's rows
    assert first.checkpoint().size == 7
    second.close()
    first.close()
    report = _check(engine, key_provider)
    assert report.ok and report.macs_checked and report.legacy == 0, report.summary()
    assert "row MACs checked" in report.summary()


def test_a_mac_is_bound_to_its_index_and_log(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog
) -> None:
    log = open_log(head_interval=3600)
    _append(log, N)
    log.close()
    key = log_key(row_mac_key(key_provider), _leaf(engine, 0))
    genuine = [_mac_of(engine, seq) for seq in range(N)]
    assert genuine == [row_mac(key, seq, _leaf(engine, seq)) for seq in range(N)]
    # Another log under the same keys (a staging copy) has another entry 0, so other MACs.
    other = log_key(row_mac_key(key_provider), leaf_hash(b"another log's entry 0"))
    assert not {row_mac(other, seq, _leaf(engine, seq)) for seq in range(N)} & set(genuine)
    with engine.begin() as conn:  # two genuine MACs swapped between rows
        conn.execute(text("UPDATE audit_entries SET mac = :m WHERE seq = 2"), {"m": genuine[3]})
        conn.execute(text("UPDATE audit_entries SET mac = :m WHERE seq = 3"), {"m": genuine[2]})
    bad = _bad_macs(_check(engine, key_provider))
    assert [i for i, _ in bad] == [2] and "2 such" in bad[0][1]
    assert "below a valid signed head, which still vouches for it" in bad[0][1]
    with engine.begin() as conn:  # what the runbook says for these: the head alone vouches for them
        conn.execute(text("UPDATE audit_entries SET mac = NULL WHERE seq IN (2, 3)"))
    report = _check(engine, key_provider)
    assert report.ok and report.legacy == 2, report.summary()


def _leaf(engine: Engine, seq: int) -> bytes:
    with engine.connect() as conn:
        return bytes(
            conn.execute(text("SELECT leaf_hash FROM audit_entries WHERE seq = :s"), {"s": seq}).scalar_one()
        )


def _as_legacy(engine: Engine, below: int | None = None) -> None:
    """Rows as a writer from before row MACs left them (the migration adds the column, NULL)."""
    with engine.begin() as conn:
        if below is None:
            conn.execute(text("UPDATE audit_entries SET mac = NULL"))
        else:
            conn.execute(text("UPDATE audit_entries SET mac = NULL WHERE seq < :b"), {"b": below})


def test_legacy_rows_under_a_signed_head_pass(engine: Engine, key_provider: LocalKeyFile) -> None:
    log = open_audit_log(engine, key_provider, head_interval=3600)
    _append(log, N)
    log.close()  # signs a final head over all of them, as the previous version did on stopping
    _as_legacy(engine)
    log = open_audit_log(engine, key_provider, head_interval=3600)
    assert _append(log, 2) == [N, N + 1]  # new rows carry MACs
    log.close()
    report = _check(engine, key_provider)
    assert report.ok, report.summary()
    assert report.legacy == N and f"{N} from before row MACs" in report.summary()


def test_a_mac_less_row_beyond_the_newest_head_is_refused(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog
) -> None:
    log = open_log(head_interval=3600)
    _append(log, N)
    assert log.checkpoint().size == N
    _as_legacy(engine)  # a log from before MACs: every row legacy, all under the head
    _insert(engine, N)  # ... and one slipped in at its end, as if it were legacy too
    _refuses(log, N)
    report = _check(engine, key_provider)
    assert [i for i, _ in _bad_macs(report)] == [N]
    assert "no valid signed tree head covers it (heads cover 6 entries)" in _bad_macs(report)[0][1]


def test_a_forged_head_does_not_make_a_mac_less_row_legacy(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog
) -> None:
    log = open_log(head_interval=3600)
    _append(log, N)
    assert log.checkpoint().size == N
    _as_legacy(engine)
    leaf = _insert(engine, N)
    with engine.begin() as conn:  # a head "covering" it: the DBA cannot sign, so a made-up signature
        conn.execute(
            text(
                "INSERT INTO audit_tree_heads (size, root, timestamp_ms, signature, public_key) "
                "VALUES (:n, :r, 1, :s, :k)"
            ),
            {"n": N + 1, "r": leaf, "s": b"\x01" * 64, "k": key_provider.signer().public_key},
        )
    _refuses(log, N)
    report = _check(engine, key_provider)
    found = [(p.kind, p.index) for p in report.problems]
    assert (ProblemKind.BAD_MAC, N) in found and (ProblemKind.BAD_SIGNATURE, N + 1) in found


def test_rows_of_a_writer_from_before_macs_are_adopted_once_its_head_covers_them(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog
) -> None:
    """A rolling upgrade: a worker of the previous version appends rows without MACs beside a new
    one. The new one refuses them until that worker's next head (a second later) covers them."""
    new, old = open_log(head_interval=3600), open_log(head_interval=3600)
    _append(new, 2)
    _append(old, 3)  # rows 2..4, not yet under a head
    _as_legacy(engine, below=5)
    _refuses(new, 2)
    assert old.checkpoint().size == 5  # its head over them (signed with the same key)
    assert new.append(EntryKind.ACCESS, {"actor": {"id": "E1"}}) == 5
    old.close()
    new.close()
    report = _check(engine, key_provider)
    assert report.ok and report.legacy == 5, report.summary()


def test_a_log_whose_first_rows_came_from_another_writer(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog
) -> None:
    # The writer opened an empty log: entry 0, which names the log, is another writer's.
    late, early = open_log(head_interval=3600), open_log(head_interval=3600)
    assert _append(early, 2) == [0, 1]
    assert _append(late, 2) == [2, 3]
    late.close()
    early.close()
    assert _check(engine, key_provider).ok


def test_a_forged_row_zero_in_an_empty_log_is_refused(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog
) -> None:
    log = open_log(head_interval=3600)  # opens empty: signs the head of size 0
    _insert(engine, 0, mac=os.urandom(MAC_SIZE))
    _refuses(log, 0)
    assert [i for i, _ in _bad_macs(_check(engine, key_provider))] == [0]


def test_a_refused_batch_leaves_the_writer_consistent(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog
) -> None:
    # The refusal restores the tree (and the log key) as a failed commit does: the log's sizes,
    # proofs and later appends are as if the batch had never been tried.
    log = open_log(head_interval=3600)
    _append(log, N)
    root = log.tree_head().root
    _insert(engine, N)
    _refuses(log, N)
    assert log.size == N and log.tree_head().root == root
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE seq = :s"), {"s": N})
    assert _append(log, 2) == [N, N + 1]
    assert log.checkpoint().size == N + 2


def test_a_refused_row_reaches_no_search_index(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog
) -> None:
    # The indexer runs behind the log and reads rows back from the table: it must stop where the
    # writer's own (authenticated) view ends, or the planted row is found by actor and waybill and,
    # once removed, its index rows would misfile the genuine entry written at its index.
    log = open_log(head_interval=3600, index_every=10_000)  # nothing indexed before closing
    _append(log, N)
    _insert(engine, N)
    _refuses(log, N)
    log.close()  # indexes the tail it holds
    with engine.connect() as conn:
        assert indexed_upto(conn) == N
        for table in ("audit_actors", "audit_waybills"):
            assert conn.execute(text(f"SELECT count(*) FROM {table} WHERE seq >= :s"), {"s": N}).scalar() == 0
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE seq = :s"), {"s": N})
    log = open_log(head_interval=3600)
    log.append(EntryKind.ACCESS, {"actor": {"id": "E1"}, "resource": {"type": "waybill", "id": "W1"}})
    log.close()
    assert _check(engine, key_provider).ok


def test_a_log_whose_heads_are_gone_opens_only_over_rows_with_their_macs(
    engine: Engine, key_provider: LocalKeyFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No head vouches for anything, so opening checks every row, a chunk at a time (here 4 rows).
    monkeypatch.setattr(importlib.import_module("courierguard.audit.sql"), "_CHECK_CHUNK", 4)
    log = open_audit_log(engine, key_provider, head_interval=3600)
    _append(log, 10)
    log.close()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_tree_heads"))
    open_audit_log(engine, key_provider, head_interval=3600).close()  # every MAC fits: signs a head
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_tree_heads"))
        conn.execute(text("UPDATE audit_entries SET mac = :m WHERE seq = 6"), {"m": _mac_of(engine, 5)})
    with pytest.raises(UnauthenticatedEntry) as refused:
        open_audit_log(engine, key_provider, head_interval=3600)
    assert refused.value.index == 6


def test_archived_rows_keep_their_macs(
    tmp_path: Path, sqlite_engine: Engine, key_provider: LocalKeyFile
) -> None:
    # Archiving purges bodies, not rows: leaf hash and MAC stay, and verify still checks them.
    log = open_audit_log(sqlite_engine, key_provider, head_interval=3600)
    _append(log, N)
    log.close()
    with sqlite_engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET entry = NULL WHERE seq < 3"))
    report = verify(
        sqlite_engine, key_provider.signer().public_key, row_key=row_mac_key(key_provider), retention_days=0
    )
    assert report.ok and report.archived == 3, report.summary()
    with sqlite_engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET mac = :m WHERE seq = 1"), {"m": b"\x00" * MAC_SIZE})
    report = verify(
        sqlite_engine, key_provider.signer().public_key, row_key=row_mac_key(key_provider), retention_days=0
    )
    assert [i for i, _ in _bad_macs(report)] == [1]


def test_cli_verify_names_the_row_and_says_when_it_cannot_check(
    engine: Engine, key_provider: LocalKeyFile, open_log: OpenLog, tmp_path: Path
) -> None:
    log = open_log(head_interval=3600)
    _append(log, N)
    log.checkpoint()
    _insert(engine, N)
    runner = CliRunner()
    url = ["--database-url", engine.url.render_as_string(hide_password=False)]
    keys = ["--key-file", str(key_provider.path)]
    pinned = ["--public-key", key_provider.signer().public_key.hex()]
    result = runner.invoke(app, ["verify", *url, *keys])
    assert result.exit_code == 1 and f"bad_mac at {N}: entry {N} has no MAC" in result.output, result.output
    assert "row MACs checked" in result.output
    # An auditor holding only the public key: the heads check out, and the output says what it skipped.
    result = runner.invoke(app, ["verify", *url, *pinned])
    assert result.exit_code == 0 and "row MACs not checked" in result.output, result.output
    # Pinned key and the key file: MACs checked, once the key file is the pinned key's.
    result = runner.invoke(app, ["verify", *url, *pinned, *keys])
    assert result.exit_code == 1 and f"bad_mac at {N}" in result.output
    other = LocalKeyFile(tmp_path / "other.json")
    result = runner.invoke(app, ["verify", *url, *pinned, "--key-file", str(other.path)])
    assert result.exit_code == 2 and "not the pinned public key" in result.output


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own, for migrating up and down (the shared ones stay at head)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
        return
    base: str = request.getfixturevalue("pg_url")
    admin = base.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/test"
    name = f"cg_mac_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migration_0008_adds_the_column_and_the_rows_before_it_are_legacy(
    fresh_url: str, key_provider: LocalKeyFile
) -> None:
    engine = create_db_engine(fresh_url)
    try:
        migrate(engine)
        log = open_audit_log(engine, key_provider, head_interval=3600)
        _append(log, N)
        log.close()
        # Down and up again: the rows are those of a log from before MACs, under its last head.
        command.downgrade(alembic_config(engine), "0007_totp_last_step")
        assert "mac" not in {c["name"] for c in inspect(engine).get_columns("audit_entries")}
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_entries WHERE mac IS NULL")).scalar() == N
        log = open_audit_log(engine, key_provider, head_interval=3600)
        assert _append(log, 2) == [N, N + 1]
        log.close()
        report = _check(engine, key_provider)
        assert report.ok and report.legacy == N, report.summary()
    finally:
        engine.dispose()


# ---- the MAC itself, and the scan verify and the writers share --------------------------------------

KEY = log_key(b"k" * 32, leaf_hash(b"entry 0"))
INDICES = st.integers(min_value=0, max_value=2**64 - 1)
LEAVES = st.binary(min_size=32, max_size=32)


@given(index=INDICES, leaf=LEAVES, other_index=INDICES, other_leaf=LEAVES)
def test_a_mac_vouches_for_one_index_and_leaf_of_one_log(
    index: int, leaf: bytes, other_index: int, other_leaf: bytes
) -> None:
    mac = row_mac(KEY, index, leaf)
    assert len(mac) == MAC_SIZE and row_mac(KEY, index, leaf) == mac
    if (index, leaf) != (other_index, other_leaf):
        assert row_mac(KEY, other_index, other_leaf) != mac  # moved, or another entry's
    assert row_mac(log_key(b"k" * 32, leaf_hash(b"another entry 0")), index, leaf) != mac
    assert row_mac(log_key(b"K" * 32, leaf_hash(b"entry 0")), index, leaf) != mac


# Each row's MAC column: the genuine MAC, none, or wrong (another row's, or made up).
ROWS = st.lists(st.sampled_from(["ok", "none", "wrong"]), max_size=60)


@given(
    start=st.integers(0, 1000),
    rows=ROWS,
    cuts=st.lists(st.integers(0, 60), max_size=5),
    covered=st.integers(0, 1100),
)
def test_a_scan_in_chunks_finds_what_a_row_by_row_check_does(
    start: int, rows: list[str], cuts: list[int], covered: int
) -> None:
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(start, start + len(rows))]
    genuine = [row_mac(KEY, i, leaf) for i, leaf in enumerate(leaves, start)]
    macs: list[object] = [
        g if kind == "ok" else None if kind == "none" else genuine[i - 1] if i else b"\x00" * MAC_SIZE
        for i, (kind, g) in enumerate(zip(rows, genuine, strict=True))
    ]
    # Chunks as the workers and the sequential scan see them, merged in index order.
    bounds = sorted({0, len(rows), *(c for c in cuts if c <= len(rows))})
    scan = MacScan()
    for a, b in itertools.pairwise(bounds):
        part = MacScan()
        part.add(RowMac(KEY), start + a, leaves[a:b], macs[a:b])
        scan.merge(part)
    wrong = [start + i for i, kind in enumerate(rows) if kind == "wrong" and macs[i] != genuine[i]]
    unmacced = [start + i for i, kind in enumerate(rows) if kind == "none"]
    assert (scan.wrong, scan.wrong_count) == (wrong[0] if wrong else -1, len(wrong))
    assert scan.legacy == len(unmacced)
    beyond = [i for i in unmacced if i >= covered]
    assert scan.unmacced_from(covered) == ((beyond[0], len(beyond)) if beyond else (-1, 0))
