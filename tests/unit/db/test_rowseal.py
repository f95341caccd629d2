"""Row seals: an injective MAC encoding, and the upgrade path (migration 0010, then seal-tables)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from typer.testing import CliRunner

from courierguard.cli.main import app
from courierguard.db import create_db_engine
from courierguard.db.rowseal import (
    SEALED_COLUMNS,
    TIMESTAMPS,
    RowIntegrityError,
    RowSeals,
    encode,
)
from courierguard.vault.keys import LocalKeyFile

runner = CliRunner()
_INSTANTS = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@st.composite
def rows(draw: st.DrawFn, table: str) -> tuple[Any, ...]:
    values: list[Any] = []
    for position, name in enumerate(SEALED_COLUMNS[table]):
        kind: st.SearchStrategy[Any] = _INSTANTS if position in TIMESTAMPS[table] else st.text(max_size=12)
        if name == "key_hash":
            kind = st.binary(max_size=12) | st.text(max_size=12)
        values.append(draw(st.none() | kind))
    return tuple(values)


@st.composite
def two_rows(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], str, tuple[Any, ...]]:
    a, b = draw(st.sampled_from(sorted(SEALED_COLUMNS))), draw(st.sampled_from(sorted(SEALED_COLUMNS)))
    return a, draw(rows(a)), b, draw(rows(b))


@given(two_rows())
def test_no_two_different_rows_encode_alike(pair: tuple[str, tuple[Any, ...], str, tuple[Any, ...]]) -> None:
    table_a, a, table_b, b = pair
    assert (encode(table_a, a) == encode(table_b, b)) == ((table_a, a) == (table_b, b))


@given(st.lists(st.text(max_size=6), min_size=6, max_size=6), st.integers(0, 5), st.integers(0, 5))
def test_moving_text_between_columns_changes_the_encoding(values: list[str], i: int, j: int) -> None:
    """("ab", "c") and ("a", "bc"), or a value and a null: the length prefix and the tags keep them apart."""
    moved = list(values)
    moved[i], moved[j] = moved[i] + moved[j], ""
    if moved != values:
        assert encode("employees", values) != encode("employees", moved)
    nulled = [None if k == i else v for k, v in enumerate(values)]
    assert encode("employees", values) != encode("employees", nulled)


def test_an_instant_encodes_alike_as_text_or_datetime() -> None:
    """SQLite hands back text, PostgreSQL a datetime: the same instant, the same seal."""
    at = datetime(2026, 12, 7, 4, 50, 0, 123456, tzinfo=UTC)
    row = ["t", "ap_1", "export", "M1", "{}", "[]", "approved", "X1", at, at + timedelta(hours=1), None]
    as_text = [*row[:8], "2026-12-07 04:50:00.123456", "2026-12-07 05:50:00.123456", None]
    seals = RowSeals(b"k" * 32)
    assert seals.mac("approvals", row) == seals.mac("approvals", as_text)
    assert seals.mac("approvals", row) != seals.mac("approvals", [*row[:10], at])  # used_at is covered
    assert seals.mac("approvals", row) != RowSeals(b"j" * 32).mac("approvals", row)  # keyed


def test_a_key_hash_encodes_alike_as_bytes_or_memoryview_and_apart_from_text() -> None:
    """api_keys.key_hash: bytes from one driver, a memoryview from another; never its repr."""
    at = datetime(2026, 12, 7, 4, 50, tzinfo=UTC)
    row = ("t", "0a1b2c", "order-system", b"\x00" * 31 + b"\x01", at, None)
    as_view = (*row[:3], memoryview(row[3]), *row[4:])
    assert encode("api_keys", row) == encode("api_keys", as_view)
    assert encode("api_keys", row) != encode("api_keys", (*row[:3], row[3].decode("latin-1"), *row[4:]))
    seals = RowSeals(b"k" * 32)
    assert seals.mac("api_keys", row) != seals.mac("api_keys", (*row[:5], at))  # revoked_at is covered


def test_a_missing_or_wrong_seal_is_refused_without_personal_data() -> None:
    seals = RowSeals(b"k" * 32)
    row = ("t", "E000042", "security_officer", "HQ", "active", None)
    seals.check("employees", row, seals.mac("employees", row), "E000042")
    for stored in (None, b"\0" * 16, seals.mac("employees", row)[:8]):
        with pytest.raises(RowIntegrityError) as refused:
            seals.check("employees", row, stored, "E000042")
        assert refused.value.status == 503 and "E000042" in refused.value.detail


@st.composite
def two_rows_of_one_table(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], tuple[Any, ...]]:
    table = draw(st.sampled_from(sorted(SEALED_COLUMNS)))
    first = draw(rows(table))
    # Often the same row with one value changed, not just two unrelated rows.
    changed = list(first)
    position = draw(st.integers(0, len(first) - 1))
    if position in TIMESTAMPS[table]:
        later = first[position] and first[position] + timedelta(microseconds=1)
        changed[position] = draw(st.sampled_from([None, later, first[position]]))
    else:
        changed[position] = draw(st.sampled_from([None, "", "1", 1, 1.0, True, b"1", first[position]]))
    return table, first, draw(st.just(tuple(changed)) | rows(table))


@given(two_rows_of_one_table())
def test_a_remembered_seal_accepts_only_the_values_it_was_checked_against(
    case: tuple[str, tuple[Any, ...], tuple[Any, ...]],
) -> None:
    """Once a seal has been checked, the same seal on other values is judged as if it never had
    been: valid exactly when they encode alike (an instant as text or datetime), never from memory."""
    table, first, other = case
    seals = RowSeals(b"k" * 32)
    seal = seals.mac(table, first)
    assert seals.valid(table, first, seal)
    assert seals.valid(table, first, seal)  # from memory
    assert seals.valid(table, other, seal) == (encode(table, other) == encode(table, first))
    assert not seals.valid(table, first, seal[:-1] + bytes([seal[-1] ^ 1]))


def test_equal_values_of_another_type_are_checked_again() -> None:
    """1 == 1.0 == True in Python, yet each encodes otherwise: a DBA who stores a value of another
    type under a remembered seal is refused, as without the memory."""
    seals = RowSeals(b"k" * 32)
    row = ("t", "E000042", "courier", "O1", "active", 1)
    seal = seals.mac("employees", row)
    assert seals.valid("employees", row, seal)
    for retyped in (1.0, True):
        assert not seals.valid("employees", (*row[:5], retyped), seal)
    assert seals.valid("employees", list(row), seal)  # a list of the same values is the same row


def test_a_refused_seal_is_not_remembered_and_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import courierguard.db.rowseal as rowseal

    monkeypatch.setattr(rowseal, "_VERIFIED_MAX", 4)
    seals = RowSeals(b"k" * 32)
    row = ("t", "E1", "courier", "O1", "active", None)
    assert not seals.valid("employees", row, b"\0" * 16)
    assert not seals.valid("employees", row, b"\0" * 16)
    for n in range(10):
        other = ("t", f"E{n}", "courier", "O1", "active", None)
        assert seals.valid("employees", other, seals.mac("employees", other))
        assert len(seals._verified) <= 4
    assert seals.valid("employees", row, seals.mac("employees", row))


def test_the_seal_key_is_its_own(tmp_path: Path) -> None:
    from courierguard.audit import row_mac_key

    keys = LocalKeyFile(tmp_path / "keys.json")
    seals, again = RowSeals.from_keys(keys), RowSeals.from_keys(LocalKeyFile(tmp_path / "keys.json"))
    row = ("t", "E1", "courier", "OUT", "active", None)
    assert seals.mac("employees", row) == again.mac("employees", row)
    assert RowSeals(row_mac_key(keys)).mac("employees", row) != seals.mac("employees", row)


def test_upgrade_from_0008_then_seal_tables_once(tmp_path: Path) -> None:
    """A deployment of 0008 with staff and an approval: after the upgrade its rows are refused until
    the operator seals them; the seal is on the trail; a second run is refused; later forgeries stay
    refused."""
    from alembic import command

    from courierguard.db.engine import alembic_config

    data = ["--data-dir", str(tmp_path), "--tenant", "acme"]
    LocalKeyFile(tmp_path / "keys.json")  # the deployment's keys, as it ran on 0008
    engine = create_db_engine(f"sqlite:///{tmp_path / 'courierguard.sqlite3'}")
    config = alembic_config(engine)
    command.upgrade(config, "0009_audit_subjects")
    now = "2026-12-07 04:50:00"
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES ('acme', 'Acme', :t)"), {"t": now}
        )
        conn.execute(
            text(
                "INSERT INTO employees (tenant, id, role, org_unit, status, shifts, updated_at) "
                "VALUES ('acme', 'E000001', 'admin', 'HQ', 'active', '[]', :t)"
            ),
            {"t": now},
        )
    command.upgrade(config, "heads")
    listed = runner.invoke(app, ["keys", "verify-tables", *data])
    assert listed.exit_code == 1 and "acme/E000001" in listed.output, listed.output
    made = runner.invoke(app, ["keys", "seal-tables", *data])
    assert made.exit_code == 0 and "1 employees" in made.output, made.output
    assert runner.invoke(app, ["keys", "verify-tables", *data]).exit_code == 0
    # The DBA's row, inserted after the seal, is not sealed by a routine second run.
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO employees (tenant, id, role, org_unit, status, shifts, updated_at) "
                "VALUES ('acme', 'E000042', 'security_officer', 'HQ', 'active', '[]', :t)"
            ),
            {"t": now},
        )
    again = runner.invoke(app, ["keys", "seal-tables", *data])
    assert again.exit_code == 1 and "earlier seal-tables" in again.output, again.output
    after = runner.invoke(app, ["keys", "verify-tables", *data])
    assert after.exit_code == 1 and "acme/E000042" in after.output and "acme/E000001" not in after.output
    from courierguard.audit import AuditQueries, EntryKind

    ops = [
        (r.body or {}).get("op")
        for r in AuditQueries(create_db_engine(f"sqlite:///{tmp_path / 'courierguard-audit.sqlite3'}"))
        .search(kinds=[EntryKind.KEY], limit=100)
        .records
    ]
    assert ops == ["tables.seal.start", "tables.seal.done"]


def test_reseal_after_the_signing_key_is_replaced(tmp_path: Path) -> None:
    """Replacing the audit signing key changes the seal key and every row is refused; reseal-tables
    moves to the new key the rows the old key sealed, and only those: a DBA's row stays refused."""
    import base64
    import json
    import os
    import shutil

    from courierguard.company import CompanyStore
    from courierguard.db import migrate
    from courierguard.domain import Employee, OrgUnit, OrgUnitKind
    from courierguard.events import Role

    data = ["--data-dir", str(tmp_path), "--tenant", "acme"]
    keys_path = tmp_path / "keys.json"
    engine = create_db_engine(f"sqlite:///{tmp_path / 'courierguard.sqlite3'}")
    migrate(engine)
    company = CompanyStore(engine, tenant="acme", seals=RowSeals.from_keys(LocalKeyFile(keys_path)))
    now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    company.ensure_tenant("Acme", now)
    company.put_org_unit(OrgUnit("HQ", OrgUnitKind.HQ, "Head office"))
    for employee in ("E000001", "E000002"):
        company.put_employee(Employee(employee, Role.COURIER, "HQ"), now)
    with engine.begin() as conn:  # a DBA's row, never sealed
        conn.execute(
            text(
                "INSERT INTO employees (tenant, id, role, org_unit, status, shifts, updated_at) "
                "VALUES ('acme', 'E000042', 'security_officer', 'HQ', 'active', '[]', '2026-12-07 09:00:00')"
            )
        )
    old_keys = tmp_path / "old-keys.json"
    shutil.copy(keys_path, old_keys)
    document = json.loads(keys_path.read_text())
    document["signing"] = base64.b64encode(os.urandom(len(base64.b64decode(document["signing"])))).decode()
    keys_path.write_text(json.dumps(document))

    refused = runner.invoke(app, ["keys", "verify-tables", *data])
    assert refused.exit_code == 1 and "acme/E000001" in refused.output and "acme/HQ" in refused.output
    bad = runner.invoke(app, ["keys", "reseal-tables", "--old-key-file", str(tmp_path / "nope.json"), *data])
    assert bad.exit_code != 0
    moved = runner.invoke(app, ["keys", "reseal-tables", "--old-key-file", str(old_keys), *data])
    assert moved.exit_code == 0, moved.output
    assert "employees          resealed       2" in moved.output and "acme/E000042" in moved.output
    after = runner.invoke(app, ["keys", "verify-tables", *data])
    assert after.exit_code == 1 and "acme/E000042" in after.output and "acme/E000001" not in after.output
    new_company = CompanyStore(engine, tenant="acme", seals=RowSeals.from_keys(LocalKeyFile(keys_path)))
    assert new_company.employee("E000002").role is Role.COURIER
    with pytest.raises(RowIntegrityError):
        new_company.employee("E000042")
    again = runner.invoke(app, ["keys", "reseal-tables", "--old-key-file", str(old_keys), *data])
    assert again.exit_code == 0 and "already current       2" in again.output, again.output
