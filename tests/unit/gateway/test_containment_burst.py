"""One officer containing the other officers one after another, over HTTP with the real risk engine:
an alert the other officers see, then a step-up with nothing changed, then a refusal for a fourth
privileged account; an officer working a real incident from a stepped-up session is not stopped.

Before: a rented or hijacked officer account could hold every other officer and admin in turn, and
nothing was raised; the holds were only on the audit trail.
"""

from __future__ import annotations

import io
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pyotp
import pytest

from courierguard.domain import Employee, EmployeeStatus, OrgUnit, OrgUnitKind
from courierguard.events import Role
from courierguard.policy import PolicyEngine, default_policy_dir
from courierguard.risk.engine import RiskEngine
from courierguard.risk.replay import replay

from .conftest import World, refuse_purposes

TICKET = "INC-2026-0077"
PC = "SEC-PC-1"


def _hire(world: World, employee: str, role: Role, unit: str) -> None:
    world.deployment.guard.company.put_employee(Employee(employee, role, unit), world.clock.now())


def _hire_couriers(world: World, count: int) -> list[str]:
    """``count`` couriers of OUT-BJ-01, C10 on: accounts to contain."""
    couriers = [f"C{i:02d}" for i in range(10, 10 + count)]
    for employee in couriers:
        _hire(world, employee, Role.COURIER, "OUT-BJ-01")
    return couriers


def _status(world: World, employee: str) -> EmployeeStatus:
    return world.deployment.guard.company.employee(employee).status


def _hold(world: World, headers: dict[str, str], employee: str) -> Any:
    world.clock.advance(timedelta(seconds=50))
    return world.client.post(
        f"/v1/admin/employees/{employee}/suspend", json={"ticket": TICKET}, headers=headers
    )


def _officer(world: World) -> tuple[dict[str, str], str]:
    """X1 signs in on the desk PC and enrols it (the first device binds freely); the TOTP seed."""
    x1 = world.login("X1", device=PC)
    r = world.client.post("/v1/auth/devices", json=None, headers=x1)
    assert r.status_code == 200, r.text
    return x1, str(r.json()["totp_seed"])


def _step_up(world: World, headers: dict[str, str], seed: str) -> None:
    code = pyotp.TOTP(seed).at(world.clock.now())
    r = world.client.post("/v1/auth/step-up", json={"code": code}, headers=headers)
    assert r.status_code == 204, r.text


def _burst_alerts(world: World) -> list[dict[str, Any]]:
    return _burst_alerts_of(world, "X1")


def _burst_alerts_of(world: World, actor: str) -> list[dict[str, Any]]:
    return [
        a
        for a in world.deployment.alerts.fetch(actor, tenant=world.tenant)
        if "containment_burst" in {r["code"] for r in a["reasons"]}
    ]


def test_a_rented_officer_holding_the_other_officers_is_alerted_stepped_up_and_refused(
    engine_world: World,
) -> None:
    world = engine_world
    for employee, role in (("X3", Role.SECURITY_OFFICER), ("U1", Role.AUDITOR)):
        _hire(world, employee, role, "SEC")
    for employee in ("X2", "X3", "U1", "A1"):
        world.login(employee, device=f"PC-{employee}")  # the engine learns their roles from their own use
    x1, seed = _officer(world)

    assert _hold(world, x1, "X2").status_code == 200
    assert not _burst_alerts(world)
    assert _hold(world, x1, "X3").status_code == 200
    [alert] = _burst_alerts(world)  # the other officers see it: actor, count and the accounts, by id
    assert alert["action"] == "allow" and alert["evidence"]["contained_privileged"] == ["X3", "X2"]
    assert TICKET not in repr(alert)

    # The third privileged account: a step-up, and nothing changed (the hold is not placed).
    r = _hold(world, x1, "U1")
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required", r.text
    assert "containment_burst" in r.json()["detail"]
    assert _status(world, "U1") is EmployeeStatus.ACTIVE
    assert world.login("U1", device="PC-U1")  # still signs in: no hold, no revoked session
    challenged = [
        e
        for e in world.access_events()
        if e["actor"]["id"] == "X1" and e.get("purpose") == f"employee.hold:U1:{TICKET}"
    ]
    assert [e["outcome"]["decision"] for e in challenged] == ["challenge"]
    assert _burst_alerts(world)[-1]["action"] == "step_up"

    # The owner's second factor passes (a renter with the owner's help): the third is made, but a
    # fourth privileged account in the hour is refused even so; another officer makes it.
    _step_up(world, x1, seed)
    assert _hold(world, x1, "U1").status_code == 200
    r = _hold(world, x1, "A1")
    assert r.status_code == 403 and r.json()["reason"] == "risk_denied", r.text
    assert _status(world, "A1") is EmployeeStatus.ACTIVE and _status(world, "U1") is EmployeeStatus.SUSPENDED
    assert _status(world, "X2") is EmployeeStatus.SUSPENDED

    _replays_as_live(world)


