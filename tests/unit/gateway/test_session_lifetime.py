"""A session ends SESSION_MAX_HOURS after its login, however often its token is renewed: a renter
who got hold of one session (or an identity provider that refreshes tokens under the same ``sid``)
does not stay signed in for weeks. The employee signs in again, as a new session."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from courierguard.config import Settings
from courierguard.errors import Unauthenticated
from courierguard.gateway.identity import SESSION_MAX_AGE, SessionStore

from .conftest import World, session_store

_DAY = timedelta(hours=24)  # the longest token a provider may issue


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Device-Id": "dev-1"}


def _sign_in(world: World, employee: str = "C1") -> tuple[str, str]:
    """(token, session id) of a new session, with a day-long token: it outlives the session."""
    assert world.deployment.dev_issuer is not None
    token, sid = world.deployment.dev_issuer.issue(employee, now=world.clock.now(), ttl=_DAY)
    assert world.client.post("/v1/auth/login", json={}, headers=_headers(token)).status_code == 200
    return token, sid


def _renewed(world: World, sid: str, employee: str = "C1") -> str:
    assert world.deployment.dev_issuer is not None
    token, same = world.deployment.dev_issuer.issue(employee, now=world.clock.now(), ttl=_DAY, session_id=sid)
    assert same == sid
    return token


def _keep_using(world: World, token: str, duration: timedelta) -> None:
    """Advance the clock by ``duration`` with the session in use every 20 minutes, as on a shift:
    idleness alone never ends it here."""
    step = timedelta(minutes=20)
    while duration > step:
        world.clock.advance(step)
        duration -= step
        assert world.client.get("/v1/waybills", headers=_headers(token)).status_code == 200
    world.clock.advance(duration)


def _failed_reasons(world: World) -> list[str]:
    return [e["outcome"]["reason"] for e in world.access_events() if e["action"] == "auth.login_failed"]


def test_a_session_serves_until_its_twelfth_hour_and_not_after(world: World) -> None:
    token, _ = _sign_in(world)
    _keep_using(world, token, SESSION_MAX_AGE - timedelta(seconds=1))
    assert world.client.get("/v1/waybills", headers=_headers(token)).status_code == 200
    world.clock.advance(timedelta(seconds=1))
    r = world.client.get("/v1/waybills", headers=_headers(token))
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "session expired (sessions last 12 hours from sign-in)" in r.json()["detail"]
    assert any(reason.startswith("request:session expired") for reason in _failed_reasons(world))


def test_a_renewed_token_neither_serves_nor_resumes_an_expired_session(world: World) -> None:
    _, sid = _sign_in(world)
    world.clock.advance(SESSION_MAX_AGE + timedelta(hours=1))
    renewed = _renewed(world, sid)  # a fresh token: valid signature, not expired, the same sid
    assert world.client.get("/v1/waybills", headers=_headers(renewed)).status_code == 401
    r = world.client.post("/v1/auth/login", json={}, headers=_headers(renewed))
    assert r.status_code == 401 and "session expired" in r.json()["detail"]
    # Signing in again opens a new session, which serves.
    token, new_sid = _sign_in(world)
    assert new_sid != sid
    assert world.client.get("/v1/waybills", headers=_headers(token)).status_code == 200


def test_a_renewed_token_within_the_lifetime_resumes_the_session(world: World) -> None:
    token, sid = _sign_in(world)
    _keep_using(world, token, timedelta(hours=6))
    renewed = _renewed(world, sid)
    assert world.client.post("/v1/auth/login", json={}, headers=_headers(renewed)).status_code == 200
    assert world.client.get("/v1/waybills", headers=_headers(renewed)).status_code == 200
    _keep_using(world, renewed, timedelta(hours=6) - timedelta(minutes=10))
    world.clock.advance(timedelta(minutes=10))  # twelve hours from the first login, not the renewal
    assert world.client.get("/v1/waybills", headers=_headers(renewed)).status_code == 401


@pytest.fixture
def three_hour_sessions(tmp_path: Path) -> Iterator[SessionStore]:
    with session_store(tmp_path, session_max_hours=3) as store:
        yield store


def test_the_lifetime_is_a_setting(three_hour_sessions: SessionStore, tmp_path: Path) -> None:
    assert three_hour_sessions.max_age == timedelta(hours=3)
    for hours in (0, 169):
        with pytest.raises(ValidationError):
            Settings(data_dir=tmp_path, session_max_hours=hours)


@pytest.mark.parametrize(
    ("age", "refused"),
    [
        (timedelta(0), False),
        (timedelta(hours=3) - timedelta(microseconds=1), False),
        (timedelta(hours=3), True),
        (timedelta(days=30), True),
    ],
)
def test_check_age_refuses_from_the_lifetime_on(
    three_hour_sessions: SessionStore, age: timedelta, refused: bool
) -> None:
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    if refused:
        with pytest.raises(Unauthenticated, match="sessions last 3 hours"):
            three_hour_sessions.check_age(now - age, now)
    else:
        three_hour_sessions.check_age(now - age, now)


def test_a_session_with_no_known_start_is_refused(three_hour_sessions: SessionStore) -> None:
    with pytest.raises(Unauthenticated):
        three_hour_sessions.check_age(None, datetime(2026, 12, 7, tzinfo=UTC))
