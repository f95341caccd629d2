"""Who is asking: bearer tokens, sessions, service API keys, bound devices and TOTP step-up.

* Employees present a JWT from the company's identity provider (JWKS) or, for the demo and tests,
  from the built-in development issuer (HS256 under a key held by the key provider). The token
  names the employee (``sub``) and a session (``sid``); Courier Guard tracks that session, so a
  logout or a revocation takes effect on the very next request.
* Service accounts (order system, PDA backend) use API keys; only a SHA-256 hash is stored.
* A step-up is a fresh TOTP code from an authenticator bound to the account's device; seeds are
  encrypted by the vault, never stored in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
import pyotp
from sqlalchemy import Engine, and_, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from courierguard.clock import Clock, SystemClock
from courierguard.company.store import FACTS_COLUMNS
from courierguard.db.fast import DriverQuery
from courierguard.db.rowseal import RowSeals, values_of
from courierguard.db.tables import api_keys, devices, sessions
from courierguard.errors import NotFound, Unauthenticated
from courierguard.events import AuthMethod
from courierguard.gateway.jwks import JwksKeySet
from courierguard.gateway.last_use import LastUse
from courierguard.timeutil import utc, utc_or_none
from courierguard.vault import Vault
from courierguard.vault.service import MASKED_COLUMNS, SEALED_COLUMNS

DEV_ALGORITHM = "HS256"
STEP_UP_VALID = timedelta(minutes=15)
API_KEY_PREFIX = "cgk_"
VERIFIED_TOKENS_KEPT = 50_000
MAX_TOKEN_LIFETIME = timedelta(hours=24)
"""Longest a bearer token may live (exp - iat): an identity provider's are an hour or a shift; a
token valid until the year 3000 is a leaked signing key's."""
SESSION_MAX_AGE = timedelta(hours=12)
"""Longest a session lasts from its sign-in (``session_max_hours``), however often its token is
renewed: a courier's shift. An identity provider that refreshes tokens under the same ``sid``
would otherwise keep one session, and whoever holds it, signed in for weeks."""
SESSION_MAX_IDLE = timedelta(minutes=30)
"""Longest a session may go unused (``session_idle_minutes``): a PDA left signed in on a bench, or a
token copied off it, stops working once nobody has used it for this long."""
TOUCH_EVERY = timedelta(minutes=1)
"""A session's last use is written when it is older than this: at most one write a minute per
session on the request path, not one per request; idleness is measured to this precision."""


# Checked on every request: built once with bound parameters (a Core select per call costs more).
_SESSION = select(sessions).where(sessions.c.id == bindparam("id"), sessions.c.tenant == bindparam("tenant"))


@dataclass(frozen=True, slots=True)
class TokenClaims:
    employee_id: str
    session_id: str
    expires_at: datetime
    auth: AuthMethod = AuthMethod.SSO
    """How the identity provider says the employee signed in (its ``amr`` claim); never the client's word."""


@dataclass(frozen=True, slots=True)
class ActiveCaller:
    """A session and its employee, as read together on every request."""

    session_id: str
    employee: str
    revoked_reason: str | None
    revoked: bool
    role: str
    org_unit: str
    status: str
    status_reason: str | None = None
    mac: bytes | None = None
    """The employee row's seal (:mod:`courierguard.db.rowseal`), checked by the guard."""
    auth: AuthMethod = AuthMethod.SSO
    """How the session was signed in (from the token's ``amr`` at login), for every request's record."""
    signed_in_at: datetime | None = None
    """When the session was opened (sealed with it), for its lifetime: :meth:`SessionStore.check_age`."""
    last_seen: datetime | None = None
    """When the session was last used, to the minute (not sealed): :meth:`SessionStore.check_idle`."""


