"""A security officer's incident response on an account, over HTTP: hold, reinstate, end sessions,
reset a lost phone's second factor.

The rented-account case: the officer who sees the alert must be able to stop the account at once,
and an employee whose only bound phone is lost must not be locked out of step-ups for ever. Every
action is authorised by the policies, recorded before it is made, and every refusal leaves one
deny entry; nobody acts on their own account.
"""

from __future__ import annotations

import io
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pyotp
import pytest
from sqlalchemy import insert, select

from courierguard.audit import EntryKind
from courierguard.audit.search_index import SUBJECTS_MARK, indexed_upto
from courierguard.db.tables import devices
from courierguard.domain import Employee, EmployeeStatus
from courierguard.events import RiskAction, Role, admin_change_subject
from courierguard.policy import PolicyAction, PolicyEngine, PolicyRequest, Principal, default_policy_dir
from courierguard.risk.engine import RiskEngine
from courierguard.risk.replay import replay

from .conftest import START, World

W1 = "YT0000000000001"
TICKET = "INC-2026-0042"


def post(world: World, path: str, headers: dict[str, str], body: dict[str, Any] | None = None) -> Any:
    return world.client.post(path, json=body, headers=headers)


def reset(world: World, headers: dict[str, str], employee: str = "C1", **body: str) -> Any:
    payload = {"reason": "device_lost", "ticket": TICKET, **body}
    return post(world, f"/v1/admin/employees/{employee}/devices/reset", headers, payload)


def suspend(world: World, headers: dict[str, str], employee: str = "C1", ticket: str = TICKET) -> Any:
    return post(world, f"/v1/admin/employees/{employee}/suspend", headers, {"ticket": ticket})


def reinstate(world: World, headers: dict[str, str], employee: str = "C1", ticket: str = TICKET) -> Any:
    return post(world, f"/v1/admin/employees/{employee}/reinstate", headers, {"ticket": ticket})


def revoke(world: World, headers: dict[str, str], employee: str = "C1", ticket: str = TICKET) -> Any:
    return post(world, f"/v1/admin/employees/{employee}/sessions/revoke", headers, {"ticket": ticket})


def by(world: World, actor: str, decision: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in world.access_events()
        if e["actor"]["id"] == actor and (decision is None or e["outcome"]["decision"] == decision)
    ]


def works(world: World, headers: dict[str, str]) -> int:
    """The status of an ordinary request on the session (200 while it is alive)."""
    return int(world.client.get(f"/v1/waybills/{W1}", headers=headers).status_code)


def status_of(world: World, employee: str) -> EmployeeStatus:
    return world.deployment.guard.company.employee(employee).status


# --- a lost phone ------------------------------------------------------------------------------------


def test_a_lost_phone_is_reset_by_an_officer_and_the_new_one_enrols(world: World) -> None:
    old = world.login("C1", device="PHONE-OLD")
    old_seed = post(world, "/v1/auth/devices", old).json()["totp_seed"]  # the first device binds freely
    new = world.login("C1", device="PHONE-NEW")
    # The reproduction: with the bound phone lost, no step-up can ever come from it.
    r = post(world, "/v1/auth/devices", new)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required"
    assert "a security officer resets the account's devices" in r.json()["detail"]

    x1 = world.login("X1")
    r = reset(world, x1)
    assert r.status_code == 200, r.text
    assert r.json() == {"employee": "C1", "devices_removed": ["PHONE-OLD"], "sessions_revoked": 2}
    assert world.deployment.guard.devices.bound("C1") == []
    assert works(world, old) == 401 and works(world, new) == 401  # both sessions ended at once

    # On the trail: the officer's allowed change, and the devices, reason and ticket it removed.
    [change] = [e for e in by(world, "X1", "allow") if e.get("purpose", "").startswith("devices.reset:")]
    assert change["action"] == "admin.change" and change["purpose"] == f"devices.reset:C1:{TICKET}"
    [entry] = [e for e in world.entries(EntryKind.ADMIN.value) if e["what"] == "devices.reset"]
    assert entry["actor"] == "X1" and entry["employee"] == "C1"
    assert (
        entry["devices"] == ["PHONE-OLD"] and entry["reason"] == "device_lost" and entry["ticket"] == TICKET
    )

    # The next enrolment is a first one: it needs no step-up, and risk control still judges it.
    fresh = world.login("C1", device="PHONE-NEW")
    r = post(world, "/v1/auth/devices", fresh)
    assert r.status_code == 200, r.text
    new_seed = r.json()["totp_seed"]
    assert world.deployment.guard.devices.bound("C1") == ["PHONE-NEW"]
    assert [e["outcome"]["decision"] for e in by(world, "C1") if e["action"] == "auth.device_bound"] == [
        "allow",  # PHONE-OLD, before the loss
        "deny",  # PHONE-NEW, refused without a step-up
        "allow",  # PHONE-NEW, after the reset
    ]
    assert any(e.action.value == "auth.device_bound" and e.session and e.session.device_id == "PHONE-NEW"
               for e in world.risk.seen)  # fmt: skip

    world.clock.advance(timedelta(seconds=30))
    stale = pyotp.TOTP(old_seed).at(world.clock.now())
    assert post(world, "/v1/auth/step-up", fresh, {"code": stale}).status_code == 401
    code = pyotp.TOTP(new_seed).at(world.clock.now())
    assert post(world, "/v1/auth/step-up", fresh, {"code": code}).status_code == 204


