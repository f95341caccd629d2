"""The HTTP API (FastAPI) under ``/v1``: thin routes that parse, call one Guard method and render.

Handlers are plain ``def`` so FastAPI runs them on its thread pool: many requests then wait on the
audit log's group commit together, which is what makes fail-closed recording cheap.
"""

import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from courierguard import __version__
from courierguard.audit import EntryKind
from courierguard.company import LifecycleChange
from courierguard.db.rowseal import RowIntegrityError
from courierguard.domain import (
    Case,
    CaseKind,
    CaseState,
    Employee,
    EmployeeStatus,
    OrgUnit,
    OrgUnitKind,
    Shift,
)
from courierguard.errors import CourierGuardError, InvalidInput, Unauthenticated
from courierguard.events import AuthMethod, PiiField, Role, WaybillStatus
from courierguard.gateway import problems
from courierguard.gateway.export_csv import export_csv
from courierguard.gateway.identity import PartyRead, TokenClaims, WaybillRead, claimed_employee
from courierguard.gateway.service import (
    PURPOSE_PATTERN,
    TICKET_PATTERN,
    Approval,
    Caller,
    DeviceResetReason,
    Guard,
    Verdict,
    last_receipt,
)
from courierguard.gateway.wiring import Deployment
from courierguard.logging import log_request
from courierguard.vault import MaskedParty, MaskedWaybill
from courierguard.vault.normalize import contains_phone

T = TypeVar("T")

NUMBER = r"^[A-Z]{2}\d{13}$"
ID = r"^[A-Za-z0-9_.:\-]{1,64}$"
TEXT = r"^[^\x00]*$"
"""Free text: anything but NUL, which PostgreSQL cannot store and no person types."""
BLANK = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
"""What Python's ``str.strip()`` removes (``str.isspace``), as a regex class body written with escapes
that JSON Schema, Python and pydantic's Rust engine read alike (their ``\\s`` differ)."""
STATED = rf"^[^\x00]*[^\x00{BLANK}][^\x00]*$"
"""Free text that says something: :data:`TEXT` with a character that is not blank."""
PURPOSE = PURPOSE_PATTERN
APPROVAL = r"^ap_[0-9a-f]{16}$"
TICKET = TICKET_PATTERN
LOCATION = r"^-?(90(\.0+)?|[1-8]?\d(\.\d+)?),-?(180(\.0+)?|(1[0-7]\d|[1-9]?\d)(\.\d+)?)$"
LOCATION_RE = re.compile(LOCATION)
DEVICE_ID = r"^[!-~]([ -~]{0,126}[!-~])?$"
"""Printable ASCII, 1 to 128 characters, no blank at either end (HTTP strips those anyway)."""
DEVICE_ID_RE = re.compile(DEVICE_ID)
PATTERN_RULES = {
    NUMBER: "must be a waybill number: two capital letters and 13 digits",
    ID: "must be 1 to 64 letters, digits or the characters _ . : -",
    TEXT: "must not contain NUL characters",
    STATED: "must say something (not only blanks) and not contain NUL characters",
    LOCATION: "must be 'lat,lon' in decimal degrees",
    PURPOSE: "must be a purpose code: lowercase letters and _, such as delivery_contact",
    APPROVAL: "must be an approval id: ap_ and 16 hexadecimal digits",
    TICKET: "must be a ticket, case or alert reference: up to 40 letters, digits or _ . -",
}
"""Each input pattern's rule in words, for the problem JSON of a value that breaks it."""


# --- wire models --------------------------------------------------------------------------------------


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    reason: str
    field: str | None = None
    retry_after: int | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (401, 403, 404, 409, 413, 422, 429, 500, 503)
}


def _representable_in_utc(value: datetime) -> datetime:
    # "9999-12-31T23:59:59-23:59" parses, but is past the last instant Python can hold in UTC.
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range") from None
    return value


Instant = Annotated[datetime, AfterValidator(_representable_in_utc)]
"""A timestamp that converts to UTC (whether it needs an offset is the route's rule)."""


def _no_phone(hint: str) -> AfterValidator:
    """For text kept in clear on the trail for years (and in the SIEM's copy), beyond the reach of
    crypto-shredding: anything written like a phone number is refused, ``hint`` saying what to write."""

    def check(value: str) -> str:
        if contains_phone(value):
            raise ValueError(f"must not hold a phone number{hint}")
        return value

    return AfterValidator(check)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartyOut(BaseModel):
    name: str | None
    phone: str | None
    address: str | None


class WaybillOut(BaseModel):
    number: str
    origin_outlet: str
    dest_outlet: str
    routing_code: str
    status: WaybillStatus
    status_ts: datetime
    assignee: str | None
    task: str | None
    created_at: datetime
    delivered_at: datetime | None
    sender: PartyOut | None = None
    recipient: PartyOut | None = None


class PageOut(BaseModel):
    items: list[WaybillOut]
    next_cursor: str | None


class RevealIn(_In):
    # Unique, as the OpenAPI document says (``uniqueItems``); a repeat is refused with a clear 422.
    fields: Annotated[
        list[PiiField], Field(min_length=1, max_length=6, json_schema_extra={"uniqueItems": True})
    ]
    purpose: Annotated[str, Field(min_length=1, max_length=64, pattern=PURPOSE)]
    approval: Annotated[str | None, Field(pattern=APPROVAL)] = None


class RevealOut(BaseModel):
    number: str
    fields: dict[str, str]


class SearchIn(_In):
    phone: Annotated[str | None, Field(max_length=32)] = None
    name: Annotated[str | None, Field(max_length=64, pattern=TEXT)] = None
    number_prefix: Annotated[str | None, Field(max_length=15, pattern=r"^[A-Z0-9]+$")] = None
    org_unit: Annotated[str | None, Field(pattern=ID)] = None
    cursor: Annotated[str | None, Field(pattern=NUMBER)] = None
    page_size: Annotated[int, Field(ge=1, le=1000)] = 50


class IngestIn(_In):
    # Any item, not only objects: a record that is not one fails alone, by its index, as every other
    # bad record does (the vault names it); typed as objects, one null refused the whole batch.
    records: Annotated[list[Any], Field(min_length=1, max_length=5000)]


class RecordErrorOut(BaseModel):
    index: int
    number: str | None
    field: str
    message: str


class IngestOut(BaseModel):
    stored: list[str]
    failed: list[RecordErrorOut]


