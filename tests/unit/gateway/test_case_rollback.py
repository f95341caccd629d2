"""A closed ticket put back as open by a DBA opens no reveal: the audit trail says it was closed.

A case row is sealed, but a seal cannot tell an older sealed state from the current one: a DBA's
copy of the row from while the ticket was open passes it, and the policy lets the agent who owns
the ticket reveal the parcel's contacts again. The gateway recorded the closing on the audit trail
(a Merkle log the DBA cannot rewrite unseen) before applying it, so a reveal that an open case of
the caller's would explain is checked against the trail: a case it records closed is refused with
503 ``row_rolled_back``, and the refusal is on the trail.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import text

from courierguard.gateway.service import Guard

from .conftest import World

W1 = "YT0000000000001"
PHONE_FIELD = {"fields": ["recipient.phone"], "purpose": "ticket"}


def _reveal(world: World, headers: dict[str, str]) -> Any:
    return world.client.post(f"/v1/waybills/{W1}/reveal", json=PHONE_FIELD, headers=headers)


def _open_ticket(world: World, case_id: str, owner: str = "S1") -> None:
    r = world.client.post(
        "/v1/cases", json={"id": case_id, "kind": "ticket", "waybill": W1, "owner": owner}, headers=world.svc
    )
    assert r.status_code == 201, r.text


def _case_row(world: World, case_id: str) -> dict[str, Any]:
    with world.deployment.core.engine.connect() as conn:
        row = conn.execute(
            text("SELECT state, closed_at, mac FROM cases WHERE tenant = :t AND id = :id"),
            {"t": world.tenant, "id": case_id},
        ).one()
    return dict(row._mapping)


def _put_back(world: World, case_id: str, copy: dict[str, Any]) -> None:
    with world.deployment.core.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE cases SET state = :state, closed_at = :closed_at, mac = :mac WHERE tenant = :t AND id = :id"
            ),
            {**copy, "t": world.tenant, "id": case_id},
        )


def test_a_closed_ticket_put_back_as_open_is_refused_and_recorded(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    s1 = world.login("S1")
    _open_ticket(world, "T-1")
    assert _reveal(world, s1).status_code == 200
    copy = _case_row(world, "T-1")  # the DBA's copy, taken while the ticket is open
    assert world.client.post("/v1/cases/T-1/close", headers=world.svc).status_code == 200
    closed = _case_row(world, "T-1")
    assert _reveal(world, s1).status_code == 403
    _put_back(world, "T-1", copy)  # the DBA puts the open row back, seal and all
    with caplog.at_level(logging.ERROR, logger="courierguard"):
        r = _reveal(world, s1)
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["reason"] == "row_rolled_back"
    assert "case T-1 is open in the database but the audit trail records it closed" in body["detail"]
    assert "fields" not in body
    refusal = [e for e in world.access_events() if e["action"] == "waybill.reveal"][-1]
    assert refusal["outcome"] == {"decision": "deny", "reason": "guard:row_rolled_back"}
    assert refusal["purpose"] == "case.rolled_back:T-1"
    assert refusal["actor"]["id"] == "S1" and refusal["resource"]["id"] == W1
    assert any(f"cases {world.tenant}/T-1 is open" in m for m in caplog.messages)
    # A new ticket on the parcel is a new case: the agent may reveal for it again.
    _open_ticket(world, "T-2")
    assert _reveal(world, s1).json()["reason"] == "row_rolled_back"  # T-1 still looks open
    _put_back(world, "T-1", closed)  # the officer restores the closed row
    assert _reveal(world, s1).status_code == 200


def test_a_closing_that_failed_leaves_the_ticket_usable(world: World) -> None:
    """The closing is recorded before it is applied; a failure then adds ``case.closed.rejected``."""
    s1 = world.login("S1")
    _open_ticket(world, "T-3")
    guard: Guard = world.deployment.guard
    service = guard.service_caller(world.service_key)
    detail: dict[str, Any] = {"waybills": [W1], "case": "T-3", "owner": "S1"}
    guard._record_system(service, "case.closed", **detail)
    assert _reveal(world, s1).json()["reason"] == "row_rolled_back"  # closed on the trail, open in the row
    guard._record_system(service, "case.closed.rejected", **detail, error="Conflict")
    assert _reveal(world, s1).status_code == 200