def test_after_a_reset_a_doubted_session_still_cannot_enrol(world: World) -> None:
    old = world.login("C1", device="PHONE-OLD")
    post(world, "/v1/auth/devices", old)
    assert reset(world, world.login("X1")).status_code == 200
    renter = world.login("C1", device="RENTER-PHONE")
    world.risk.script["C1"] = RiskAction.STEP_UP
    world.risk.codes["C1"] = "enrol_while_doubted"
    r = post(world, "/v1/auth/devices", renter)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required"
    assert "cannot enrol a device" in r.json()["detail"]
    assert world.deployment.guard.devices.bound("C1") == []


def test_a_reset_is_recorded_before_it_is_made(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    c1 = world.login("C1", device="PHONE-OLD")
    post(world, "/v1/auth/devices", c1)
    x1 = world.login("X1")
    audit = world.deployment.guard.audit
    append = audit.append

    def failing(kind: EntryKind, body: Any) -> int:
        if kind is EntryKind.ADMIN:
            raise OSError("disk full")
        return append(kind, body)

    monkeypatch.setattr(audit, "append", failing)
    r = reset(world, x1)
    assert r.status_code == 503 and r.json()["reason"] == "audit_unavailable"
    assert world.deployment.guard.devices.bound("C1") == ["PHONE-OLD"]  # nothing removed unrecorded
    assert works(world, c1) == 200


REASONS = ["device_lost", "device_stolen", "device_replaced", "seed_exposed"]


@pytest.mark.parametrize("reason", REASONS)
def test_every_reset_reason_the_api_takes_is_one_the_default_policies_accept(
    world: World, reason: str
) -> None:
    from courierguard.gateway.service import DeviceResetReason

    assert [r.value for r in DeviceResetReason] == REASONS
    officer = Principal("X1", Role.SECURITY_OFFICER, "SEC", EmployeeStatus.ACTIVE)
    request = PolicyRequest(officer, PolicyAction.DEVICES_RESET, None, START, purpose=reason)
    assert world.deployment.guard.policy.decide(request).allowed
    c1 = world.login("C1", device="PHONE-OLD")
    post(world, "/v1/auth/devices", c1)
    assert reset(world, world.login("X1"), reason=reason).status_code == 200


# --- the officer stops a rented account --------------------------------------------------------------


def test_an_officer_suspends_a_rented_account_and_every_session_dies_at_once(world: World) -> None:
    owner = world.login("C1", device="PDA-1")
    renter = world.login("C1", device="RENTER-PHONE")
    assert works(world, renter) == 200
    x1 = world.login("X1")
    r = suspend(world, x1, ticket="ALERT-7f3a")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "suspended"
    assert works(world, renter) == 401 and works(world, owner) == 401  # the very next request
    for again in (renter, _fresh_token(world, "C1")):  # neither the old token nor a new one signs in
        r = world.client.post("/v1/auth/login", json={}, headers=again)
        assert r.status_code == 403 and r.json()["reason"] == "account_inactive"

    purposes = [e.get("purpose") for e in by(world, "X1", "allow") if e["action"] == "admin.change"]
    assert purposes == ["employee.hold:C1:ALERT-7f3a", "employee.suspended:C1"]
    assert "employee.suspended:C1" in [e.purpose for e in world.risk.seen]  # risk control learns it
    refused = [e for e in world.access_events() if e["action"] == "auth.login_failed"]
    assert {e["actor"]["id"] for e in refused} == {"C1"}  # each later try is evidence
    assert world.deployment.guard.company.held("C1")


def test_only_a_security_officer_lifts_a_hold_and_an_admin_cannot_undo_it(world: World) -> None:
    x1, x2, a1 = world.login("X1"), world.login("X2"), world.login("A1")
    assert suspend(world, x1).status_code == 200
    # The outlet asks IT to give the account back: refused, and recorded.
    r = post(world, "/v1/admin/employees/C1/status", a1, {"status": "active"})
    assert r.status_code == 403 and "security hold" in r.json()["detail"]
    r = world.client.put(
        "/v1/admin/employees/C1", json={"role": "courier", "org_unit": "OUT-BJ-01"}, headers=a1
    )
    assert r.status_code == 403
    assert reinstate(world, a1).status_code == 403
    assert status_of(world, "C1") is EmployeeStatus.SUSPENDED
    assert [e["purpose"] for e in by(world, "A1", "deny")] == [
        "employee.status:C1:active",
        "employee.put:C1",
        f"employee.hold_lifted:C1:{TICKET}",
    ]
    # Nor does going through another status: a hold outlives "left" and "suspended".
    assert post(world, "/v1/admin/employees/C1/status", a1, {"status": "left"}).status_code == 200
    assert post(world, "/v1/admin/employees/C1/status", a1, {"status": "suspended"}).status_code == 200
    assert post(world, "/v1/admin/employees/C1/status", a1, {"status": "active"}).status_code == 403
    # Nor the risk lock's unlock.
    r = post(world, "/v1/admin/employees/C1/unlock", x2, {"ticket": TICKET})
    assert r.status_code == 409 and "security hold" in r.json()["detail"]

    # Another officer (the night shift held it, the day shift reviews it) lifts it.
    r = reinstate(world, x2, ticket="INC-2026-0042")
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert not world.deployment.guard.company.held("C1")
    assert works(world, world.login("C1")) == 200
    assert "employee.reinstated:C1" in [e.get("purpose") for e in by(world, "X2", "allow")]
    assert reinstate(world, x2).status_code == 409  # no hold left to lift


def test_a_break_glass_permit_lets_an_admin_lift_a_hold(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(default_policy_dir(), folder)
    with (folder / "policies.cedar").open("a", encoding="utf-8") as rules:
        rules.write(
            '\n@id("break-glass-admin-lifts-holds")\n'
            'permit (principal in Role::"admin", action == Action::"account_reinstate", resource);\n'
        )
    assert suspend(world, world.login("X1")).status_code == 200
    a1 = world.login("A1")
    assert post(world, "/v1/admin/employees/C1/status", a1, {"status": "active"}).status_code == 403
    world.deployment.guard.policy = PolicyEngine.from_folder(folder)
    assert post(world, "/v1/admin/employees/C1/status", a1, {"status": "active"}).status_code == 200
    assert not world.deployment.guard.company.held("C1")


def test_a_hold_on_an_account_that_left_meanwhile_leaves_it_left(world: World) -> None:
    x1, a1 = world.login("X1"), world.login("A1")
    assert suspend(world, x1).status_code == 200
    assert post(world, "/v1/admin/employees/C1/status", a1, {"status": "left"}).status_code == 200
    r = reinstate(world, x1)
    assert r.status_code == 200 and r.json()["status"] == "left"
    # With the hold lifted, re-hiring is the admin's again.
    assert post(world, "/v1/admin/employees/C1/status", a1, {"status": "active"}).status_code == 200


def test_a_hold_turns_a_risk_lock_into_the_security_teams_and_lifting_it_ends_both(world: World) -> None:
    c1 = world.login("C1")
    world.risk.script["C1"] = RiskAction.LOCK
    assert works(world, c1) == 403
    del world.risk.script["C1"]
    x1 = world.login("X1")
    assert suspend(world, x1).status_code == 200
    assert post(world, "/v1/admin/employees/C1/unlock", x1, {"ticket": TICKET}).status_code == 409
    assert reinstate(world, world.login("X2")).status_code == 200
    assert status_of(world, "C1") is EmployeeStatus.ACTIVE


def test_an_employee_read_says_which_suspension_keeps_the_account_out(world: World) -> None:
    # A locked account read "status": "suspended" whatever suspended it, and each kind is ended by
    # another route (unlock, reinstate, status): the analyst had to try them and read the 409s.
    def read(headers: dict[str, str]) -> dict[str, Any]:
        r = world.client.get("/v1/admin/employees/C1", headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    x1, c1 = world.login("X1"), world.login("C1")
    assert read(x1)["containment"] is None and read(c1)["containment"] is None
    world.risk.script["C1"] = RiskAction.LOCK
    assert works(world, c1) == 403
    del world.risk.script["C1"]
    assert read(x1) == {"id": "C1", "role": "courier", "org_unit": "OUT-BJ-01", "status": "suspended",
                        "containment": "risk_lock"}  # fmt: skip
    r = suspend(world, x1)
    assert r.status_code == 200 and r.json()["containment"] == "security_hold"
    r = reinstate(world, world.login("X2"))
    assert r.status_code == 200 and r.json()["containment"] is None and r.json()["status"] == "active"


def test_a_risk_lock_of_a_held_account_keeps_the_hold(world: World) -> None:
    assert suspend(world, world.login("X1")).status_code == 200
    world.deployment.guard._lock("C1")  # e.g. a decision racing the hold
    assert world.deployment.guard.company.held("C1")
    assert world.deployment.guard.company.suspended_for("C1") == "security_hold"


def test_an_officer_ends_sessions_without_suspending(world: World) -> None:
    first, second = world.login("C1", device="PDA-1"), world.login("C1", device="PDA-1")
    r = revoke(world, world.login("X1"))
    assert r.status_code == 200 and r.json() == {"employee": "C1", "sessions_revoked": 2}
    assert works(world, first) == 401 and works(world, second) == 401
    assert status_of(world, "C1") is EmployeeStatus.ACTIVE
    assert works(world, world.login("C1")) == 200  # a new sign-in, judged afresh by risk control
    assert [e.get("purpose") for e in by(world, "X1", "allow")][-1] == f"sessions.revoke:C1:{TICKET}"


# --- refusals ---------------------------------------------------------------------------------------

ACTIONS = {"suspend": suspend, "reinstate": reinstate, "revoke": revoke, "reset": reset}
PURPOSE = {
    "suspend": "employee.hold",
    "reinstate": "employee.hold_lifted",
    "revoke": "sessions.revoke",
    "reset": "devices.reset",
}


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize("actor", ["C1", "K1", "M1", "H1", "S1", "AU1", "A1"])
def test_only_security_officers_act_on_accounts(world: World, action: str, actor: str) -> None:
    world.deployment.guard.company.put_employee(Employee("AU1", Role.AUDITOR, "HQ"), world.clock.now())
    c2 = world.login("C2", device="PDA-2")
    post(world, "/v1/auth/devices", c2)
    headers = world.login(actor)
    r = ACTIONS[action](world, headers, "C2")
    assert r.status_code == 403 and r.json()["reason"] == "policy_denied", r.text
    assert r.headers["content-type"] == "application/problem+json"
    [refused] = by(world, actor, "deny")
    assert refused["action"] == "admin.change" and refused["purpose"] == f"{PURPOSE[action]}:C2:{TICKET}"
    assert refused["outcome"]["reason"] == "policy:policy_denied"
    assert works(world, c2) == 200 and world.deployment.guard.devices.bound("C2") == ["PDA-2"]


@pytest.mark.parametrize("action", list(ACTIONS))
def test_nobody_acts_on_their_own_account(world: World, action: str) -> None:
    x1 = world.login("X1")
    post(world, "/v1/auth/devices", x1)
    r = ACTIONS[action](world, x1, "X1")
    [refused] = by(world, "X1", "deny")
    assert refused["purpose"] == f"{PURPOSE[action]}:X1:{TICKET}"
    if action == "reinstate":
        # An officer's account is privileged: nobody alone lifts a hold on it, the policies say first.
        assert r.status_code == 403 and r.json()["reason"] == "four_eyes_required", r.text
        assert refused["outcome"]["reason"] == "policy:four_eyes_required"
    else:
        assert r.status_code == 403 and "own account" in r.json()["detail"]
        assert refused["outcome"]["reason"] == "guard:policy_denied"
    assert works(world, x1) == 200 and world.deployment.guard.devices.bound("X1") == ["dev-1"]


@pytest.mark.parametrize("action", list(ACTIONS))
def test_an_unknown_employee_is_a_404_and_recorded(world: World, action: str) -> None:
    r = ACTIONS[action](world, world.login("X1"), "E404")
    assert r.status_code == 404 and r.json()["reason"] == "not_found"
    [refused] = by(world, "X1", "deny")
    assert refused["purpose"] == f"{PURPOSE[action]}:E404:{TICKET}"
    assert refused["outcome"]["reason"] == "guard:not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ticket": "13812345678"}, "ticket"),  # a phone number is not a ticket
        ({"ticket": "INC-138 1234 5678"}, "ticket"),
        ({"ticket": "customer Wang called about it"}, "ticket"),  # nor free text
        ({"ticket": "INC-1", "reason": "curious"}, "reason"),
        ({"reason": "device_lost"}, "ticket"),
    ],
)
def test_a_reset_needs_a_reason_code_and_a_ticket_reference(
    world: World, body: dict[str, str], field: str
) -> None:
    post(world, "/v1/auth/devices", world.login("C1", device="PHONE-OLD"))
    r = post(
        world, "/v1/admin/employees/C1/devices/reset", world.login("X1"), {"reason": "device_lost", **body}
    )
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert "1381234" not in r.text and "Wang" not in r.text  # the value is never echoed
    assert world.deployment.guard.devices.bound("C1") == ["PHONE-OLD"]
    assert not [e for e in world.access_events() if "1381234" in str(e)]