def test_an_officer_contains_an_outlet_from_a_stepped_up_session_without_friction(
    engine_world: World,
) -> None:
    world = engine_world
    couriers = _hire_couriers(world, 20)
    x1, seed = _officer(world)
    _step_up(world, x1, seed)
    assert [_hold(world, x1, employee).status_code for employee in couriers] == [200] * 20
    assert all(_status(world, employee) is EmployeeStatus.SUSPENDED for employee in couriers)
    [alert] = _burst_alerts(world)  # one, at the eighth: the other officers know an outlet is being held
    assert alert["action"] == "allow" and alert["evidence"]["contained_in_window"] == 8
    assert not [
        e for e in world.access_events() if e["actor"]["id"] == "X1" and e["outcome"]["decision"] != "allow"
    ]


def test_without_a_step_up_the_twelfth_account_asks_for_one(engine_world: World) -> None:
    world = engine_world
    couriers = _hire_couriers(world, 13)
    x1, seed = _officer(world)
    statuses = [_hold(world, x1, employee).status_code for employee in couriers[:12]]
    assert statuses == [200] * 11 + [403]
    assert _status(world, couriers[11]) is EmployeeStatus.ACTIVE
    _step_up(world, x1, seed)
    assert [_hold(world, x1, employee).status_code for employee in couriers[11:]] == [200, 200]


# --- an admin's status changes, through status or through the employee's record -----------------------
#
# Before: a PUT of the employee's record with another status was only announced after it was made
# (``employee.suspended``): counted and alerted, never refused, so a rented admin account suspended
# every account it could reach through PUT without a step-up. Both routes are now judged before the
# change, at the same thresholds, and a refused one writes nothing.

ROUTES = ("status", "put")


def _set_status(
    world: World, headers: dict[str, str], employee: str, route: str, value: str = "suspended"
) -> Any:
    """Set ``employee``'s status through ``route``; the PUT also moves a courier to another outlet, so
    that a refusal can be seen to have written none of it."""
    world.clock.advance(timedelta(seconds=50))
    path = f"/v1/admin/employees/{employee}"
    if route == "status":
        return world.client.post(f"{path}/status", json={"status": value}, headers=headers)
    current = world.deployment.guard.company.employee(employee)
    unit = "OUT-SZ-09" if current.role is Role.COURIER else current.org_unit
    body = {"role": current.role.value, "org_unit": unit, "status": value}
    return world.client.put(path, json=body, headers=headers)


def _admin(world: World) -> tuple[dict[str, str], str]:
    """A1 signs in on the IT desk PC and enrols it; the TOTP seed."""
    a1 = world.login("A1", device="IT-PC-1")
    r = world.client.post("/v1/auth/devices", json=None, headers=a1)
    assert r.status_code == 200, r.text
    return a1, str(r.json()["totp_seed"])


def _about(world: World, actor: str, employee: str) -> list[tuple[str, str]]:
    """``actor``'s entries naming ``employee``: purpose and decision, in order."""
    return [
        (e["purpose"], e["outcome"]["decision"])
        for e in world.access_events()
        if e["actor"]["id"] == actor and (e.get("purpose") or "").split(":")[1:2] == [employee]
    ]


def _replays_as_live(world: World) -> None:
    """Replayed from the audit trail, a fresh engine decides every risk refusal as live did."""
    events = world.access_events()
    out = io.BytesIO()
    replay((orjson.dumps(e) for e in events), out, RiskEngine())
    replayed = {d["event_id"]: d["action"] for d in map(orjson.loads, out.getvalue().splitlines())}
    refused = [e for e in events if (e["outcome"].get("reason") or "").startswith("risk:")]
    assert refused
    for e in refused:
        assert replayed[e["id"]] == e["outcome"]["reason"].split(":")[1], e


@pytest.mark.parametrize("route", ROUTES)
def test_an_admin_suspending_twelve_accounts_steps_up_through_either_route(
    engine_world: World, route: str
) -> None:
    world = engine_world
    couriers = _hire_couriers(world, 13)
    a1, seed = _admin(world)

    statuses = [_set_status(world, a1, employee, route).status_code for employee in couriers[:12]]
    assert statuses == [200] * 11 + [403]
    assert all(_status(world, employee) is EmployeeStatus.SUSPENDED for employee in couriers[:11])
    # The twelfth: asked to step up, and nothing of the change written (neither status nor outlet).
    twelfth = couriers[11]
    r = _set_status(world, a1, twelfth, route)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required", r.text
    assert "containment_burst" in r.json()["detail"]
    after = world.deployment.guard.company.employee(twelfth)
    assert (after.status, after.org_unit) == (EmployeeStatus.ACTIVE, "OUT-BJ-01")
    # On the trail as the status route records it: the status change, challenged, twice; nothing else.
    assert _about(world, "A1", twelfth) == [(f"employee.status:{twelfth}:suspended", "challenge")] * 2

    _step_up(world, a1, seed)
    assert [_set_status(world, a1, employee, route).status_code for employee in couriers[11:]] == [200, 200]
    after = world.deployment.guard.company.employee(twelfth)
    assert after.status is EmployeeStatus.SUSPENDED
    assert after.org_unit == ("OUT-SZ-09" if route == "put" else "OUT-BJ-01")
    _replays_as_live(world)


