"""The status of a privileged account (admin, security officer, auditor) is a security officer's.

A security review found that an admin could disable every security officer (blinding oversight)
or re-enable a disabled officer or auditor, which is as good as giving the privileged role back,
itself a four-eyes change. The policies' ``account_status`` now lets an admin set the status of
operational accounts only and a security officer that of privileged ones (nobody their own);
making a disabled privileged account active again is refused (``four_eyes_required``) and asked for
as a ``kind: role`` approval naming its current role, which a security officer other than the
requester and the employee approves: that makes it active.
"""

from __future__ import annotations

from typing import Any

import pytest

from courierguard.domain import Employee, EmployeeStatus, OrgUnit, OrgUnitKind
from courierguard.events import Role

from .conftest import World


@pytest.fixture(autouse=True)
def _units(world: World) -> None:
    """The security and IT departments the officers and the admin belong to, as org units."""
    company = world.deployment.guard.company
    for unit in ("SEC", "HQ"):
        company.put_org_unit(OrgUnit(unit, OrgUnitKind.DEPARTMENT, unit))


def status(world: World, headers: dict[str, str], employee: str, value: str) -> Any:
    return world.client.post(
        f"/v1/admin/employees/{employee}/status", json={"status": value}, headers=headers
    )


def status_of(world: World, employee: str) -> EmployeeStatus:
    return world.deployment.guard.company.employee(employee).status


def changes(world: World, actor: str) -> list[tuple[str, str, str | None]]:
    return [
        (e["purpose"], e["outcome"]["decision"], e["outcome"].get("reason"))
        for e in world.access_events()
        if e["actor"]["id"] == actor and e["action"] == "admin.change"
    ]


def ask(world: World, headers: dict[str, str], employee: str, role: str, **extra: Any) -> Any:
    body = {"kind": "role", "justification": "back from leave, investigation INC-7 resumes",
            "employee": employee, "role": role, **extra}  # fmt: skip
    return world.client.post("/v1/approvals", json=body, headers=headers)


def add_officer(world: World, employee: str = "X3") -> None:
    world.deployment.guard.company.put_employee(
        Employee(employee, Role.SECURITY_OFFICER, "SEC"), world.clock.now()
    )


@pytest.mark.parametrize("value", ["suspended", "left"])
@pytest.mark.parametrize("target", ["X1", "A2"])
def test_an_admin_does_not_disable_a_privileged_account(world: World, value: str, target: str) -> None:
    world.deployment.guard.company.put_employee(Employee("A2", Role.ADMIN, "HQ"), world.clock.now())
    a1 = world.login("A1")
    r = status(world, a1, target, value)
    assert r.status_code == 403 and r.json()["reason"] == "policy_denied", r.text
    assert "forbid-admin-privileged-account-status" in r.json()["detail"]
    assert status_of(world, target) is EmployeeStatus.ACTIVE
    assert changes(world, "A1") == [(f"employee.status:{target}:{value}", "deny", "policy:policy_denied")]
    # Nor through the employee's record.
    role = "security_officer" if target == "X1" else "admin"
    unit = "SEC" if target == "X1" else "HQ"
    r = world.client.put(f"/v1/admin/employees/{target}", json={"role": role, "org_unit": unit, "status": value},
                         headers=a1)  # fmt: skip
    assert r.status_code == 403 and r.json()["reason"] == "policy_denied", r.text
    assert changes(world, "A1")[-1] == (f"employee.put:{target}", "deny", "guard:policy_denied")
    assert status_of(world, target) is EmployeeStatus.ACTIVE


def test_operational_accounts_stay_with_admins_not_officers(world: World) -> None:
    a1, x1 = world.login("A1"), world.login("X1")
    assert status(world, x1, "C1", "suspended").status_code == 403
    assert changes(world, "X1") == [("employee.status:C1:suspended", "deny", "policy:policy_denied")]
    assert status(world, a1, "C1", "suspended").status_code == 200
    assert status(world, a1, "C1", "active").status_code == 200
    assert status_of(world, "C1") is EmployeeStatus.ACTIVE
    assert [p for p, d, _ in changes(world, "A1") if d == "allow"] == [
        "employee.status:C1:suspended", "employee.suspended:C1", "employee.status:C1:active", "employee.reinstated:C1",
    ]  # fmt: skip