@pytest.mark.parametrize("action", ["suspend", "reinstate", "revoke"])
def test_every_officer_action_needs_a_ticket_reference(world: World, action: str) -> None:
    path = {"suspend": "suspend", "reinstate": "reinstate", "revoke": "sessions/revoke"}[action]
    x1 = world.login("X1")
    for body in ({}, {"ticket": "13812345678"}, {"ticket": ""}):
        r = post(world, f"/v1/admin/employees/C1/{path}", x1, body)
        assert r.status_code == 422 and r.json()["field"] == "ticket", r.text
    assert status_of(world, "C1") is EmployeeStatus.ACTIVE


def test_the_guard_checks_the_ticket_too(world: World) -> None:
    from courierguard.errors import InvalidInput

    x1 = world.login("X1")
    who = world.deployment.guard.employee_caller("X1", _session_of(world, x1), device_id="dev-1")
    with pytest.raises(InvalidInput):
        world.deployment.guard.suspend_account(who, "C1", ticket="13812345678")
    with pytest.raises(InvalidInput):
        world.deployment.guard.reset_devices(who, "C1", reason="curious", ticket=TICKET)
    assert not by(world, "X1", "deny") and status_of(world, "C1") is EmployeeStatus.ACTIVE


def test_actions_that_do_not_apply_are_409_and_recorded(world: World) -> None:
    x1, a1 = world.login("X1"), world.login("A1")
    assert reset(world, x1).status_code == 409  # no device bound: the next enrolment is a first one
    assert reinstate(world, x1).status_code == 409  # no hold to lift
    assert post(world, "/v1/admin/employees/K1/status", a1, {"status": "left"}).status_code == 200
    assert suspend(world, x1, "K1").status_code == 409  # left already
    assert suspend(world, x1).status_code == 200
    assert suspend(world, x1).status_code == 409  # held already
    reasons = [e["outcome"]["reason"] for e in by(world, "X1", "deny")]
    assert reasons == ["guard:conflict"] * 4


