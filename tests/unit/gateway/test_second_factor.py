"""The second factor cannot be taken over or replayed by whoever holds a (rented) token.

A device id is only a header. Re-binding a bound device would hand a new TOTP seed to the token's
holder and lock the owner's authenticator out; a code seen once (over a shoulder, in a screenshot)
would lift the step-up of other sessions for a minute and a half.
"""

from __future__ import annotations

from datetime import timedelta

import pyotp

from .conftest import World


def test_rebinding_a_bound_device_needs_a_step_up_and_is_recorded(world: World) -> None:
    owner = world.login("C1", device="PDA-1")
    seed = world.client.post("/v1/auth/devices", headers=owner).json()["totp_seed"]
    renter = world.login("C1", device="PDA-1")  # the same device id, sent by someone else
    r = world.client.post("/v1/auth/devices", headers=renter)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required"
    refused = [e for e in world.access_events() if e["action"] == "auth.device_bound"]
    assert [e["outcome"]["decision"] for e in refused] == ["allow", "deny"]
    world.clock.advance(timedelta(seconds=30))
    code = pyotp.TOTP(seed).at(world.clock.now())
    assert world.client.post("/v1/auth/step-up", json={"code": code}, headers=owner).status_code == 204


def test_after_a_step_up_the_owner_may_re_enrol(world: World) -> None:
    owner = world.login("C1", device="PDA-1")
    seed = world.client.post("/v1/auth/devices", headers=owner).json()["totp_seed"]
    code = pyotp.TOTP(seed).at(world.clock.now())
    assert world.client.post("/v1/auth/step-up", json={"code": code}, headers=owner).status_code == 204
    fresh = world.client.post("/v1/auth/devices", headers=owner)
    assert fresh.status_code == 200 and fresh.json()["totp_seed"] != seed


def test_a_code_works_once(world: World) -> None:
    first = world.login("C1", device="PDA-1")
    seed = world.client.post("/v1/auth/devices", headers=first).json()["totp_seed"]
    second = world.login("C1", device="PDA-1")
    code = pyotp.TOTP(seed).at(world.clock.now())
    assert world.client.post("/v1/auth/step-up", json={"code": code}, headers=first).status_code == 204
    assert world.client.post("/v1/auth/step-up", json={"code": code}, headers=second).status_code == 401
    earlier = pyotp.TOTP(seed).at(world.clock.now() - timedelta(seconds=30))  # an older code neither
    assert world.client.post("/v1/auth/step-up", json={"code": earlier}, headers=second).status_code == 401
    world.clock.advance(timedelta(seconds=30))
    later = pyotp.TOTP(seed).at(world.clock.now())
    assert world.client.post("/v1/auth/step-up", json={"code": later}, headers=second).status_code == 204