def test_a_security_officer_disables_a_privileged_account_but_not_their_own(world: World) -> None:
    x1, x2, a1 = world.login("X1"), world.login("X2"), world.login("A1")
    r = status(world, x1, "A1", "suspended")
    assert r.status_code == 200 and r.json()["status"] == "suspended", r.text
    assert (
        world.client.get("/v1/waybills?org_unit=OUT-BJ-01", headers=a1).status_code == 401
    )  # sessions ended
    assert status(world, x1, "X2", "left").status_code == 200
    assert world.client.get("/v1/waybills?org_unit=OUT-BJ-01", headers=x2).status_code == 401
    assert status(world, x1, "X1", "suspended").status_code == 403
    assert changes(world, "X1") == [
        ("employee.status:A1:suspended", "allow", None),
        ("employee.suspended:A1", "allow", None),
        ("employee.status:X2:left", "allow", None),
        ("employee.left:X2", "allow", None),
        ("employee.status:X1:suspended", "deny", "guard:policy_denied"),
    ]


@pytest.mark.parametrize("disabled", ["suspended", "left"])
def test_re_enabling_a_disabled_privileged_account_takes_two_people(world: World, disabled: str) -> None:
    add_officer(world)
    x1, a1 = world.login("X1"), world.login("A1")
    assert status(world, x1, "X2", disabled).status_code == 200
    # The officer alone: refused, pointing at a role approval.
    r = status(world, x1, "X2", "active")
    assert r.status_code == 403 and r.json()["reason"] == "four_eyes_required", r.text
    assert "POST /v1/approvals" in r.json()["detail"] and "role security_officer" in r.json()["detail"]
    assert changes(world, "X1")[-1] == ("employee.status:X2:active", "deny", "guard:four_eyes_required")
    # An admin alone, by status or by the record (whose status defaults to active): refused.
    assert status(world, a1, "X2", "active").json()["reason"] == "policy_denied"
    put = world.client.put("/v1/admin/employees/X2", json={"role": "security_officer", "org_unit": "SEC"},
                           headers=a1)  # fmt: skip
    assert put.status_code == 403, put.text
    assert status_of(world, "X2") is EmployeeStatus(disabled)

    # Asked for as a role approval naming the account's current role ...
    r = ask(world, a1, "X2", "security_officer")
    assert r.status_code == 201, r.text
    ap = r.json()
    assert ap["scope"] == {"employee": "X2", "role": "security_officer", "org_unit": "SEC",
                           "from": "security_officer", "reactivate": True}  # fmt: skip
    assert status_of(world, "X2") is EmployeeStatus(disabled)  # nothing changes on the request
    # ... that an admin does not approve, and a security officer other than requester and subject does.
    assert world.client.post(f"/v1/approvals/{ap['id']}/approve", headers=a1).status_code == 403
    r = world.client.post(f"/v1/approvals/{ap['id']}/approve", headers=world.login("X3"))
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    assert status_of(world, "X2") is EmployeeStatus.ACTIVE
    assert world.deployment.guard.company.employee("X2").role is Role.SECURITY_OFFICER
    assert changes(world, "A1")[-2][:2] == (f"employee.role.request:X2:security_officer:{ap['id']}", "allow")
    assert changes(world, "X3") == [
        (f"approval.approved:{ap['id']}", "allow", None),
        (f"employee.role:X2:security_officer:{ap['id']}", "allow", None),
        ("employee.reinstated:X2", "allow", None),
    ]
    x2 = world.login("X2")
    assert world.client.get("/v1/waybills?org_unit=OUT-BJ-01", headers=x2).status_code == 200


def test_the_officer_asking_does_not_approve_and_the_employee_cannot(world: World) -> None:
    x1 = world.login("X1")
    assert status(world, x1, "X2", "suspended").status_code == 200
    ap = ask(world, x1, "X2", "security_officer").json()["id"]
    r = world.client.post(f"/v1/approvals/{ap}/approve", headers=x1)
    assert r.status_code == 403 and r.json()["reason"] == "four_eyes_required"
    assert changes(world, "X1")[-1] == (f"approval.approved:{ap}", "deny", "policy:four_eyes_required")
    assert status_of(world, "X2") is EmployeeStatus.SUSPENDED