def test_a_doubted_officer_steps_up_before_acting(world: World) -> None:
    x1 = world.login("X1")
    world.risk.script["X1"] = RiskAction.STEP_UP
    r = suspend(world, x1)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required"
    assert status_of(world, "C1") is EmployeeStatus.ACTIVE
    [challenged] = [e for e in by(world, "X1") if e.get("purpose") == f"employee.hold:C1:{TICKET}"]
    assert challenged["outcome"]["decision"] == "challenge"


def _fresh_token(world: World, employee: str) -> dict[str, str]:
    assert world.deployment.dev_issuer is not None
    token, _ = world.deployment.dev_issuer.issue(employee, now=world.clock.now())
    return {"Authorization": f"Bearer {token}", "X-Device-Id": "dev-1"}


def _session_of(world: World, headers: dict[str, str]) -> str:
    return str(world.deployment.tokens.verify(headers["Authorization"].split(" ", 1)[1]).session_id)


# --- the lost phone with the real risk engine on the request path -------------------------------------

HOME = "39.98,116.31"


def sign_in(world: World, employee: str, device: str) -> tuple[int, dict[str, str]]:
    """Sign in on ``device`` at the outlet; the status may be a step-up (the session exists then)."""
    headers = {**_fresh_token(world, employee), "X-Device-Id": device, "X-Device-Location": HOME}
    return world.client.post("/v1/auth/login", json={}, headers=headers).status_code, headers


