"""Refused logins are evidence (the identity review): each is an auth.login_failed entry naming whom
the token claimed to be, at a bounded rate per client address; device ids are printable ASCII."""

from __future__ import annotations

import jwt

from courierguard.risk.interfaces import RiskAction

from .conftest import World


def _failed(world: World) -> list[dict[str, object]]:
    return [e for e in world.access_events() if e["action"] == "auth.login_failed"]


def _login(world: World, token: str, device: str = "dev-1") -> int:
    headers = {"Authorization": f"Bearer {token}", "X-Device-Id": device}
    return world.client.post("/v1/auth/login", json={}, headers=headers).status_code


def test_forged_unknown_and_revoked_logins_are_recorded(world: World) -> None:
    assert world.deployment.dev_issuer is not None
    forged = jwt.encode({"sub": "C1", "sid": "s1", "exp": 2**31}, "not-the-key" * 4, algorithm="HS256")
    unknown, _ = world.deployment.dev_issuer.issue("E999998", now=world.clock.now())
    assert _login(world, forged) == 401
    assert _login(world, unknown) == 401
    token, _ = world.deployment.dev_issuer.issue("C1", now=world.clock.now())
    headers = {"Authorization": f"Bearer {token}", "X-Device-Id": "dev-1"}
    assert world.client.post("/v1/auth/login", json={}, headers=headers).status_code == 200
    assert world.client.post("/v1/auth/logout", headers=headers).status_code == 204
    assert _login(world, token) == 401  # the revoked session reused
    failed = _failed(world)
    assert [e["actor"]["id"] for e in failed] == ["C1", "E999998", "C1"]  # type: ignore[index]
    assert all(e["outcome"]["decision"] == "deny" for e in failed)  # type: ignore[index]
    assert "InvalidSignatureError" in failed[0]["outcome"]["reason"]  # type: ignore[index]


def test_a_token_naming_no_employee_number_is_recorded_as_unknown(world: World) -> None:
    assert _login(world, "not.a.jwt") == 401
    assert [e["actor"]["id"] for e in _failed(world)] == ["unknown"]  # type: ignore[index]


def test_refusals_from_one_address_are_recorded_at_a_bounded_rate(world: World) -> None:
    for _ in range(30):
        assert _login(world, "not.a.jwt") == 401
    assert len(_failed(world)) == 20
    assert world.deployment.guard.login_failures_unrecorded == 10
    metrics = world.client.get("/metrics").text
    assert "courierguard_login_failures_unrecorded 10.0" in metrics


def test_a_token_refused_on_any_route_is_recorded_too(world: World) -> None:
    # A 401 on the read routes had written nothing (the identity review's D5): a renter replaying
    # the token of a session an officer revoked left no trace of the tries.
    world.step("YT0000000000001", "out_for_delivery", assignee="C1")
    c1 = world.login("C1")
    reveal = {"fields": ["recipient.phone"], "purpose": "delivery_contact"}
    assert world.client.post("/v1/auth/logout", headers=c1).status_code == 204
    assert world.client.get("/v1/waybills/YT0000000000001", headers=c1).status_code == 401
    r = world.client.post("/v1/waybills/YT0000000000001/reveal", json=reveal, headers=c1)
    assert r.status_code == 401
    assert world.client.get("/v1/waybills", headers=c1).status_code == 401  # a Depends route
    forged = jwt.encode({"sub": "C2", "sid": "s9", "exp": 2**31}, "not-the-key" * 4, algorithm="HS256")
    headers = {"Authorization": f"Bearer {forged}", "X-Device-Id": "dev-9"}
    assert world.client.get("/v1/waybills/YT0000000000001", headers=headers).status_code == 401
    # No token claims no one: not recorded, as before.
    assert world.client.get("/v1/waybills/YT0000000000001", headers={"X-Device-Id": "d"}).status_code == 401
    failed = _failed(world)
    assert [e["actor"]["id"] for e in failed] == ["C1", "C1", "C1", "C2"]  # type: ignore[index]
    reasons = [e["outcome"]["reason"] for e in failed]  # type: ignore[index]
    assert all(r.startswith("request:") for r in reasons) and "revoked" in reasons[0]
    assert "InvalidSignatureError" in reasons[3]
    assert failed[3]["session"]["device_id"] == "dev-9"  # type: ignore[index]


