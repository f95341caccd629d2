"""What ingest stores, value for value: its driver-level inserts against Core's, on both backends.

Ingest writes its rows with :class:`courierguard.db.fast.DriverInsert` rather than Core's
``insert()``: a stored row must not differ from what Core would have stored for the same values
(SQLite keeps a timestamp as text in SQLAlchemy's format, not the driver's), every seal must
verify, every field must open under its own associated data only, and a batch that fails at its
last statement must leave nothing behind.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from courierguard.db.tables import parties, waybill_history, waybills
from courierguard.domain import Address, NewWaybill, Party
from courierguard.events import PiiField
from courierguard.vault import LocalKeyFile, Vault
from courierguard.vault._internal.aead import DecryptionFailed
from courierguard.vault.masking import mask_address, mask_name, mask_phone
from courierguard.vault.normalize import normalize_name, normalize_phone
from courierguard.vault.service import _aad

SENDER = Party("张三", "138 1234 5634", Address("广东省", "深圳市", "南山区", "科技园1栋2单元301"))
RECIPIENT = Party("欧阳娜娜", "010-62345678", Address("北京市", "北京市", "海淀区", "中关村3号楼502"))


def _waybill(n: int, created: datetime, **over: Any) -> NewWaybill:
    fields: dict[str, Any] = {
        "number": f"YT{n:013d}",
        "origin_outlet": "SZ-NS-01",
        "dest_outlet": "BJ-HD-02",
        "routing_code": "755-010-A1",
        "sender": SENDER,
        "recipient": RECIPIENT,
        "created_at": created,
    }
    fields.update(over)
    return NewWaybill(**fields)


@pytest.fixture
def vault(engine: Engine, tmp_path: Path) -> Vault:
    return Vault(engine, LocalKeyFile(tmp_path / "keys.json"), tenant="t-" + secrets.token_hex(4))


def _raw(engine: Engine, sql: str, tenant: str) -> list[tuple[Any, ...]]:
    """Rows as the driver returns them (no SQLAlchemy type processing), in a stable order."""
    if engine.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    with engine.connect() as conn:
        return [tuple(row) for row in conn.exec_driver_sql(sql, (tenant,)).all()]


def test_stored_rows_are_what_core_inserts_of_the_same_values_store(vault: Vault) -> None:
    # An instant given at +08:00 and one with microseconds: the stored text must be Core's.
    created = [
        datetime(2026, 11, 2, 18, 0, tzinfo=timezone(timedelta(hours=8))),
        datetime(2026, 11, 2, 10, 0, 0, 123456, tzinfo=UTC),
    ]
    batch = [_waybill(1, created[0]), _waybill(2, created[1], dest_outlet="SH-PD-03")]
    assert vault.ingest(batch).stored == ("YT0000000000001", "YT0000000000002")

    # The same values through Core, as ingest wrote them before, under a tenant of their own.
    copy = vault.tenant + "-core"
    p = parties.c
    with vault.engine.connect() as conn:
        stored_parties = conn.execute(select(parties).where(p.tenant == vault.tenant)).mappings().all()
    expected_macs: list[bytes] = []
    with vault.engine.begin() as conn:
        rows = []
        for wb in batch:
            row: dict[str, Any] = {
                "tenant": copy, "number": wb.number, "origin_outlet": wb.origin_outlet,
                "dest_outlet": wb.dest_outlet, "routing_code": wb.routing_code, "status": wb.status.value,
                "status_ts": wb.created_at, "assignee": None, "task": None, "created_at": wb.created_at,
                "delivered_at": None, "key_month": "2026-11",
            }  # fmt: skip
            row["mac"] = vault.seals.mac_of("waybills", row)  # the copy is sealed as itself
            rows.append(row)
            expected_macs.append(vault.seals.mac_of("waybills", {**row, "tenant": vault.tenant}))
        conn.execute(insert(waybills), rows)
        conn.execute(
            insert(waybill_history),
            [
                {"tenant": copy, "number": wb.number, "status": wb.status.value, "ts": wb.created_at}
                for wb in batch
            ],
        )
        conn.execute(insert(parties), [{**dict(row), "tenant": copy} for row in stored_parties])

    for table, order in (("waybills", "number"), ("waybill_history", "seq"), ("parties", "waybill, role")):
        columns = "*" if table != "waybill_history" else "tenant, number, status, ts, assignee, task"
        sql = f"SELECT {columns} FROM {table} WHERE tenant = ? ORDER BY {order}"
        ingested, core = _raw(vault.engine, sql, vault.tenant), _raw(vault.engine, sql, copy)
        assert len(ingested) == len(core) > 0
        if table == "waybills":  # the seal names the tenant: each row's own, checked apart
            assert [bytes(row[-1]) for row in ingested] == expected_macs
            ingested, core = [row[:-1] for row in ingested], [row[:-1] for row in core]
        for a, b in zip(ingested, core, strict=True):
            assert a[1:] == b[1:], table  # all but the tenant
            assert [type(v) for v in a] == [type(v) for v in b], table
        if vault.engine.dialect.name == "sqlite":  # the storage class too: text stays text
            typed = "SELECT typeof(status_ts), typeof(created_at), typeof(mac) FROM waybills WHERE tenant = ?"
            assert _raw(vault.engine, typed, vault.tenant) == _raw(vault.engine, typed, copy)
    assert _raw(
        vault.engine, "SELECT status_ts FROM waybills WHERE tenant = ? ORDER BY number", vault.tenant
    )[0][0] in ("2026-11-02 10:00:00.000000", datetime(2026, 11, 2, 10, 0, tzinfo=UTC))


def test_every_ingested_row_is_sealed_and_every_field_opens_only_as_itself(vault: Vault) -> None:
    when = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    batch = [_waybill(n, when) for n in range(1, 51)]
    assert len(vault.ingest(batch).stored) == 50
    with vault.engine.connect() as conn:
        for row in conn.execute(select(waybills).where(waybills.c.tenant == vault.tenant)).all():
            vault.seals.check_row("waybills", row)
        stored = conn.execute(select(parties).where(parties.c.tenant == vault.tenant)).all()
    assert len(stored) == 100
    aead = vault._data_keys["2026-11"]
    for row in stored:
        party = SENDER if row.role == "sender" else RECIPIENT
        phone, name = normalize_phone(party.phone), normalize_name(party.name)
        address = "\x1f".join(
            (party.address.province, party.address.city, party.address.district, party.address.detail)
        )
        for attribute, clear in (("name", name), ("phone", phone.e164), ("address", address)):
            sealed = bytes(getattr(row, f"{attribute}_ct"))
            assert (
                aead.open(sealed, _aad(vault.tenant, row.waybill, f"{row.role}.{attribute}")).decode()
                == clear
            )
            other = "recipient" if row.role == "sender" else "sender"
            with pytest.raises(DecryptionFailed):
                aead.open(sealed, _aad(vault.tenant, row.waybill, f"{other}.{attribute}"))
        assert (row.name_masked, row.phone_masked) == (mask_name(name), mask_phone(phone))
        assert row.address_masked == mask_address(
            party.address.province, party.address.city, party.address.district
        )
        assert bytes(row.phone_bidx) == vault._index.phone_e164(phone.e164)
        assert bytes(row.name_bidx) == vault._index.normalized_name(name)
    assert vault.waybills_by_phone("13812345634") == [wb.number for wb in batch]
    assert vault.reveal("YT0000000000007", [PiiField.RECIPIENT_ADDRESS]) == {
        PiiField.RECIPIENT_ADDRESS: "北京市北京市海淀区中关村3号楼502"
    }


def _counts(vault: Vault) -> tuple[int, int, int]:
    with vault.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            len(conn.execute(select(t).where(t.c.tenant == vault.tenant)).all())
            for t in (waybills, waybill_history, parties)
        )


def test_a_batch_failing_at_its_last_insert_leaves_nothing(vault: Vault) -> None:
    when = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    # A parties row without its waybill (a DBA's leftover): the waybills and history inserts
    # of the batch succeed, the parties insert then fails on the primary key.
    with vault.engine.begin() as conn:
        conn.execute(
            insert(parties).values(
                tenant=vault.tenant, waybill="YT0000000000500", role="sender", key_month="2026-11"
            )
        )
    batch = [_waybill(n, when) for n in range(1, 1001)]
    with pytest.raises(IntegrityError):
        vault.ingest(batch)
    assert _counts(vault) == (0, 0, 1)
    with vault.engine.begin() as conn:
        conn.execute(delete(parties).where(parties.c.tenant == vault.tenant))
    assert len(vault.ingest(batch).stored) == 1000
    assert _counts(vault) == (1000, 1000, 2000)
    # Looked up in chunks of 500: every one is found again.
    again = vault.ingest(batch)
    assert again.stored == () and [f.message for f in again.failed] == ["already exists"] * 1000


def test_a_value_too_long_for_its_column_fails_the_batch_and_is_never_cut(
    engine: Engine, vault: Vault
) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    when = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    batch = [_waybill(1, when), _waybill(2, when, dest_outlet="X" * 65)]
    with pytest.raises(DBAPIError):
        vault.ingest(batch)
    assert _counts(vault) == (0, 0, 0)