def a_working_day(world: World, device: str) -> dict[str, str]:
    status, headers = sign_in(world, "C1", device)
    assert status == 200
    for _ in range(16):
        world.clock.advance(timedelta(minutes=2))
        assert works(world, headers) == 200
    return headers


def two_days_on_a_bound_phone(world: World) -> str:
    """C1 binds PHONE-OLD and works two days on it, so risk control knows it; its TOTP seed."""
    seed = str(post(world, "/v1/auth/devices", a_working_day(world, "PHONE-OLD")).json()["totp_seed"])
    world.clock.advance(timedelta(days=1, minutes=-32))
    a_working_day(world, "PHONE-OLD")
    world.clock.advance(timedelta(days=1, minutes=-32))
    return seed


def an_officer_resets_the_stolen_phone(world: World) -> None:
    status, x1 = sign_in(world, "X1", "SEC-PC-1")
    assert status == 200
    assert reset(world, x1, reason="device_stolen").json()["devices_removed"] == ["PHONE-OLD"]


def test_with_the_real_engine_a_replaced_phone_enrols_only_once_risk_control_trusts_it(
    engine_world: World,
) -> None:
    world = engine_world
    seed = post(world, "/v1/auth/devices", a_working_day(world, "PHONE-OLD")).json()["totp_seed"]
    world.clock.advance(timedelta(days=1, minutes=-32))
    a_working_day(world, "PHONE-OLD")
    world.clock.advance(timedelta(days=1, minutes=-32))

    # The phone is lost. The new one is a device the account never used: a step-up it cannot pass.
    status, new = sign_in(world, "C1", "PHONE-NEW")
    assert status == 403
    r = post(world, "/v1/auth/devices", new)
    assert r.status_code == 403 and "a security officer resets" in r.json()["detail"]

    status, x1 = sign_in(world, "X1", "SEC-PC-1")
    assert status == 200
    assert reset(world, x1).json()["devices_removed"] == ["PHONE-OLD"]

    # The reset removed the old second factor, not risk control's doubt: the session on a new
    # device is still doubted, and a doubted session does not enrol.
    status, new = sign_in(world, "C1", "PHONE-NEW")
    assert status == 403
    r = post(world, "/v1/auth/devices", new)
    assert r.status_code == 403 and "cannot enrol a device" in r.json()["detail"]
    assert world.deployment.guard.devices.bound("C1") == []

    # Next day, the new phone used at the outlet in working hours is trusted: it enrols, first device.
    world.clock.advance(timedelta(days=1))
    status, new = sign_in(world, "C1", "PHONE-NEW")
    assert status == 200
    r = post(world, "/v1/auth/devices", new)
    assert r.status_code == 200, r.text
    world.clock.advance(timedelta(seconds=30))
    assert (
        post(world, "/v1/auth/step-up", new, {"code": pyotp.TOTP(seed).at(world.clock.now())}).status_code
        == 401
    )
    code = pyotp.TOTP(r.json()["totp_seed"]).at(world.clock.now())
    assert post(world, "/v1/auth/step-up", new, {"code": code}).status_code == 204