def test_refused_requests_share_the_address_budget_with_logins(world: World) -> None:
    headers = {"Authorization": "Bearer not.a.jwt", "X-Device-Id": "d"}
    for _ in range(15):
        assert _login(world, "not.a.jwt") == 401
        assert world.client.get("/v1/waybills/YT0000000000001", headers=headers).status_code == 401
    assert len(_failed(world)) == 20
    assert world.deployment.guard.login_failures_unrecorded == 10


def test_a_device_id_that_is_not_printable_ascii_is_refused(world: World) -> None:
    token, _ = world.deployment.dev_issuer.issue("C1", now=world.clock.now())  # type: ignore[union-attr]
    headers: dict[str, str | bytes] = {"Authorization": f"Bearer {token}", "X-Device-Id": "终端-027".encode()}
    r = world.client.post("/v1/auth/login", json={}, headers=headers)
    assert r.status_code == 422 and r.json()["field"] == "X-Device-Id"
    assert _login(world, token, device="PDA 027-A") == 200


def test_a_device_is_enrolled_only_if_risk_control_agrees_and_after_it_is_recorded(world: World) -> None:
    c1 = world.login("C1", device="RENTER-PHONE-1")
    world.risk.script["C1"] = RiskAction.STEP_UP  # risk control doubts this session
    r = world.client.post("/v1/auth/devices", headers=c1)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required", r.text
    assert world.deployment.guard.devices.bound("C1") == []
    last = world.access_events()[-1]
    assert (last["action"], last["outcome"]["decision"]) == ("auth.device_bound", "challenge")
    del world.risk.script["C1"]
    assert world.client.post("/v1/auth/devices", headers=c1).status_code == 200
    assert world.deployment.guard.devices.bound("C1") == ["RENTER-PHONE-1"]


def test_a_doubted_session_is_told_why_it_cannot_enrol(world: World) -> None:
    c1 = world.login("C1", device="RENTER-PHONE-1")
    world.risk.script["C1"] = RiskAction.STEP_UP
    world.risk.codes["C1"] = "enrol_while_doubted"
    r = world.client.post("/v1/auth/devices", headers=c1)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required"
    assert "cannot enrol a device" in r.json()["detail"]
    # Any other doubt is the usual step-up, whose code comes from a bound device.
    world.risk.codes["C1"] = "new_device"
    r = world.client.post("/v1/auth/devices", headers=c1)
    assert r.status_code == 403 and "cannot enrol" not in r.json()["detail"]
    assert "new_device" in r.json()["detail"]


def test_a_session_under_step_up_cannot_tell_its_parcels_from_others(world: World) -> None:
    # During a pending step-up, others' parcels answered no_task and the account's own ones
    # step_up_required: a renter learned which parcels the account holds (the risk review's D8).
    world.step("YT0000000000001", "out_for_delivery", assignee="C1")
    c1 = world.login("C1")
    world.risk.script["C1"] = RiskAction.STEP_UP
    body = {"fields": ["recipient.phone"], "purpose": "delivery_contact"}
    answers = {
        number: world.client.post(f"/v1/waybills/{number}/reveal", json=body, headers=c1).json()["reason"]
        for number in ("YT0000000000001", "YT0000000000002")
    }
    assert answers == {"YT0000000000001": "step_up_required", "YT0000000000002": "step_up_required"}
    # On the trail the refused one is still the policy's refusal.
    last = world.access_events()[-1]
    assert last["outcome"]["decision"] == "deny" and last["outcome"]["reason"].startswith("policy:")