@dataclass(frozen=True, slots=True)
class WaybillRead:
    """One waybill's facts rows (``company.store.FACTS_COLUMNS``), read in the statement that read
    the caller's session: one snapshot, one statement for both on a request about that waybill.

    For a reveal, also its sealed parties rows (``vault.service.SEALED_COLUMNS``), for
    ``Vault.open_sealed`` once the access is decided and recorded; for a view, its masked rows
    (``vault.service.MASKED_COLUMNS``), for ``Vault.masked_from_rows``. None when not read.
    """

    number: str
    rows: list[Any]
    sealed: list[Any] | None = None
    masked: list[Any] | None = None


PartyRead = Literal["sealed", "masked"]
"""What a request about one waybill reads of its parties along with the session: a reveal's sealed
rows, a view's masked ones."""


_AUTH_METHODS = {method.value: method for method in AuthMethod}
"""A stored sign-in method; a session stored without one (or with an unknown one) is ``sso``."""
_CALLER = (
    "SELECT s.employee, s.revoked_at, s.revoked_reason, e.role, e.org_unit, e.status, e.status_reason, "
    "e.mac, s.auth, s.device_id, s.created_at, s.step_up_at, s.mac, s.last_seen"
)
_CALLER_COLUMNS = 14
_CALLER_SQL = (
    f"{_CALLER} FROM sessions s "
    "JOIN employees e ON e.tenant = s.tenant AND e.id = s.employee WHERE s.id = ? AND s.tenant = ?"
)
_FACTS_END = _CALLER_COLUMNS + len(FACTS_COLUMNS.split(","))
# Built from constants only; values are always bound.
_WAYBILL_FROM = (
    "FROM sessions s JOIN employees e ON e.tenant = s.tenant AND e.id = s.employee "
    "LEFT JOIN waybills w ON w.tenant = s.tenant AND w.number = ? "
    "LEFT JOIN cases c ON c.tenant = w.tenant AND c.waybill = w.number "
)
_CALLER_WITH_WAYBILL_SQL = f"{_CALLER}, {FACTS_COLUMNS} {_WAYBILL_FROM}WHERE s.id = ? AND s.tenant = ?"


def _caller_with_parties_sql(columns: str) -> str:
    """The caller's statement and the waybill's parties rows in ``columns``: a row per (case, party)."""
    return (
        f"{_CALLER}, {FACTS_COLUMNS}, {columns} {_WAYBILL_FROM}"
        "LEFT JOIN parties p ON p.tenant = w.tenant AND p.waybill = w.number WHERE s.id = ? AND s.tenant = ?"
    )


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    employee: str
    device_id: str | None
    created_at: datetime
    last_seen: datetime
    step_up_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None

    def stepped_up_at(self, now: datetime) -> bool:
        return self.step_up_at is not None and now - self.step_up_at <= STEP_UP_VALID


