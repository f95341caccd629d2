"""Migration 0009 on a log written before it: every stored entry is filed under the employee it is
about, without a byte of the entries changing; searches by employee then page across the index mark
with inclusion proofs that verify, and `audit verify` checks the new index. Both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import Engine, select, text

from courierguard.audit import AuditQueries, EntryKind, open_audit_log, row_mac_key, verify
from courierguard.audit._internal.core import actor_of, subject_of
from courierguard.audit.merkle import verify_inclusion
from courierguard.audit.models import decode_entry
from courierguard.audit.search_index import SUBJECTS_MARK, indexed_upto
from courierguard.audit.tables import audit_entries, audit_subjects
from courierguard.clock import FixedClock
from courierguard.db import migrate
from courierguard.db.engine import alembic_config
from courierguard.vault.keys import LocalKeyFile

START = datetime(2026, 11, 11, tzinfo=UTC)
TAIL = 250  # the writer "crashed" with entries from here on committed but not indexed


def _body(i: int) -> tuple[EntryKind, dict[str, Any]]:
    """A day at an outlet: the employees' own reads, and now and then an officer acting on one."""
    employee = f"E{i % 3}"
    if i % 10 == 3:
        ticket = f"INC-{i}"
        what = ["employee.hold", "sessions.revoke", "devices.reset", "employee.hold_lifted"][i // 10 % 4]
        purpose = f"{what}:{employee}:{ticket}"
        return EntryKind.ACCESS, {
            "tenant": "t",
            "actor": {"id": "X1"},
            "action": "admin.change",
            "purpose": purpose,
        }
    if i % 10 == 7:
        return EntryKind.ADMIN, {"what": "devices.reset", "actor": "X1", "employee": employee, "tenant": "t"}
    if i % 25 == 0:
        return EntryKind.ACCESS, {"tenant": "t", "actor": {"id": "A1"}, "action": "admin.change",
                                  "purpose": f"employee.status:{employee}:suspended"}  # fmt: skip
    return EntryKind.ACCESS, {
        "tenant": "t", "actor": {"id": employee}, "action": "waybill.view",
        "resource": {"type": "waybill", "id": f"YT{i:013d}"},
    }  # fmt: skip


def _stored(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(audit_entries).order_by(audit_entries.c.seq))]


def _truth(engine: Engine) -> list[tuple[int, str | None, str | None]]:
    """(seq, actor, subject) of every entry, from the hashed bodies."""
    out = []
    for row in _stored(engine):
        body = decode_entry(bytes(row[5])).body
        out.append((row[0], actor_of(body), subject_of(body)))
    return out


def test_0009_files_a_pre_upgrade_log_and_rewrites_no_entry(empty_engine: Engine, tmp_path: Path) -> None:
    engine = empty_engine
    keys = LocalKeyFile(tmp_path / "keys.json")
    migrate(engine)
    clock = FixedClock(START)
    log = open_audit_log(engine, keys, clock=clock, head_interval=3600)
    for i in range(300):
        log.append(*_body(i))
        clock.advance(timedelta(minutes=1))
    log.close()
    # The database as version 0008 left it: no subject index, no mark of its own; the writer died
    # with the last 50 entries committed and signed but not indexed.
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_subjects"))
        conn.execute(text("DELETE FROM audit_index_mark WHERE id = 2"))
        conn.execute(text("UPDATE audit_index_mark SET upto = :m WHERE id = 1"), {"m": TAIL})
        conn.execute(text("DELETE FROM audit_actors WHERE seq >= :m"), {"m": TAIL})
        conn.execute(text("DELETE FROM audit_waybills WHERE seq >= :m"), {"m": TAIL})
    config = alembic_config(engine)
    command.stamp(config, "0008_audit_row_mac")
    before = _stored(engine)

    command.upgrade(config, "0009_audit_subjects")  # 0010 (row seals) is already in place

    assert _stored(engine) == before  # bodies, hashes, MACs: not a byte changed
    truth = _truth(engine)
    with engine.connect() as conn:
        assert indexed_upto(conn, SUBJECTS_MARK) == TAIL
        filed = {(s, q) for s, q in conn.execute(select(audit_subjects.c.subject, audit_subjects.c.seq))}
    assert filed == {(about, seq) for seq, _, about in truth if about is not None and seq < TAIL}
    assert len(filed) > 50

    # Every entry by or about E1, a page of 7 at a time across the mark, each with a proof that verifies.
    queries = AuditQueries(engine)
    head = queries.tree_head()
    expected = [seq for seq, actor, about in truth if "E1" in (actor, about)]
    assert any(seq >= TAIL for seq in expected) and any(about == "E1" for _, _, about in truth)
    got, cursor = [], None
    while True:
        page = queries.search(employee="E1", tenant="t", limit=7, cursor=cursor, with_proofs=True)
        for record in page.records:
            assert record.proof is not None and record.proof_tree_size == head.size
            verify_inclusion(record.index, head.size, record.leaf_hash, record.proof, head.root)
        got += [r.index for r in page.records]
        if page.next_cursor is None:
            break
        assert len(page.records) == 7
        cursor = page.next_cursor
    assert got == expected
    # What was done to E1 alone: the officers' and admins' entries, none of E1's own reads.
    done_to = [r.index for r in queries.search(subject="E1", limit=1000).records]
    assert done_to == [seq for seq, _, about in truth if about == "E1"]
    assert all(actor in ("X1", "A1") for seq, actor, _ in truth if seq in done_to)

    report = verify(engine, keys.signer().public_key, row_key=row_mac_key(keys), workers=1)
    assert report.ok, report.summary()

    # The next writer indexes the tail with its subjects; verify still agrees.
    open_audit_log(engine, keys, clock=clock, head_interval=3600).close()
    with engine.connect() as conn:
        assert indexed_upto(conn) == indexed_upto(conn, SUBJECTS_MARK) == 300
    assert [r.index for r in queries.search(employee="E1", limit=1000).records] == expected
    assert verify(engine, keys.signer().public_key, row_key=row_mac_key(keys), workers=1).ok

    command.downgrade(config, "0008_audit_row_mac")
    assert _stored(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_index_mark WHERE id = 2")).scalar_one() == 0
