"""API keys and org units are sealed too: a DBA's key row, a revived key or a moved unit is refused.

A DBA (write access to the database, none to the key provider) could insert an ``api_keys`` row with
the SHA-256 of a secret of their choosing and so hold a service account, which assigns waybills to
couriers and opens tickets (what opens a reveal); or clear ``revoked_at`` on a revoked key; or move
an org unit in the hierarchy. Each now fails closed with 503 ``row_unsealed``, a log line naming the
key's id (never the secret), and, for a key, an ``auth.login_failed`` entry on the trail.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any

import pytest
from sqlalchemy import text

from courierguard.db.rowseal import RowIntegrityError, scan_tables

from .conftest import World

W1 = "YT0000000000001"


def sql(world: World, statement: str, **params: Any) -> None:
    """What the DBA does: plain SQL on the main database, no key."""
    with world.deployment.core.engine.begin() as conn:
        conn.execute(text(statement), params)


def assign(world: World, headers: dict[str, str], number: str = W1) -> Any:
    """What a service key is worth to a renter: a waybill assigned to their courier."""
    if world.deployment.guard.company.waybill(number).status.value == "created":
        world.step(number, "picked_up")  # by the real key: a courier is sent out with a parcel in hand
    return world.client.post(
        f"/v1/waybills/{number}/events",
        json={"status": "out_for_delivery", "ts": world.clock.now().isoformat(), "assignee": "C1"},
        headers=headers,
    )


def unsealed(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["reason"] == "row_unsealed"


def test_an_api_key_inserted_by_sql_is_refused_and_recorded(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    key_id, secret = "dba0000000001", secrets.token_urlsafe(32)
    sql(
        world,
        "INSERT INTO api_keys (id, tenant, name, key_hash, created_at) VALUES (:id, :t, 'order-system', :h, :at)",
        id=key_id, t=world.tenant, h=hashlib.sha256(secret.encode()).digest(), at=world.clock.now(),
    )  # fmt: skip
    forged = {"Authorization": f"ApiKey cgk_{key_id}_{secret}"}
    with caplog.at_level(logging.ERROR, logger="courierguard.rowseal"):
        unsealed(assign(world, forged))
    lines = [r.getMessage() for r in caplog.records if r.name == "courierguard.rowseal"]
    assert any(f"api_keys {world.tenant}/{key_id} is unsealed" in line for line in lines), lines
    assert not any(secret in r.getMessage() for r in caplog.records)
    # A seal made up by the DBA is no better than none; a wrong secret learns nothing of the row.
    sql(world, "UPDATE api_keys SET mac = :mac WHERE id = :id", mac=secrets.token_bytes(16), id=key_id)
    unsealed(world.client.get(f"/v1/waybills/{W1}", headers=forged))
    wrong = assign(world, {"Authorization": f"ApiKey cgk_{key_id}_{secrets.token_urlsafe(32)}"})
    assert wrong.status_code == 401 and "row_unsealed" not in wrong.text, wrong.text
    # Nothing was assigned; the genuine key still works; the trail names the key, not its secret.
    assert world.deployment.guard.company.facts(W1).assignee is None
    assert assign(world, world.svc).status_code == 200
    failed = [e for e in world.access_events() if e["action"] == "auth.login_failed"]
    assert [e["outcome"]["reason"] for e in failed] == [f"row_unsealed:api_keys/{world.tenant}/{key_id}"] * 2
    assert not any(secret in str(e) for e in world.access_events())


def test_a_revoked_key_revived_by_sql_is_refused(world: World) -> None:
    keys = world.deployment.guard.api_keys
    record, key = keys.create("pda-backend", world.clock.now())
    headers = {"Authorization": f"ApiKey {key}"}
    assert assign(world, headers, "YT0000000000002").status_code == 200
    keys.revoke(record.id, world.clock.now())
    revoked = assign(world, headers)
    assert revoked.status_code == 401 and "revoked" in revoked.text, revoked.text
    sql(world, "UPDATE api_keys SET revoked_at = NULL WHERE id = :id", id=record.id)
    unsealed(assign(world, headers))
    assert world.deployment.guard.company.facts(W1).assignee is None
    # Listed as refused, whatever the row says; revoking it again does not re-seal it.
    listed = {info.id: info for info in keys.listing()}
    assert not listed[record.id].sealed and listed[record.id].revoked_at is None
    assert all(info.sealed for id_, info in listed.items() if id_ != record.id)
    with pytest.raises(RowIntegrityError, match="bad seal"):
        keys.revoke(record.id, world.clock.now())
    unsealed(assign(world, headers))


def test_an_org_unit_moved_by_sql_is_refused(world: World) -> None:
    a1 = world.login("A1")
    put = world.client.put("/v1/admin/org-units/REG-N", json={"kind": "region", "name": "North"}, headers=a1)
    assert put.status_code == 200, put.text
    moved = world.client.put(
        "/v1/admin/org-units/OUT-BJ-01",
        json={"kind": "outlet", "name": "Beijing 01", "parent": "REG-N"},
        headers=a1,
    )
    assert moved.status_code == 200 and moved.json()["parent"] == "REG-N", moved.text
    # The DBA moves the outlet under another region, and makes a hub an outlet.
    sql(
        world, "UPDATE org_units SET parent = 'HUB-01' WHERE tenant = :t AND id = 'OUT-BJ-01'", t=world.tenant
    )
    sql(world, "UPDATE org_units SET kind = 'outlet' WHERE tenant = :t AND id = 'HUB-01'", t=world.tenant)
    # An employee put into the unit, a unit put under it, the unit itself rewritten: all refused.
    unsealed(
        world.client.put(
            "/v1/admin/employees/C9", json={"role": "courier", "org_unit": "OUT-BJ-01"}, headers=a1
        )
    )
    unsealed(
        world.client.put(
            "/v1/admin/org-units/OUT-BJ-02",
            json={"kind": "outlet", "name": "Beijing 02", "parent": "OUT-BJ-01"},
            headers=a1,
        )
    )
    unsealed(
        world.client.put(
            "/v1/admin/org-units/OUT-BJ-01",
            json={"kind": "outlet", "name": "Beijing 01", "parent": "REG-N"},
            headers=a1,
        )
    )
    with pytest.raises(RowIntegrityError, match="org_units"):
        world.deployment.guard.company.org_unit("HUB-01")
    # An org unit inserted by SQL is no unit an administrator can staff.
    sql(
        world,
        "INSERT INTO org_units (tenant, id, kind, name) VALUES (:t, 'SEC-2', 'hq', 'Shadow security')",
        t=world.tenant,
    )
    unsealed(
        world.client.put("/v1/admin/employees/X9", json={"role": "courier", "org_unit": "SEC-2"}, headers=a1)
    )
    mine = f"{world.tenant}/"
    reports = {
        r.table: r for r in scan_tables(world.deployment.core.engine, world.deployment.core.vault.seals)
    }
    assert sorted(k for k in reports["org_units"].bad_keys if k.startswith(mine)) == [
        mine + "HUB-01", mine + "OUT-BJ-01"
    ]  # fmt: skip
    assert [k for k in reports["org_units"].unsealed_keys if k.startswith(mine)] == [mine + "SEC-2"]
    assert not [
        k for k in reports["api_keys"].unsealed_keys + reports["api_keys"].bad_keys if k.startswith(mine)
    ]