def test_with_the_real_engine_a_device_row_put_back_after_the_reset_locks_at_its_step_up(
    engine_world: World,
) -> None:
    """A DBA kept the lost phone's device row (its seed is vault ciphertext: it cannot be forged, but
    a copy can be put back). After the reset no device is bound, so a step-up that passes before
    any new enrolment used a seed the reset took away: risk control locks the account."""
    world = engine_world
    seed = two_days_on_a_bound_phone(world)
    with world.deployment.core.engine.connect() as conn:
        kept = [
            dict(r._mapping)
            for r in conn.execute(
                select(devices).where(devices.c.tenant == world.tenant, devices.c.employee == "C1")
            )
        ]
    an_officer_resets_the_stolen_phone(world)
    with world.deployment.core.engine.begin() as conn:
        conn.execute(insert(devices), kept)  # what the DBA does: plain SQL, no key

    status, thief = sign_in(world, "C1", "PHONE-OLD")
    assert status == 403  # the stolen phone is a new device again: asked for a step-up
    world.clock.advance(timedelta(seconds=30))
    r = post(world, "/v1/auth/step-up", thief, {"code": pyotp.TOTP(seed).at(world.clock.now())})
    assert r.status_code == 403 and r.json()["reason"] == "risk_locked", r.text
    assert works(world, thief) in (401, 403)
    assert world.deployment.guard.company.suspended_for("C1") == "risk_lock"
    [alert] = [a for a in world.deployment.alerts.fetch("C1", tenant=world.tenant) if a["action"] == "lock"]
    assert [reason["code"] for reason in alert["reasons"]] == ["seed_from_before_reset"]
    # Replayed from the audit trail, a fresh engine finds it too (the entry is recorded refused by
    # risk control, and replay judges it as live did).
    out = io.BytesIO()
    replay((orjson.dumps(e) for e in world.access_events()), out, RiskEngine())
    replayed = {d["event_id"]: d for d in map(orjson.loads, out.getvalue().splitlines())}
    assert replayed[alert["event_id"]]["action"] == "lock"
    assert [reason["code"] for reason in replayed[alert["event_id"]]["reasons"]] == ["seed_from_before_reset"]