def _admins_set_privileged_statuses(world: World, tmp_path: Path) -> None:
    """A company whose admins set the status of privileged accounts too (its own policies, without
    forbid-admin-privileged-account-status): the containment rule is then what stops a rented admin."""
    folder = tmp_path / "policies"
    shutil.copytree(default_policy_dir(), folder)
    rules = folder / "policies.cedar"
    text = rules.read_text(encoding="utf-8")
    start = text.index('@id("forbid-admin-privileged-account-status")')
    rules.write_text(text[:start] + text[text.index("\n\n", start) :], encoding="utf-8")
    world.deployment.guard.policy = PolicyEngine.from_folder(folder)


@pytest.mark.parametrize("route", ROUTES)
def test_a_fourth_privileged_account_is_refused_through_either_route(
    engine_world: World, route: str, tmp_path: Path
) -> None:
    world = engine_world
    _admins_set_privileged_statuses(world, tmp_path)
    company = world.deployment.guard.company
    for unit in ("SEC", "HQ"):
        company.put_org_unit(OrgUnit(unit, OrgUnitKind.DEPARTMENT, unit))
    for employee, role, unit in (("X3", Role.SECURITY_OFFICER, "SEC"), ("U1", Role.AUDITOR, "SEC"),
                                 ("A2", Role.ADMIN, "HQ")):  # fmt: skip
        _hire(world, employee, role, unit)
    for employee in ("X1", "X2", "X3", "U1", "A2"):
        world.login(employee, device=f"PC-{employee}")  # the engine learns their roles from their own use
    a1, seed = _admin(world)

    assert [_set_status(world, a1, employee, route).status_code for employee in ("X2", "X3")] == [200, 200]
    assert _burst_alerts_of(world, "A1")
    r = _set_status(world, a1, "U1", route)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required", r.text
    assert _status(world, "U1") is EmployeeStatus.ACTIVE
    _step_up(world, a1, seed)
    assert _set_status(world, a1, "U1", route).status_code == 200
    # The fourth privileged account in the hour: refused even after the step-up, nothing written.
    r = _set_status(world, a1, "A2", route)
    assert r.status_code == 403 and r.json()["reason"] == "risk_denied", r.text
    assert _status(world, "A2") is EmployeeStatus.ACTIVE
    assert world.login("A2", device="PC-A2")  # its sessions were not ended either
    assert _about(world, "A1", "A2") == [("employee.status:A2:suspended", "deny")]
    _replays_as_live(world)


@pytest.mark.parametrize("route", ROUTES)
def test_the_two_routes_count_together(engine_world: World, route: str) -> None:
    world = engine_world
    couriers = _hire_couriers(world, 12)
    a1, _ = _admin(world)
    other = "put" if route == "status" else "status"
    statuses = [_set_status(world, a1, employee, (route, other)[i % 2]).status_code
                for i, employee in enumerate(couriers)]  # fmt: skip
    assert statuses == [200] * 11 + [403]


def test_a_put_that_changes_no_status_or_creates_an_employee_is_recorded_as_before(
    engine_world: World,
) -> None:
    world = engine_world
    a1, _ = _admin(world)
    for i in range(14):  # more than any containment threshold: none of these contains anyone
        body = {"role": "courier", "org_unit": "OUT-SZ-09"}
        assert world.client.put(f"/v1/admin/employees/N{i:02d}", json=body, headers=a1).status_code == 200
        assert (
            world.client.put(
                f"/v1/admin/employees/N{i:02d}", json=body | {"name": "x"}, headers=a1
            ).status_code
            == 200
        )
    assert {e["purpose"].split(":")[0] for e in world.access_events() if e["actor"]["id"] == "A1"
            and e["action"] == "admin.change"} == {"employee.put"}  # fmt: skip
    assert not _burst_alerts_of(world, "A1")


def test_a_status_allowed_before_its_put_was_refused_is_denied_after_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Risk control allows the status part of a PUT and then refuses the rest (it judges both from
    the same session, so only if it failed in between): nothing is written, and the status's allow
    is followed by a deny, so the trail says of each part that it was not made."""
    refuse_purposes(world, monkeypatch, "employee.put:")
    a1 = world.login("A1")
    body = {"role": "courier", "org_unit": "OUT-BJ-01", "status": "suspended"}
    r = world.client.put("/v1/admin/employees/C1", json=body, headers=a1)
    assert r.status_code == 403 and r.json()["reason"] == "risk_denied", r.text
    assert _status(world, "C1") is EmployeeStatus.ACTIVE
    assert world.login("C1")  # its sessions were not ended either
    entries = [(e["purpose"], e["outcome"]["decision"], e["outcome"].get("reason")) for e in world.access_events()
               if e["actor"]["id"] == "A1" and e["action"] == "admin.change"]  # fmt: skip
    assert entries == [
        ("employee.status:C1:suspended", "allow", None),
        ("employee.put:C1", "deny", "risk:deny:scripted"),
        ("employee.status:C1:suspended", "deny", "guard:not_made"),
    ]
