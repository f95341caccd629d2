"""A session nobody has used for SESSION_IDLE_MINUTES (30) is over: a PDA left signed in on a bench,
or a token copied off it and kept for later, stops working. Last use is written at most once a
minute per session, so idleness is measured to the minute and a busy session costs one write a
minute, not one per request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from courierguard.config import Settings
from courierguard.db.tables import sessions
from courierguard.errors import Unauthenticated
from courierguard.gateway.identity import SESSION_MAX_IDLE, SessionStore

from .conftest import World, session_store


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Device-Id": "dev-1"}


def _sign_in(world: World, employee: str = "C1") -> tuple[str, str]:
    assert world.deployment.dev_issuer is not None
    token, sid = world.deployment.dev_issuer.issue(employee, now=world.clock.now(), ttl=timedelta(hours=24))
    assert world.client.post("/v1/auth/login", json={}, headers=_headers(token)).status_code == 200
    return token, sid


def _last_seen(world: World, sid: str) -> datetime:
    world.deployment.guard.sessions.last_use.flush()  # what the writer thread does within a second
    with world.deployment.core.engine.connect() as conn:
        value = conn.execute(select(sessions.c.last_seen).where(sessions.c.id == sid)).scalar_one()
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def test_thirty_idle_minutes_end_a_session_and_each_use_restarts_them(world: World) -> None:
    token, sid = _sign_in(world)
    # Used every 29 minutes for three hours: never idle for 30, always served.
    for _ in range(6):
        world.clock.advance(timedelta(minutes=29))
        assert world.client.get("/v1/waybills", headers=_headers(token)).status_code == 200
    assert _last_seen(world, sid) == world.clock.now()
    world.clock.advance(SESSION_MAX_IDLE)
    r = world.client.get("/v1/waybills", headers=_headers(token))
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"] == "session expired (unused for 30 minutes); sign in again"
    refused = [e for e in world.access_events() if e["action"] == "auth.login_failed"]
    assert (
        refused[-1]["outcome"]["reason"] == "request:session expired (unused for 30 minutes); sign in again"
    )
    assert refused[-1]["session"]["device_id"] == "dev-1"
    # A refused request is no use of the session: it stays over.
    assert _last_seen(world, sid) == world.clock.now() - SESSION_MAX_IDLE


def test_last_use_is_written_at_most_once_a_minute(world: World) -> None:
    token, sid = _sign_in(world)
    signed_in = world.clock.now()
    world.clock.advance(timedelta(seconds=59))
    assert world.client.get("/v1/waybills", headers=_headers(token)).status_code == 200
    assert _last_seen(world, sid) == signed_in  # under a minute: not written
    world.clock.advance(timedelta(seconds=1))
    assert world.client.get("/v1/waybills", headers=_headers(token)).status_code == 200
    assert _last_seen(world, sid) == signed_in + timedelta(minutes=1)
    # Measured to the minute: 29 minutes and 59 seconds after the last write, still served.
    world.clock.advance(SESSION_MAX_IDLE - timedelta(seconds=1))
    assert world.client.get("/v1/waybills", headers=_headers(token)).status_code == 200


def test_a_renewed_token_resumes_no_idle_session(world: World) -> None:
    _, sid = _sign_in(world)
    world.clock.advance(timedelta(minutes=45))
    assert world.deployment.dev_issuer is not None
    renewed, same = world.deployment.dev_issuer.issue(
        "C1", now=world.clock.now(), ttl=timedelta(hours=1), session_id=sid
    )
    assert same == sid
    r = world.client.post("/v1/auth/login", json={}, headers=_headers(renewed))
    assert r.status_code == 401 and "unused for 30 minutes" in r.json()["detail"]
    assert world.client.get("/v1/waybills", headers=_headers(renewed)).status_code == 401
    # A renewal in time resumes the session and counts as its use.
    token, sid = _sign_in(world)
    world.clock.advance(timedelta(minutes=20))
    renewed, _ = world.deployment.dev_issuer.issue("C1", now=world.clock.now(), session_id=sid)
    assert world.client.post("/v1/auth/login", json={}, headers=_headers(renewed)).status_code == 200
    assert _last_seen(world, sid) == world.clock.now()
    world.clock.advance(timedelta(minutes=20))
    assert world.client.get("/v1/waybills", headers=_headers(token)).status_code == 200


def test_last_use_only_moves_forward(world: World) -> None:
    _, sid = _sign_in(world)
    now = world.clock.now()
    store = world.deployment.guard.sessions
    store.touch(sid, now - timedelta(hours=1), now - timedelta(minutes=5))  # a worker's older reading
    assert _last_seen(world, sid) == now
    store.touch(sid, now, now + timedelta(minutes=2))
    assert store.last_use.of(sid, now) == now + timedelta(minutes=2)  # counted before it is written
    assert _last_seen(world, sid) == now + timedelta(minutes=2)
    assert store.last_use.of(sid, now + timedelta(minutes=2)) == now + timedelta(minutes=2)


def test_a_session_with_no_last_use_is_refused(world: World) -> None:
    token, sid = _sign_in(world)
    with world.deployment.core.engine.begin() as conn:  # last_seen is NOT NULL; a foreign writer's 1970
        conn.execute(
            update(sessions).where(sessions.c.id == sid).values(last_seen=datetime(1970, 1, 1, tzinfo=UTC))
        )
    assert world.client.get("/v1/waybills", headers=_headers(token)).status_code == 401
    with pytest.raises(Unauthenticated):
        world.deployment.guard.sessions.check_idle(None, world.clock.now())


def test_the_idle_time_is_a_setting(tmp_path: Path) -> None:
    with session_store(tmp_path, session_idle_minutes=10) as ten_minute_sessions:
        assert ten_minute_sessions.max_idle == timedelta(minutes=10)
        now = datetime(2026, 12, 7, 12, tzinfo=UTC)
        ten_minute_sessions.check_idle(now - timedelta(minutes=10) + timedelta(microseconds=1), now)
        with pytest.raises(Unauthenticated, match="unused for 10 minutes"):
            ten_minute_sessions.check_idle(now - timedelta(minutes=10), now)
        for minutes in (4, 721):
            with pytest.raises(ValidationError):
                Settings(data_dir=tmp_path, session_idle_minutes=minutes)
        with pytest.raises(ValueError, match="idle"):
            SessionStore(
                ten_minute_sessions.engine,
                tenant="t",
                seals=ten_minute_sessions.seals,
                max_idle=timedelta(minutes=1),
            )
