"""The public event contracts: Access Event v1 and Risk Decision v1.

These models mirror ``shared/schemas/access-event.v1.schema.json`` and
``shared/schemas/risk-decision.v1.schema.json`` exactly; a test checks every model against the JSON
schemas. Unknown properties are accepted and ignored (the schema requires it), absent optional
properties stay ``None`` and are left out when an event is written.
"""

from __future__ import annotations

import os
import re
import threading
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator


class Action(StrEnum):
    """What was attempted. ``source:subject``-style names, exactly the schema's enum."""

    AUTH_LOGIN = "auth.login"
    AUTH_LOGIN_FAILED = "auth.login_failed"
    AUTH_LOGOUT = "auth.logout"
    AUTH_STEP_UP = "auth.step_up"
    AUTH_STEP_UP_FAILED = "auth.step_up_failed"
    AUTH_DEVICE_BOUND = "auth.device_bound"
    WAYBILL_VIEW = "waybill.view"
    WAYBILL_LIST = "waybill.list"
    WAYBILL_SEARCH = "waybill.search"
    WAYBILL_REVEAL = "waybill.reveal"
    WAYBILL_EXPORT = "waybill.export"
    WAYBILL_PRINT = "waybill.print"
    NUMBER_CALL = "number.call"
    ADMIN_CHANGE = "admin.change"


class Role(StrEnum):
    COURIER = "courier"
    OUTLET_CLERK = "outlet_clerk"
    OUTLET_MANAGER = "outlet_manager"
    HUB_OPERATOR = "hub_operator"
    CUSTOMER_SERVICE = "customer_service"
    SECURITY_OFFICER = "security_officer"
    AUDITOR = "auditor"
    ADMIN = "admin"
    SERVICE = "service"


class PiiField(StrEnum):
    """The six personal-data fields of a waybill."""

    SENDER_NAME = "sender.name"
    SENDER_PHONE = "sender.phone"
    SENDER_ADDRESS = "sender.address"
    RECIPIENT_NAME = "recipient.name"
    RECIPIENT_PHONE = "recipient.phone"
    RECIPIENT_ADDRESS = "recipient.address"

    @property
    def party(self) -> str:
        return self.value.split(".", 1)[0]

    @property
    def attribute(self) -> str:
        return self.value.split(".", 1)[1]


class WaybillStatus(StrEnum):
    CREATED = "created"
    AWAITING_PICKUP = "awaiting_pickup"
    PICKED_UP = "picked_up"
    IN_TRANSIT = "in_transit"
    AT_DESTINATION = "at_destination"
    OUT_FOR_DELIVERY = "out_for_delivery"
    IN_LOCKER = "in_locker"
    DELIVERED = "delivered"
    REFUSED = "refused"
    RETURNED = "returned"
    EXCEPTION = "exception"


class QueryKind(StrEnum):
    BY_PHONE = "by_phone"
    BY_NAME = "by_name"
    BY_WAYBILL_PREFIX = "by_waybill_prefix"
    BY_ORG_UNIT = "by_org_unit"
    BY_STATUS = "by_status"
    OTHER = "other"


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    CHALLENGE = "challenge"


class AuthMethod(StrEnum):
    PASSWORD = "password"
    SSO = "sso"
    TOTP = "totp"
    WEBAUTHN = "webauthn"
    FACE = "face"
    API_KEY = "api_key"


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
"""The schemas' ``date-time`` (RFC 3339 §5.6): a full date, a full time and an offset. Python's
``fromisoformat`` and pydantic read many other ISO 8601 forms (``+0800``, ``2026-W46-3``, no
seconds), which a consumer validating against the schema refuses."""


def _require_offset(value: Any) -> Any:
    """Before parsing: a text timestamp must be RFC 3339; a datetime (the gateway's) needs an offset."""
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError("timestamp needs an offset (RFC 3339)")
        return value
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise ValueError("timestamp must be an RFC 3339 date-time with an offset")
    return value


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Actor(_Part):
    id: Annotated[str, Field(min_length=1, max_length=64)]
    kind: Literal["employee", "service"] | None = None
    role: Role | None = None
    org_unit: Annotated[str, Field(max_length=64)] | None = None


class Location(_Part):
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]


class Session(_Part):
    id: Annotated[str, Field(max_length=128)] | None = None
    device_id: Annotated[str, Field(max_length=128)] | None = None
    ip: Annotated[str, Field(max_length=45)] | None = None
    user_agent: Annotated[str, Field(max_length=512)] | None = None
    location: Location | None = None
    auth: AuthMethod | None = None


class Resource(_Part):
    type: Literal["waybill"] | None = None
    id: Annotated[str, Field(max_length=64)] | None = None
    org_unit: Annotated[str, Field(max_length=64)] | None = None
    assignee: Annotated[str, Field(max_length=64)] | None = None
    status: WaybillStatus | None = None
    status_ts: datetime | None = None
    ticket: Annotated[str, Field(max_length=64)] | None = None

    _offset = field_validator("status_ts", mode="before")(lambda v: v if v is None else _require_offset(v))


