"""Sessions are sealed: a revocation a DBA undoes, or a step-up a DBA writes, is refused.

A DBA (write access to the database, none to the key provider) could clear ``revoked_at`` on the
session an officer ended, and the renter's token worked again; or set ``step_up_at``, and the
renter's phone could be enrolled as a further device of the account (enrolment takes a recent
step-up), becoming its second factor. Each now fails closed with 503 ``row_unsealed``.
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import text

from courierguard.db.rowseal import scan_tables
from courierguard.gateway.service import RISK_LOCK_REASON
from courierguard.risk.engine import RiskEngine
from courierguard.risk.replay import replay

from .conftest import World

TICKET = {"ticket": "INC-2026-0042"}


def sql(world: World, statement: str, **params: Any) -> None:
    """What the DBA does: plain SQL on the main database, no key."""
    with world.deployment.core.engine.begin() as conn:
        conn.execute(text(statement), params)


def session_of(world: World, employee: str) -> str:
    with world.deployment.core.engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT id FROM sessions WHERE tenant = :t AND employee = :e"),
                {"t": world.tenant, "e": employee},
            ).scalar_one()
        )


def unsealed(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["reason"] == "row_unsealed"


def test_sessions_are_sealed_as_they_are_opened_stepped_up_and_revoked(world: World) -> None:
    c1 = world.login("C1")
    assert world.client.get("/v1/waybills?page_size=5", headers=c1).status_code == 200
    world.deployment.guard.sessions.mark_stepped_up(session_of(world, "C1"), world.clock.now())
    assert world.client.get("/v1/waybills?page_size=5", headers=c1).status_code == 200
    x1 = world.login("X1")
    assert (
        world.client.post("/v1/admin/employees/C1/sessions/revoke", json=TICKET, headers=x1).status_code
        == 200
    )
    r = world.client.get("/v1/waybills?page_size=5", headers=c1)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    [report] = [t for t in scan_tables(world.deployment.core.engine, world.deployment.core.vault.seals)
                if t.table == "sessions"]  # fmt: skip
    assert report.ok and report.rows >= 2  # PostgreSQL: the session's other tests' sessions too


def test_a_revocation_undone_by_sql_is_refused(world: World) -> None:
    c1, x1 = world.login("C1"), world.login("X1")
    assert (
        world.client.post("/v1/admin/employees/C1/sessions/revoke", json=TICKET, headers=x1).status_code
        == 200
    )
    sql(world, "UPDATE sessions SET revoked_at = NULL, revoked_reason = NULL WHERE employee = 'C1'")
    unsealed(world.client.get("/v1/waybills?page_size=5", headers=c1))
    unsealed(world.client.post("/v1/auth/login", json={}, headers=c1))  # nor opened again on its id


def test_a_step_up_written_by_sql_does_not_enrol_a_device(world: World) -> None:
    c1 = world.login("C1")
    assert world.client.post("/v1/auth/devices", headers=c1).status_code == 200  # the owner's phone
    renter = {**c1, "X-Device-Id": "gang-phone-1"}
    refused = world.client.post("/v1/auth/devices", headers=renter)
    assert refused.status_code in (401, 403) and refused.json()["reason"] == "step_up_required"
    sql(world, "UPDATE sessions SET step_up_at = :now WHERE employee = 'C1'", now=world.clock.now())
    unsealed(world.client.post("/v1/auth/devices", headers=renter))
    assert world.deployment.guard.devices.bound("C1") == ["dev-1"]


def test_a_session_inserted_by_sql_is_refused(world: World) -> None:
    assert world.deployment.dev_issuer is not None
    token, session_id = world.deployment.dev_issuer.issue("C2", now=world.clock.now())
    sql(
        world,
        "INSERT INTO sessions (id, tenant, employee, device_id, auth, created_at, last_seen) "
        "VALUES (:id, :t, 'C2', 'dev-1', 'webauthn', :now, :now)",
        id=session_id, t=world.tenant, now=world.clock.now(),
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {token}", "X-Device-Id": "dev-1"}
    unsealed(world.client.get("/v1/waybills?page_size=5", headers=headers))


def test_a_revocation_rolled_back_with_its_old_seal_locks_the_account(engine_world: World) -> None:
    """The seal cannot tell a row put back exactly as it was sealed before the revocation (the DBA
    kept a copy). Risk control saw the revocation and holds it outside the database: the session
    serving again locks the account, and the officers get an alert."""
    world = engine_world
    c1 = world.login("C1")
    assert world.client.get("/v1/waybills?page_size=5", headers=c1).status_code == 200
    session = session_of(world, "C1")
    with world.deployment.core.engine.connect() as conn:
        kept = conn.execute(text("SELECT mac FROM sessions WHERE id = :id"), {"id": session}).scalar_one()
    x1 = world.login("X1")
    assert (
        world.client.post("/v1/admin/employees/C1/sessions/revoke", json=TICKET, headers=x1).status_code
        == 200
    )
    assert world.client.get("/v1/waybills?page_size=5", headers=c1).status_code == 401
    sql(
        world,
        "UPDATE sessions SET revoked_at = NULL, revoked_reason = NULL, mac = :mac WHERE id = :id",
        mac=kept, id=session,
    )  # fmt: skip
    world.clock.advance(timedelta(minutes=2))  # a comeback, not a request in flight at the revoke

    r = world.client.get("/v1/waybills?page_size=5", headers=c1)
    assert r.status_code == 403 and r.json()["reason"] == "risk_locked", r.text
    # Locked until an officer reviews it, whichever session or device asks.
    assert world.deployment.guard.company.suspended_for("C1") == RISK_LOCK_REASON
    [alert] = [a for a in world.deployment.alerts.fetch("C1", tenant=world.tenant) if a["action"] == "lock"]
    assert [r["code"] for r in alert["reasons"]] == ["ended_session"] and alert["session_id"] == session

    # Replayed from the audit trail, a fresh engine finds the same comeback: the entry live refused
    # is recorded with risk control's reason, and replay judges it as live did.
    events = world.access_events()
    out = io.BytesIO()
    replay((orjson.dumps(e) for e in events), out, RiskEngine())
    replayed = {d["event_id"]: d for d in map(orjson.loads, out.getvalue().splitlines())}
    assert [reason["code"] for reason in replayed[alert["event_id"]]["reasons"]] == ["ended_session"]
    assert replayed[alert["event_id"]]["action"] == "lock"


def test_a_waybill_row_rolled_back_to_an_old_assignment_explains_no_reveal(engine_world: World) -> None:
    """A waybill's row put back exactly as it was sealed days ago (out for delivery to C1) passes
    the seal, and the policy lets its assignee reveal it. Its ``status_ts`` is as old as the copy:
    risk control counts the reveal as one no task explains and tells the officers."""
    world = engine_world
    number = "YT0000000000001"
    world.step(number, "out_for_delivery", assignee="C1")
    columns = "status, status_ts, assignee, task, delivered_at, mac"
    with world.deployment.core.engine.connect() as conn:
        kept = conn.execute(
            text(f"SELECT {columns} FROM waybills WHERE tenant = :t AND number = :n"),
            {"t": world.tenant, "n": number},
        ).one()
    world.clock.advance(timedelta(hours=2))
    world.step(number, "delivered")
    world.clock.advance(timedelta(days=3))
    sql(
        world,
        "UPDATE waybills SET status = :status, status_ts = :status_ts, assignee = :assignee, task = :task, "
        "delivered_at = :delivered_at, mac = :mac WHERE tenant = :t AND number = :n",
        **kept._asdict(), t=world.tenant, n=number,
    )  # fmt: skip

    c1 = world.login("C1")
    r = world.client.post(
        f"/v1/waybills/{number}/reveal",
        json={"fields": ["recipient.phone"], "purpose": "delivery"},
        headers=c1,
    )
    assert r.status_code == 200, r.text  # the seal and the policy accept the old row
    [alert] = [a for a in world.deployment.alerts.fetch("C1", tenant=world.tenant)
               if "stale_task" in {x["code"] for x in a["reasons"]}]  # fmt: skip
    assert alert["evidence"]["stale_task"] == {"status": "out_for_delivery", "hours": 74.0}
    assert alert["evidence"]["unexplained_today"] == 1 and alert["evidence"]["waybill"] == number
