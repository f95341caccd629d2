"""Bearer tokens from a real identity provider (JWKS over HTTP), the dev issuer, API keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from courierguard.clock import FixedClock
from courierguard.db import create_db_engine, migrate
from courierguard.db.rowseal import RowSeals
from courierguard.errors import Unauthenticated
from courierguard.gateway.identity import ApiKeys, DevIssuer, TokenVerifier

from .conftest import serving

NOW = datetime(2026, 11, 11, 9, 0, tzinfo=UTC)
PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(PRIVATE.public_key()))
    jwk.update(kid="idp-1", use="sig", alg="RS256")
    body = json.dumps({"keys": [jwk]}).encode()

    with serving(body, "/.well-known/jwks.json") as url:
        yield url


def idp_token(**over: object) -> str:
    claims: dict[str, object] = {
        "iss": "https://sso.example", "aud": "courierguard", "sub": "E000123", "sid": "sso-77",
        "iat": int(NOW.timestamp()), "exp": int((NOW + timedelta(hours=8)).timestamp()),
    }  # fmt: skip
    claims.update(over)
    return jwt.encode(claims, PRIVATE, algorithm="RS256", headers={"kid": "idp-1"})


@pytest.mark.http
def test_tokens_from_the_identity_provider_verify_against_its_jwks(jwks_url: str) -> None:
    clock = FixedClock(NOW)
    verifier = TokenVerifier(
        issuer="https://sso.example", audience="courierguard", jwks_url=jwks_url, clock=clock
    )
    claims = verifier.verify(idp_token())
    assert (claims.employee_id, claims.session_id) == ("E000123", "sso-77")
    for bad in (idp_token(iss="https://evil.example"), idp_token(aud="other"), idp_token(sid=None)):
        with pytest.raises(Unauthenticated):
            verifier.verify(bad)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"sub": "E1"}, other_key, algorithm="RS256", headers={"kid": "idp-1"})
    with pytest.raises(Unauthenticated):
        verifier.verify(forged)
    clock.advance(timedelta(hours=9))
    with pytest.raises(Unauthenticated, match="Expired"):
        verifier.verify(idp_token())


def test_dev_issuer_tokens_are_refused_when_a_jwks_is_configured(jwks_url: str) -> None:
    dev = DevIssuer(b"k" * 32, issuer="https://sso.example", audience="courierguard")
    token, _ = dev.issue("E000123", now=NOW)
    verifier = TokenVerifier(
        issuer="https://sso.example", audience="courierguard", jwks_url=jwks_url, clock=FixedClock(NOW)
    )
    with pytest.raises(Unauthenticated):
        verifier.verify(token)  # HS256 with a shared key is not accepted from an IdP configuration


def test_none_algorithm_is_refused() -> None:
    verifier = TokenVerifier(issuer="i", audience="a", dev_key=b"k" * 32, clock=FixedClock(NOW))
    unsigned = jwt.encode(
        {"iss": "i", "aud": "a", "sub": "E", "sid": "s", "exp": 2**40}, None, algorithm="none"
    )
    with pytest.raises(Unauthenticated):
        verifier.verify(unsigned)


def test_api_keys_are_stored_hashed_and_revocable(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'k.sqlite3'}")
    migrate(engine)
    keys = ApiKeys(engine, tenant="t", seals=RowSeals(b"k" * 32))
    record, secret = keys.create("order-system", NOW)
    assert keys.verify(secret).name == "order-system"
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT key_hash FROM api_keys").scalar_one()
    assert secret.split("_", 2)[2].encode() not in bytes(stored)
    for bad in ("cgk_nope", secret[:-2] + "xx", "Bearer x"):
        with pytest.raises(Unauthenticated):
            keys.verify(bad)
    keys.revoke(record.id, NOW)
    with pytest.raises(Unauthenticated, match="revoked"):
        keys.verify(secret)


def test_a_key_made_at_a_local_time_verifies(tmp_path: Path) -> None:
    """SQLite keeps an aware time's wall clock and drops its zone: the seal is of the row as stored
    (the demo's clock runs in Asia/Shanghai; a key sealed from the given instant was refused)."""
    from datetime import timezone

    engine = create_db_engine(f"sqlite:///{tmp_path / 'k.sqlite3'}")
    migrate(engine)
    keys = ApiKeys(engine, tenant="t", seals=RowSeals(b"k" * 32))
    local = NOW.astimezone(timezone(timedelta(hours=8))).replace(microsecond=123456)
    record, secret = keys.create("order-system", local)
    assert keys.verify(secret).name == "order-system"
    keys.revoke(record.id, local)
    with pytest.raises(Unauthenticated, match="revoked"):
        keys.verify(secret)