class LifecycleIn(_In):
    status: WaybillStatus
    ts: Instant | None = None
    assignee: Annotated[str | None, Field(pattern=ID)] = None


class CaseIn(_In):
    # Named by every Access Event of the ticket: one numbered by the caller's phone is refused.
    id: Annotated[str, Field(pattern=ID), _no_phone(" (a case id is kept in clear)")]
    kind: CaseKind
    waybill: Annotated[str, Field(pattern=NUMBER)]
    owner: Annotated[str, Field(pattern=ID)]


class CaseOut(BaseModel):
    id: str
    kind: CaseKind
    waybill: str
    owner: str
    state: CaseState


class ApprovalIn(_In):
    """``export``: org_unit and status scope it; ``reveal``: one waybill; ``role``: ``employee`` gets
    or loses a privileged role (admin, security_officer, auditor), no fields."""

    kind: Literal["export", "reveal", "role"]
    justification: Annotated[
        str,
        Field(min_length=10, max_length=500, pattern=STATED),
        _no_phone(": name the waybill or ticket instead"),
    ]

    fields: Annotated[list[PiiField], Field(max_length=6)] = []
    org_unit: Annotated[str | None, Field(pattern=ID)] = None
    status: WaybillStatus | None = None
    waybill: Annotated[str | None, Field(pattern=NUMBER)] = None
    employee: Annotated[str | None, Field(pattern=ID)] = None
    role: Role | None = None


class ApprovalOut(BaseModel):
    """``status``: pending, approved, rejected, or expired (a pending request not decided by
    ``decide_by``). ``expires_at``: end of an approved export's or reveal's use window (null
    otherwise); ``decide_by``: deadline of a pending or expired request (null once decided)."""

    id: str
    kind: str
    requested_by: str
    justification: Annotated[str, Field(description="Why it was asked for: what the second person weighs.")]
    status: Annotated[str, Field(description="pending, approved, rejected or expired")]
    fields: list[PiiField]
    scope: dict[str, Any]
    created_at: datetime
    decided_by: str | None
    expires_at: datetime | None
    decide_by: datetime | None = None


class ApprovalListOut(BaseModel):
    approvals: list[ApprovalOut]


class ShiftIn(_In):
    weekday: Annotated[int, Field(ge=0, le=6)]
    start: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
    end: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class EmployeeIn(_In):
    role: Role
    org_unit: Annotated[str, Field(pattern=ID)]
    status: EmployeeStatus = EmployeeStatus.ACTIVE
    shifts: Annotated[list[ShiftIn], Field(max_length=21)] = []
    name: Annotated[str | None, Field(max_length=100, pattern=TEXT)] = None


class EmployeeOut(BaseModel):
    id: str
    role: Role
    org_unit: str
    status: EmployeeStatus
    containment: Annotated[
        Literal["risk_lock", "security_hold"] | None,
        Field(
            description="What keeps the account out besides its status, and so who ends it: risk_lock "
            "(risk control's, ended by unlock), security_hold (a security officer's, lifted by reinstate); "
            "null: nothing (a suspended account without one was suspended by an admin: status)."
        ),
    ] = None


class StatusIn(_In):
    status: EmployeeStatus


class TicketIn(_In):
    """What an officer's action on an account names: the incident it belongs to."""

    ticket: Annotated[
        str,
        Field(
            pattern=TICKET,
            description="The incident, case or alert this action belongs to, e.g. INC-2026-0042 (a reference, not text).",
        ),
        _no_phone(": name the ticket or the alert"),
    ]


class DeviceResetIn(TicketIn):
    reason: DeviceResetReason


class SessionsRevokedOut(BaseModel):
    employee: str
    sessions_revoked: int


class DevicesResetOut(BaseModel):
    employee: str
    devices_removed: list[str]
    sessions_revoked: int


class OrgUnitIn(_In):
    kind: OrgUnitKind
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=STATED)]
    parent: Annotated[str | None, Field(pattern=ID)] = None
    city: Annotated[str | None, Field(max_length=64, pattern=TEXT)] = None
    lat: Annotated[float | None, Field(ge=-90, le=90)] = None
    lon: Annotated[float | None, Field(ge=-180, le=180)] = None


class OrgUnitOut(BaseModel):
    id: str
    kind: OrgUnitKind
    name: str
    parent: str | None


class LoginIn(_In):
    """``auth`` is accepted for older clients and ignored: the method comes from the token's ``amr``."""

    auth: AuthMethod = AuthMethod.SSO


class SessionOut(BaseModel):
    session_id: str
    employee: str
    role: Role
    org_unit: str
    device_bound: bool


class StepUpIn(_In):
    code: Annotated[str, Field(pattern=r"^\d{6}$")]


class DeviceOut(BaseModel):
    device_id: str
    totp_seed: str
    otpauth_uri: str


class DevTokenIn(_In):
    employee_id: Annotated[str, Field(pattern=ID)]
    amr: Annotated[list[Annotated[str, Field(pattern=r"^[a-z]{2,10}$")]], Field(max_length=8)] = []
    """RFC 8176 sign-in methods the token asserts (``pwd``, ``otp``, ``hwk``, ``face``...), as a real
    identity provider's would: the session's recorded method comes from them."""


class DevTokenOut(BaseModel):
    token: str
    session_id: str


class TreeHeadOut(BaseModel):
    tree_size: int
    root_hash: str
    timestamp: str
    signature: str


class WitnessOut(TreeHeadOut):
    public_key: str


