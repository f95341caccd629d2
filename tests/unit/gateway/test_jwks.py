"""The identity provider's keys (the identity review): removed keys stop verifying, an unknown key id
never makes a request wait for the network, a hostile JWKS or token is a 401, never a 500."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from courierguard.clock import FixedClock
from courierguard.errors import Unauthenticated
from courierguard.gateway.identity import TokenVerifier
from courierguard.gateway.jwks import JwksKeySet

from .conftest import serving

NOW = datetime(2026, 11, 11, 9, 0, tzinfo=UTC)
K1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
K2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())


def _jwk(private: object, kid: str) -> dict[str, object]:
    if isinstance(private, rsa.RSAPrivateKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    else:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwk["kid"] = kid
    return dict(jwk)


class Idp:
    """A JWKS endpoint whose answer the test changes, counting fetches."""

    def __init__(self, *keys: tuple[object, str]) -> None:
        self.body = b""
        self.fetches = 0
        self.publish(*keys)

    def publish(self, *keys: tuple[object, str]) -> None:
        self.body = json.dumps({"keys": [_jwk(k, kid) for k, kid in keys]}).encode()

    def fetch(self) -> bytes:
        self.fetches += 1
        return self.body


def token(private: object = K1, kid: str = "k1", alg: str = "RS256", **over: object) -> str:
    claims: dict[str, object] = {
        "iss": "https://sso.example", "aud": "courierguard", "sub": "E000123", "sid": "sso-77",
        "iat": int(NOW.timestamp()), "exp": int((NOW + timedelta(hours=8)).timestamp()),
    }  # fmt: skip
    claims.update(over)
    return jwt.encode(claims, private, algorithm=alg, headers={"kid": kid})  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _verifier(idp: Idp, clock: Clock | None = None) -> tuple[TokenVerifier, JwksKeySet]:
    keys = JwksKeySet(
        "http://idp.invalid/jwks", fetch=idp.fetch, monotonic=clock or Clock(), background=False
    )
    return TokenVerifier(
        issuer="https://sso.example", audience="courierguard", jwks=keys, clock=FixedClock(NOW)
    ), keys


def test_a_key_removed_at_the_provider_stops_verifying_at_the_next_refresh() -> None:
    idp = Idp((K1, "k1"), (K2, "k2"))
    verifier, keys = _verifier(idp)
    seen = token()
    assert verifier.verify(seen).employee_id == "E000123"
    idp.publish((K2, "k2"))  # k1 is compromised and withdrawn
    assert keys.refresh()
    for t in (seen, token(sid="fresh")):  # the token verified before, and one minted after
        with pytest.raises(Unauthenticated, match="does not publish"):
            verifier.verify(t)
    assert verifier.verify(token(K2, "k2")).session_id == "sso-77"


def test_an_unknown_key_id_is_refused_without_fetching_on_the_callers_thread() -> None:
    idp = Idp((K1, "k1"))
    verifier, _ = _verifier(idp)
    before = idp.fetches
    for n in range(50):  # made-up kids, no key needed
        with pytest.raises(Unauthenticated):
            verifier.verify(token(kid=f"attacker-{n}"))
    assert idp.fetches == before


def test_the_background_refresher_picks_up_a_new_key_soon_after_it_is_asked() -> None:
    idp = Idp((K1, "k1"))
    keys = JwksKeySet("http://idp.invalid/jwks", fetch=idp.fetch, min_refetch_s=0.05, refresh_s=60)
    try:
        idp.publish((K1, "k1"), (K2, "k2"))
        assert keys.key("k2") is None  # refused now; a refresh is on its way
        deadline = time.monotonic() + 5
        while not keys.holds("k2") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert keys.holds("k2")
    finally:
        keys.close()


@pytest.mark.parametrize("body", [b"<html>not json", b"[1, 2]", b'{"keys": "x"}', b"\xff\xfe"])
def test_a_broken_jwks_keeps_the_last_good_set_until_it_is_too_old(body: bytes) -> None:
    idp, clock = Idp((K1, "k1")), Clock()
    verifier, keys = _verifier(idp, clock)
    idp.body = body
    assert not keys.refresh()
    assert verifier.verify(token()).employee_id == "E000123"
    clock.t += 3601  # unreachable for over an hour: refuse everything
    with pytest.raises(Unauthenticated):
        verifier.verify(token(sid="later"))


def test_a_jwks_that_never_arrived_refuses_every_token() -> None:
    def down() -> bytes:
        raise ConnectionError("refused")

    keys = JwksKeySet("http://idp.invalid/jwks", fetch=down, background=False)
    verifier = TokenVerifier(
        issuer="https://sso.example", audience="courierguard", jwks=keys, clock=FixedClock(NOW)
    )
    with pytest.raises(Unauthenticated):
        verifier.verify(token())


def test_a_tokens_alg_cannot_choose_another_algorithm_for_the_key() -> None:
    verifier, _ = _verifier(Idp((K1, "k1"), (EC, "e1")))
    forged_header = jwt.api_jws.base64url_encode(json.dumps({"alg": "ES256", "kid": "k1"}).encode()).decode()
    payload = token().split(".")[1]
    for bad in (f"{forged_header}.{payload}.AAAA", token(K1, "e1", "RS256")):
        with pytest.raises(Unauthenticated):  # was a 500 TypeError ("Expecting a PEM-formatted key")
            verifier.verify(bad)
    assert verifier.verify(token(EC, "e1", "ES256")).employee_id == "E000123"


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"exp": str(int((NOW + timedelta(hours=1)).timestamp()))}, "non-numeric exp"),
        ({"iat": int((NOW + timedelta(days=3650)).timestamp())}, "not valid yet"),
        ({"nbf": int((NOW + timedelta(minutes=5)).timestamp())}, "not valid yet"),
        ({"exp": int(datetime(3000, 1, 1, tzinfo=UTC).timestamp())}, "longer than 24 hours"),
        ({"sub": "E000123\x00"}, "sub is not an employee number"),
        ({"sub": "E\ud800"}, "sub is not an employee number"),
        ({"sub": "E" * 5000}, "sub is not an employee number"),
        ({"sub": "E000123\u202e"}, "sub is not an employee number"),
        ({"sid": "s\x01\x1b[31m"}, "sid is not a session id"),
        ({"sid": "s\u0000x"}, "sid is not a session id"),
    ],
)
def test_claims_that_are_not_what_they_claim_are_refused(over: dict[str, object], message: str) -> None:
    verifier, _ = _verifier(Idp((K1, "k1")))
    try:
        bad = token(**over)
    except UnicodeEncodeError:  # PyJWT cannot even encode a lone surrogate: encode it by hand
        pytest.skip("unencodable claim")
    with pytest.raises(Unauthenticated, match=message) as info:
        verifier.verify(bad)
    assert "E" * 100 not in str(info.value)


def test_a_token_from_a_provider_clock_a_little_ahead_is_accepted() -> None:
    verifier, _ = _verifier(Idp((K1, "k1")))
    ahead = int((NOW + timedelta(seconds=2)).timestamp())
    assert verifier.verify(token(iat=ahead, nbf=ahead)).employee_id == "E000123"


@pytest.fixture
def huge_jwks() -> Iterator[str]:
    with serving(b'{"keys": [' + b" " * (3 << 20) + b"]}") as url:
        yield url


@pytest.mark.http
def test_a_jwks_larger_than_the_limit_is_not_read_in_full(huge_jwks: str) -> None:
    keys = JwksKeySet(huge_jwks, background=False, max_bytes=1 << 20)
    assert not keys.holds("k1") and not keys.refresh()