class Query(_Part):
    kind: QueryKind | None = None
    result_count: Annotated[int, Field(ge=0)] | None = None
    result_ids: Annotated[tuple[str, ...], Field(max_length=10000)] | None = None


class EventOutcome(_Part):
    decision: Outcome | None = None
    reason: Annotated[str, Field(max_length=256)] | None = None


class AccessEvent(_Part):
    """One access to, or attempt on, customer personal data or an account (Access Event v1)."""

    v: Literal[1] = 1
    id: Annotated[str, Field(min_length=1, max_length=128)]
    ts: datetime
    tenant: Annotated[str, Field(max_length=64)] | None = None
    actor: Actor
    session: Session | None = None
    action: Action
    resource: Resource | None = None
    query: Query | None = None
    fields: tuple[PiiField, ...] | None = None
    purpose: Annotated[str, Field(max_length=128)] | None = None
    outcome: EventOutcome | None = None

    _offset = field_validator("ts", mode="before")(_require_offset)

    @field_validator("fields")
    @classmethod
    def _unique_fields(cls, value: tuple[PiiField, ...] | None) -> tuple[PiiField, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("fields must be unique")
        return value

    def to_json(self) -> bytes:
        """One JSON Lines record (no trailing newline), optional properties left out when absent."""
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def from_json(cls, line: str | bytes) -> AccessEvent:
        return cls.model_validate_json(line)


# ``admin.change`` purposes that name the employee whose account the change is about, and how many
# ``:``-separated fields follow the id (a status, an org unit, a ticket, a role and an approval; none of
# which holds a ``:``). Other purposes (``org_unit.put``, ``approval.*``, ``audit.search``) are about
# no employee. docs/events.md lists them; the audit trail files entries under the employee named, and
# risk control learns an account's departure or device reset from them.
_SUBJECT_PURPOSES: dict[str, int] = {
    "employee.put": 0,
    "employee.left": 0,
    "employee.suspended": 0,
    "employee.reinstated": 0,
    "employee.status": 1,
    "employee.moved": 1,
    "employee.hold": 1,
    "employee.hold_lifted": 1,
    "employee.unlocked": 1,
    "sessions.revoke": 1,
    "devices.reset": 1,
    "employee.role": 2,  # <id>:<role>:<approval>
    "employee.role.request": 2,  # <id>:<role>:<approval, or - when refused before one existed>
}


def admin_change_subject(purpose: str) -> str | None:
    """The employee an ``admin.change`` purpose names (``devices.reset:E1:INC-7`` names ``E1``), or
    None for a purpose about no employee or not of the documented shape.

    Only the trailing fields are split off: ids written before employee ids lost ``:`` may hold one
    (``employee.left:E1:x`` names ``E1:x``, never ``E1``)."""
    what, sep, rest = purpose.partition(":")
    after = _SUBJECT_PURPOSES.get(what)
    if after is None or not sep:
        return None
    if after:
        parts = rest.rsplit(":", after)
        if len(parts) != after + 1:
            return None
        rest = parts[0]
    return rest or None


class RiskAction(StrEnum):
    """Graduated responses, mildest first. ``max()`` over the order picks the strongest."""

    ALLOW = "allow"
    STEP_UP = "step_up"
    THROTTLE = "throttle"
    DENY = "deny"
    LOCK = "lock"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {
    RiskAction.ALLOW: 0,
    RiskAction.STEP_UP: 1,
    RiskAction.THROTTLE: 2,
    RiskAction.DENY: 3,
    RiskAction.LOCK: 4,
}


class RiskReason(_Part):
    code: str
    detail: str | None = None


class RiskDecision(_Part):
    """What the risk engine decided about one access event (Risk Decision v1)."""

    v: Literal[1] = 1
    event_id: str
    ts: datetime
    actor_id: str
    session_id: str | None = None
    action: RiskAction
    score: Annotated[float, Field(ge=0, le=100)]
    reasons: tuple[RiskReason, ...] = ()

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def from_json(cls, line: str | bytes) -> RiskDecision:
        return cls.model_validate_json(line)


class _RandomHex:
    """Random hex strings of ``nbytes`` bytes, cut from a pool of OS randomness.

    The gateway names every Access Event it records: ``os.urandom`` per event cost a system call on
    every request, the pool one per few hundred events. The bytes are the same CSPRNG's; a forked
    child starts with an empty pool, so two processes never hand out the same bytes.
    """

    def __init__(self, nbytes: int, pool_bytes: int = 4096) -> None:
        self._n = nbytes
        self._size = pool_bytes - pool_bytes % nbytes
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._at = b"", 0

    def __call__(self) -> str:
        n = self._n
        with self._lock:
            at = self._at
            if at + n > len(self._pool):
                self._pool, at = os.urandom(self._size), 0
            self._at = at + n
            return self._pool[at : at + n].hex()


_event_id_hex = _RandomHex(10)


def new_event_id() -> str:
    """A fresh Access Event id: ``ev_`` and 80 random bits in hex."""
    return "ev_" + _event_id_hex()


def event_dict(event: AccessEvent) -> dict[str, Any]:
    """The event as plain JSON-ready data (what is hashed into the audit log and exported)."""
    return event.model_dump(mode="json", exclude_none=True)