class AuditSearchIn(_In):
    actor: Annotated[str | None, Field(pattern=ID, description="Who acted: an employee or service id.")] = (
        None
    )
    subject: Annotated[
        str | None,
        Field(
            pattern=ID,
            description="The employee whose account was acted on by someone else: suspended, reinstated, "
            "sessions revoked, devices reset, role, unit or status changed. With actor: what that actor "
            "did to this employee.",
        ),
    ] = None
    employee: Annotated[
        str | None,
        Field(
            pattern=ID,
            description="Every entry by or about this employee (actor or subject): the account's whole "
            "timeline. Not with actor or subject.",
        ),
    ] = None
    session: Annotated[
        str | None,
        Field(
            pattern=r"^[\x21-\x7e]{1,64}$",
            description="Only this session's entries and the risk alerts it drew (an alert's session_id): "
            "what the session an alert names did, served or refused. With actor or employee.",
        ),
    ] = None
    waybills: Annotated[list[Annotated[str, Field(pattern=NUMBER)]], Field(max_length=100)] = []
    phone: Annotated[str | None, Field(max_length=32)] = None
    kinds: Annotated[
        list[EntryKind],
        Field(
            max_length=6,
            description="Only entries of these kinds (access, alert, admin, policy, key, system); "
            '["alert"] is risk control\'s alert queue.',
        ),
    ] = []
    since: Instant | None = None
    until: Instant | None = None
    cursor: Annotated[int | None, Field(ge=0, le=2**63 - 1)] = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    proofs: Annotated[
        bool,
        Field(
            description="Evidence: each record carries its inclusion proof (`proof`, `proof_tree_size`) "
            "and the answer the signed tree head they lead to (`head`), in the form audit.md's "
            "`check_evidence.py` reads as saved. The head is the latest, signed for this search.",
        ),
    ] = False
    head_size: Annotated[
        int | None,
        Field(
            ge=1,
            le=2**63 - 1,
            description="With `proofs`: prove in the stored signed head of this many entries (one "
            "already held, a witness's) instead of the latest; entries appended after it carry no proof.",
        ),
    ] = None


class EvidenceHeadOut(BaseModel):
    """A signed tree head as evidence: as `courierguard audit head` and the witness file write it."""

    size: int
    root: Annotated[str, Field(description="Merkle root, hex.")]
    timestamp_ms: int
    signature: Annotated[str, Field(description="Ed25519 over the RFC 6962 TreeHeadSignature, base64.")]
    public_key: Annotated[
        str, Field(description="The key stored with the head, hex; check with the key you pinned, not this.")
    ]


class AuditPageOut(BaseModel):
    records: list[dict[str, Any]]
    next_cursor: int | None
    head: Annotated[
        EvidenceHeadOut | None, Field(description="With `proofs`: the signed tree head the proofs lead to.")
    ] = None


class ProofOut(BaseModel):
    proof: list[str]


# --- rendering ------------------------------------------------------------------------------------------


def _party(p: MaskedParty | None) -> PartyOut | None:
    return None if p is None else PartyOut(name=p.name, phone=p.phone, address=p.address)


def _waybill(m: MaskedWaybill) -> WaybillOut:
    w = m.waybill
    return WaybillOut(
        number=w.number, origin_outlet=w.origin_outlet, dest_outlet=w.dest_outlet, routing_code=w.routing_code,
        status=w.status, status_ts=w.status_ts, assignee=w.assignee, task=w.task.value if w.task else None,
        created_at=w.created_at, delivered_at=w.delivered_at, sender=_party(m.sender), recipient=_party(m.recipient),
    )  # fmt: skip


def _employee(guard: Guard, e: Employee) -> EmployeeOut:
    """An employee as every route answers it, with what keeps the account out (read now)."""
    return EmployeeOut.model_validate(
        {"id": e.id, "role": e.role, "org_unit": e.org_unit, "status": e.status,
         "containment": guard.containment(e.id)}
    )  # fmt: skip


def _approval(a: Approval) -> ApprovalOut:
    return ApprovalOut(
        id=a.id, kind=a.kind, requested_by=a.requested_by, justification=a.justification, status=a.status, fields=list(a.fields), scope=a.scope,
        created_at=a.created_at, decided_by=a.decided_by, expires_at=a.expires_at, decide_by=a.decide_by,
    )  # fmt: skip


def _location(raw: str | None) -> tuple[float, float] | None:
    if not raw:
        return None
    try:
        lat_s, lon_s = raw.split(",", 1)
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        raise InvalidInput("X-Device-Location", "must be 'lat,lon' in decimal degrees") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise InvalidInput("X-Device-Location", "is out of range")
    return lat, lon


# --- the app ---------------------------------------------------------------------------------------------


OPENAPI_URL = "/v1/openapi.json"
DOCS_FILES = "/v1/docs/static"
"""Where the docs page's Swagger UI files are served from (the app itself, never a CDN)."""