# --- what was done to an account, on the trail ---------------------------------------------------------


def search(world: World, headers: dict[str, str], limit: int = 2, **body: Any) -> list[dict[str, Any]]:
    """Every record of an audit search over HTTP, ``limit`` a page."""
    records: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = world.client.post(
            "/v1/audit/search", json={**body, "limit": limit, "cursor": cursor}, headers=headers
        )
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["records"]) <= limit
        records += page["records"]
        if page["next_cursor"] is None:
            return records
        assert len(page["records"]) == limit
        cursor = page["next_cursor"]


def test_an_investigator_finds_what_was_done_to_an_account_as_well_as_what_it_did(world: World) -> None:
    # The rented-account case: C1's phone "lost", then the account held. Both were done by X1 and
    # filed under X1; `--actor C1` showed C1's own reads and nothing of either.
    c1 = world.login("C1", device="PHONE-OLD")
    assert post(world, "/v1/auth/devices", c1).status_code == 200
    x1, x2 = world.login("X1"), world.login("X2")
    assert reset(world, x1).status_code == 200
    assert suspend(world, x1).status_code == 200

    everything = search(world, x2, employee="C1")
    indices = [r["index"] for r in everything]
    assert indices == sorted(set(indices))  # oldest first, each once
    done_by_x1 = [r for r in everything if r["actor"] == "X1"]
    assert [r["body"].get("purpose") or r["body"]["what"] for r in done_by_x1] == [
        f"devices.reset:C1:{TICKET}",  # the officer's allowed change (access, admin.change)
        "devices.reset",  # the admin entry naming the devices, reason and ticket
        f"employee.hold:C1:{TICKET}",
        "employee.suspended:C1",
    ]
    assert [r["kind"] for r in done_by_x1] == ["access", "admin", "access", "access"]
    own = [r for r in everything if r["actor"] == "C1"]
    assert [r["body"]["action"] for r in own] == ["auth.login", "auth.device_bound"]
    assert len(everything) == len(done_by_x1) + len(own)  # nobody else's entries, not X2's searches

    # subject: only what others did to C1; with actor: what X1 did to C1.
    assert search(world, x2, subject="C1") == done_by_x1
    assert search(world, x2, subject="C1", actor="X1", limit=1000) == done_by_x1
    assert search(world, x2, subject="C1", actor="X2") == []
    assert [r["index"] for r in search(world, x2, actor="C1")] == [r["index"] for r in own]  # unchanged

    # The same once the writer has indexed everything: below the mark, through the subject index.
    engine = world.deployment.core.audit_engine
    deadline = time.monotonic() + 10
    while True:
        with engine.connect() as conn:
            if min(indexed_upto(conn), indexed_upto(conn, SUBJECTS_MARK)) > indices[-1]:
                break
        assert time.monotonic() < deadline, "the writer never indexed the entries"
        time.sleep(0.02)
    assert search(world, x2, employee="C1") == everything

    # Both, or a pattern an id never has: an RFC 9457 problem that echoes nothing.
    r = world.client.post("/v1/audit/search", json={"employee": "C1", "actor": "X1"}, headers=x2)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = world.client.post("/v1/audit/search", json={"subject": "13812345678 张三"}, headers=x2)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "13812345678" not in r.text and "张三" not in r.text
    # Officers' searches are on the trail, naming whom they were about (never filed as about C1).
    searched = [e["purpose"] for e in by(world, "X2") if e.get("purpose", "").startswith("audit.search")]
    assert "audit.search:actor=-:employee=C1:waybills=0:phone=-" in searched
    assert "audit.search:actor=X1:subject=C1:waybills=0:phone=-" in searched


def test_an_investigator_lists_everything_one_session_did_in_one_search(world: World) -> None:
    # The alert names a session (the renter's, beside the owner's): what it was served and refused,
    # without paging through the account's whole timeline and filtering by hand.
    owner = world.login("C1", device="PDA-1")
    renter = world.login("C1", device="PHONE-NEW")
    for headers in (owner, renter, owner, renter):
        works(world, headers)
    x1 = world.login("X1")
    renter_session = _session_of(world, renter)
    found = search(world, x1, actor="C1", session=renter_session)
    assert [r["body"]["action"] for r in found] == ["auth.login", "waybill.view", "waybill.view"]
    assert {r["body"]["session"]["id"] for r in found} == {renter_session}
    assert search(world, x1, employee="C1", session=renter_session) == found
    mine = search(world, x1, actor="C1", session=_session_of(world, owner))
    assert len(mine) == 3 and not {r["index"] for r in mine} & {r["index"] for r in found}
    r = world.client.post("/v1/audit/search", json={"session": renter_session}, headers=x1)
    assert r.status_code == 422 and r.json()["field"] == "session"
    searched = [e["purpose"] for e in by(world, "X1") if e.get("purpose", "").startswith("audit.search")]
    assert f"audit.search:actor=C1:session={renter_session}:waybills=0:phone=-" in searched


