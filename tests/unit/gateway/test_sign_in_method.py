"""The sign-in method a session records is the identity provider's word (its ``amr``), not the client's.

A security test noticed that ``POST /v1/auth/login {"auth": "webauthn"}`` was recorded as given: a
renter holding only a password could put a hardware key on the trail.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from courierguard.events import AuthMethod
from courierguard.gateway.identity import auth_method

from .conftest import World


def login_auth(world: World, employee: str, body: dict[str, Any], amr: tuple[str, ...] = ()) -> str:
    assert world.deployment.dev_issuer is not None
    token, _ = world.deployment.dev_issuer.issue(employee, now=world.clock.now(), amr=amr)
    headers = {"Authorization": f"Bearer {token}", "X-Device-Id": "dev-1"}
    r = world.client.post("/v1/auth/login", json=body, headers=headers)
    assert r.status_code == 200, r.text
    [login] = [
        e for e in world.access_events() if e["action"] == "auth.login" and e["actor"]["id"] == employee
    ]
    return str(login["session"]["auth"])


def test_the_clients_claim_is_not_recorded(world: World) -> None:
    assert login_auth(world, "C1", {"auth": "webauthn"}) == "sso"


def test_the_tokens_amr_is(world: World) -> None:
    assert login_auth(world, "C1", {"auth": "webauthn"}, amr=("pwd", "otp")) == "totp"
    assert login_auth(world, "C2", {}, amr=("hwk",)) == "webauthn"


def test_every_request_of_the_session_carries_its_method(world: World) -> None:
    # A security test: the login entry said "password" and the session's reveals then said "sso",
    # overstating how every later request had been authenticated.
    assert world.deployment.dev_issuer is not None
    token, _ = world.deployment.dev_issuer.issue("C1", now=world.clock.now(), amr=("pwd",))
    headers = {"Authorization": f"Bearer {token}", "X-Device-Id": "dev-1"}
    assert world.client.post("/v1/auth/login", json={}, headers=headers).status_code == 200
    world.step("YT0000000000001", "out_for_delivery", assignee="C1")
    assert world.client.get("/v1/waybills?page_size=5", headers=headers).status_code == 200
    assert world.client.get("/v1/waybills/YT0000000000001", headers=headers).status_code == 200
    body = {"fields": ["recipient.phone"], "purpose": "delivery_contact"}
    assert (
        world.client.post("/v1/waybills/YT0000000000001/reveal", json=body, headers=headers).status_code
        == 200
    )
    seen = {e["action"]: e["session"]["auth"] for e in world.access_events() if e["actor"]["id"] == "C1"}
    assert seen == {
        "auth.login": "password", "waybill.list": "password", "waybill.view": "password",
        "waybill.reveal": "password",
    }  # fmt: skip


def test_the_dev_issuer_route_carries_amr(world: World) -> None:
    r = world.client.post("/v1/dev/token", json={"employee_id": "K1", "amr": ["face"]})
    assert r.status_code == 200
    headers = {"Authorization": f"Bearer {r.json()['token']}", "X-Device-Id": "dev-1"}
    assert world.client.post("/v1/auth/login", json={}, headers=headers).status_code == 200
    [login] = [e for e in world.access_events() if e["action"] == "auth.login"]
    assert login["session"]["auth"] == "face"
    bad = world.client.post("/v1/dev/token", json={"employee_id": "K1", "amr": ["<script>"]})
    assert bad.status_code == 422


def test_strongest_known_factor_wins() -> None:
    assert auth_method(["pwd", "otp", "hwk"]) is AuthMethod.WEBAUTHN
    assert auth_method(["pwd", "face"]) is AuthMethod.FACE
    assert auth_method(["pwd"]) is AuthMethod.PASSWORD
    assert auth_method(["mfa", "rba"]) is AuthMethod.SSO  # known to RFC 8176, not a method we record
    for malformed in (None, "pwd", ["pwd", 3], {"pwd": True}, 7):
        assert auth_method(malformed) is AuthMethod.SSO


@given(st.one_of(st.none(), st.text(), st.integers(), st.lists(st.one_of(st.text(), st.integers()))))
def test_any_claim_gives_a_method_and_never_raises(amr: Any) -> None:
    method = auth_method(amr)
    assert method in AuthMethod and method is not AuthMethod.API_KEY
    if method is not AuthMethod.SSO:
        assert isinstance(amr, list) and all(isinstance(v, str) for v in amr)