def create_app(deployment: Deployment) -> FastAPI:
    """The ASGI app for one deployment (built by :func:`courierguard.gateway.wiring.open_deployment`)."""
    guard = deployment.guard
    # The docs page's Swagger UI is served from this app, not a CDN: an officer pastes a bearer token
    # into that page, where an unpinned third-party script could read it; and it works offline.
    app = FastAPIOffline(
        title="Courier Guard",
        version=__version__,
        description="Need-to-know access to senders' and recipients' personal data, recorded and risk-controlled.",
        docs_url="/v1/docs",
        static_url=DOCS_FILES,
        favicon_url=f"{DOCS_FILES}/favicon.png",
        openapi_url=OPENAPI_URL,
        redoc_url=None,
        telemetry=None
        if deployment.core.settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    problems.install(app, pattern_rules=PATTERN_RULES)
    _document_headers(app)
    registry = CollectorRegistry()
    requests_total = Counter(
        "courierguard_http_requests",
        "HTTP requests by route and status",
        ["route", "status"],
        registry=registry,
    )
    latency = Histogram("courierguard_http_seconds", "HTTP latency by route", ["route"], registry=registry)
    Gauge(
        "courierguard_login_failures_unrecorded",
        "Refused logins beyond the per-address rate recorded on the audit trail, since start",
        registry=registry,
    ).set_function(lambda: guard.login_failures_unrecorded)
    app.state.deployment = deployment

    async def vouched(scope: Scope) -> bool:
        """Whether an ingest's credential holds, checked before its body is read: a valid API key, or
        a bearer token that verifies (an employee's ingest is then refused by the policies and
        recorded, as before). Nothing is recorded here: a request that fails gets an empty body, and
        the route's own authentication refuses and records it as it always has."""
        authorization = _identity_headers(Request(scope))[0] or ""
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        try:
            if scheme.lower() == "apikey" and credential:
                await guard.offload(guard.api_keys.verify, credential)
                return True
            if scheme.lower() == "bearer" and credential:
                await guard.offload(deployment.tokens.verify, credential)
                return True
        except CourierGuardError:
            return False
        return False

    app.add_middleware(_BodyLimit, limit=deployment.core.settings.max_body_bytes, vouched=vouched)
    app.add_middleware(_Observe, requests_total=requests_total, latency=latency)

    # Identity headers are read straight from the request, not declared as ``Header()`` parameters:
    # FastAPI re-inspects every declared parameter's annotation on every request, which cost more than
    # the policy decision. The OpenAPI document still lists them (see ``_document_headers``).
    def device_headers(
        request: Request,
    ) -> tuple[str | None, tuple[float, float] | None, str | None, str | None]:
        _, device_id, raw_location, user_agent = _identity_headers(request)
        if device_id is not None and not DEVICE_ID_RE.fullmatch(device_id):
            # Headers arrive as Latin-1: a UTF-8 id would be stored garbled, and never found again.
            raise InvalidInput("X-Device-Id", "must be 1 to 128 printable ASCII characters")
        if raw_location is not None and not LOCATION_RE.fullmatch(raw_location):
            raise InvalidInput("X-Device-Location", "must be 'lat,lon' in decimal degrees")
        ip = request.client.host if request.client else None
        return device_id, _location(raw_location), ip, user_agent

    def identify(
        authorization: str | None,
        device: tuple[str | None, tuple[float, float] | None, str | None, str | None],
        waybill: str | None = None,
        parties: PartyRead | None = None,
    ) -> tuple[Caller, WaybillRead | None]:
        """The caller; for an employee asking about ``waybill``, also its facts, read with the session
        (and with ``parties``, its sealed parties for a reveal or its masked view for a view)."""
        if not authorization:
            raise Unauthenticated("send Authorization: Bearer <token> or Authorization: ApiKey <key>")
        scheme, _, credential = authorization.partition(" ")
        device_id, location, ip, ua = device
        if scheme.lower() == "apikey":
            return guard.service_caller(credential.strip(), ip=ip), None
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("unsupported authorization scheme")
        claims = deployment.tokens.verify(credential.strip())
        if device_id is None:
            raise InvalidInput("X-Device-Id", "is required for employees")
        if waybill is None:
            who = guard.employee_caller(
                claims.employee_id,
                claims.session_id,
                device_id=device_id,
                ip=ip,
                user_agent=ua,
                location=location,
            )
            return who, None
        return guard.employee_caller_for(
            claims.employee_id, claims.session_id, waybill, device_id=device_id, ip=ip, user_agent=ua,
            location=location, parties=parties,
        )  # fmt: skip

    async def caller(request: Request) -> Caller:
        # A token check (cached) and one indexed lookup: on the loop for SQLite, where that costs less
        # than the thread hop of a sync dependency; in a worker thread for a networked database.
        authorization, device = _identity_headers(request)[0], device_headers(request)
        try:
            return (await guard.offload(identify, authorization, device))[0]
        except Unauthenticated as refused:
            await note_refused(authorization, device, refused)
            raise
        except RowIntegrityError as unsealed:
            await note_unsealed_key(device, unsealed)
            raise

    async def note_refused(
        authorization: str | None,
        device: tuple[str | None, tuple[float, float] | None, str | None, str | None],
        refused: Unauthenticated,
    ) -> None:
        """Put a refused bearer token on the trail, as a refused login is: a token replayed after its
        session was revoked, or a forged one, is evidence wherever it is tried. A request with no
        token claims no one and is not recorded; neither are API keys (no employee to name)."""
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return
        device_id, _, ip, ua = device
        held = verified_claims(credential.strip())
        await guard.request_refused_async(
            held.employee_id if held is not None else claimed_employee(credential.strip()),
            f"request:{refused.detail}", device_id=device_id, ip=ip, user_agent=ua,
            session_id=held.session_id if held is not None else None,
        )  # fmt: skip

    def verified_claims(token: str) -> TokenClaims | None:
        """A refused token's claims when its signature and times hold (its session was revoked,
        ended or idle): the entry may then name the session, which a search by session finds. An
        unverified token's session id is never recorded: a forger could file entries under another's
        session. Verified tokens are cached, so this costs nothing for the tokens it names."""
        try:
            return deployment.tokens.verify(token)
        except CourierGuardError:
            return None

    async def note_unsealed_key(
        device: tuple[str | None, tuple[float, float] | None, str | None, str | None],
        unsealed: RowIntegrityError,
    ) -> None:
        """Put an API key refused for its row's seal on the trail (``auth.login_failed``, reason
        ``row_unsealed:api_keys/<tenant>/<key id>``): the secret matched a row written without the
        seal key, a DBA's key or a revoked one revived. The secret and its hash are never recorded."""
        if unsealed.extra.get("table") != "api_keys":
            return
        device_id, _, ip, ua = device
        await guard.request_refused_async(
            None, f"{unsealed.reason}:api_keys/{unsealed.extra.get('key')}", device_id=device_id, ip=ip,
            user_agent=ua,
        )  # fmt: skip

    async def decided(
        request: Request,
        number: str,
        parties: PartyRead,
        verdict_of: Callable[[Caller, WaybillRead | None], Verdict[T]],
    ) -> T:
        """Identify the caller (reading the waybill with the session) and decide, in one call where
        database work runs, then record and settle: on a networked database one thread hop per
        request, not one for the session and another for the decision."""
        authorization, device = _identity_headers(request)[0], device_headers(request)

        def decide() -> Verdict[T]:
            return verdict_of(*identify(authorization, device, number, parties))

        try:
            verdict = await guard.offload(decide)
        except Unauthenticated as refused:
            await note_refused(authorization, device, refused)
            raise
        except RowIntegrityError as unsealed:
            await note_unsealed_key(device, unsealed)
            raise
        return await guard.settle_async(verdict)

    Who = Annotated[Caller, Depends(caller)]
    Number = Annotated[str, Path(pattern=NUMBER)]
    Ident = Annotated[str, Path(pattern=ID)]

    # --- the hot read routes, registered first: the router tries routes in order, and these two
    # take most of the traffic. They identify the caller themselves instead of through ``Depends``:
    # FastAPI inspects a dependency's callable on every request, which cost a few percent of a reveal.
    @app.get("/v1/waybills/{number}", response_model=WaybillOut, responses=ERRORS, tags=["waybills"])
    async def view(number: Number, request: Request) -> WaybillOut:
        """One waybill with masked parties (routing data only for hub operators)."""
        return _waybill(
            await decided(request, number, "masked", lambda who, read: guard.view_verdict(who, number, read))
        )

    @app.post("/v1/waybills/{number}/reveal", response_model=RevealOut, responses=ERRORS, tags=["waybills"])
    async def reveal(number: Number, body: RevealIn, request: Request) -> Response:
        """Clear text of named fields, for a stated purpose, when the caller's task explains it.

        ``X-Audit-Entry`` and ``X-Audit-Event`` name the durable audit record of this reveal.
        """
        clear = await decided(
            request, number, "sealed",
            lambda who, read: guard.reveal_verdict(
                who, number, body.fields, body.purpose, approval_id=body.approval, read=read
            ),
        )  # fmt: skip
        return _revealed(number, clear)

    # --- identity ---

    @app.post("/v1/auth/login", response_model=SessionOut, responses=ERRORS, tags=["identity"])
    def login(body: LoginIn, request: Request) -> SessionOut:
        """Open a session for the employee in the bearer token, on the device in ``X-Device-Id``."""
        device = device_headers(request)
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("send Authorization: Bearer <token>")
        device_id, location, ip, ua = device
        if device_id is None:
            raise InvalidInput("X-Device-Id", "is required")
        try:
            claims = deployment.tokens.verify(token.strip())
            session, employee = guard.login(
                claims.employee_id, claims.session_id, device_id=device_id, ip=ip, user_agent=ua,
                location=location, auth=claims.auth,
            )  # fmt: skip
        except Unauthenticated as exc:
            held = verified_claims(token.strip())
            guard.login_refused(
                held.employee_id if held is not None else claimed_employee(token.strip()),
                f"token:{exc.detail}",
                device_id=device_id,
                ip=ip,
                user_agent=ua,
                session_id=held.session_id if held is not None else None,
            )
            raise
        return SessionOut(
            session_id=session.id, employee=employee.id, role=employee.role, org_unit=employee.org_unit,
            device_bound=device_id in guard.devices.bound(employee.id),
        )  # fmt: skip

    @app.post("/v1/auth/logout", status_code=204, responses=ERRORS, tags=["identity"])
    def logout(who: Who) -> Response:
        """End this session; the token stops working on the next request."""
        guard.logout(who)
        return Response(status_code=204)

    @app.post("/v1/auth/devices", response_model=DeviceOut, responses=ERRORS, tags=["identity"])
    def bind_device(who: Who) -> DeviceOut:
        """Bind this device to the account; the TOTP seed is returned once, for the authenticator."""
        seed = guard.bind_device(who)
        uri = f"otpauth://totp/CourierGuard:{who.principal.id}?secret={seed}&issuer=CourierGuard"
        return DeviceOut(device_id=who.device_id or "", totp_seed=seed, otpauth_uri=uri)

    @app.post("/v1/auth/step-up", status_code=204, responses=ERRORS, tags=["identity"])
    def step_up(body: StepUpIn, who: Who) -> Response:
        """Confirm with a TOTP code from a bound device; lifts a pending step-up for this session."""
        guard.step_up(who, body.code)
        return Response(status_code=204)

    if deployment.dev_issuer is not None:
        dev = deployment.dev_issuer

        @app.post("/v1/dev/token", response_model=DevTokenOut, responses=ERRORS, tags=["development"])
        def dev_token(body: DevTokenIn) -> DevTokenOut:
            """UNSAFE, development only: a token for any employee. Absent when JWKS_URL is set."""
            guard.company.employee(body.employee_id)
            token, session_id = dev.issue(body.employee_id, now=guard.clock.now(), amr=tuple(body.amr))
            return DevTokenOut(token=token, session_id=session_id)

    # --- waybills ---

    @app.get("/v1/waybills", response_model=PageOut, responses=ERRORS, tags=["waybills"])
    def list_waybills(
        who: Who,
        org_unit: Annotated[str | None, Query(pattern=ID)] = None,
        status: WaybillStatus | None = None,
        cursor: Annotated[str | None, Query(pattern=NUMBER)] = None,
        page_size: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> PageOut:
        """Masked waybills of an org unit, keyset-paged (page size bounded by PAGE_SIZE_MAX)."""
        page = guard.list_waybills(who, org_unit=org_unit, status=status, cursor=cursor, page_size=page_size)
        return PageOut(items=[_waybill(m) for m in page.items], next_cursor=page.next_cursor)

    @app.post("/v1/waybills/search", response_model=PageOut, responses=ERRORS, tags=["waybills"])
    def search(body: SearchIn, who: Who) -> PageOut:
        """Masked search by phone or name (blind index) or number prefix; the query stays out of URLs."""
        page = guard.search(
            who, phone=body.phone, name=body.name, number_prefix=body.number_prefix, org_unit=body.org_unit,
            cursor=body.cursor, page_size=body.page_size,
        )  # fmt: skip
        return PageOut(items=[_waybill(m) for m in page.items], next_cursor=page.next_cursor)

    @app.post("/v1/waybills", response_model=IngestOut, responses=ERRORS, tags=["ingest"])
    def ingest(body: IngestIn, who: Who) -> IngestOut:
        """Store a batch of new waybills; each bad record fails alone and is named in ``failed``."""
        result = guard.ingest(who, body.records)
        return IngestOut(
            stored=list(result.stored),
            failed=[
                RecordErrorOut(index=f.index, number=f.number, field=f.field, message=f.message)
                for f in result.failed
            ],
        )

    @app.post("/v1/waybills/{number}/events", response_model=WaybillOut, responses=ERRORS, tags=["ingest"])
    def lifecycle(number: Number, body: LifecycleIn, who: Who) -> WaybillOut:
        """A lifecycle step from the PDA system (assignment for pickup or delivery, sign-off, ...)."""
        ts = body.ts or guard.clock.now()
        if ts.tzinfo is None:
            raise InvalidInput("ts", "needs a UTC offset")
        waybill = guard.lifecycle(who, LifecycleChange(number, body.status, ts, body.assignee))
        return _waybill(MaskedWaybill(waybill, None, None))  # routing only: the PDA system sent it

    @app.post("/v1/cases", response_model=CaseOut, status_code=201, responses=ERRORS, tags=["ingest"])
    def open_case(body: CaseIn, who: Who) -> CaseOut:
        """A customer-service ticket, return or claim case that references a waybill."""
        guard.open_case(
            who, Case(body.id, body.kind, body.waybill, body.owner, CaseState.OPEN, guard.clock.now())
        )
        return CaseOut(
            id=body.id, kind=body.kind, waybill=body.waybill, owner=body.owner, state=CaseState.OPEN
        )

    @app.post("/v1/cases/{case_id}/close", response_model=CaseOut, responses=ERRORS, tags=["ingest"])
    def close_case(case_id: Ident, who: Who) -> CaseOut:
        case = guard.close_case(who, case_id)
        return CaseOut(id=case.id, kind=case.kind, waybill=case.waybill, owner=case.owner, state=case.state)

    # --- four-eyes ---

    @app.post(
        "/v1/approvals", response_model=ApprovalOut, status_code=201, responses=ERRORS, tags=["four-eyes"]
    )
    def request_approval(body: ApprovalIn, who: Who) -> ApprovalOut:
        """Ask for a bulk export, an officer's reveal or a privileged role change; a different officer
        must approve it (a role change is made when approved)."""
        return _approval(
            guard.request_approval(
                who, kind=body.kind, justification=body.justification, fields=body.fields,
                org_unit=body.org_unit, status=body.status, waybill=body.waybill, employee=body.employee,
                role=body.role,
            )
        )  # fmt: skip

    @app.get("/v1/approvals", response_model=ApprovalListOut, responses=ERRORS, tags=["four-eyes"])
    def approvals_to_decide(who: Who, limit: Annotated[int, Query(ge=1, le=100)] = 100) -> ApprovalListOut:
        """The pending requests you may approve or reject, oldest first (nearest deadline first):
        never your own, nor a role change of your own account; empty for a role that decides none."""
        return ApprovalListOut(approvals=[_approval(a) for a in guard.approvals_to_decide(who, limit=limit)])

    @app.get("/v1/approvals/{approval_id}", response_model=ApprovalOut, responses=ERRORS, tags=["four-eyes"])
    def get_approval(approval_id: Ident, who: Who) -> ApprovalOut:
        """Its state: for its requester, officers and auditors (an admin sees only what they asked for)."""
        return _approval(guard.approval(who, approval_id))

    @app.post(
        "/v1/approvals/{approval_id}/approve",
        response_model=ApprovalOut,
        responses=ERRORS,
        tags=["four-eyes"],
    )
    def approve(approval_id: Ident, who: Who) -> ApprovalOut:
        return _approval(guard.decide_approval(who, approval_id, approve=True))

    @app.post(
        "/v1/approvals/{approval_id}/reject", response_model=ApprovalOut, responses=ERRORS, tags=["four-eyes"]
    )
    def reject(approval_id: Ident, who: Who) -> ApprovalOut:
        return _approval(guard.decide_approval(who, approval_id, approve=False))

    @app.get(
        "/v1/exports/{approval_id}/download",
        response_class=PlainTextResponse,
        responses={**ERRORS, 200: {"content": {"text/csv": {}}}},
        tags=["four-eyes"],
    )
    def download(approval_id: Ident, who: Who) -> PlainTextResponse:
        """The approved export as CSV: once, by the requester, before it expires."""
        return PlainTextResponse(
            export_csv(guard.download_export(who, approval_id)),
            media_type="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="{approval_id}.csv"',
            },
        )

    # --- administration ---

    @app.put(
        "/v1/admin/employees/{employee_id}", response_model=EmployeeOut, responses=ERRORS, tags=["admin"]
    )
    def put_employee(employee_id: Ident, body: EmployeeIn, who: Who) -> EmployeeOut:
        shifts = tuple(Shift(s.weekday, _time(s.start), _time(s.end)) for s in body.shifts)
        e = guard.put_employee(
            who, Employee(employee_id, body.role, body.org_unit, body.status, shifts, body.name)
        )
        return _employee(guard, e)

    @app.get(
        "/v1/admin/employees/{employee_id}", response_model=EmployeeOut, responses=ERRORS, tags=["admin"]
    )
    def get_employee(employee_id: Ident, who: Who) -> EmployeeOut:
        e = guard.employee_record(who, employee_id)
        return _employee(guard, e)

    @app.post(
        "/v1/admin/employees/{employee_id}/status",
        response_model=EmployeeOut,
        responses=ERRORS,
        tags=["admin"],
    )
    def set_status(employee_id: Ident, body: StatusIn, who: Who) -> EmployeeOut:
        """Suspend, reinstate or record that an employee left; sessions are revoked at once."""
        e = guard.set_employee_status(who, employee_id, body.status)
        return _employee(guard, e)

    @app.post(
        "/v1/admin/employees/{employee_id}/unlock",
        response_model=EmployeeOut,
        responses=ERRORS,
        tags=["admin"],
    )
    def unlock(employee_id: Ident, body: TicketIn, who: Who) -> EmployeeOut:
        """An officer's review ends a risk lock, naming its ticket."""
        e = guard.unlock(who, employee_id, ticket=body.ticket)
        return _employee(guard, e)

    # --- incident response (security officers) ---

    @app.post(
        "/v1/admin/employees/{employee_id}/suspend",
        response_model=EmployeeOut,
        responses=ERRORS,
        tags=["incident response"],
    )
    def suspend(employee_id: Ident, body: TicketIn, who: Who) -> EmployeeOut:
        """A security hold: suspend the account and end every session of it at once (a security
        officer; only a security officer lifts it)."""
        e = guard.suspend_account(who, employee_id, ticket=body.ticket)
        return _employee(guard, e)

    @app.post(
        "/v1/admin/employees/{employee_id}/reinstate",
        response_model=EmployeeOut,
        responses=ERRORS,
        tags=["incident response"],
    )
    def reinstate(employee_id: Ident, body: TicketIn, who: Who) -> EmployeeOut:
        """Lift a security hold after review (a security officer): the account is active again."""
        e = guard.reinstate_account(who, employee_id, ticket=body.ticket)
        return _employee(guard, e)

    @app.post(
        "/v1/admin/employees/{employee_id}/sessions/revoke",
        response_model=SessionsRevokedOut,
        responses=ERRORS,
        tags=["incident response"],
    )
    def revoke_sessions(employee_id: Ident, body: TicketIn, who: Who) -> SessionsRevokedOut:
        """End every open session of the account (a security officer); it stays active."""
        revoked = guard.revoke_sessions(who, employee_id, ticket=body.ticket)
        return SessionsRevokedOut(employee=employee_id, sessions_revoked=revoked)

    @app.post(
        "/v1/admin/employees/{employee_id}/devices/reset",
        response_model=DevicesResetOut,
        responses=ERRORS,
        tags=["incident response"],
    )
    def reset_devices(employee_id: Ident, body: DeviceResetIn, who: Who) -> DevicesResetOut:
        """A lost, stolen or replaced phone (a security officer): unbind the account's devices and
        their TOTP seeds and end its sessions; its next enrolment is a first one, judged by risk control."""
        done = guard.reset_devices(who, employee_id, reason=body.reason, ticket=body.ticket)
        return DevicesResetOut(
            employee=done.employee,
            devices_removed=done.devices_removed,
            sessions_revoked=done.sessions_revoked,
        )

    @app.put("/v1/admin/org-units/{unit_id}", response_model=OrgUnitOut, responses=ERRORS, tags=["admin"])
    def put_org_unit(unit_id: Ident, body: OrgUnitIn, who: Who) -> OrgUnitOut:
        u = guard.put_org_unit(
            who, OrgUnit(unit_id, body.kind, body.name, body.parent, body.city, body.lat, body.lon)
        )
        return OrgUnitOut(id=u.id, kind=u.kind, name=u.name, parent=u.parent)

    # --- audit ---

    @app.get("/v1/audit/head", response_model=TreeHeadOut, responses=ERRORS, tags=["audit"])
    def audit_head(who: Who) -> TreeHeadOut:
        """The latest signed tree head of the audit log."""
        guard.check_audit_reader(who, "audit.head")
        head = guard.audit.checkpoint()
        return TreeHeadOut(
            tree_size=head.size, root_hash=head.root.hex(), timestamp=head.timestamp.isoformat(),
            signature=head.signature.hex(),
        )  # fmt: skip

    @app.post(
        "/v1/audit/search",
        response_model=AuditPageOut,
        response_model_exclude_unset=True,
        responses=ERRORS,
        tags=["audit"],
    )
    def audit_search(body: AuditSearchIn, who: Who) -> AuditPageOut:
        """Who accessed what: entries by actor, by the employee acted on (subject), by either
        (employee: what an account did and what was done to it), waybills, a data subject's phone
        (blind index), time. With `proofs`, the answer is evidence: saved as it is, audit.md's
        `check_evidence.py` checks it with the pinned public key alone.

        The phone travels in the body, never the URL; the search itself is recorded.
        """
        page = guard.audit_search(
            who, actor=body.actor, subject=body.subject, employee=body.employee, session=body.session,
            waybills=body.waybills, phone=body.phone, since=body.since, until=body.until, kinds=body.kinds, cursor=body.cursor,
            limit=body.limit, proofs=body.proofs, head_size=body.head_size,
        )  # fmt: skip
        # The CLI's `audit query` output, field for field (no "head" without proofs).
        return AuditPageOut.model_validate(page.to_dict())

    @app.get("/v1/audit/witness", response_model=WitnessOut, tags=["audit"])
    def audit_witness() -> WitnessOut:
        """The latest signed tree head with the signing key, for external witnesses to poll.

        Public on purpose: a tree head is a size, a hash, a time and a signature; it names no one.
        A witness that stores heads and checks consistency between them catches a rewritten log.
        """
        head = guard.audit.tree_head()
        return WitnessOut(
            tree_size=head.size, root_hash=head.root.hex(), timestamp=head.timestamp.isoformat(),
            signature=head.signature.hex(), public_key=deployment.core.keys.signer().public_key.hex(),
        )  # fmt: skip

    @app.get("/v1/audit/proofs/inclusion", response_model=ProofOut, responses=ERRORS, tags=["audit"])
    def inclusion(
        who: Who, index: Annotated[int, Query(ge=0)], size: Annotated[int, Query(ge=1)]
    ) -> ProofOut:
        """RFC 6962 inclusion proof of entry ``index`` in the tree of ``size`` entries."""
        guard.check_audit_reader(who, "audit.proof.inclusion")
        _check_range(index < size <= guard.audit.size, "index < size <= current tree size")
        return ProofOut(proof=[h.hex() for h in guard.audit.inclusion_proof(index, size)])

    @app.get("/v1/audit/proofs/consistency", response_model=ProofOut, responses=ERRORS, tags=["audit"])
    def consistency(who: Who, old: Annotated[int, Query(ge=0)], new: Annotated[int, Query(ge=1)]) -> ProofOut:
        """RFC 6962 consistency proof between two tree sizes."""
        guard.check_audit_reader(who, "audit.proof.consistency")
        _check_range(old <= new <= guard.audit.size, "old <= new <= current tree size")
        return ProofOut(proof=[h.hex() for h in guard.audit.consistency_proof(old, new)])

    # --- operations ---

    @app.get("/healthz", tags=["operations"], responses={503: ERRORS[503]})
    def healthz() -> dict[str, str]:
        """200 while the databases answer and the audit trail takes entries; a 503 problem
        otherwise, so that a load balancer drains a worker that cannot serve (every request would
        be refused) and monitoring sees it."""
        deployment.core.check_databases()
        guard.audit.check_writable()
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)

    return app


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    # Reveals and exports carry clear text: no browser, proxy or load balancer may keep a copy.
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    # The docs page is where officers paste bearer tokens: no other site may frame it (clickjacking).
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)
"""Headers on every response the app sends, added where every response passes (:class:`_Observe`)."""


