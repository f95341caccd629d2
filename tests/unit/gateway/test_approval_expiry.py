"""Pending four-eyes requests expire (``approval_pending_hours``, 72 by default).

A security review found that a request made today could be approved months later, when the
requester's situation and the justification are stale (a role request for someone who has since
changed post). A pending request now reads ``expired`` once past its ``decide_by``; deciding it is
refused (409, ``approval_expired``) and recorded as a deny, and it never becomes usable. An approved
export's or reveal's ``expires_at`` (its use window) keeps its meaning.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from courierguard.db.tables import approvals
from courierguard.events import Role

from .conftest import World

HOURS = 72
W1 = "YT0000000000001"
EXPORT = {"kind": "export", "justification": "quarterly claims reconciliation", "fields": ["recipient.name"],
          "org_unit": "OUT-BJ-01"}  # fmt: skip
REVEAL = {"kind": "reveal", "justification": "police request 2026-117 about this parcel",
          "fields": ["recipient.phone"], "waybill": W1}  # fmt: skip
ROLE = {"kind": "role", "justification": "new investigator for the Beijing region", "employee": "C1",
        "role": "auditor", "org_unit": "OUT-BJ-01"}  # fmt: skip


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def admin_changes(world: World, actor: str) -> list[tuple[str, str, str | None]]:
    return [
        (e["purpose"], e["outcome"]["decision"], e["outcome"].get("reason"))
        for e in world.access_events()
        if e["actor"]["id"] == actor and e["action"] == "admin.change"
    ]


def stored(world: World, approval: str) -> Any:
    with world.deployment.guard.vault.engine.connect() as conn:
        return conn.execute(select(approvals).where(approvals.c.id == approval)).one()


@pytest.mark.parametrize(
    ("body", "asker", "decider"), [(EXPORT, "M1", "X1"), (REVEAL, "X1", "X2"), (ROLE, "A1", "X1")]
)
@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_a_request_left_undecided_past_its_hours_is_expired(
    world: World, body: dict[str, Any], asker: str, decider: str, verb: str
) -> None:
    r = world.client.post("/v1/approvals", json=body, headers=world.login(asker))
    assert r.status_code == 201, r.text
    made = r.json()
    ap = made["id"]
    assert made["status"] == "pending" and made["expires_at"] is None
    assert when(made["decide_by"]) - when(made["created_at"]) == timedelta(hours=HOURS)
    world.clock.advance(timedelta(hours=HOURS, seconds=1))
    x = world.login(decider)
    shown = world.client.get(f"/v1/approvals/{ap}", headers=x).json()
    assert shown["status"] == "expired" and shown["decide_by"] == made["decide_by"]
    assert shown["expires_at"] is None and shown["decided_by"] is None

    refused = world.client.post(f"/v1/approvals/{ap}/{verb}", headers=x)
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["reason"] == "approval_expired" and "ask for it again" in problem["detail"]
    past = "approved" if verb == "approve" else "rejected"
    assert admin_changes(world, decider)[-1] == (f"approval.{past}:{ap}", "deny", "guard:approval_expired")
    # Stored as expired (the seal re-made with it), and nothing was decided.
    row = stored(world, ap)
    assert row.status == "expired" and row.decided_by is None and row.decided_at is None
    assert world.client.get(f"/v1/approvals/{ap}", headers=x).json()["status"] == "expired"
    assert role_of(world, "C1") is Role.COURIER
    # The other verb, and a second try, are refused the same way.
    for again in ("approve", "reject"):
        assert (
            world.client.post(f"/v1/approvals/{ap}/{again}", headers=x).json()["reason"] == "approval_expired"
        )


def role_of(world: World, employee: str) -> Role:
    return world.deployment.guard.company.employee(employee).role


def test_an_expired_export_is_never_downloadable_and_its_deadline_is_no_download_window(world: World) -> None:
    m1 = world.login("M1")
    ap = world.client.post("/v1/approvals", json=EXPORT, headers=m1).json()["id"]
    # The pending row holds its deadline in the expires_at column: _unusable never reads it as a window.
    assert stored(world, ap).expires_at is not None
    r = world.client.get(f"/v1/exports/{ap}/download", headers=m1)
    assert r.status_code == 403 and "pending" in r.json()["detail"]
    world.clock.advance(timedelta(hours=HOURS + 1))
    m1 = world.login("M1")
    r = world.client.get(f"/v1/exports/{ap}/download", headers=m1)
    assert r.status_code == 403 and "expired" in r.json()["detail"], r.text
    assert world.client.post(f"/v1/approvals/{ap}/approve", headers=world.login("X1")).status_code == 409
    assert world.client.get(f"/v1/exports/{ap}/download", headers=m1).status_code == 403
    assert not [e for e in world.access_events() if e["action"] == "waybill.export" and e.get("fields")]


def test_decided_within_the_hours_the_use_window_is_the_exports(world: World) -> None:
    m1 = world.login("M1")
    ap = world.client.post("/v1/approvals", json=EXPORT, headers=m1).json()["id"]
    world.clock.advance(timedelta(hours=HOURS, minutes=-15))
    m1, x1 = world.login("M1"), world.login("X1")
    r = world.client.post(f"/v1/approvals/{ap}/approve", headers=x1)
    assert r.status_code == 200, r.text
    decided = r.json()
    assert decided["status"] == "approved" and decided["decide_by"] is None
    assert when(decided["expires_at"]) == world.clock.now() + timedelta(minutes=30)
    # Past the request's deadline, an approved export is still approved: only pending requests expire.
    world.clock.advance(timedelta(minutes=20))
    m1 = world.login("M1")
    assert world.client.get(f"/v1/approvals/{ap}", headers=m1).json()["status"] == "approved"
    assert world.client.get(f"/v1/exports/{ap}/download", headers=m1).status_code == 200
    # A rejection clears the deadline too.
    other = world.client.post("/v1/approvals", json=EXPORT, headers=m1).json()["id"]
    rejected = world.client.post(f"/v1/approvals/{other}/reject", headers=world.login("X2")).json()
    assert (
        rejected["status"] == "rejected" and rejected["decide_by"] is None and rejected["expires_at"] is None
    )
    world.clock.advance(timedelta(hours=HOURS + 1))
    assert (
        world.client.get(f"/v1/approvals/{other}", headers=world.login("X2")).json()["status"] == "rejected"
    )


def test_the_hours_are_a_setting(world: World) -> None:
    guard = world.deployment.guard
    guard.settings = guard.settings.model_copy(update={"approval_pending_hours": 2})
    m1 = world.login("M1")
    made = world.client.post("/v1/approvals", json=EXPORT, headers=m1).json()
    assert when(made["decide_by"]) - when(made["created_at"]) == timedelta(hours=2)
    world.clock.advance(timedelta(hours=2))
    x1 = world.login("X1")
    assert world.client.post(f"/v1/approvals/{made['id']}/approve", headers=x1).status_code == 409
    # Once stored as expired, a longer setting does not make it decidable again.
    guard.settings = guard.settings.model_copy(update={"approval_pending_hours": 720})
    assert world.client.get(f"/v1/approvals/{made['id']}", headers=x1).json()["status"] == "expired"
    assert world.client.post(f"/v1/approvals/{made['id']}/approve", headers=x1).status_code == 409


def test_a_request_stored_before_requests_expired_gets_its_hours_from_its_creation(world: World) -> None:
    """A pending row with no deadline (stored by an older version) expires created_at + the hours."""
    guard = world.deployment.guard
    m1 = world.login("M1")
    made = world.client.post("/v1/approvals", json=EXPORT, headers=m1).json()
    ap = made["id"]
    # As an older version stored it: no deadline, sealed so.
    with guard.vault.engine.begin() as conn:
        row = dict(conn.execute(select(approvals).where(approvals.c.id == ap)).one()._mapping)
        row["expires_at"] = None
        conn.execute(
            update(approvals).where(approvals.c.id == ap)
            .values(expires_at=None, mac=guard.company.seals.mac_of("approvals", row))
        )  # fmt: skip
    shown = world.client.get(f"/v1/approvals/{ap}", headers=m1).json()
    assert shown["status"] == "pending" and shown["decide_by"] == made["decide_by"]
    world.clock.advance(timedelta(hours=HOURS))
    r = world.client.post(f"/v1/approvals/{ap}/approve", headers=world.login("X1"))
    assert r.status_code == 409 and r.json()["reason"] == "approval_expired"


def test_a_deadline_changed_without_the_key_is_refused(world: World) -> None:
    """The deadline is sealed with the row: pushing it out by SQL breaks the seal."""
    guard = world.deployment.guard
    m1 = world.login("M1")
    ap = world.client.post("/v1/approvals", json=EXPORT, headers=m1).json()["id"]
    later = stored(world, ap).expires_at
    with guard.vault.engine.begin() as conn:
        conn.execute(
            update(approvals).where(approvals.c.id == ap).values(expires_at=later + timedelta(days=365))
        )
    world.clock.advance(timedelta(hours=HOURS + 1))
    r = world.client.post(f"/v1/approvals/{ap}/approve", headers=world.login("X1"))
    assert r.status_code == 503 and r.json()["reason"] == "row_unsealed", r.text
    row = stored(world, ap)
    assert row.status == "pending" and row.decided_by is None


def test_approval_dataclass_keeps_the_two_times_apart(world: World) -> None:
    guard = world.deployment.guard
    m1 = world.login("M1")
    ap = world.client.post("/v1/approvals", json=EXPORT, headers=m1).json()["id"]
    pending = guard._approval(ap)
    assert pending.expires_at is None and pending.decide_by is not None
    # _unusable sees no window on a pending approval, even one marked approved by mistake in memory.
    assert guard._unusable(replace(pending, status="approved"), _caller(guard, "M1"), "export") is not None


def _caller(guard: Any, employee: str) -> Any:
    from courierguard.domain import EmployeeStatus
    from courierguard.gateway.service import Caller
    from courierguard.policy import Principal

    e = guard.company.employee(employee)
    return Caller(Principal(e.id, e.role, e.org_unit, EmployeeStatus.ACTIVE), None, None)