def test_with_the_real_engine_a_stolen_phone_is_a_new_device_after_the_reset(engine_world: World) -> None:
    """The review's finding: the reset took the phone's seed away, but risk control still knew the
    phone as the account's own, so a thief using it at the outlet in working hours was the owner."""
    world = engine_world
    two_days_on_a_bound_phone(world)
    an_officer_resets_the_stolen_phone(world)

    # The thief, on the stolen phone at the owner's outlet in working hours: a step-up nobody can
    # answer (the seed went with the reset), no enrolment, no data.
    status, thief = sign_in(world, "C1", "PHONE-OLD")
    assert status == 403
    assert works(world, thief) == 403
    r = post(world, "/v1/auth/devices", thief)
    assert r.status_code == 403 and "cannot enrol a device" in r.json()["detail"]
    assert world.deployment.guard.devices.bound("C1") == []
    [login] = [e for e in by(world, "C1") if e["action"] == "auth.login"][-1:]
    assert login["outcome"]["decision"] == "challenge" and "new_device" in login["outcome"]["reason"]

    # Replayed from the audit trail, a fresh engine forgets the phone at the same point.
    events = world.access_events()
    out = io.BytesIO()
    replay((orjson.dumps(e) for e in events), out, RiskEngine())
    replayed = {d["event_id"]: d for d in map(orjson.loads, out.getvalue().splitlines())}
    assert replayed[login["id"]]["action"] == "step_up"
    assert "new_device" in {reason["code"] for reason in replayed[login["id"]]["reasons"]}
    for e in events:  # every decision risk control made live, replay makes too
        reason = e["outcome"].get("reason") or ""
        if reason.startswith("risk:"):
            assert replayed[e["id"]]["action"] == reason.split(":")[1], e["action"]


def test_an_unlock_names_its_ticket_on_the_trail(world: World) -> None:
    """An analyst reading why a contained account came back finds the review's ticket, as for a
    hold's lift: the unlock used to be recorded as ``employee.reinstated:<id>`` alone."""
    world.deployment.guard._lock("C1")
    x1 = world.login("X1")
    r = post(world, "/v1/admin/employees/C1/unlock", x1)
    assert r.status_code == 422 and r.json()["field"] in ("body", "ticket"), r.text  # none named
    assert status_of(world, "C1") is EmployeeStatus.SUSPENDED
    r = post(world, "/v1/admin/employees/C1/unlock", x1, {"ticket": "13812345678"})
    assert r.status_code == 422 and status_of(world, "C1") is EmployeeStatus.SUSPENDED  # not a phone
    r = post(world, "/v1/admin/employees/C1/unlock", x1, {"ticket": "ALERT-2026-118"})
    assert r.status_code == 200 and r.json()["status"] == "active", r.text
    allowed = [e.get("purpose") for e in by(world, "X1", "allow")]
    assert allowed[-2:] == ["employee.unlocked:C1:ALERT-2026-118", "employee.reinstated:C1"]
    assert admin_change_subject(allowed[-2]) == "C1"  # filed under the account, as the hold's lift is


def test_a_revoked_sessions_retries_name_the_session_a_forged_token_does_not(world: World) -> None:
    """SOC review: the renter's retries after a revocation were recorded without their session, so
    a search by that session missed them. A token that verifies names its session; a forged one,
    whatever session it claims, names none (a forger must not file entries under another's)."""
    import jwt

    renter = world.login("C1", device="RENTER-PHONE")
    session = _session_of(world, renter)
    assert revoke(world, world.login("X1")).status_code == 200
    assert works(world, renter) == 401
    assert world.client.post("/v1/auth/login", json={}, headers=renter).status_code in (401, 403)
    token = renter["Authorization"].split(" ", 1)[1]
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-issuer-key-" * 3, algorithm="HS256")
    assert works(world, {**renter, "Authorization": f"Bearer {forged}"}) == 401
    refused = [e for e in world.access_events() if e["action"] == "auth.login_failed"]
    assert len(refused) == 3, refused
    assert [(e["actor"]["id"], e["session"].get("id")) for e in refused] == [
        ("C1", session), ("C1", session), ("C1", None),
    ]  # fmt: skip