class _Observe:
    """Logs and counts every request by route template (never the concrete URL or body), and puts
    :data:`SECURITY_HEADERS` on every response.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` would cost more per request than
    the policy decision does.
    """

    def __init__(self, app: ASGIApp, *, requests_total: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests_total = requests_total
        self.latency = latency
        # Labelled children looked up once per (route, status): ``labels()`` costs microseconds.
        self._counted: dict[tuple[str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = getattr(scope.get("route"), "path", None) or _unrouted(scope["path"])
            elapsed = time.perf_counter() - start
            children = self._counted.get((path, status))
            if children is None:
                children = self.requests_total.labels(path, str(status)), self.latency.labels(path)
                self._counted[path, status] = children
            children[0].inc()
            children[1].observe(elapsed)
            log_request(scope["method"], path, status, round(elapsed * 1000, 2))


def _unrouted(path: str) -> str:
    """The label of a request no API route took: the OpenAPI document and the docs page's files are
    served by plain Starlette routes (which name no route in the scope); anything else is unmatched.
    Never the concrete URL of anything else: it could carry a number or a name."""
    if path == OPENAPI_URL:
        return path
    if path.startswith(f"{DOCS_FILES}/"):
        return DOCS_FILES
    return "unmatched"


SMALL_BODY_BYTES = 64 * 1024
"""Largest body of every route but the ingest's (``POST /v1/waybills``, up to ``MAX_BODY_BYTES``):
the largest of them (an audit search naming 100 waybills) is a few kilobytes. The body is parsed
before the caller is authenticated, and an anonymous 8 MB JSON object of 700,000 keys sent to a
search cost the event loop 1.2 s before its 401."""


class _BodyLimit:
    """Refuses a request body over its route's limit with a 413 problem: before reading any of it
    when the request declares its length, else as soon as what has arrived passes the limit. The
    limit is ``limit`` for the ingest, :data:`SMALL_BODY_BYTES` (or ``limit`` if lower) elsewhere.

    Ahead of authentication: an anonymous 100 MB body must not be read (and held) in full first.
    FastAPI's own ``max_body_size`` answers in plain text, outside the problem-JSON handlers.
    """

    def __init__(self, app: ASGIApp, *, limit: int, vouched: Callable[[Scope], Awaitable[bool]]) -> None:
        self.app = app
        self.large = limit
        self.small = min(limit, SMALL_BODY_BYTES)
        self.vouched = vouched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ingest = scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/waybills"
        limit, received = (self.large if ingest else self.small), 0
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    await self._refuse(limit, scope, receive, send)
                    return
                break
        if ingest and not await self.vouched(scope):
            # FastAPI parses a body before it authenticates: an anonymous 8 MB object of 700,000 keys
            # held the event loop 1.2-2.1 s before its 401. Unvouched, the route gets no body, and its
            # authentication answers (and records) the refusal; the body is never parsed.
            await self.app(scope, _without_body(receive), send)
            return

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise StarletteHTTPException(413, "request body too large")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body over {limit} bytes (or an unreadable Content-Length)"
        await problems.problem(413, "Request body too large", detail, "payload_too_large")(
            scope, receive, send
        )


def _without_body(receive: Receive) -> Receive:
    """``receive`` for a request whose body the app must not see: one empty body, then only the
    client's disconnect (what arrives of the body meanwhile is dropped unread)."""
    given = False

    async def empty() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message

    return empty


_PUBLIC_ROUTES = {"/healthz", "/metrics", "/v1/dev/token", "/v1/audit/witness"}


def _document_headers(app: FastAPI) -> None:
    """Lists the identity headers (read from the request, not declared) in the OpenAPI document."""
    original = app.openapi
    device_params = [
        {"name": "X-Device-Id", "in": "header", "required": False,
         "description": "Stable id of the PDA, phone or PC (required for employees).",
         "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": DEVICE_ID}},
        {"name": "X-Device-Location", "in": "header", "required": False,
         "description": "Device position: 'lat,lon' in decimal degrees.",
         "schema": {"type": "string", "maxLength": 64, "pattern": LOCATION}},
    ]  # fmt: skip

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = original()
        document.setdefault("components", {})["securitySchemes"] = {
            "employee": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "service": {"type": "apiKey", "in": "header", "name": "Authorization",
                        "description": "The whole header value: `ApiKey cgk_<id>_<secret>`"},
        }  # fmt: skip
        for path, item in document.get("paths", {}).items():
            if path in _PUBLIC_ROUTES:
                continue
            for operation in item.values():
                operation.setdefault("parameters", []).extend(device_params)
                operation["security"] = [{"employee": []}, {"service": []}]
        for item in document.get("paths", {}).values():
            for operation in item.values():
                _problems_as_served(operation)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _problems_as_served(operation: dict[str, Any]) -> None:
    """Every error is served as ``application/problem+json`` (:mod:`.problems`), but FastAPI files
    the ``Problem`` model of ``ERRORS`` under the route's own media type (``application/json``, or
    ``text/plain`` for the CSV download), leaving the served type without a schema: the document,
    the docs page and a client generated from it then describe errors no response carries."""
    for status, response in operation.get("responses", {}).items():
        content = response.get("content")
        if not str(status).startswith(("4", "5")) or not content:
            continue
        schema = next((media["schema"] for media in content.values() if "schema" in media), None)
        response["content"] = {"application/problem+json": {"schema": schema} if schema else {}}


_IDENTITY_HEADERS = {b"authorization": 0, b"x-device-id": 1, b"x-device-location": 2, b"user-agent": 3}


def _identity_headers(request: Request) -> list[str | None]:
    """Authorization, X-Device-Id, X-Device-Location and User-Agent (first of each, or None).

    One pass over the raw headers, kept on the request: ``request.headers.get`` scans them all
    again for each name, four times on every request. Names arrive lower-cased (ASGI).
    """
    found: list[str | None] | None = request.scope.get("courierguard.identity_headers")
    if found is None:
        found = [None, None, None, None]
        for name, value in request.scope["headers"]:
            slot = _IDENTITY_HEADERS.get(name)
            if slot is not None and found[slot] is None:
                found[slot] = value.decode("latin-1")
        request.scope["courierguard.identity_headers"] = found
    return found


def _time(text: str) -> Any:
    from datetime import time as dtime

    return dtime.fromisoformat(text)


def _revealed(number: str, clear: dict[PiiField, str]) -> Response:
    """A reveal's :class:`RevealOut` JSON, encoded here with the receipt headers on: a response
    model (and a ``Response`` parameter for the headers) made FastAPI validate and serialise the
    answer and merge a second response's headers on every reveal, for two strings it already has.
    The same bytes as pydantic writes them (compact, UTF-8)."""
    response = Response(
        orjson.dumps({"number": number, "fields": {f.value: v for f, v in clear.items()}}),
        media_type="application/json",
    )
    receipt = last_receipt.get()
    if receipt is not None:
        # Straight onto the raw list that ``response.headers`` wraps: each set through that view
        # re-encodes and re-scans every header, and this runs on every reveal.
        response.raw_headers.extend(
            ((b"x-audit-entry", str(receipt[0]).encode()), (b"x-audit-event", receipt[1].encode("latin-1")))
        )
    return response


def _check_range(ok: bool, rule: str) -> None:
    if not ok:
        raise InvalidInput("size", f"must satisfy {rule}")


logging.getLogger("uvicorn.access").disabled = True  # our middleware logs the route, not the raw URL
