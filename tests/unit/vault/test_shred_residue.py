"""A shred reaches the bytes of the live SQLite database, not only its rows: the month's wrapped data
key, ciphertexts, masks and blind indexes are gone from the database file and its WAL."""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy import Engine, select

from courierguard.db.tables import data_keys, parties
from courierguard.events import PiiField
from courierguard.vault import LocalKeyFile, Vault

from .test_service import record


def _files(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("cg.sqlite3*")) if p.is_file())


def test_a_shred_leaves_nothing_of_the_month_in_the_database_files(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    vault = Vault(sqlite_engine, LocalKeyFile(tmp_path / "keys.json"), tenant="t-" + secrets.token_hex(4))
    vault.ingest_records([record(n, month="10", phone="13912340001") for n in range(1, 4)] + [record(9)])
    with sqlite_engine.connect() as conn:
        [wrapped] = conn.execute(select(data_keys.c.wrapped).where(data_keys.c.month == "2026-10")).scalars()
        shredded = parties.c.key_month == "2026-10"
        leftovers = [bytes(wrapped)] + [
            bytes(v)
            for row in conn.execute(select(parties.c.phone_ct, parties.c.name_ct).where(shredded))
            for v in row
        ]
        # The sender's phone is this month's alone (names and the recipient's phone recur in the
        # other month, whose blind indexes are the same values by design).
        leftovers += conn.execute(
            select(parties.c.phone_bidx).where(shredded, parties.c.role == "sender").limit(1)
        ).scalars()
    leftovers.append(b"139******01")  # the month's phone mask
    assert all(v in _files(tmp_path) for v in leftovers)
    # A running service keeps connections open, so SQLite neither checkpoints nor removes the WAL:
    # its older frames held the pages as they were before the shred, key and ciphertexts included,
    # and the KEK that unwraps that key is still in the key file.
    with sqlite_engine.connect() as reader:
        reader.exec_driver_sql("SELECT 1")
        assert vault.shred_month("2026-10").wal_cleared is True
        data = _files(tmp_path)
        assert [v for v in leftovers if v in data] == []
    assert vault.reveal("YT0000000000009", [PiiField.SENDER_NAME]) == {PiiField.SENDER_NAME: "张三"}
