"""Privileged roles (admin, security officer, auditor) are given and taken away by two people.

A security test found that one admin could make two rented couriers security officers, one asking
for a company-wide export and the other approving it: 600 clear-text rows, no alert. Operations,
security and audit are separate duties (GB/T 35273 §7.1), so an admin alone now changes only
operational roles; a privileged one is asked for (``kind: role`` approval) and a security officer
other than the requester and the employee approves it, which makes the change.
"""

from __future__ import annotations

from typing import Any

import pytest

from courierguard.audit import AuditQueries, EntryKind
from courierguard.events import Role

from .conftest import World, refuse_purposes

ALL_FIELDS = [
    "recipient.name",
    "recipient.phone",
    "recipient.address",
    "sender.name",
    "sender.phone",
    "sender.address",
]


def ask(world: World, headers: dict[str, str], employee: str, role: str, **extra: Any) -> Any:
    body = {"kind": "role", "justification": "new investigator for the Beijing region", "employee": employee,
            "role": role, **extra}  # fmt: skip
    return world.client.post("/v1/approvals", json=body, headers=headers)


def role_of(world: World, employee: str) -> Role:
    return world.deployment.guard.company.employee(employee).role


def purposes(world: World, actor: str) -> list[tuple[str, str]]:
    return [
        (e["purpose"], e["outcome"]["decision"])
        for e in world.access_events()
        if e["actor"]["id"] == actor and e["action"] == "admin.change"
    ]


def test_the_testers_attack_one_admin_cannot_make_two_officers(world: World) -> None:
    a1 = world.login("A1")
    for courier in ("C1", "C2"):
        r = world.client.put(
            f"/v1/admin/employees/{courier}",
            json={"role": "security_officer", "org_unit": "OUT-BJ-01"},
            headers=a1,
        )
        assert r.status_code == 403 and r.json()["reason"] == "four_eyes_required", r.text
        assert role_of(world, courier) is Role.COURIER
    # Nor an auditor, a new admin, or a brand-new employee with any of those roles.
    for employee, role in (("C1", "auditor"), ("C2", "admin"), ("E777777", "admin"), ("E777778", "auditor")):
        r = world.client.put(f"/v1/admin/employees/{employee}", json={"role": role, "org_unit": "OUT-BJ-01"},
                             headers=a1)  # fmt: skip
        assert r.status_code == 403 and r.json()["reason"] == "four_eyes_required", (employee, r.text)
    assert [d for _, d in purposes(world, "A1")] == ["deny"] * 6


def test_nor_take_the_security_team_away(world: World) -> None:
    a1 = world.login("A1")
    r = world.client.put(
        "/v1/admin/employees/X1", json={"role": "courier", "org_unit": "OUT-BJ-01"}, headers=a1
    )
    assert r.status_code == 403 and r.json()["reason"] == "four_eyes_required"
    assert role_of(world, "X1") is Role.SECURITY_OFFICER


def test_operational_roles_and_other_edits_stay_with_admins(world: World) -> None:
    a1 = world.login("A1")
    put = world.client.put
    assert put("/v1/admin/employees/C1", json={"role": "outlet_manager", "org_unit": "OUT-BJ-01"},
               headers=a1).status_code == 200  # fmt: skip
    assert role_of(world, "C1") is Role.OUTLET_MANAGER
    # An officer's record, role unchanged (shifts, unit): a plain edit.
    r = put("/v1/admin/employees/X1", json={"role": "security_officer", "org_unit": "OUT-BJ-01"}, headers=a1)
    assert r.status_code == 200, r.text


def test_admin_asks_an_officer_approves_and_the_change_is_made(world: World) -> None:
    a1, x1 = world.login("A1"), world.login("X1")
    r = ask(world, a1, "C1", "security_officer", org_unit="OUT-BJ-01")
    assert r.status_code == 201, r.text
    approval = r.json()
    assert approval["kind"] == "role" and approval["fields"] == []
    assert approval["scope"] == {"employee": "C1", "role": "security_officer", "org_unit": "OUT-BJ-01",
                                 "from": "courier"}  # fmt: skip
    assert role_of(world, "C1") is Role.COURIER  # nothing changes on the request
    r = world.client.post(f"/v1/approvals/{approval['id']}/approve", headers=x1)
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    assert role_of(world, "C1") is Role.SECURITY_OFFICER
    assert purposes(world, "A1") == [(f"employee.role.request:C1:security_officer:{approval['id']}", "allow")]
    assert purposes(world, "X1") == [
        (f"approval.approved:{approval['id']}", "allow"),
        (f"employee.role:C1:security_officer:{approval['id']}", "allow"),
    ]
    # Used once: approving again, or using it as an export, does nothing.
    assert world.client.post(f"/v1/approvals/{approval['id']}/approve", headers=x1).status_code == 409
    assert world.client.get(f"/v1/exports/{approval['id']}/download", headers=a1).status_code == 403


