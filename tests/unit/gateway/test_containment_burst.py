"""One officer containing the other officers one after another, over HTTP with the real risk engine:
an alert the other officers see, then a step-up with nothing changed, then a refusal for a fourth
privileged account; an officer working a real incident from a stepped-up session is not stopped.

Before: a rented or hijacked officer account could hold every other officer and admin in turn, and
nothing was raised; the holds were only on the audit trail.
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import orjson
import pyotp

from courierguard.domain import Employee, EmployeeStatus
from courierguard.events import Role
from courierguard.risk.engine import RiskEngine
from courierguard.risk.replay import replay

from .conftest import World

TICKET = "INC-2026-0077"
PC = "SEC-PC-1"


def _hire(world: World, employee: str, role: Role, unit: str) -> None:
    world.deployment.guard.company.put_employee(Employee(employee, role, unit), world.clock.now())


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
    return [
        a
        for a in world.deployment.alerts.fetch("X1", tenant=world.tenant)
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

    # Replayed from the audit trail, a fresh engine decides as risk control did live.
    events = world.access_events()
    out = io.BytesIO()
    replay((orjson.dumps(e) for e in events), out, RiskEngine())
    replayed = {d["event_id"]: d["action"] for d in map(orjson.loads, out.getvalue().splitlines())}
    for e in events:
        reason = e["outcome"].get("reason") or ""
        if reason.startswith("risk:"):
            assert replayed[e["id"]] == reason.split(":")[1], e


def test_an_officer_contains_an_outlet_from_a_stepped_up_session_without_friction(
    engine_world: World,
) -> None:
    world = engine_world
    couriers = [f"C{i:02d}" for i in range(10, 30)]
    for employee in couriers:
        _hire(world, employee, Role.COURIER, "OUT-BJ-01")
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
    couriers = [f"C{i:02d}" for i in range(10, 23)]
    for employee in couriers:
        _hire(world, employee, Role.COURIER, "OUT-BJ-01")
    x1, seed = _officer(world)
    statuses = [_hold(world, x1, employee).status_code for employee in couriers[:12]]
    assert statuses == [200] * 11 + [403]
    assert _status(world, couriers[11]) is EmployeeStatus.ACTIVE
    _step_up(world, x1, seed)
    assert [_hold(world, x1, employee).status_code for employee in couriers[11:]] == [200, 200]
