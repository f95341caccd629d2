"""The rows that decide who may see what are sealed: a DBA's INSERT or UPDATE is refused (F2).

A DBA (write access to the database, none to the key provider) tried three things on the demo:
(a) an approvals row approving an export nobody asked for, and clearing ``used_at`` to download an
export twice; (b) waybills assigned to a courier who never got the task; (c) an employee made a
security officer. Each now fails closed: 503 ``row_unsealed``, no clear text, a line in the log
naming table and id, and (for approvals) a refusal on the audit trail.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from courierguard.db.rowseal import scan_tables, seal_unsealed
from courierguard.domain import Employee
from courierguard.events import Role

from .conftest import RECIPIENT_NAME, RECIPIENT_PHONE, World

W1, W2 = "YT0000000000001", "YT0000000000002"
EXPORT = {"kind": "export", "justification": "quarterly claims reconciliation", "fields": ["recipient.name"],
          "org_unit": "OUT-BJ-01"}  # fmt: skip


def sql(world: World, statement: str, **params: Any) -> None:
    """What the DBA does: plain SQL on the main database, no key."""
    with world.deployment.core.engine.begin() as conn:
        conn.execute(text(statement), params)


def refused(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["reason"] == "row_unsealed"
    assert RECIPIENT_NAME not in response.text and RECIPIENT_PHONE not in response.text


def reveal(world: World, headers: dict[str, str], number: str = W1) -> Any:
    return world.client.post(
        f"/v1/waybills/{number}/reveal",
        json={"fields": ["recipient.name", "recipient.phone"], "purpose": "delivery_contact"},
        headers=headers,
    )


def approved_export(world: World) -> tuple[str, dict[str, str]]:
    m1, x1 = world.login("M1"), world.login("X1")
    ap = world.client.post("/v1/approvals", json=EXPORT, headers=m1).json()["id"]
    assert world.client.post(f"/v1/approvals/{ap}/approve", headers=x1).json()["status"] == "approved"
    return ap, m1


def test_a_forged_approval_is_refused_and_recorded(world: World, caplog: pytest.LogCaptureFixture) -> None:
    m1 = world.login("M1")
    now = world.clock.now()
    forged = "ap_00000000deadbeef"
    sql(
        world,
        "INSERT INTO approvals (id, tenant, kind, requested_by, justification, scope, fields, status, "
        "created_at, decided_by, decided_at, expires_at) VALUES (:id, :tenant, 'export', 'M1', "
        "'routine outlet export', :scope, :fields, 'approved', :t0, 'X1', :t0, :t1)",
        id=forged, tenant=world.tenant, scope=json.dumps({"org_unit": "OUT-BJ-01", "status": None}),
        fields=json.dumps(["recipient.name", "recipient.phone"]), t0=now, t1=now + timedelta(hours=1),
    )  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="courierguard.rowseal"):
        refused(world.client.get(f"/v1/exports/{forged}/download", headers=m1))
    assert any(forged in r.getMessage() and "unsealed" in r.getMessage() for r in caplog.records)
    # A seal made up by the DBA is no better than none.
    sql(world, "UPDATE approvals SET mac = :mac WHERE id = :id", mac=secrets.token_bytes(16), id=forged)
    refused(world.client.get(f"/v1/exports/{forged}/download", headers=m1))
    denials = [
        e for e in world.access_events()
        if e["action"] == "waybill.export" and e["outcome"]["decision"] == "deny"
    ]  # fmt: skip
    assert len(denials) == 2 and all(e["purpose"] == f"approval.use:{forged}" for e in denials)
    assert not any(e["action"] == "waybill.export" and e.get("fields") for e in world.access_events())
    assert world.client.get(f"/v1/approvals/{forged}", headers=world.login("X2")).status_code == 503


def test_a_genuine_approval_whose_row_was_edited_is_refused(world: World) -> None:
    ap, m1 = approved_export(world)
    sql(world, "UPDATE approvals SET fields = :f WHERE id = :id", id=ap, f=json.dumps(["recipient.phone"]))
    refused(world.client.get(f"/v1/exports/{ap}/download", headers=m1))


def test_the_export_entry_names_the_approval_and_the_approver(world: World) -> None:
    ap, m1 = approved_export(world)
    assert world.client.get(f"/v1/exports/{ap}/download", headers=m1).status_code == 200
    export = next(e for e in world.access_events() if e["action"] == "waybill.export" and e.get("fields"))
    assert ap in export["purpose"] and "X1" in export["purpose"]
    spent = [e for e in world.entries("system") if e["what"] == "export.download"]
    assert spent == [{**spent[0], "approval": ap, "approved_by": "X1", "requested_by": "M1", "rows": 5}]


def test_clearing_used_at_does_not_make_an_export_downloadable_again(world: World) -> None:
    ap, m1 = approved_export(world)
    with world.deployment.core.engine.connect() as conn:
        unused_mac = conn.execute(text("SELECT mac FROM approvals WHERE id = :id"), {"id": ap}).scalar_one()
    assert world.client.get(f"/v1/exports/{ap}/download", headers=m1).status_code == 200
    # The tester's replay: used_at cleared. The seal covers used_at.
    sql(world, "UPDATE approvals SET used_at = NULL WHERE id = :id", id=ap)
    refused(world.client.get(f"/v1/exports/{ap}/download", headers=m1))
    # The row put back exactly as it was sealed before the download: the trail remembers the use.
    sql(world, "UPDATE approvals SET used_at = NULL, mac = :mac WHERE id = :id", id=ap, mac=unused_mac)
    again = world.client.get(f"/v1/exports/{ap}/download", headers=m1)
    assert again.status_code == 409 and RECIPIENT_NAME not in again.text, again.text
    assert len([e for e in world.entries("system") if e["what"] == "export.download"]) == 1


def test_a_waybill_assigned_by_sql_is_refused(world: World) -> None:
    c1 = world.login("C1")
    assert reveal(world, c1).status_code == 403  # no task
    sql(
        world,
        "UPDATE waybills SET status = 'out_for_delivery', assignee = 'C1', task = 'delivery', "
        "delivered_at = NULL WHERE tenant = :tenant AND number IN ('YT0000000000001', 'YT0000000000002')",
        tenant=world.tenant,
    )
    refused(reveal(world, c1, W1))
    refused(reveal(world, c1, W2))
    refused(world.client.get(f"/v1/waybills/{W1}", headers=c1))
    # The same assignment made the recorded way works.
    world.step("YT0000000000003", "out_for_delivery", assignee="C1")
    ok = reveal(world, c1, "YT0000000000003")
    assert ok.status_code == 200 and ok.json()["fields"]["recipient.phone"].endswith(RECIPIENT_PHONE), ok.text
    # The lifecycle API does not re-seal a row changed behind its back.
    r = world.client.post(
        f"/v1/waybills/{W1}/events",
        json={"status": "delivered", "ts": world.clock.now().isoformat()},
        headers=world.svc,
    )
    assert r.status_code == 503 and r.json()["reason"] == "row_unsealed"


def test_a_case_opened_by_sql_is_refused(world: World) -> None:
    s1 = world.login("S1")
    sql(
        world,
        "INSERT INTO cases (tenant, id, kind, waybill, owner, state, opened_at) "
        "VALUES (:tenant, 'TK-forged', 'ticket', :w, 'S1', 'open', :t)",
        tenant=world.tenant, w=W1, t=world.clock.now(),
    )  # fmt: skip
    refused(reveal(world, s1))


def test_a_role_granted_by_sql_is_refused(world: World) -> None:
    c1 = world.login("C1")
    assert world.client.get(f"/v1/waybills/{W1}", headers=c1).status_code == 200
    sql(
        world,
        "UPDATE employees SET role = 'security_officer' WHERE tenant = :t AND id = 'C1'",
        t=world.tenant,
    )
    refused(world.client.get(f"/v1/waybills/{W1}", headers=c1))  # the session's next request
    assert world.deployment.dev_issuer is not None
    token, _ = world.deployment.dev_issuer.issue("C1", now=world.clock.now())
    login = world.client.post(
        "/v1/auth/login", json={}, headers={"Authorization": f"Bearer {token}", "X-Device-Id": "dev-1"}
    )
    assert login.status_code == 503 and login.json()["reason"] == "row_unsealed", login.text
    # A suspended account made active again by SQL is refused too.
    world.deployment.guard.company.put_employee(Employee("C2", Role.COURIER, "OUT-BJ-01"), world.clock.now())
    c2 = world.login("C2")
    sql(world, "UPDATE employees SET status = 'left' WHERE tenant = :t AND id = 'C2'", t=world.tenant)
    refused(world.client.get(f"/v1/waybills/{W1}", headers=c2))


def test_verify_tables_pinpoints_and_sealing_covers_only_unsealed_rows(world: World) -> None:
    core = world.deployment.core
    seals = core.vault.seals
    mine = f"{world.tenant}/"
    for report in scan_tables(core.engine, seals):  # other tests' tenants share a PostgreSQL database
        assert not [k for k in report.unsealed_keys + report.bad_keys if k.startswith(mine)], report
    # Rows from before the upgrade (no seal) and a tampered one (a wrong seal).
    sql(world, "UPDATE waybills SET mac = NULL WHERE tenant = :t AND number = :n", t=world.tenant, n=W2)
    sql(world, "UPDATE employees SET role = 'admin' WHERE tenant = :t AND id = 'K1'", t=world.tenant)
    after = {r.table: r for r in scan_tables(core.engine, seals)}
    assert [k for k in after["waybills"].unsealed_keys if k.startswith(mine)] == [mine + W2]
    assert [k for k in after["employees"].bad_keys if k.startswith(mine)] == [mine + "K1"]
    assert RECIPIENT_NAME not in repr(after)
    sealed = seal_unsealed(core.engine, seals)
    assert sealed["waybills"] >= 1
    final = {r.table: r for r in scan_tables(core.engine, seals)}
    assert final["waybills"].unsealed == 0
    assert [k for k in final["employees"].bad_keys if k.startswith(mine)] == [mine + "K1"]  # still refused
    assert world.client.get(f"/v1/waybills/{W2}", headers=world.login("M1")).status_code == 200


def test_a_waybill_moved_into_the_outlet_by_sql_spoils_the_export(world: World) -> None:
    ap, m1 = approved_export(world)
    sql(world, "UPDATE waybills SET dest_outlet = 'OUT-BJ-01', origin_outlet = 'OUT-BJ-01' "
        "WHERE tenant = :t AND number = :n", t=world.tenant, n=W2)  # fmt: skip
    refused(world.client.get(f"/v1/exports/{ap}/download", headers=m1))