def test_what_is_not_a_reactivation(world: World) -> None:
    x1, a1 = world.login("X1"), world.login("A1")
    # An active privileged account keeping its role: nothing to ask for.
    r = ask(world, a1, "X2", "security_officer")
    assert r.status_code == 422 and r.json()["field"] == "role"
    # A disabled operational account: an admin re-enables it.
    assert status(world, a1, "C1", "suspended").status_code == 200
    assert ask(world, a1, "C1", "courier").status_code == 422
    # A reactivation keeps the account's unit.
    assert status(world, x1, "X2", "suspended").status_code == 200
    moved = ask(world, a1, "X2", "security_officer", org_unit="OUT-BJ-01")
    assert moved.status_code == 422 and moved.json()["field"] == "org_unit"
    assert changes(world, "A1")[-1] == (
        "employee.role.request:X2:security_officer:-",
        "deny",
        "guard:invalid_input",
    )


def hold(world: World, headers: dict[str, str], employee: str, path: str = "suspend") -> Any:
    return world.client.post(
        f"/v1/admin/employees/{employee}/{path}", json={"ticket": "INC-9"}, headers=headers
    )


def unlock(world: World, headers: dict[str, str], employee: str) -> Any:
    return world.client.post(
        f"/v1/admin/employees/{employee}/unlock", json={"ticket": "INC-7"}, headers=headers
    )


def privileged(world: World) -> None:
    """An officer X3 and an admin A2 and auditor AU1, each an account to contain and hand back."""
    add_officer(world)
    company = world.deployment.guard.company
    company.put_employee(Employee("A2", Role.ADMIN, "HQ"), world.clock.now())
    company.put_employee(Employee("AU1", Role.AUDITOR, "SEC"), world.clock.now())


@pytest.mark.parametrize(
    ("target", "role"), [("X2", "security_officer"), ("A2", "admin"), ("AU1", "auditor")]
)
def test_lifting_a_hold_on_a_privileged_account_takes_two_people(
    world: World, monkeypatch: pytest.MonkeyPatch, target: str, role: str
) -> None:
    privileged(world)
    unlocked: list[str] = []
    monkeypatch.setattr(world.deployment.guard.risk, "unlock", unlocked.append, raising=False)
    x1, x3, a1 = world.login("X1"), world.login("X3"), world.login("A1")
    assert hold(world, x1, target).status_code == 200
    # The officer who placed it, another officer, an admin: nobody lifts it alone.
    for actor, headers in (("X1", x1), ("X3", x3), ("A1", a1)):
        r = hold(world, headers, target, "reinstate")
        assert r.status_code == 403 and r.json()["reason"] == "four_eyes_required", r.text
        assert "POST /v1/approvals" in r.json()["detail"] and f"role {role}" in r.json()["detail"]
        assert changes(world, actor)[-1] == (
            f"employee.hold_lifted:{target}:INC-9",
            "deny",
            "policy:four_eyes_required",
        )
    assert (
        world.deployment.guard.company.held(target) and status_of(world, target) is EmployeeStatus.SUSPENDED
    )
    assert unlocked == []

    # A reactivation: asked for by one (the officer who placed the hold) ...
    r = ask(world, x1, target, role)
    assert r.status_code == 201, r.text
    ap = r.json()
    assert ap["scope"]["reactivate"] is True and ap["scope"]["ends"] == "security_hold"
    assert changes(world, "X1")[-1] == (f"employee.role.request:{target}:{role}:{ap['id']}", "allow", None)
    # ... approved by a security officer other than the requester and the employee: the hold is lifted.
    r = world.client.post(f"/v1/approvals/{ap['id']}/approve", headers=x3)
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    company = world.deployment.guard.company
    assert status_of(world, target) is EmployeeStatus.ACTIVE and not company.held(target)
    assert company.employee(target).role is Role(role)
    assert unlocked == [target]  # the risk engine's lock, if any, ends with the hold
    assert changes(world, "X3")[-3:] == [
        (f"approval.approved:{ap['id']}", "allow", None),
        (f"employee.role:{target}:{role}:{ap['id']}", "allow", None),
        (f"employee.reinstated:{target}", "allow", None),
    ]
    back = world.login(target)  # signs in again
    if role != "admin":  # an admin reads no waybills
        assert world.client.get("/v1/waybills?org_unit=OUT-BJ-01", headers=back).status_code == 200


