"""Time limits at their exact edges, on the gateway's injected clock: each ends at its instant.

The courier's grace after sign-off (``now < delivered_at + 24 h``), the download window of an approved
export and the decision deadline of a request (``expires_at``/``decide_by <= now`` is over), a
session's idle minutes and its lifetime (over from the limit on), how far ahead of the server's
clock a device's step may be dated (``CLOCK_SKEW``, inclusive), and a bearer token's times (30 s
allowance each way).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta, timezone

import jwt

from courierguard.clock import FixedClock
from courierguard.errors import Unauthenticated
from courierguard.gateway.identity import DEV_ALGORITHM, SESSION_MAX_IDLE, TokenVerifier
from courierguard.timeutil import CLOCK_SKEW

from .conftest import World, approved_export

W1 = "YT0000000000001"
US = timedelta(microseconds=1)
CST = timezone(timedelta(hours=8))


def _reveal(world: World, headers: dict[str, str]) -> int:
    body = {"fields": ["recipient.phone"], "purpose": "complaint"}
    return world.client.post(f"/v1/waybills/{W1}/reveal", json=body, headers=headers).status_code


def _step(world: World, status: str, ts: datetime, assignee: str | None = None) -> int:
    body = {"status": status, "ts": ts.isoformat(), **({"assignee": assignee} if assignee else {})}
    return world.client.post(f"/v1/waybills/{W1}/events", json=body, headers=world.svc).status_code


def test_the_grace_after_sign_off_ends_at_24_hours_whatever_the_offset_of_the_sign_off(world: World) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")  # through the steps the lifecycle asks for
    signed = world.clock.now() + timedelta(minutes=1)
    world.clock.set(signed)
    assert _step(world, "delivered", signed.astimezone(CST)) == 200  # a PDA writing Beijing time
    world.clock.set(signed + timedelta(hours=24) - timedelta(seconds=1))
    assert _reveal(world, world.login("C1")) == 200
    for after in (timedelta(hours=24), timedelta(hours=24) + US):
        world.clock.set(signed + after)
        assert _reveal(world, world.login("C1")) == 403


def test_a_sign_off_may_be_dated_up_to_the_skew_ahead_and_no_further(world: World) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")  # through the steps the lifecycle asks for
    assert _step(world, "delivered", world.clock.now() + CLOCK_SKEW + US) == 422
    ahead = world.clock.now() + CLOCK_SKEW
    assert _step(world, "delivered", ahead) == 200
    # The grace then ends 24 hours after the time the device gave: at most the skew later.
    world.clock.set(ahead + timedelta(hours=24))
    assert _reveal(world, world.login("C1")) == 403


def test_an_export_is_downloadable_until_just_before_its_expiry(world: World) -> None:
    approval, _ = approved_export(world, ["recipient.name"])
    expires = datetime.fromisoformat(
        world.client.get(f"/v1/approvals/{approval}", headers=world.login("M1")).json()["expires_at"]
    )
    world.clock.set(expires)
    m1 = world.login("M1")
    r = world.client.get(f"/v1/exports/{approval}/download", headers=m1)
    assert r.status_code == 403 and "expired" in r.json()["detail"]
    world.clock.set(expires - US)
    assert world.client.get(f"/v1/exports/{approval}/download", headers=world.login("M1")).status_code == 200


def test_a_request_is_decidable_until_just_before_its_deadline(world: World) -> None:
    m1 = world.login("M1")
    body = {"kind": "export", "justification": "quarterly claims reconciliation", "fields": ["recipient.name"],
            "org_unit": "OUT-BJ-01"}  # fmt: skip
    first = world.client.post("/v1/approvals", json=body, headers=m1).json()
    second = world.client.post("/v1/approvals", json=body, headers=m1).json()
    world.clock.set(datetime.fromisoformat(first["decide_by"]) - US)
    assert (
        world.client.post(f"/v1/approvals/{first['id']}/approve", headers=world.login("X1")).status_code
        == 200
    )
    world.clock.set(datetime.fromisoformat(second["decide_by"]))
    r = world.client.post(f"/v1/approvals/{second['id']}/approve", headers=world.login("X1"))
    assert r.status_code == 409 and r.json()["reason"] == "approval_expired"


def test_a_session_is_over_at_exactly_its_idle_minutes(world: World) -> None:
    c1 = world.login("C1")
    used = world.clock.now()
    world.clock.set(used + SESSION_MAX_IDLE - US)
    assert world.client.get("/v1/waybills", headers=c1).status_code == 200
    c2 = world.login("C2")
    used = world.clock.now()
    world.clock.set(used + SESSION_MAX_IDLE)
    assert world.client.get("/v1/waybills", headers=c2).status_code == 401


def test_a_session_serves_until_just_before_its_lifetime(world: World) -> None:
    hours = world.deployment.core.settings.session_max_hours
    assert world.deployment.dev_issuer is not None
    token, _ = world.deployment.dev_issuer.issue("C1", now=world.clock.now(), ttl=timedelta(hours=24))
    c1 = {"Authorization": f"Bearer {token}", "X-Device-Id": "dev-1"}
    assert world.client.post("/v1/auth/login", json={}, headers=c1).status_code == 200
    signed_in = world.clock.now()
    for t in range(1, hours * 60 // 29 + 1):  # used every 29 minutes, never idle
        world.clock.set(signed_in + timedelta(minutes=29 * t))
        assert world.client.get("/v1/waybills", headers=c1).status_code == 200
    world.clock.set(signed_in + timedelta(hours=hours) - US)
    assert world.client.get("/v1/waybills", headers=c1).status_code == 200
    world.clock.set(signed_in + timedelta(hours=hours))
    assert world.client.get("/v1/waybills", headers=c1).status_code == 401


def test_token_times_have_one_30_second_allowance_each_way() -> None:
    key, now = secrets.token_bytes(32), datetime(2028, 2, 29, 23, 59, 50, tzinfo=UTC)  # a leap day
    clock = FixedClock(now)
    verifier = TokenVerifier(issuer="i", audience="a", dev_key=key, clock=clock)
    t = int(now.timestamp())

    def token(**times: int) -> str:
        return jwt.encode(
            {"iss": "i", "aud": "a", "sub": "E1", "sid": "s1", **times}, key, algorithm=DEV_ALGORITHM
        )

    def refused(value: str) -> bool:
        try:
            verifier.verify(value)
        except Unauthenticated:
            return True
        return False

    assert not refused(token(iat=t + 30, exp=t + 3600)) and refused(token(iat=t + 31, exp=t + 3600))
    assert not refused(token(nbf=t + 30, exp=t + 3600)) and refused(token(nbf=t + 31, exp=t + 3600))
    assert not refused(token(iat=t, exp=t + 86_400)) and refused(token(iat=t, exp=t + 86_401))
    expiring = token(iat=t, exp=t + 60)
    clock.set(now + timedelta(seconds=90))
    assert not refused(expiring)  # exp + 30 s
    clock.set(now + timedelta(seconds=90) + US)
    assert refused(expiring)
