"""Migration 0011 (seals on api_keys and org_units) on a deployment of 0010: its keys and units are
refused until the operator seals them, then work; a later seal-tables seals only the new tables.
Both backends."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from courierguard.cli.main import app
from courierguard.company import CompanyStore
from courierguard.db import create_db_engine
from courierguard.db.engine import alembic_config
from courierguard.db.rowseal import RowIntegrityError, RowSeals, scan_tables, seal_unsealed
from courierguard.domain import OrgUnitKind
from courierguard.errors import Unauthenticated
from courierguard.gateway.identity import ApiKeys, SessionStore
from courierguard.vault.keys import LocalKeyFile

NOW = datetime(2026, 12, 7, 4, 50, tzinfo=UTC)
SECRET = "s3cret-of-the-order-system"
KEY = f"cgk_0a1b2c3d4e5f_{SECRET}"
runner = CliRunner()


def _deployment_of_0010(engine: Engine) -> None:
    """A tenant with two org units and a service key, written as 0010 wrote them (no seal)."""
    command.upgrade(alembic_config(engine), "0010_row_seals")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES ('acme', 'Acme', :t)"), {"t": NOW}
        )
        for unit, kind, parent in (("HQ", "hq", None), ("OUT-1", "outlet", "HQ")):
            conn.execute(
                text(
                    "INSERT INTO org_units (tenant, id, kind, name, parent) VALUES ('acme', :id, :k, :id, :p)"
                ),
                {"id": unit, "k": kind, "p": parent},
            )
        conn.execute(
            text(
                "INSERT INTO api_keys (id, tenant, name, key_hash, created_at) "
                "VALUES ('0a1b2c3d4e5f', 'acme', 'order-system', :h, :t)"
            ),
            {"h": hashlib.sha256(SECRET.encode()).digest(), "t": NOW},
        )


def test_upgrade_refuses_the_old_rows_until_sealed_then_serves_them(empty_engine: Engine) -> None:
    engine = empty_engine
    _deployment_of_0010(engine)
    command.upgrade(alembic_config(engine), "heads")
    seals = RowSeals(b"k" * 32)
    keys, company = (
        ApiKeys(engine, tenant="acme", seals=seals),
        CompanyStore(engine, tenant="acme", seals=seals),
    )
    before = {r.table: r for r in scan_tables(engine, seals)}
    assert before["api_keys"].unsealed_keys == ["acme/0a1b2c3d4e5f"]
    assert before["org_units"].unsealed_keys == ["acme/HQ", "acme/OUT-1"]
    with pytest.raises(RowIntegrityError):
        keys.verify(KEY)
    with pytest.raises(Unauthenticated):  # a wrong secret is told nothing about the row
        keys.verify(KEY + "x")
    with pytest.raises(RowIntegrityError):
        company.org_unit("OUT-1")
    assert seal_unsealed(engine, seals, ["api_keys", "org_units"]) == {"api_keys": 1, "org_units": 2}
    assert all(r.ok for r in scan_tables(engine, seals))
    assert keys.verify(KEY).name == "order-system"
    unit = company.org_unit("OUT-1")
    assert (unit.kind, unit.parent) == (OrgUnitKind.OUTLET, "HQ")
    # Down and up again: the columns go and come back empty.
    command.downgrade(alembic_config(engine), "0010_row_seals")
    command.upgrade(alembic_config(engine), "heads")
    with pytest.raises(RowIntegrityError):
        keys.verify(KEY)


def test_seal_tables_after_0011_seals_only_the_new_tables(tmp_path: Path) -> None:
    """A deployment that sealed its tables at 0010 runs seal-tables once more after 0011: it seals
    api_keys and org_units, not a row a DBA added to the tables sealed before; a third run is refused."""
    from courierguard.app import open_core
    from courierguard.cli._common import settings_from
    from courierguard.cli.keys import _record

    data = ["--data-dir", str(tmp_path), "--tenant", "acme"]
    LocalKeyFile(tmp_path / "keys.json")
    engine = create_db_engine(f"sqlite:///{tmp_path / 'courierguard.sqlite3'}")
    _deployment_of_0010(engine)
    with engine.begin() as conn:  # an open session, from before sessions were sealed (0012)
        conn.execute(
            text(
                "INSERT INTO sessions (id, tenant, employee, device_id, auth, created_at, last_seen) "
                "VALUES ('s-open', 'acme', 'E000001', 'PDA-1', 'sso', :t, :t)"
            ),
            {"t": NOW},
        )
    command.upgrade(alembic_config(engine), "heads")
    # What seal-tables of 0010 did and recorded.
    core = open_core(settings_from(None, tmp_path, None, "acme"))
    old = ["approvals", "employees", "waybills", "cases"]
    _record(core, {"op": "tables.seal.start", "again": False})
    _record(core, {"op": "tables.seal.done", **seal_unsealed(core.engine, core.vault.seals, old)})
    core.close()
    with engine.begin() as conn:  # a DBA's row in a table sealed before: no routine run seals it
        conn.execute(
            text(
                "INSERT INTO employees (tenant, id, role, org_unit, status, shifts, updated_at) "
                "VALUES ('acme', 'E000042', 'security_officer', 'HQ', 'active', '[]', :t)"
            ),
            {"t": NOW},
        )
    listed = runner.invoke(app, ["keys", "verify-tables", *data])
    assert listed.exit_code == 1 and "acme/0a1b2c3d4e5f" in listed.output and "acme/OUT-1" in listed.output
    made = runner.invoke(app, ["keys", "seal-tables", *data])
    assert made.exit_code == 0, made.output
    assert made.output.strip() == "sealed 1 api_keys, 2 org_units, 1 sessions", made.output
    after = runner.invoke(app, ["keys", "verify-tables", *data])
    assert after.exit_code == 1 and "acme/E000042" in after.output and "acme/OUT-1" not in after.output
    again = runner.invoke(app, ["keys", "seal-tables", *data])
    assert again.exit_code == 1 and "earlier seal-tables" in again.output, again.output
    seals = RowSeals.from_keys(LocalKeyFile(tmp_path / "keys.json"))
    assert ApiKeys(engine, tenant="acme", seals=seals).verify(KEY).name == "order-system"
    assert SessionStore(engine, tenant="acme", seals=seals).get("s-open").employee == "E000001"