def test_ending_a_risk_lock_of_a_privileged_account_takes_two_people(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    privileged(world)
    unlocked: list[str] = []
    monkeypatch.setattr(world.deployment.guard.risk, "unlock", unlocked.append, raising=False)
    x1, a1 = world.login("X1"), world.login("A1")
    world.deployment.guard._lock("X3")
    for actor, headers in (("X1", x1), ("A1", a1)):
        r = unlock(world, headers, "X3")
        assert r.status_code == 403 and r.json()["reason"] == "four_eyes_required", r.text
        assert "POST /v1/approvals" in r.json()["detail"] and "role security_officer" in r.json()["detail"]
        assert changes(world, actor)[-1] == (
            "employee.unlocked:X3:INC-7",
            "deny",
            "policy:four_eyes_required",
        )
    assert status_of(world, "X3") is EmployeeStatus.SUSPENDED

    r = ask(world, a1, "X3", "security_officer")
    assert r.status_code == 201, r.text
    ap = r.json()
    assert ap["scope"] == {"employee": "X3", "role": "security_officer", "org_unit": "SEC",
                           "from": "security_officer", "reactivate": True, "ends": "risk_lock"}  # fmt: skip
    r = world.client.post(f"/v1/approvals/{ap['id']}/approve", headers=x1)
    assert r.status_code == 200, r.text
    assert status_of(world, "X3") is EmployeeStatus.ACTIVE
    assert world.deployment.guard.company.suspended_for("X3") is None
    assert unlocked == ["X3"]
    assert changes(world, "X1")[-3:] == [
        (f"approval.approved:{ap['id']}", "allow", None),
        (f"employee.role:X3:security_officer:{ap['id']}", "allow", None),
        ("employee.reinstated:X3", "allow", None),
    ]
    assert world.client.get("/v1/waybills?org_unit=OUT-BJ-01", headers=world.login("X3")).status_code == 200


def test_an_operational_account_keeps_the_single_officer_way_back(world: World) -> None:
    x1, a1 = world.login("X1"), world.login("A1")
    assert hold(world, x1, "C1").status_code == 200
    r = hold(world, x1, "C1", "reinstate")
    assert r.status_code == 200 and r.json()["status"] == "active", r.text
    world.deployment.guard._lock("C1")
    assert unlock(world, a1, "C1").json()["status"] == "active"
    world.deployment.guard._lock("C1")
    assert unlock(world, x1, "C1").json()["status"] == "active"
    assert changes(world, "X1")[-4:] == [
        ("employee.hold_lifted:C1:INC-9", "allow", None),
        ("employee.reinstated:C1", "allow", None),
        ("employee.unlocked:C1:INC-7", "allow", None),  # the unlock names its ticket
        ("employee.reinstated:C1", "allow", None),
    ]
    # Nor does a reactivation apply to it: an operational account's way back is one person's.
    world.deployment.guard._lock("C1")
    assert ask(world, a1, "C1", "courier").status_code == 422


def test_a_lock_turned_into_a_hold_since_the_request_is_not_ended(world: World) -> None:
    add_officer(world)
    x1, a1 = world.login("X1"), world.login("A1")
    world.deployment.guard._lock("X2")
    ap = ask(world, a1, "X2", "security_officer").json()["id"]
    # Meanwhile an officer puts a hold on it: approving the lock's end does not lift the hold.
    assert hold(world, x1, "X2").status_code == 200
    r = world.client.post(f"/v1/approvals/{ap}/approve", headers=world.login("X3"))
    assert r.status_code == 409, r.text
    assert status_of(world, "X2") is EmployeeStatus.SUSPENDED and world.deployment.guard.company.held("X2")
    assert changes(world, "X3")[-1] == (f"employee.role:X2:security_officer:{ap}", "deny", "guard:conflict")


def test_an_account_changed_since_the_request_is_not_reactivated(world: World) -> None:
    add_officer(world)
    x1, a1 = world.login("X1"), world.login("A1")
    assert status(world, x1, "X2", "suspended").status_code == 200
    ap = ask(world, a1, "X2", "security_officer").json()["id"]
    # Meanwhile a security officer puts a hold on it: the approval does not lift the hold.
    assert (
        world.client.post("/v1/admin/employees/X2/suspend", json={"ticket": "INC-9"}, headers=x1).status_code
        == 200
    )
    x3 = world.login("X3")
    r = world.client.post(f"/v1/approvals/{ap}/approve", headers=x3)
    assert r.status_code == 409, r.text
    assert status_of(world, "X2") is EmployeeStatus.SUSPENDED
    assert changes(world, "X3")[-1] == (f"employee.role:X2:security_officer:{ap}", "deny", "guard:conflict")
