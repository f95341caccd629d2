"""Opening a log: it refuses a store that contradicts its latest signed tree head, and several logs on
one store never sign two heads for one size."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from courierguard.audit import EntryKind, verify
from courierguard.audit._internal.core import read_witness
from courierguard.errors import AuditUnavailable
from courierguard.vault.keys import LocalKeyFile

from .conftest import OpenLog


def test_a_truncated_store_does_not_open(open_log: OpenLog, engine: Engine) -> None:
    log = open_log()
    log.append_many(EntryKind.SYSTEM, [{"n": i} for i in range(30)])
    log.close()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE seq >= 25"))
    with pytest.raises(AuditUnavailable, match="signs 30 entries but only 25 are stored"):
        open_log()


def test_a_head_signed_with_another_key_does_not_open(
    open_log: OpenLog, engine: Engine, tmp_path: Path
) -> None:
    from courierguard.audit import open_audit_log

    other = open_audit_log(engine, LocalKeyFile(tmp_path / "someone-elses-keys.json"))
    other.append(EntryKind.SYSTEM, {"n": 1})
    other.close()
    with pytest.raises(AuditUnavailable, match="not signed by this deployment's audit key"):
        open_log()


def test_two_logs_on_one_store_share_heads(
    open_log: OpenLog, engine: Engine, key_provider: LocalKeyFile, tmp_path: Path
) -> None:
    """B opens after A appended and signs that size; A's next head of the same size is B's."""
    a = open_log(head_interval=60, witness_file=tmp_path / "a.jsonl")
    a.append_many(EntryKind.SYSTEM, [{"n": i} for i in range(5)])
    b = open_log(head_interval=60)
    assert b.tree_head().size == a.size == 5
    assert a.checkpoint() == b.tree_head()  # adopted, not signed again
    assert a.append(EntryKind.SYSTEM, {"n": 5}) == 5
    assert b.append(EntryKind.SYSTEM, {"n": 6}) == 6  # B takes A's leaf before numbering its own
    b.checkpoint()
    a.close()
    b.close()
    assert [h.size for h in read_witness(tmp_path / "a.jsonl")].count(5) <= 1
    report = verify(engine, key_provider.signer().public_key, witness_file=tmp_path / "a.jsonl")
    assert report.ok, report.summary()
    assert report.entries == 7