def test_risk_control_judges_the_role_change_itself(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The change an approval makes is an event risk control judges live, as replay judges it from
    the trail: refused there, it is not made (the approval is spent; ask again)."""
    a1, x1 = world.login("A1"), world.login("X1")
    approval = ask(world, a1, "C1", "security_officer", org_unit="OUT-BJ-01").json()["id"]
    refuse_purposes(world, monkeypatch, "employee.role:")
    r = world.client.post(f"/v1/approvals/{approval}/approve", headers=x1)
    assert r.status_code == 403 and r.json()["reason"] == "risk_denied", r.text
    assert role_of(world, "C1") is Role.COURIER
    assert purposes(world, "X1") == [
        (f"approval.approved:{approval}", "allow"),
        (f"employee.role:C1:security_officer:{approval}", "deny"),
    ]
    assert world.client.post(f"/v1/approvals/{approval}/approve", headers=x1).status_code == 409


def test_a_new_employee_gets_a_privileged_role_the_same_way(world: World) -> None:
    x1, x2 = world.login("X1"), world.login("X2")
    r = ask(world, x1, "E900001", "auditor", org_unit="OUT-BJ-01")
    assert r.status_code == 201, r.text
    assert world.client.post(f"/v1/approvals/{r.json()['id']}/approve", headers=x2).status_code == 200
    assert role_of(world, "E900001") is Role.AUDITOR
    assert ask(world, x1, "E900002", "auditor").json()["field"] == "org_unit"  # new: a unit is needed


def test_removing_a_privileged_role_ends_its_sessions(world: World) -> None:
    a1, x1, x2 = world.login("A1"), world.login("X1"), world.login("X2")
    r = ask(world, a1, "X2", "courier", org_unit="OUT-BJ-01")
    assert r.status_code == 201, r.text
    # The employee concerned does not approve their own change.
    refused = world.client.post(f"/v1/approvals/{r.json()['id']}/approve", headers=x2)
    assert refused.status_code == 403 and refused.json()["reason"] == "four_eyes_required"
    assert world.client.post(f"/v1/approvals/{r.json()['id']}/approve", headers=x1).status_code == 200
    assert role_of(world, "X2") is Role.COURIER
    assert world.client.get("/v1/waybills?org_unit=OUT-BJ-01", headers=x2).status_code == 401


@pytest.mark.parametrize("approver", ["X1", "A1", "C2"])
def test_who_may_not_approve(world: World, approver: str) -> None:
    """The requester (X1), an admin, or anyone but a security officer: refused and recorded."""
    x1 = world.login("X1")
    approval = ask(world, x1, "C1", "security_officer", org_unit="OUT-BJ-01").json()["id"]
    headers = x1 if approver == "X1" else world.login(approver)
    r = world.client.post(f"/v1/approvals/{approval}/approve", headers=headers)
    assert r.status_code == 403, r.text
    assert role_of(world, "C1") is Role.COURIER
    assert purposes(world, approver)[-1] == (f"approval.approved:{approval}", "deny")


def test_who_may_not_ask(world: World) -> None:
    for asker in ("M1", "C2", "S1"):
        r = ask(world, world.login(asker), "C1", "security_officer", org_unit="OUT-BJ-01")
        assert r.status_code == 403, (asker, r.text)
        assert purposes(world, asker) == [("employee.role.request:C1:security_officer:-", "deny")]
    a1 = world.login("A1")
    own = ask(world, a1, "A1", "courier", org_unit="OUT-BJ-01")
    assert own.status_code == 403  # nobody asks about their own account
    plain = ask(world, a1, "C1", "outlet_clerk")
    assert plain.status_code == 422 and plain.json()["field"] == "role"  # an admin makes that one
    service = ask(world, a1, "C1", "service")
    assert service.status_code == 422
    with_fields = ask(world, a1, "C1", "auditor", fields=["recipient.phone"])
    assert with_fields.status_code == 422 and with_fields.json()["field"] == "fields"


def test_a_change_made_meanwhile_voids_the_approval(world: World) -> None:
    a1, x1 = world.login("A1"), world.login("X1")
    approval = ask(world, a1, "C1", "auditor", org_unit="OUT-BJ-01").json()["id"]
    assert world.client.put("/v1/admin/employees/C1", json={"role": "outlet_clerk", "org_unit": "OUT-BJ-01"},
                            headers=a1).status_code == 200  # fmt: skip
    r = world.client.post(f"/v1/approvals/{approval}/approve", headers=x1)
    assert r.status_code == 409, r.text
    assert role_of(world, "C1") is Role.OUTLET_CLERK
    assert purposes(world, "X1")[-1] == (f"employee.role:C1:auditor:{approval}", "deny")


def test_an_admin_reads_only_the_approvals_they_asked_for(world: World) -> None:
    a1, x1, x2 = world.login("A1"), world.login("X1"), world.login("X2")
    export = {"kind": "export", "justification": "incident INC-1 review of all parcels", "fields": ALL_FIELDS}
    theirs = world.client.post("/v1/approvals", json=export, headers=x1).json()["id"]
    assert world.client.get(f"/v1/approvals/{theirs}", headers=a1).status_code == 404
    assert world.client.get(f"/v1/approvals/{theirs}", headers=x2).status_code == 200
    mine = ask(world, a1, "C1", "auditor", org_unit="OUT-BJ-01").json()["id"]
    assert world.client.get(f"/v1/approvals/{mine}", headers=a1).status_code == 200


def test_role_changes_are_found_under_the_employee_concerned(world: World) -> None:
    a1, x1 = world.login("A1"), world.login("X1")
    approval = ask(world, a1, "C1", "auditor", org_unit="OUT-BJ-01").json()["id"]
    world.client.post(f"/v1/approvals/{approval}/approve", headers=x1)
    access = [
        e for e in world.entries(EntryKind.ACCESS.value) if e.get("purpose", "").startswith("employee.role:")
    ]
    assert [(e["actor"]["id"], e["outcome"]["decision"]) for e in access] == [("X1", "allow")]
    queries = AuditQueries(world.deployment.core.audit_engine)
    about = queries.search(subject="C1", tenant=world.tenant, limit=100).records
    assert [(r.actor, r.body["purpose"]) for r in about] == [
        ("A1", f"employee.role.request:C1:auditor:{approval}"),
        ("X1", f"employee.role:C1:auditor:{approval}"),
    ]


def test_a_put_racing_a_role_approval_does_not_demote_the_new_officer(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on two workers: an admin's PUT of a clerk (checked as a clerk's, an operational
    change) sent while an officer approved making that clerk a security officer answered 200 after
    the role change was made and recorded, and wrote `courier` over it: a privileged role taken away
    by one person. The write now names the row it checked, and a changed row is a recorded 409."""
    from courierguard.domain import Employee

    company = world.deployment.guard.company
    put = company.put_employee

    def approval_lands_first(employee: Employee, now: Any, **kw: Any) -> None:
        if employee.id == "C2" and employee.role is Role.OUTLET_CLERK:
            put(Employee("C2", Role.SECURITY_OFFICER, "OUT-BJ-01"), now)  # the approval's write
        put(employee, now, **kw)

    monkeypatch.setattr(company, "put_employee", approval_lands_first)
    r = world.client.put(
        "/v1/admin/employees/C2",
        json={"role": "outlet_clerk", "org_unit": "OUT-BJ-01"},
        headers=world.login("A1"),
    )
    assert r.status_code == 409, r.text
    assert role_of(world, "C2") is Role.SECURITY_OFFICER
    last = [e for e in world.access_events() if e["actor"]["id"] == "A1"][-1]
    assert last["purpose"] == "employee.put:C2" and last["outcome"] == {
        "decision": "deny",
        "reason": "guard:conflict",
    }