class TokenVerifier:
    """Verifies employee bearer tokens: the development issuer, or an identity provider's JWKS."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        dev_key: bytes | None = None,
        jwks_url: str | None = None,
        jwks: JwksKeySet | None = None,
        clock: Clock | None = None,
        leeway: timedelta = timedelta(seconds=30),
    ) -> None:
        if sum(x is not None for x in (dev_key, jwks_url, jwks)) != 1:
            raise ValueError("configure exactly one of the development issuer and a JWKS")
        self._clock = clock or SystemClock()
        self._leeway = leeway
        self._verified: dict[bytes, tuple[TokenClaims, str | None]] = {}
        self.issuer = issuer
        self.audience = audience
        self._dev_key = dev_key
        self._jwks = jwks or (JwksKeySet(jwks_url) if jwks_url else None)

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; raises :class:`Unauthenticated` otherwise.

        A token's signature check gives the same answer every time, so verified claims are kept
        (keyed by the token's SHA-256, not the token), bounded; expiry is rechecked on every call,
        and so is the signing key: a token whose key the provider has removed stops working.
        """
        key = hashlib.sha256(token.encode()).digest()
        cached = self._verified.get(key)
        if (
            cached is not None
            and cached[1] is not None
            and self._jwks is not None
            and not self._jwks.holds(cached[1])
        ):
            del self._verified[key]
            cached = None
        if cached is None:
            cached = self._verify(token)
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()
            self._verified[key] = cached
        claims = cached[0]
        if claims.expires_at + self._leeway < self._clock.now():
            raise Unauthenticated("bearer token rejected (ExpiredSignatureError)")
        return claims

    def _signing_key(self, token: str) -> tuple[Any, list[str], str | None]:
        """(key, the one algorithm it verifies, kid) for ``token``."""
        if self._jwks is None:
            return self._dev_key, [DEV_ALGORITHM], None
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"bearer token rejected ({exc.__class__.__name__})") from None
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("bearer token names no signing key (kid)")
        jwk = self._jwks.key(kid)
        if jwk is None:
            raise Unauthenticated("bearer token signed by a key the identity provider does not publish")
        # The key's own algorithm only: a token's "alg" header cannot pick another (ES256 on an RSA key).
        return jwk, [jwk.algorithm_name], kid

    def _verify(self, token: str) -> tuple[TokenClaims, str | None]:
        key, algorithms, kid = self._signing_key(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self.issuer,
                audience=self.audience,
                # Times are checked below against the injected clock, with one allowance for all.
                options={
                    "require": ["exp", "sub", "sid", "iss", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except (jwt.PyJWTError, TypeError, ValueError) as exc:
            # The exception class says enough (bad signature, wrong key type); its text may echo claims.
            raise Unauthenticated(f"bearer token rejected ({exc.__class__.__name__})") from None
        return TokenClaims(*_subject(claims), self._lifetime(claims), auth_method(claims.get("amr"))), kid

    def _lifetime(self, claims: dict[str, Any]) -> datetime:
        """The token's expiry, once its time claims are numbers that make sense now (RFC 7519: a
        NumericDate is a number; a numeric string is not one)."""
        now, leeway = self._clock.now(), self._leeway
        times: dict[str, datetime] = {}
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Unauthenticated(f"bearer token has a non-numeric {name}")
            try:
                times[name] = datetime.fromtimestamp(value, tz=UTC)
            except (ValueError, OverflowError, OSError):
                raise Unauthenticated(f"bearer token has an invalid {name}") from None
        for name in ("iat", "nbf"):
            if name in times and times[name] > now + leeway:
                raise Unauthenticated(f"bearer token is not valid yet ({name} in the future)")
        issued = times.get("iat", now)
        if times["exp"] - issued > MAX_TOKEN_LIFETIME:
            raise Unauthenticated(
                f"bearer token lives longer than {MAX_TOKEN_LIFETIME.total_seconds() / 3600:.0f} hours"
            )
        return times["exp"]

    def close(self) -> None:
        if self._jwks is not None:
            self._jwks.close()


def claimed_employee(token: str) -> str | None:
    """The employee number a token names, WITHOUT verifying it: only to say, on the audit trail,
    whom a refused token claimed to be. None if it names none that could be an employee number."""
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError):
        return None
    return sub if isinstance(sub, str) and _EMPLOYEE_ID.fullmatch(sub) else None


_EMPLOYEE_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_SESSION_ID = re.compile(r"[\x21-\x7e]{1,64}")


# RFC 8176 authentication method references, strongest first: a key held in hardware or software
# (WebAuthn, smart card), a face match, a one-time code, a password.
_AMR = (
    (frozenset({"hwk", "swk", "sc"}), AuthMethod.WEBAUTHN),
    (frozenset({"face"}), AuthMethod.FACE),
    (frozenset({"otp"}), AuthMethod.TOTP),
    (frozenset({"pwd"}), AuthMethod.PASSWORD),
)


def auth_method(amr: Any) -> AuthMethod:
    """The session's sign-in method from a token's ``amr`` claim: its strongest known factor, or
    ``sso`` (the provider vouched, the factors unknown) when the claim is absent or malformed. The
    login body once said this, which let a renter record a hardware key for a borrowed password."""
    if not isinstance(amr, list) or not all(isinstance(v, str) for v in amr):
        return AuthMethod.SSO
    said = set(amr)
    return next((method for values, method in _AMR if said & values), AuthMethod.SSO)


def _subject(claims: dict[str, Any]) -> tuple[str, str]:
    """(employee id, session id): an employee number and a printable session id, or 401. Neither is
    echoed: a token's text is the client's, and a 5,000-character ``sub`` is no one's number."""
    sub, sid = claims.get("sub"), claims.get("sid")
    if not isinstance(sub, str) or not _EMPLOYEE_ID.fullmatch(sub):
        raise Unauthenticated("bearer token's sub is not an employee number (1 to 64 of A-Z a-z 0-9 _ . : -)")
    if not isinstance(sid, str) or not _SESSION_ID.fullmatch(sid):
        raise Unauthenticated("bearer token's sid is not a session id (1 to 64 printable ASCII characters)")
    return sub, sid


class DevIssuer:
    """The built-in development token issuer: stands in for the company's SSO in the demo and tests."""

    def __init__(self, key: bytes, *, issuer: str, audience: str) -> None:
        self._key = key
        self.issuer = issuer
        self.audience = audience

    def issue(
        self,
        employee_id: str,
        *,
        now: datetime,
        ttl: timedelta = timedelta(hours=10),
        amr: tuple[str, ...] = (),
        session_id: str | None = None,
    ) -> tuple[str, str]:
        """A token for a new session of ``employee_id`` (``amr``: the RFC 8176 methods the
        provider would assert, none by default); returns (token, session id). With ``session_id``,
        a renewed token of that session instead, as a provider's token refresh gives."""
        session_id = session_id or "s_" + secrets.token_urlsafe(12)
        token = jwt.encode(
            {
                "iss": self.issuer,
                "aud": self.audience,
                "sub": employee_id,
                "sid": session_id,
                "iat": int(now.timestamp()),
                "exp": int((now + ttl).timestamp()),
                **({"amr": list(amr)} if amr else {}),
            },
            self._key,
            algorithm=DEV_ALGORITHM,
        )
        return token, session_id


def _instant(value: datetime | str) -> datetime:
    """A timestamp column as the driver returns it (PostgreSQL: an aware datetime; SQLite: the
    text SQLAlchemy stored, naive UTC) as an aware UTC datetime."""
    return utc(value if isinstance(value, datetime) else datetime.fromisoformat(value))


class SessionStore:
    """Sessions Courier Guard knows about; revocation and age are checked on every request."""

    def __init__(
        self,
        engine: Engine,
        *,
        tenant: str,
        seals: RowSeals,
        max_age: timedelta = SESSION_MAX_AGE,
        max_idle: timedelta = SESSION_MAX_IDLE,
    ) -> None:
        if max_age <= timedelta(0):
            raise ValueError("a session's longest life must be positive")
        if max_idle <= TOUCH_EVERY:
            raise ValueError(f"a session's longest idle time must be over {TOUCH_EVERY}")
        self.engine = engine
        self.tenant = tenant
        self.seals = seals
        self.max_age = max_age
        self.max_idle = max_idle
        self.last_use = LastUse(engine, tenant)
        self._caller_query = DriverQuery(engine, _CALLER_SQL)
        self._caller_with_waybill_query = DriverQuery(engine, _CALLER_WITH_WAYBILL_SQL)
        self._caller_with_parties_query = {
            # A reveal's sealed parties (nothing is decrypted here); a view's masked view.
            "sealed": DriverQuery(engine, _caller_with_parties_sql(SEALED_COLUMNS)),
            "masked": DriverQuery(engine, _caller_with_parties_sql(MASKED_COLUMNS)),
        }

    def open(self, session_id: str, employee: str, device_id: str, auth: str, now: datetime) -> SessionRecord:
        with self.engine.begin() as conn:
            row = conn.execute(select(sessions).where(sessions.c.id == session_id)).first()
            if row is not None:
                if row.employee != employee or row.tenant != self.tenant:
                    raise Unauthenticated("session belongs to another account")
                self.seals.check_row("sessions", row)
                if row.revoked_at is not None:
                    raise Unauthenticated("session has been revoked; sign in again")
                self.check_age(utc(row.created_at), now)  # a renewed token resumes no expired session
                self.check_idle(self.last_seen(session_id, utc(row.last_seen)), now)
                conn.execute(  # resuming is a use; only forward, as every write of it
                    update(sessions)
                    .where(
                        sessions.c.id == session_id,
                        sessions.c.tenant == self.tenant,
                        sessions.c.last_seen < now,
                    )
                    .values(last_seen=now)
                )
            else:
                conn.execute(
                    insert(sessions).values(
                        id=session_id,
                        tenant=self.tenant,
                        employee=employee,
                        device_id=device_id,
                        auth=auth,
                        created_at=now,
                        last_seen=now,
                    )
                )
                self._reseal(conn, session_id)
        return self.get(session_id)

    def check_age(self, signed_in_at: datetime | None, now: datetime) -> None:
        """Refuse a session opened ``max_age`` or longer ago: the employee signs in again, and the
        identity provider's new sign-in brings a new session id."""
        if signed_in_at is None or now - signed_in_at >= self.max_age:
            hours = self.max_age.total_seconds() / 3600
            raise Unauthenticated(
                f"session expired (sessions last {hours:g} hours from sign-in); sign in again"
            )

    def last_seen(self, session_id: str, stored: datetime | None) -> datetime | None:
        """The session's last use: ``stored`` (read with it), or a later one noted and not yet written."""
        return self.last_use.of(session_id, stored)

    def check_idle(self, last_seen: datetime | None, now: datetime) -> None:
        """Refuse a session unused for ``max_idle`` or longer (its last use is known to the minute)."""
        if last_seen is None or now - last_seen >= self.max_idle:
            minutes = self.max_idle.total_seconds() / 60
            raise Unauthenticated(f"session expired (unused for {minutes:g} minutes); sign in again")

    def touch(self, session_id: str, last_seen: datetime | None, now: datetime) -> None:
        """Note that the session is in use, when its last use (:meth:`last_seen`) is a minute old
        or more; written off the request path (:mod:`courierguard.gateway.last_use`).

        ``last_seen`` is not sealed: a DBA who moves it forward keeps an idle session alive, but
        never past the sealed sign-in time's ``max_age``."""
        if last_seen is not None and now - last_seen < TOUCH_EVERY:
            return
        self.last_use.note(session_id, now)

    def close(self) -> None:
        """Write the last uses noted and not yet written."""
        self.last_use.close()

    def _reseal(self, conn: Connection, session_id: str) -> None:
        self.seals.reseal(conn, sessions, and_(sessions.c.id == session_id, sessions.c.tenant == self.tenant))

    def _active(self, session_id: str, row: Any) -> ActiveCaller:
        """The caller's statement's row, the session's seal checked: a revocation a DBA undid, or a
        step-up a DBA wrote, is refused (503 ``row_unsealed``)."""
        (
            employee, revoked_at, revoked_reason, role, org_unit, status, status_reason, mac, auth, device_id,
            created_at, step_up_at, session_mac, last_seen,
        ) = row[:_CALLER_COLUMNS]  # fmt: skip
        self.seals.check(
            "sessions",
            (
                self.tenant,
                session_id,
                employee,
                device_id,
                auth,
                created_at,
                step_up_at,
                revoked_at,
                revoked_reason,
            ),
            session_mac,
            f"{self.tenant}/{session_id}",
        )
        return ActiveCaller(
            session_id,
            employee,
            revoked_reason,
            revoked_at is not None,
            role,
            org_unit,
            status,
            status_reason,
            mac,
            _AUTH_METHODS.get(auth, AuthMethod.SSO),
            _instant(created_at),
            None if last_seen is None else _instant(last_seen),
        )

    def get(self, session_id: str) -> SessionRecord:
        with self.engine.connect() as conn:
            row = conn.execute(_SESSION, {"id": session_id, "tenant": self.tenant}).first()
        if row is None:
            raise Unauthenticated("unknown session; sign in first")
        self.seals.check_row("sessions", row)
        return SessionRecord(
            row.id,
            row.employee,
            row.device_id,
            utc(row.created_at),
            utc(row.last_seen),
            utc_or_none(row.step_up_at),
            utc_or_none(row.revoked_at),
            row.revoked_reason,
        )

    def caller(self, session_id: str) -> ActiveCaller:
        """The session with its employee's role, unit and status: one query on every request."""
        rows = self._caller_query.fetch(self.engine, (session_id, self.tenant))
        if not rows:
            raise Unauthenticated("unknown session; sign in first")
        return self._active(session_id, rows[0])

    def caller_with_waybill(
        self, session_id: str, number: str, *, parties: PartyRead | None = None
    ) -> tuple[ActiveCaller, WaybillRead]:
        """:meth:`caller`, and the facts rows of waybill ``number`` from the same statement; with
        ``parties``, its sealed (a reveal's) or masked (a view's) rows too, so that the request
        needs no statement of its own for them."""
        if parties is None:
            rows = self._caller_with_waybill_query.fetch(self.engine, (number, session_id, self.tenant))
            if not rows:
                raise Unauthenticated("unknown session; sign in first")
            return self._active(session_id, rows[0]), WaybillRead(
                number, [row[_CALLER_COLUMNS:] for row in rows]
            )
        rows = self._caller_with_parties_query[parties].fetch(self.engine, (number, session_id, self.tenant))
        if not rows:
            raise Unauthenticated("unknown session; sign in first")
        # The join repeats each case row once per party and each party row once per case.
        facts = list(dict.fromkeys(tuple(row[_CALLER_COLUMNS:_FACTS_END]) for row in rows))
        if parties == "masked":
            # A row of its own for the waybill even without parties: the vault reads its columns.
            masked = list(dict.fromkeys(tuple(row[_FACTS_END:]) for row in rows))
            return self._active(session_id, rows[0]), WaybillRead(number, facts, masked=masked)
        sealed = {row[_FACTS_END]: row[_FACTS_END:] for row in rows if row[_FACTS_END] is not None}
        return self._active(session_id, rows[0]), WaybillRead(number, facts, list(sealed.values()))

    def mark_stepped_up(self, session_id: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            updated = conn.execute(
                update(sessions)
                .where(sessions.c.id == session_id, sessions.c.tenant == self.tenant)
                .values(step_up_at=now)
            )
            if updated.rowcount:
                self._reseal(conn, session_id)

    def revoke(self, session_id: str, now: datetime, reason: str) -> None:
        with self.engine.begin() as conn:
            updated = conn.execute(
                update(sessions)
                .where(
                    sessions.c.id == session_id,
                    sessions.c.tenant == self.tenant,
                    sessions.c.revoked_at.is_(None),
                )
                .values(revoked_at=now, revoked_reason=reason)
            )
            if updated.rowcount:
                self._reseal(conn, session_id)

    def revoke_all(self, employee: str, now: datetime, reason: str) -> int:
        """End every open session of ``employee``; each is resealed as it is revoked. How many ended."""
        with self.engine.begin() as conn:
            open_ids = (
                conn.execute(
                    select(sessions.c.id).where(
                        sessions.c.tenant == self.tenant,
                        sessions.c.employee == employee,
                        sessions.c.revoked_at.is_(None),
                    )
                )
                .scalars()
                .all()
            )
            for session_id in open_ids:
                conn.execute(
                    update(sessions)
                    .where(sessions.c.id == session_id, sessions.c.tenant == self.tenant)
                    .values(revoked_at=now, revoked_reason=reason)
                )
                self._reseal(conn, session_id)
        return len(open_ids)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    sealed: bool = True
    """Whether the row carries a valid seal: a key without one was written without the seal key
    (a DBA's INSERT or UPDATE) and is refused, whatever ``revoked_at`` says."""


class ApiKeys:
    """API keys of service accounts. The secret is shown once; the database keeps its SHA-256.

    Every row is sealed (:mod:`courierguard.db.rowseal`): a row a DBA inserts with the hash of a
    secret of their choosing, or a revoked key whose ``revoked_at`` they cleared, is refused."""

    def __init__(self, engine: Engine, *, tenant: str, seals: RowSeals) -> None:
        self.engine = engine
        self.tenant = tenant
        self.seals = seals

    def create(self, name: str, now: datetime) -> tuple[ApiKeyRecord, str]:
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = {
            "id": key_id,
            "tenant": self.tenant,
            "name": name,
            "key_hash": hashlib.sha256(secret.encode()).digest(),
            "created_at": now,
            "revoked_at": None,
        }
        with self.engine.begin() as conn:
            conn.execute(insert(api_keys).values(**row))
            self._reseal(conn, key_id)
        return ApiKeyRecord(key_id, name), f"{API_KEY_PREFIX}{key_id}_{secret}"

    def verify(self, presented: str) -> ApiKeyRecord:
        """The key's record; :class:`Unauthenticated` for a wrong secret, an unknown id or a revoked
        key; :class:`RowIntegrityError` (503 ``row_unsealed``, logged with the key's id, never the
        secret) when the secret matches a row without a valid seal. The seal is checked only once
        the secret matched, so a caller without it learns nothing about any row."""
        if not presented.startswith(API_KEY_PREFIX) or presented.count("_") < 2:
            raise Unauthenticated("malformed API key")
        key_id, _, secret = presented[len(API_KEY_PREFIX) :].partition("_")
        with self.engine.connect() as conn:
            row = conn.execute(_API_KEY, {"id": key_id, "tenant": self.tenant}).first()
        # Compare even when the id is unknown, so timing does not tell which ids exist.
        expected = row.key_hash if row is not None else b"\x00" * 32
        if not hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), expected) or row is None:
            raise Unauthenticated("API key rejected")
        self.seals.check_row("api_keys", row)
        if row.revoked_at is not None:
            raise Unauthenticated("API key has been revoked")
        return ApiKeyRecord(row.id, row.name)

    def revoke(self, key_id: str, now: datetime) -> ApiKeyRecord:
        """Revoke a key: refused from the next request on. Revoking it again changes nothing.

        A row without a valid seal is refused (:class:`RowIntegrityError`), never re-sealed: it is
        refused already; delete it (``docs/deployment.md``)."""
        key = (api_keys.c.id == key_id) & (api_keys.c.tenant == self.tenant)
        with self.engine.begin() as conn:
            if conn.dialect.name == "sqlite":  # take the write lock first: the read then stays current
                conn.execute(update(api_keys).where(key).values(mac=api_keys.c.mac))
                row = conn.execute(select(api_keys).where(key)).first()
            else:
                row = conn.execute(select(api_keys).where(key).with_for_update()).first()
            if row is None:
                raise NotFound(f"API key {key_id} not found")
            self.seals.check_row("api_keys", row)
            if row.revoked_at is None:
                conn.execute(update(api_keys).where(key).values(revoked_at=now))
                self._reseal(conn, key_id)
        return ApiKeyRecord(row.id, row.name)

    def _reseal(self, conn: Connection, key_id: str) -> None:
        self.seals.reseal(conn, api_keys, and_(api_keys.c.id == key_id, api_keys.c.tenant == self.tenant))

    def info(self, key_id: str) -> ApiKeyInfo:
        """One key of the tenant (never the secret, which is not stored); NotFound if none has that id."""
        with self.engine.connect() as conn:
            row = conn.execute(_API_KEY, {"id": key_id, "tenant": self.tenant}).first()
        if row is None:
            raise NotFound(f"API key {key_id} not found")
        return self._info(row)

    def listing(self) -> list[ApiKeyInfo]:
        """Every key of the tenant, oldest first (never the secret, which is not stored)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(api_keys)
                .where(api_keys.c.tenant == self.tenant)
                .order_by(api_keys.c.created_at, api_keys.c.id)
            ).all()
        return [self._info(r) for r in rows]

    def _info(self, row: Any) -> ApiKeyInfo:
        sealed = self.seals.valid("api_keys", values_of("api_keys", row._mapping), row.mac)
        return ApiKeyInfo(row.id, row.name, utc(row.created_at), utc_or_none(row.revoked_at), sealed)


# Checked on every service request: built once with bound parameters.
_API_KEY = select(api_keys).where(api_keys.c.id == bindparam("id"), api_keys.c.tenant == bindparam("tenant"))


class Devices:
    """Devices bound to an account, each with a TOTP seed encrypted by the vault."""

    def __init__(self, engine: Engine, vault: Vault, *, tenant: str) -> None:
        self.engine = engine
        self.vault = vault
        self.tenant = tenant

    def bound(self, employee: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(devices.c.device_id).where(
                        devices.c.tenant == self.tenant, devices.c.employee == employee
                    )
                ).scalars()
            )

    def remove(self, employee: str, device_ids: list[str]) -> list[str]:
        """Unbind ``device_ids`` from ``employee``, their TOTP seeds with them (a lost or replaced
        phone); returns the ids that were bound and are now removed, in the order given."""
        if not device_ids:
            return []
        with self.engine.begin() as conn:
            removed = set(
                conn.execute(
                    delete(devices)
                    .where(
                        devices.c.tenant == self.tenant,
                        devices.c.employee == employee,
                        devices.c.device_id.in_(device_ids),
                    )
                    .returning(devices.c.device_id)
                ).scalars()
            )
        return [d for d in device_ids if d in removed]

    def bind(self, employee: str, device_id: str, now: datetime) -> str:
        """Bind ``device_id`` to ``employee`` and return its new TOTP seed (base32), shown once."""
        seed = pyotp.random_base32()
        sealed = self.vault.seal_secret(f"totp:{employee}:{device_id}", seed.encode())
        with self.engine.begin() as conn:
            result = conn.execute(
                update(devices)
                .where(
                    devices.c.tenant == self.tenant,
                    devices.c.employee == employee,
                    devices.c.device_id == device_id,
                )
                .values(totp_ct=sealed, bound_at=now, last_step=None)
            )
            if not result.rowcount:
                conn.execute(
                    insert(devices).values(
                        tenant=self.tenant,
                        employee=employee,
                        device_id=device_id,
                        bound_at=now,
                        totp_ct=sealed,
                    )
                )
        return seed

    def verify_code(self, employee: str, code: str, now: datetime) -> bool:
        """True if ``code`` is the TOTP of a device bound to ``employee`` (±1 step) and newer than
        the last code that device had accepted: each code works once (RFC 6238 §5.2)."""
        if not code.isdigit() or len(code) != 6:
            return False
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(devices.c.device_id, devices.c.totp_ct).where(
                    devices.c.tenant == self.tenant, devices.c.employee == employee
                )
            ).all()
        for row in rows:
            if row.totp_ct is None:
                continue
            seed = self.vault.open_secret(f"totp:{employee}:{row.device_id}", row.totp_ct).decode()
            step = _matching_step(pyotp.TOTP(seed), code, now)
            if step is not None and self._use_step(employee, row.device_id, step):
                return True
        return False

    def _use_step(self, employee: str, device_id: str, step: int) -> bool:
        """Mark ``step`` used on the device; False if it (or a later one) was used already.

        One conditional UPDATE, so two requests racing with the same code cannot both win."""
        with self.engine.begin() as conn:
            used = conn.execute(
                update(devices)
                .where(
                    devices.c.tenant == self.tenant,
                    devices.c.employee == employee,
                    devices.c.device_id == device_id,
                    (devices.c.last_step.is_(None)) | (devices.c.last_step < step),
                )
                .values(last_step=step)
            ).rowcount
        return bool(used)


def _matching_step(totp: pyotp.TOTP, code: str, now: datetime) -> int | None:
    """The time step (the one before, this one or the next) whose code is ``code``, or None."""
    for drift in (-1, 0, 1):
        moment = now + timedelta(seconds=drift * totp.interval)
        if hmac.compare_digest(totp.at(moment), code):
            return int(totp.timecode(moment))
    return None
