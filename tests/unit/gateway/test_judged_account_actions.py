"""Approvals, administration and audit searches are judged by risk control, and ending a risk lock is
a policy-governed account action whose every refusal is on the trail.

A security test (stop 26) found that a security officer's session risk control doubted (an unknown
phone, ``new_device``) was asked for a step-up on a masked view and on ``suspend``, yet approved an
outlet manager's bulk export, which then downloaded in clear, and approved an admin's request to
make a courier an officer. The second person is the whole of four-eyes; a rented officer account
must not be that person. The same test found that refused ``unlock`` attempts left no entry.
"""

from __future__ import annotations

from typing import Any

import pytest

from courierguard.domain import EmployeeStatus
from courierguard.events import RiskAction
from courierguard.gateway.service import RISK_LOCK_REASON

from .conftest import World


def trail(world: World, actor: str) -> list[tuple[str, str]]:
    """(purpose, decision) of the actor's ``admin.change`` entries, oldest first."""
    return [
        (e.get("purpose", ""), e["outcome"]["decision"])
        for e in world.access_events()
        if e["actor"]["id"] == actor and e["action"] == "admin.change"
    ]


def doubted(world: World, actor: str) -> None:
    world.risk.script[actor] = RiskAction.STEP_UP
    world.risk.codes[actor] = "new_device"


def export_request(world: World) -> str:
    m1 = world.login("M1")
    body = {"kind": "export", "justification": "quarterly reconciliation of returns",
            "fields": ["recipient.phone"], "org_unit": "OUT-BJ-01"}  # fmt: skip
    r = world.client.post("/v1/approvals", json=body, headers=m1)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_doubted_officer_session_does_not_approve_an_export(world: World) -> None:
    approval = export_request(world)
    x2 = world.login("X2")
    doubted(world, "X2")
    r = world.client.post(f"/v1/approvals/{approval}/approve", headers=x2)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required", r.text
    assert trail(world, "X2")[-1] == (f"approval.approved:{approval}", "challenge")
    assert world.deployment.guard._approval(approval).status == "pending"  # nothing to download
    m1 = world.login("M1")
    assert world.client.get(f"/v1/exports/{approval}/download", headers=m1).status_code in (403, 409)
    # Once risk control is satisfied (a step-up, here the script lifted), the same officer approves.
    world.risk.script.pop("X2")
    assert world.client.post(f"/v1/approvals/{approval}/approve", headers=x2).status_code == 200
    assert trail(world, "X2")[-1] == (f"approval.approved:{approval}", "allow")


def test_a_doubted_officer_session_does_not_approve_a_role_change(world: World) -> None:
    a1, x2 = world.login("A1"), world.login("X2")
    body = {"kind": "role", "employee": "C1", "role": "security_officer",
            "justification": "C1 joins the security team"}  # fmt: skip
    r = world.client.post("/v1/approvals", json=body, headers=a1)
    assert r.status_code == 201, r.text
    doubted(world, "X2")
    r = world.client.post(f"/v1/approvals/{r.json()['id']}/approve", headers=x2)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required"
    assert world.deployment.guard.company.employee("C1").role.value == "courier"


@pytest.mark.parametrize(
    ("actor", "path", "body"),
    [
        ("A1", "/v1/admin/employees/E900", {"role": "courier", "org_unit": "OUT-BJ-01"}),
        ("A1", "/v1/admin/org-units/OUT-NEW", {"kind": "outlet", "name": "New outlet"}),
        (
            "A1",
            "/v1/approvals",
            {
                "kind": "role",
                "employee": "C1",
                "role": "auditor",
                "justification": "C1 moves to the audit team",
            },
        ),
        (
            "X1",
            "/v1/approvals",
            {
                "kind": "reveal",
                "waybill": "YT0000000000001",
                "fields": ["recipient.phone"],
                "justification": "police request 2026-117 about this parcel",
            },
        ),
        ("X1", "/v1/audit/search", {"actor": "C1"}),
    ],
)
def test_a_doubted_session_steps_up_before_it_administers_asks_or_searches(
    world: World, actor: str, path: str, body: dict[str, Any]
) -> None:
    headers = world.login(actor)
    doubted(world, actor)
    send = world.client.put if path.startswith("/v1/admin/") else world.client.post
    r = send(path, json=body, headers=headers)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required", r.text
    assert trail(world, actor)[-1][1] == "challenge"
    if path.startswith("/v1/admin/employees/"):
        with pytest.raises(Exception, match="not found"):
            world.deployment.guard.company.employee("E900")


def test_unlock_is_the_policies_and_every_refusal_is_recorded(world: World) -> None:
    company = world.deployment.guard.company
    for locked in ("C1", "X2"):
        company.set_employee_status(
            locked, EmployeeStatus.SUSPENDED, world.clock.now(), reason=RISK_LOCK_REASON
        )
    c2, a1, x1 = world.login("C2"), world.login("A1"), world.login("X1")

    assert (
        world.client.post("/v1/admin/employees/C1/unlock", json={"ticket": "INC-7"}, headers=c2).status_code
        == 403
    )
    assert trail(world, "C2") == [("employee.unlocked:C1:INC-7", "deny")]
    # A privileged account's way back takes two people (a reactivation approval): not an admin alone.
    r = world.client.post("/v1/admin/employees/X2/unlock", json={"ticket": "INC-7"}, headers=a1)
    assert r.status_code == 403 and r.json()["reason"] == "four_eyes_required"
    assert (
        world.client.post("/v1/admin/employees/K1/unlock", json={"ticket": "INC-7"}, headers=a1).status_code
        == 409
    )  # not locked
    assert (
        world.client.post("/v1/admin/employees/E404/unlock", json={"ticket": "INC-7"}, headers=a1).status_code
        == 404
    )
    assert trail(world, "A1")[-3:] == [
        ("employee.unlocked:X2:INC-7", "deny"), ("employee.unlocked:K1:INC-7", "deny"),
        ("employee.unlocked:E404:INC-7", "deny"),
    ]  # fmt: skip

    assert (
        world.client.post("/v1/admin/employees/C1/unlock", json={"ticket": "INC-7"}, headers=a1).json()[
            "status"
        ]
        == "active"
    )
    # Nor a security officer alone (test_privileged_status: the reactivation that ends it).
    r = world.client.post("/v1/admin/employees/X2/unlock", json={"ticket": "INC-7"}, headers=x1)
    assert r.status_code == 403 and r.json()["reason"] == "four_eyes_required", r.text
    assert trail(world, "X1")[-1] == ("employee.unlocked:X2:INC-7", "deny")
    assert company.employee("X2").status is EmployeeStatus.SUSPENDED
    # Judged like the officers' other account actions: a doubted session steps up first.
    company.set_employee_status("C1", EmployeeStatus.SUSPENDED, world.clock.now(), reason=RISK_LOCK_REASON)
    doubted(world, "X1")
    r = world.client.post("/v1/admin/employees/C1/unlock", json={"ticket": "INC-7"}, headers=x1)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required"
    assert company.employee("C1").status is EmployeeStatus.SUSPENDED
