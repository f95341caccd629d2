"""The guarded request path: every read of personal data, framework-free.

For every request the order is fixed, and each step can only narrow what is served:

1. the caller is authenticated (``identity``) and their account and session are live;
2. the task facts of the waybill are loaded and the Cedar policies decide (need-to-know);
3. the Access Event v1 about to be served is shown to the risk hook, which may step up, throttle,
   deny or lock;
4. the event, with its final outcome, is appended to the audit log and made durable;
5. only then is personal data read from the vault and returned.

If step 4 fails, nothing is served (fail-closed). Denied attempts are recorded and shown to the
risk engine too: probing is a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, insert, select, update

from courierguard.audit import AuditLog, AuditQueries, EntryKind, Page
from courierguard.clock import Clock
from courierguard.company import CompanyStore, LifecycleChange, check_employee_id
from courierguard.company.store import SECURITY_HOLD
from courierguard.config import Settings
from courierguard.db.rowseal import RowIntegrityError
from courierguard.db.tables import approvals
from courierguard.domain import Case, CaseState, Employee, EmployeeStatus, OrgUnit
from courierguard.errors import (
    AccessDenied,
    AuditUnavailable,
    Conflict,
    CourierGuardError,
    DenyReason,
    InvalidInput,
    NotFound,
    StepUpRequired,
    Throttled,
    Unauthenticated,
)
from courierguard.events import (
    AccessEvent,
    Action,
    AuthMethod,
    EventOutcome,
    Outcome,
    PiiField,
    Query,
    QueryKind,
    RiskAction,
    RiskDecision,
    Role,
    WaybillStatus,
    new_event_id,
)
from courierguard.gateway.identity import (
    ActiveCaller,
    ApiKeys,
    Devices,
    PartyRead,
    SessionRecord,
    SessionStore,
    WaybillRead,
)
from courierguard.policy import (
    PolicyAction,
    PolicyDecision,
    PolicyEngine,
    PolicyRequest,
    Principal,
    WaybillFacts,
)
from courierguard.risk.interfaces import RiskHook
from courierguard.timeutil import reported_time, utc, utc_or_none
from courierguard.vault import MaskedWaybill, Vault, VaultError, VaultFailure
from courierguard.vault.normalize import InvalidPhone, contains_phone, normalize_phone

_log = logging.getLogger(__name__)
T = TypeVar("T")

# The audit receipt of the request being handled: (leaf index, event id). The HTTP layer returns it
# in headers so a client can later prove, with an inclusion proof, that its access was recorded.
last_receipt: ContextVar[tuple[int, str] | None] = ContextVar("courierguard_audit_receipt", default=None)

RISK_LOCK_REASON = "risk_lock"
PURPOSE_PATTERN = r"^[a-z][a-z_]{0,63}$"
"""A stated purpose is a code (delivery_contact, ticket, investigation), not free text: it is kept
for years on the audit trail and exported to the SIEM, where free text gathers names and phones."""
_PURPOSE = re.compile(PURPOSE_PATTERN)
TICKET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,39}$"
"""The ticket an officer's action on an account names: an incident, case or alert reference such
as ``INC-2026-0042``, never free text (it is kept for years with the entry, beyond crypto-shredding)."""
_TICKET = re.compile(TICKET_PATTERN)
SERVICE_ORG_UNIT = "SYSTEM"
SEARCH_MATCHES_MAX = 1000
"""Waybills one phone or name search reaches, over all its pages: a person with more is a business
account, and an officer's audit search, not the masked search, is the tool for it."""
PENDING_APPROVALS_READ = 1000
"""Pending requests one listing reads: requests expire undecided within hours, so a company has a
handful at a time; a thousand means someone is filing them faster than anyone could decide."""
PENDING_PER_REQUESTER = 10
"""Requests one employee may have waiting for a decision at once. A rented manager's account filed
60 export requests in seconds: the officers' queue (oldest first) showed only them, and each was one
more chance of an outlet's export approved by a tired officer. The next waits for a decision."""


_SERVICE_ROLE = Role.SERVICE.value
_AUDIT_READERS = frozenset({Role.SECURITY_OFFICER, Role.AUDITOR})
_EMPLOYEE_READERS = frozenset({Role.ADMIN, Role.SECURITY_OFFICER, Role.AUDITOR})
_QUERY_IDS_MAX = 10_000
"""Most waybill numbers one Access Event v1 ``query.result_ids`` holds (the schema's bound)."""

SystemDetail = int | str | list[str] | None
"""A value in a system entry's body (``waybills`` lists the numbers it concerns, for search)."""


class DeviceResetReason(StrEnum):
    """Why a security officer removes an account's bound devices (the policies may narrow these)."""

    DEVICE_LOST = "device_lost"
    DEVICE_STOLEN = "device_stolen"
    DEVICE_REPLACED = "device_replaced"
    SEED_EXPOSED = "seed_exposed"
    """The authenticator's seed or QR code was shown to, or copied by, someone else."""


@dataclass(frozen=True, slots=True)
class DevicesReset:
    """What a device reset did: the devices unbound (seeds with them) and the sessions ended."""

    employee: str
    devices_removed: list[str]
    sessions_revoked: int


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller and the context of the request, as the HTTP layer saw it."""

    principal: Principal
    session_id: str | None
    device_id: str | None
    ip: str | None = None
    user_agent: str | None = None
    location: tuple[float, float] | None = None
    auth: AuthMethod = AuthMethod.SSO
    kind: str = "employee"


LOGIN_FAILURES_RECORDED_PER_MINUTE = 20
"""Refused logins recorded per client address and minute; beyond, only the metric counts them."""


class PerMinute:
    """Admits ``limit`` events per key and clock minute; remembers only the current minute's keys."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = 0
        self._minute: int | None = None
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, key: str, now: datetime) -> bool:
        minute = int(now.timestamp()) // 60
        with self._lock:
            if minute != self._minute:
                self._minute, self._counts = minute, {}
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            if count > self.limit:
                self.dropped += 1
                return False
            return True


@dataclass(slots=True)
class Verdict(Generic[T]):
    """A decided request, not yet on the record: the event to append, then what follows it.

    Deciding (policy, risk) and recording are separate steps so that one decision can be recorded
    by a blocking caller (:meth:`Guard.reveal`) or by a coroutine that awaits durability without
    parking a thread (:meth:`Guard.reveal_async`); nothing is served before the record is durable.
    """

    event: AccessEvent
    serve: Callable[[], T]
    error: CourierGuardError | None = None
    """Raised after recording: the risk hook's step-up, throttle or deny."""
    refusal: CourierGuardError | None = None
    """Raised after recording when no risk error is: the policy's deny."""
    risk_error: CourierGuardError | None = None
    """What risk control asked (step-up, throttle, deny) of an event refused before it asked."""
    lock: bool = False
    """Suspend the actor after recording (the risk hook said lock)."""
    risk_codes: tuple[str, ...] = ()
    """The reason codes of what risk control asked, for a caller that answers one of them its own way."""
    offline: bool = False
    """``serve`` needs no database: it works from rows read with the caller's session (decrypts
    them, or masks them), so a coroutine concludes on its event loop, without a thread hop."""


@dataclass(frozen=True, slots=True)
class PageResult:
    items: list[MaskedWaybill]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Approval:
    """A four-eyes request and its decision.

    ``status``: ``pending``, then ``approved`` or ``rejected``; ``expired`` once a pending request
    passed ``decide_by`` undecided (read so as soon as it is past, stored so when someone tries to
    decide it). ``expires_at`` is only ever the end of an approved export's or reveal's use window;
    ``decide_by`` only the deadline of a pending (or expired) request. The row keeps the deadline in
    its ``expires_at`` column while pending: :meth:`Guard._approval` is the one reader that tells
    the two apart, so nothing else sees a pending deadline as a download window.
    """

    id: str
    kind: str
    requested_by: str
    justification: str
    scope: dict[str, Any]
    fields: tuple[PiiField, ...]
    status: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    expires_at: datetime | None
    used_at: datetime | None
    decide_by: datetime | None = None


@dataclass
class Guard:
    """Need-to-know access to the vault, recorded and risk-controlled. One instance per deployment."""

    settings: Settings
    vault: Vault
    company: CompanyStore
    policy: PolicyEngine
    audit: AuditLog
    audit_queries: AuditQueries
    """Read access to the stored trail (the audit database, which may not be the vault's)."""
    risk: RiskHook
    sessions: SessionStore
    devices: Devices
    api_keys: ApiKeys
    clock: Clock
    on_lock: list[Callable[[str], None]] = field(default_factory=list)
    inline_database: bool = True
    _login_failures: PerMinute = field(default_factory=lambda: PerMinute(LOGIN_FAILURES_RECORDED_PER_MINUTE))
    """Run database work of the ``*_async`` methods on the event loop (see :meth:`offload`)."""

    # --- identity ----------------------------------------------------------------------------------

    def employee_caller(
        self,
        employee_id: str,
        session_id: str,
        *,
        device_id: str | None,
        ip: str | None = None,
        user_agent: str | None = None,
        location: tuple[float, float] | None = None,
    ) -> Caller:
        """The caller behind a verified token; refuses revoked sessions and inactive accounts."""
        active = self.sessions.caller(session_id)
        return self._active_caller(active, employee_id, session_id, device_id, ip, user_agent, location)

    def employee_caller_for(
        self,
        employee_id: str,
        session_id: str,
        number: str,
        *,
        device_id: str | None,
        ip: str | None = None,
        user_agent: str | None = None,
        location: tuple[float, float] | None = None,
        parties: PartyRead | None = None,
    ) -> tuple[Caller, WaybillRead]:
        """:meth:`employee_caller` for a request about waybill ``number``: its facts are read in the
        same statement as the session; hand them to :meth:`reveal_verdict` or :meth:`view_verdict`.
        ``parties``: read its sealed parties too, for a reveal (decrypted only if it is allowed,
        after its record is durable), or its masked view, for a view (served on the same terms)."""
        active, read = self.sessions.caller_with_waybill(session_id, number, parties=parties)
        return self._active_caller(active, employee_id, session_id, device_id, ip, user_agent, location), read

    def _active_caller(
        self,
        active: ActiveCaller,
        employee_id: str,
        session_id: str,
        device_id: str | None,
        ip: str | None,
        user_agent: str | None,
        location: tuple[float, float] | None,
    ) -> Caller:
        if active.employee != employee_id:
            raise Unauthenticated("session belongs to another account")
        # The role, unit and status come from the employees row: only as sealed by Courier Guard.
        self.company.seals.check(
            "employees",
            (
                self.company.tenant,
                active.employee,
                active.role,
                active.org_unit,
                active.status,
                active.status_reason,
            ),
            active.mac,
            active.employee,
        )
        if active.revoked:
            raise Unauthenticated(f"session revoked ({active.revoked_reason or 'logout'}); sign in again")
        now = self.clock.now()
        self.sessions.check_age(active.signed_in_at, now)
        last_seen = self.sessions.last_seen(session_id, active.last_seen)
        self.sessions.check_idle(last_seen, now)
        if active.status != EmployeeStatus.ACTIVE.value:
            raise AccessDenied(
                f"account {employee_id} is {active.status}", reason=DenyReason.ACCOUNT_INACTIVE
            )
        if active.role == _SERVICE_ROLE:  # service accounts are API keys, never people's sessions
            raise AccessDenied(f"account {employee_id} has the service role, which is for API keys")
        self.sessions.touch(session_id, last_seen, now)
        return Caller(
            Principal(employee_id, Role(active.role), active.org_unit, EmployeeStatus.ACTIVE),
            session_id,
            device_id,
            ip,
            user_agent,
            location,
            active.auth,
        )

    def service_caller(self, api_key: str, *, ip: str | None = None) -> Caller:
        record = self.api_keys.verify(api_key)
        principal = Principal(f"svc:{record.name}", Role.SERVICE, SERVICE_ORG_UNIT, EmployeeStatus.ACTIVE)
        return Caller(principal, None, None, ip, None, None, AuthMethod.API_KEY, "service")

    def _employee(self, employee_id: str) -> Employee:
        try:
            return self.company.employee(employee_id)
        except NotFound:
            raise Unauthenticated(f"employee {employee_id} is not known to Courier Guard") from None

    def login(
        self,
        employee_id: str,
        session_id: str,
        *,
        device_id: str,
        ip: str | None,
        user_agent: str | None,
        location: tuple[float, float] | None,
        auth: AuthMethod,
    ) -> tuple[SessionRecord, Employee]:
        """Open (or resume) a session for a verified token, recorded as ``auth.login``."""
        now = self.clock.now()
        employee = self._employee(employee_id)
        caller = Caller(
            Principal(employee.id, employee.role, employee.org_unit, employee.status),
            session_id, device_id, ip, user_agent, location, auth,
        )  # fmt: skip
        if employee.status is not EmployeeStatus.ACTIVE:
            self._record(
                self._event(caller, Action.AUTH_LOGIN_FAILED, outcome=Outcome.DENY, reason="account_inactive")
            )
            raise AccessDenied(
                f"account {employee_id} is {employee.status.value}", reason=DenyReason.ACCOUNT_INACTIVE
            )
        session = self.sessions.open(session_id, employee_id, device_id, auth.value, now)
        self._judge_now(self._event(caller, Action.AUTH_LOGIN, outcome=Outcome.ALLOW))
        return session, employee

    @property
    def login_failures_unrecorded(self) -> int:
        return self._login_failures.dropped

    def login_refused(
        self,
        claimed: str | None,
        reason: str,
        *,
        device_id: str | None,
        ip: str | None,
        user_agent: str | None,
        session_id: str | None = None,
    ) -> None:
        """Record a refused login (forged or expired token, unknown employee, a revoked session
        reused) as ``auth.login_failed``: renters retry, and each try is evidence.

        ``claimed`` is the employee the token names, unverified: the entry says whom someone tried to
        be, not who they are. At most ``LOGIN_FAILURES_RECORDED_PER_MINUTE`` per client address are
        recorded, so anonymous clients cannot flood the trail; the rest are counted in a metric.
        ``session_id``: the session of a token that verified (a revoked or ended session reused),
        so that a search by session finds the retries too; never taken from an unverified token.
        """
        event = self._refused_credential(
            claimed, reason, device_id=device_id, ip=ip, user_agent=user_agent, session_id=session_id
        )
        if event is not None:
            self._record(event)

    async def request_refused_async(
        self,
        claimed: str | None,
        reason: str,
        *,
        device_id: str | None,
        ip: str | None,
        user_agent: str | None,
        session_id: str | None = None,
    ) -> None:
        """:meth:`login_refused` for a bearer token refused on any other route (the read routes
        run on the event loop, so the record is awaited, not waited for). A revoked session's token
        tried again after an officer ended it is the evidence that matters most here."""
        event = self._refused_credential(
            claimed, reason, device_id=device_id, ip=ip, user_agent=user_agent, session_id=session_id
        )
        if event is not None:
            await self._record_async(event)

    def _refused_credential(
        self,
        claimed: str | None,
        reason: str,
        *,
        device_id: str | None,
        ip: str | None,
        user_agent: str | None,
        session_id: str | None = None,
    ) -> AccessEvent | None:
        """The ``auth.login_failed`` entry of a refused credential, or None past the address's budget."""
        if not self._login_failures.admit(ip or "-", self.clock.now()):
            return None
        return AccessEvent.model_validate(
            {
                "id": new_event_id(),
                "ts": self.clock.now(),
                "tenant": self.settings.tenant,
                "actor": {"id": claimed or "unknown", "kind": "employee"},
                "session": {
                    "id": session_id,
                    "device_id": device_id,
                    "ip": ip,
                    "user_agent": (user_agent or None) and user_agent[:512],
                },
                "action": Action.AUTH_LOGIN_FAILED,
                "outcome": {"decision": Outcome.DENY, "reason": reason[:256]},
            }
        )

    def logout(self, caller: Caller) -> None:
        if caller.session_id:
            self.sessions.revoke(caller.session_id, self.clock.now(), "logout")
        self._record(self._event(caller, Action.AUTH_LOGOUT, outcome=Outcome.ALLOW))

    def bind_device(self, caller: Caller) -> str:
        """Bind the caller's device to their account and return its TOTP seed (shown once).

        The first device of an account binds freely (enrolment); any further device only after a
        step-up on an already bound one, so a renter cannot enrol their own phone.
        """
        if caller.device_id is None:
            raise InvalidInput("X-Device-Id", "is required")
        bound = self.devices.bound(caller.principal.id)
        # Re-binding a bound device id needs the step-up too: the id is only a header, and a new
        # seed for it would hand the second factor to whoever holds the token.
        if bound:
            session = self.sessions.get(caller.session_id or "")
            if not session.stepped_up_at(self.clock.now()):
                raise self._refused(
                    caller, Action.AUTH_DEVICE_BOUND, f"device.bind:{caller.device_id}"[:128],
                    StepUpRequired(
                        "binding a device to an account that has one needs a step-up on a bound device; "
                        "if it is lost or replaced, a security officer resets the account's devices"
                    ),
                )  # fmt: skip
        device_id = caller.device_id
        # Judged by risk control and recorded before it takes effect: a session in doubt (a new
        # network at night, say) cannot enrol its device, or a renter's phone would become the
        # account's second factor.
        verdict = self._judge(
            self._event(caller, Action.AUTH_DEVICE_BOUND, outcome=Outcome.ALLOW),
            serve=lambda: self.devices.bind(caller.principal.id, device_id, self.clock.now()),
        )
        if verdict.error is not None and "enrol_while_doubted" in verdict.risk_codes:
            verdict.error = StepUpRequired(
                "this session is in doubt, so it cannot enrol a device: enrol from a device, network and "
                "working hours the account usually works from (a replaced phone is learned after a few "
                "days of ordinary use)"
            )
        return self._settle(verdict)

    def step_up(self, caller: Caller, code: str) -> None:
        """Check a TOTP code from a bound device; success lifts a pending step-up for this session."""
        now = self.clock.now()
        if not self.devices.verify_code(caller.principal.id, code, now):
            self._judge_now(self._event(caller, Action.AUTH_STEP_UP_FAILED, outcome=Outcome.DENY))
            raise Unauthenticated("step-up code rejected")
        if caller.session_id:
            self.sessions.mark_stepped_up(caller.session_id, now)
        self._judge_now(self._event(caller, Action.AUTH_STEP_UP, outcome=Outcome.ALLOW))

    # --- reads ---------------------------------------------------------------------------------------

    def view(self, caller: Caller, number: str) -> MaskedWaybill:
        """One waybill, masked; hub operators get routing data only."""
        return self._settle(self.view_verdict(caller, number))

    async def view_async(
        self, caller: Caller, number: str, *, read: WaybillRead | None = None
    ) -> MaskedWaybill:
        """:meth:`view` for an asyncio server (see :meth:`reveal_async`)."""
        return await self.settle_async(await self.offload(self.view_verdict, caller, number, read))

    def view_verdict(
        self, caller: Caller, number: str, read: WaybillRead | None = None
    ) -> Verdict[MaskedWaybill]:
        """The decided view, for :meth:`settle_async` (see :meth:`reveal_verdict`)."""
        routing_only = caller.principal.role is Role.HUB_OPERATOR
        action = PolicyAction.VIEW_ROUTING if routing_only else PolicyAction.VIEW
        facts = self._known_facts(caller, Action.WAYBILL_VIEW, number, read)

        rows = read.masked if read is not None and read.number == number else None

        def serve() -> MaskedWaybill:
            masked = (
                self.vault.masked_from_rows(number, rows) if rows is not None else self.vault.masked(number)
            )
            return replace(masked, sender=None, recipient=None) if routing_only else masked

        verdict = self._guard(caller, Action.WAYBILL_VIEW, action, facts=facts, serve=serve)
        verdict.offline = rows is not None
        return verdict

    def reveal(
        self,
        caller: Caller,
        number: str,
        fields: Sequence[PiiField],
        purpose: str,
        *,
        approval_id: str | None = None,
    ) -> dict[PiiField, str]:
        """Clear text of ``fields`` for a stated purpose, if the caller's current task explains it."""
        return self._settle(self.reveal_verdict(caller, number, fields, purpose, approval_id=approval_id))

    async def reveal_async(
        self,
        caller: Caller,
        number: str,
        fields: Sequence[PiiField],
        purpose: str,
        *,
        approval_id: str | None = None,
        read: WaybillRead | None = None,
    ) -> dict[PiiField, str]:
        """:meth:`reveal` for an asyncio server: the same decision and record, without a parked thread.

        Database work runs where ``Settings.inline_database`` says (on the loop for SQLite, in a
        worker thread for PostgreSQL); waiting for the audit commit parks no thread at all.
        ``read``: the waybill's facts as :meth:`employee_caller_for` read them for this request.
        """
        verdict = await self.offload(
            lambda: self.reveal_verdict(caller, number, fields, purpose, approval_id=approval_id, read=read)
        )
        return await self.settle_async(verdict)

    def reveal_verdict(
        self,
        caller: Caller,
        number: str,
        fields: Sequence[PiiField],
        purpose: str,
        *,
        approval_id: str | None = None,
        read: WaybillRead | None = None,
    ) -> Verdict[dict[PiiField, str]]:
        """The decided reveal (policy, then risk), not yet recorded: hand it to :meth:`settle_async`.

        For a server that reads the caller's session and decides in one offloaded call
        (:meth:`offload`): one thread hop per request on a networked database instead of two.
        Nothing is recorded or served until the verdict is settled.
        """
        if not fields:
            raise InvalidInput("fields", "name at least one field")
        if len(set(fields)) != len(fields):
            raise InvalidInput("fields", "must be unique")
        purpose = _purpose(purpose)
        approved_by = None
        if approval_id is not None:
            approval = self._usable_approval(approval_id, caller, kind="reveal", waybill=number)
            if approval.scope.get("waybill") != number or not set(fields) <= set(approval.fields):
                raise self._refused(
                    caller, Action.WAYBILL_REVEAL, f"approval.use:{approval_id}",
                    AccessDenied("the approval does not cover this waybill or these fields", reason=DenyReason.FOUR_EYES),
                    waybill=number,
                )  # fmt: skip
            approved_by = approval.decided_by
        facts = self._known_facts(caller, Action.WAYBILL_REVEAL, number, read)
        self._check_cases_on_trail(caller, facts)

        sealed = read.sealed if read is not None and read.number == number else None

        def serve() -> dict[PiiField, str]:
            try:
                if sealed is not None:
                    return self.vault.open_sealed(number, fields, sealed)
                return self.vault.reveal(number, fields)
            except VaultError as exc:
                # The caller sees "record unavailable"; why (shredded, unreadable) goes on the record,
                # filed under the waybill: the reveal's own entry says allow, and a data subject's
                # search by phone or waybill must show that nothing was served.
                receipt = last_receipt.get()
                self._record_system(
                    caller, "vault.failure", failure=exc.failure.value, event=receipt[1] if receipt else None,
                    waybills=[number],
                )  # fmt: skip
                raise

        verdict = self._guard(
            caller, Action.WAYBILL_REVEAL, PolicyAction.REVEAL, facts=facts, fields=tuple(fields),
            purpose=purpose, approved_by=approved_by, serve=serve,
        )  # fmt: skip
        verdict.offline = sealed is not None
        return verdict

    def list_waybills(
        self,
        caller: Caller,
        *,
        org_unit: str | None,
        status: WaybillStatus | None = None,
        cursor: str | None = None,
        page_size: int = 50,
    ) -> PageResult:
        """Masked waybills of an org unit (``None``: company-wide, officers only), keyset-paged."""
        size = self._page_size(page_size)
        scope = _default_scope(caller, org_unit)
        numbers = self.company.page(org_unit=scope, status=status, after=cursor, limit=size + 1)
        kind = QueryKind.BY_STATUS if status is not None else QueryKind.BY_ORG_UNIT
        return self._masked_page(caller, Action.WAYBILL_LIST, PolicyAction.LIST, scope, kind, numbers, size)

    def search(
        self,
        caller: Caller,
        *,
        phone: str | None = None,
        name: str | None = None,
        number_prefix: str | None = None,
        org_unit: str | None = None,
        cursor: str | None = None,
        page_size: int = 50,
    ) -> PageResult:
        """Masked search by phone or name (through the blind index) or waybill-number prefix, in
        waybill-number order, keyset-paged by ``cursor`` (the last number of the previous page).

        A phone or a name matches at most :data:`SEARCH_MATCHES_MAX` waybills; a prefix pages on."""
        given = [v for v in (phone, name, number_prefix) if v]
        if len(given) != 1:
            raise InvalidInput("query", "give exactly one of phone, name, number_prefix")
        size = self._page_size(page_size)
        org_unit = _default_scope(caller, org_unit)
        if phone:
            kind, numbers = QueryKind.BY_PHONE, self.vault.waybills_by_phone(phone, limit=SEARCH_MATCHES_MAX)
        elif name:
            kind, numbers = QueryKind.BY_NAME, self.vault.waybills_by_name(name, limit=SEARCH_MATCHES_MAX)
        else:
            assert number_prefix is not None
            if len(number_prefix) < 4:
                raise InvalidInput("number_prefix", "needs at least 4 characters")
            kind = QueryKind.BY_WAYBILL_PREFIX
            numbers = self.company.numbers_with_prefix(
                number_prefix, after=cursor, limit=size + 1, org_unit=org_unit
            )
        if kind is not QueryKind.BY_WAYBILL_PREFIX:
            numbers = sorted(n for n in set(numbers) if cursor is None or n > cursor)
            if org_unit is not None and numbers:
                numbers = self.company.within(numbers, org_unit)
        return self._masked_page(
            caller, Action.WAYBILL_SEARCH, PolicyAction.SEARCH, org_unit, kind, numbers, size
        )

    def _masked_page(
        self,
        caller: Caller,
        action: Action,
        policy_action: PolicyAction,
        org_unit: str | None,
        kind: QueryKind,
        numbers: list[str],
        size: int,
    ) -> PageResult:
        """A page of at most ``size`` of ``numbers`` (one more was read to tell whether more follow),
        decided and recorded as one list or search, served masked."""
        more = len(numbers) > size
        numbers = numbers[:size]
        verdict = self._guard(
            caller, action, policy_action, org_unit=org_unit,
            query=Query(kind=kind, result_count=len(numbers), result_ids=tuple(numbers)),
            serve=lambda: self.vault.masked_many(numbers),
        )  # fmt: skip
        items = self._settle(verdict)
        return PageResult(items, numbers[-1] if more and numbers else None)

    # --- four-eyes approvals: bulk export and officers' reveals ----------------------------------------

    def request_approval(
        self,
        caller: Caller,
        *,
        kind: str,
        justification: str,
        fields: Sequence[PiiField],
        org_unit: str | None = None,
        status: WaybillStatus | None = None,
        waybill: str | None = None,
        employee: str | None = None,
        role: Role | None = None,
    ) -> Approval:
        """Ask for a bulk export (``kind="export"``), an officer's reveal (``kind="reveal"``) or a
        privileged role change (``kind="role"``: ``employee`` gets ``role``, in ``org_unit`` when
        new)."""
        if kind not in ("export", "reveal", "role"):
            raise InvalidInput("kind", "must be export, reveal or role")
        # Counted as sent, as the OpenAPI document states it; kept without its outer blanks.
        if not 10 <= len(justification or "") <= 500 or not justification.strip():
            raise InvalidInput("justification", "must be 10 to 500 characters and say something")
        justification = justification.strip()
        self._room_to_ask(caller, kind)
        if kind == "role":
            return self._request_role(caller, justification, fields, employee, role, org_unit)
        if not fields:
            raise InvalidInput("fields", "name at least one field")
        if kind == "reveal":
            if waybill is None:
                raise InvalidInput("waybill", "is required for a reveal approval")
            self._facts(waybill)
            scope: dict[str, Any] = {"waybill": waybill}
            action, policy_action = Action.WAYBILL_REVEAL, PolicyAction.REVEAL
            if caller.principal.role not in (Role.SECURITY_OFFICER, Role.AUDITOR):
                raise self._refused(
                    caller, Action.WAYBILL_REVEAL, "approval.request",
                    AccessDenied("only security officers and auditors reveal through four-eyes approval"),
                    waybill=waybill,
                )  # fmt: skip
        else:
            scope = {"org_unit": org_unit, "status": status.value if status else None}
            action, policy_action = Action.WAYBILL_EXPORT, PolicyAction.EXPORT_REQUEST
        now = self.clock.now()
        approval = Approval(
            "ap_" + secrets.token_hex(8), kind, caller.principal.id, justification, scope, tuple(fields),
            "pending", now, None, None, None, None, self._decide_by(now),
        )  # fmt: skip

        def store() -> Approval:
            return self._store_approval(caller, approval)

        if kind == "export":
            verdict = self._guard(
                caller, action, policy_action, org_unit=org_unit, purpose="export_request", serve=store,
                query=Query(kind=QueryKind.BY_STATUS if status else QueryKind.BY_ORG_UNIT, result_count=0),
            )  # fmt: skip
            return self._settle(verdict)
        # Filed under the waybill: an officer asking to see someone's parcel is part of what their
        # own request (by phone or waybill) and an investigation must find.
        self._judge_now(
            self._event(
                caller, Action.ADMIN_CHANGE, outcome=Outcome.ALLOW, purpose=f"approval.request:{approval.id}",
                query=Query(kind=QueryKind.OTHER, result_count=1, result_ids=(scope["waybill"],)),
            )
        )  # fmt: skip
        return store()

    def _room_to_ask(self, caller: Caller, kind: str) -> None:
        """Refuse (409, recorded) a request from someone with ``PENDING_PER_REQUESTER`` waiting.

        The early check, before anything is recorded; :meth:`_store_approval` counts again under a
        lock on the requester, since requests made at once all pass this one."""
        with self.vault.engine.connect() as conn:
            waiting = self._waiting(conn, caller.principal.id)
        if waiting >= PENDING_PER_REQUESTER:
            raise self._no_room(caller, kind, waiting)

    def _waiting(self, conn: Connection, requester: str) -> int:
        """How many requests of ``requester`` wait for a decision (pending, not expired)."""
        rows = conn.execute(
            select(approvals).where(
                approvals.c.tenant == self.settings.tenant,
                approvals.c.requested_by == requester,
                approvals.c.status == "pending",
            )
        ).all()
        return sum(1 for row in rows if self._approval_of(row).status == "pending")  # not the expired

    def _no_room(self, caller: Caller, kind: str, waiting: int) -> CourierGuardError:
        kinds = {"export": Action.WAYBILL_EXPORT, "reveal": Action.WAYBILL_REVEAL}
        return self._refused(
            caller, kinds.get(kind, Action.ADMIN_CHANGE), "approval.request",
            Conflict(f"{waiting} requests of yours are waiting for a decision: ask again once one is decided"),
        )  # fmt: skip

    def _decide_by(self, created_at: datetime) -> datetime:
        """When a request made at ``created_at`` expires undecided (``approval_pending_hours``)."""
        return created_at + timedelta(hours=self.settings.approval_pending_hours)

    def _store_approval(self, caller: Caller, approval: Approval) -> Approval:
        # While pending, the expires_at column holds the deadline for a decision (sealed with the
        # row); approving overwrites it with the use window, rejecting clears it (see _approval).
        row = {
            "id": approval.id, "tenant": self.settings.tenant, "kind": approval.kind,
            "requested_by": approval.requested_by, "justification": approval.justification,
            "scope": json.dumps(approval.scope), "status": "pending", "created_at": utc(approval.created_at),
            "fields": json.dumps([f.value for f in approval.fields]), "decided_by": None, "decided_at": None,
            "expires_at": utc(approval.decide_by) if approval.decide_by else None, "used_at": None,
        }  # fmt: skip
        with self.vault.engine.begin() as conn:
            # Counted again under a lock on the requester's row: thirty requests sent at once all
            # passed _room_to_ask (measured on two workers: 30 of 30 stored, the limit being 10).
            self.company.lock_employee(conn, approval.requested_by)
            waiting = self._waiting(conn, approval.requested_by)
            if waiting < PENDING_PER_REQUESTER:
                conn.execute(insert(approvals).values(**row, mac=self.company.seals.mac_of("approvals", row)))
        if waiting >= PENDING_PER_REQUESTER:  # the allow recorded before did not take effect
            raise self._no_room(caller, approval.kind, waiting)
        return approval

    def _request_role(
        self,
        caller: Caller,
        justification: str,
        fields: Sequence[PiiField],
        employee_id: str | None,
        role: Role | None,
        org_unit: str | None,
    ) -> Approval:
        """Ask for ``employee_id`` to get ``role``: a change that gives or takes away a privileged
        role. Checked, authorised (``role_request``) and recorded now; made when a security officer
        other than the requester and the employee approves it."""
        # Filed under the employee concerned (audit subjects); the approval id follows once it exists.
        what = f"employee.role.request:{employee_id or '-'}:{role.value if role else '-'}:-"
        if fields:
            raise InvalidInput("fields", "a role approval names no personal-data fields")
        if employee_id is None or role is None:
            raise InvalidInput("employee", "a role approval names the employee and the role")
        if role is Role.SERVICE:
            raise InvalidInput(
                "role", "service is for API keys (courierguard admin api-key create), not employees"
            )
        try:
            check_employee_id(employee_id, "employee")
            self._own_account_refused(caller, employee_id, other="admin or officer")
            current = self._existing(employee_id)
            before = current.role if current is not None else None
            reactivation = self._reactivation(current, role)
            if not reactivation and (
                role is before or (role not in PRIVILEGED_ROLES and before not in PRIVILEGED_ROLES)
            ):
                raise InvalidInput(
                    "role",
                    "is not a privileged role change (admin, security_officer, auditor): an admin makes it",
                )
            if reactivation:
                assert current is not None
                if org_unit is not None and org_unit != current.org_unit:
                    raise InvalidInput(
                        "org_unit", "a reactivation keeps the account's unit: move it afterwards"
                    )
            unit = org_unit or (current.org_unit if current is not None else None)
            if unit is None:
                raise InvalidInput("org_unit", "a new employee needs an org unit")
            self.company.check_employee(Employee(employee_id, role, unit))
        except CourierGuardError as exc:
            raise self._refused(caller, Action.ADMIN_CHANGE, what, exc) from None
        self._authorise(
            caller, PolicyRequest(caller.principal, PolicyAction.ROLE_REQUEST, None, self.clock.now(), org_unit=unit),
            what,
        )  # fmt: skip
        now = self.clock.now()
        scope: dict[str, Any] = {
            "employee": employee_id, "role": role.value, "org_unit": unit, "from": before.value if before else None,
        }  # fmt: skip
        if reactivation:
            scope["reactivate"] = True  # the account is made active again with its role
            ends = self._containment(employee_id)
            if ends is not None:  # and what it ends: its security hold or its risk lock
                scope["ends"] = ends
        approval = Approval(
            "ap_" + secrets.token_hex(8), "role", caller.principal.id, justification, scope,
            (), "pending", now, None, None, None, None, self._decide_by(now),
        )  # fmt: skip
        self._judge_now(
            self._event(caller, Action.ADMIN_CHANGE, outcome=Outcome.ALLOW,
                        purpose=f"employee.role.request:{employee_id}:{role.value}:{approval.id}")
        )  # fmt: skip
        return self._store_approval(caller, approval)

    def decide_approval(self, caller: Caller, approval_id: str, *, approve: bool) -> Approval:
        """A second officer approves or rejects; nobody approves their own request."""
        approval = self._approval(approval_id)
        # Who may decide comes first: a refused caller learns nothing of the approval's state.
        role_change = approval.kind == "role"
        decision = self._may_decide(caller, approval)
        now = self.clock.now()
        status = "approved" if approve else "rejected"
        what = f"approval.{status}:{approval_id}"
        event = self._event(
            caller, Action.ADMIN_CHANGE, purpose=what, outcome=Outcome.ALLOW if decision.allowed else Outcome.DENY,
            reason=None if decision.allowed else f"policy:{decision.reason}",
        )  # fmt: skip
        if not decision.allowed:
            self._record(event)
            raise AccessDenied(decision.detail, reason=decision.reason or DenyReason.POLICY_DENIED)
        if approval.status == "expired":
            # Stored as expired (the read already says so): a later change of approval_pending_hours
            # or of the clock cannot make it decidable again.
            self._update_approval(approval_id, {"status": "expired"}, status="pending")
            raise self._refused(
                caller, Action.ADMIN_CHANGE, what,
                Conflict(
                    f"approval {approval_id} expired undecided at {approval.decide_by.isoformat() if approval.decide_by else '-'}: "
                    "its justification may be stale, so ask for it again (POST /v1/approvals)",
                    reason="approval_expired",
                ),
            )  # fmt: skip
        if approval.status != "pending":
            raise self._refused(
                caller,
                Action.ADMIN_CHANGE,
                what,
                Conflict(f"approval {approval_id} is already {approval.status}"),
            )
        # The second person is the whole of four-eyes: their session is judged as any officer's
        # action is, so a rented officer account in doubt steps up before it approves anything.
        self._judge_now(event)
        expires = (
            now + timedelta(minutes=self.settings.export_ttl_minutes) if approve and not role_change else None
        )
        decided = {
            "status": status,
            "decided_by": caller.principal.id,
            "decided_at": now,
            "expires_at": expires,
            "used_at": now if approve and role_change else None,  # a role change is made now, once
        }
        changed = self._update_approval(approval_id, decided, status="pending")
        if not changed:  # a concurrent decision won: the entry above did not take effect
            raise self._refused(
                caller, Action.ADMIN_CHANGE, what, Conflict(f"approval {approval_id} was decided meanwhile")
            )
        if approve and role_change:
            self._make_role_change(caller, approval)
        return self._approval(approval_id)

    def _may_decide(self, caller: Caller, approval: Approval) -> PolicyDecision:
        """The policy's answer to ``caller`` deciding ``approval``: nobody decides their own request,
        nor a role change of their own account, whatever the policies say."""
        role_change = approval.kind == "role"
        if caller.principal.id == approval.requested_by:
            return PolicyDecision(False, (), DenyReason.FOUR_EYES, "nobody approves their own request")
        if role_change and caller.principal.id == approval.scope.get("employee"):
            return PolicyDecision(
                False, (), DenyReason.FOUR_EYES, "nobody approves a change to their own account"
            )
        return self.policy.decide(
            PolicyRequest(
                caller.principal, PolicyAction.ROLE_APPROVE if role_change else PolicyAction.EXPORT_APPROVE,
                None, self.clock.now(), org_unit=approval.scope.get("org_unit"), requested_by=approval.requested_by,
            )
        )  # fmt: skip

    def approvals_to_decide(self, caller: Caller, *, limit: int = 100) -> list[Approval]:
        """The pending requests ``caller`` may approve or reject, oldest first (the nearest deadline):
        how the second person finds the four-eyes work waiting for them.

        The same decision as :meth:`decide_approval` filters them, so nobody sees their own requests
        or a role change of their own account, and a role that decides nothing gets an empty list.
        Every row's seal is checked. The look is recorded and scored (how many were listed)."""
        if not 1 <= limit <= 100:
            raise InvalidInput("limit", "must be between 1 and 100")
        with self.vault.engine.connect() as conn:
            rows = conn.execute(
                select(approvals)
                .where(approvals.c.tenant == self.settings.tenant, approvals.c.status == "pending")
                .order_by(approvals.c.created_at, approvals.c.id)
                .limit(PENDING_APPROVALS_READ)
            ).all()
        for row in rows:
            self.company.seals.check_row("approvals", row)
        pending = (self._approval_of(row) for row in rows)
        found = [a for a in pending if a.status == "pending" and self._may_decide(caller, a).allowed][:limit]
        self._judge_now(
            self._event(
                caller, Action.ADMIN_CHANGE, outcome=Outcome.ALLOW, purpose=f"approval.list:{len(found)}"
            )
        )
        return found

    def _make_role_change(self, caller: Caller, approval: Approval) -> None:
        """Give the approved role: judged by risk control as any admin change is (replay judges the
        same entry from the trail), recorded (``employee.role:<id>:<role>:<approval>``) and made; an
        employee that changed meanwhile in a way the request did not foresee is a recorded refusal,
        and so is a change risk control refuses (the approval is spent: ask again)."""
        employee_id, role = str(approval.scope["employee"]), Role(approval.scope["role"])
        what = f"employee.role:{employee_id}:{role.value}:{approval.id}"
        current = self._existing(employee_id)
        before = current.role.value if current is not None else None
        if before != approval.scope.get("from"):
            raise self._refused(
                caller, Action.ADMIN_CHANGE, what,
                Conflict(f"employee {employee_id} changed since the request: ask again"),
            )  # fmt: skip
        if approval.scope.get("reactivate"):
            self._reactivate(caller, approval, current, what)
            return
        if current is None:
            changed = Employee(employee_id, role, str(approval.scope["org_unit"]))
        else:
            changed = replace(current, role=role, org_unit=str(approval.scope["org_unit"]))
        self._judge_now(self._event(caller, Action.ADMIN_CHANGE, purpose=what, outcome=Outcome.ALLOW))
        self._admin_apply(
            caller, what, lambda: self.company.put_employee(changed, self.clock.now(), checked=current)
        )
        if current is not None and current.role in PRIVILEGED_ROLES and role not in PRIVILEGED_ROLES:
            # Taking a privileged role away ends what it opened: the next request signs in anew.
            self.sessions.revoke_all(employee_id, self.clock.now(), "role_removed")

    @staticmethod
    def _reactivation(current: Employee | None, role: Role) -> bool:
        """Whether asking for ``role`` for ``current`` asks to make a disabled (suspended, left)
        privileged account active again with the role it holds: as good as giving the role back."""
        return (
            current is not None
            and current.role is role
            and role in PRIVILEGED_ROLES
            and current.status is not EmployeeStatus.ACTIVE
        )

    def containment(self, employee_id: str) -> str | None:
        """What keeps the account out besides its status (``security_hold``, ``risk_lock``), or None:
        what an officer reads to know which route ends it (reinstate, unlock; an admin's status)."""
        return self._containment(employee_id)

    def _containment(self, employee_id: str) -> str | None:
        """What keeps the account out besides a plain status: a security hold (``security_hold``,
        lifted as :meth:`reinstate_account` lifts it), a risk lock (``risk_lock``, ended as
        :meth:`unlock` ends it), or None. NotFound for an unknown id."""
        if self.company.held(employee_id):
            return SECURITY_HOLD
        if self.company.suspended_for(employee_id) == RISK_LOCK_REASON:
            return RISK_LOCK_REASON
        return None

    def _reactivate(self, caller: Caller, approval: Approval, current: Employee | None, what: str) -> None:
        """Give the disabled privileged account of an approved reactivation its access back: lift
        its security hold, end its risk lock, or make it active, whichever the request found
        (``scope.ends``). Judged and recorded (``employee.role:<id>:<role>:<approval>``, then
        ``employee.reinstated:<id>`` once active) and made; an account active, or held, locked or
        released since the request, is a recorded refusal."""
        employee_id = str(approval.scope["employee"])
        ends = approval.scope.get("ends")
        try:
            if (
                current is None
                or not self._reactivation(current, current.role)
                or self._containment(employee_id) != ends
            ):
                raise Conflict(f"employee {employee_id} changed since the request: ask again")
        except CourierGuardError as exc:
            raise self._refused(caller, Action.ADMIN_CHANGE, what, exc) from None
        self._judge_now(self._event(caller, Action.ADMIN_CHANGE, purpose=what, outcome=Outcome.ALLOW))

        def change() -> Employee:
            if ends == SECURITY_HOLD:
                return self._lift_hold(employee_id)
            if ends == RISK_LOCK_REASON:
                return self._end_risk_lock(employee_id)
            return self.company.set_employee_status(
                employee_id, EmployeeStatus.ACTIVE, self.clock.now(), reason="reactivated"
            )

        employee = self._admin_apply(caller, what, change)
        if employee.status is EmployeeStatus.ACTIVE:  # a held account that left meanwhile stays left
            self._status_changed(caller, employee_id, EmployeeStatus.ACTIVE)

    def download_export(self, caller: Caller, approval_id: str) -> list[dict[str, str]]:
        """Rows of an approved export, once, before it expires: clear text of the approved fields."""
        approval = self._usable_approval(approval_id, caller, kind="export")
        try:
            numbers = self.company.page(
                org_unit=approval.scope.get("org_unit"),
                status=WaybillStatus(approval.scope["status"]) if approval.scope.get("status") else None,
                after=None,
                limit=self.settings.export_max_rows,
                sealed=True,
            )
        except RowIntegrityError as exc:  # a waybill written without the key: nothing leaves
            raise self._refused(caller, Action.WAYBILL_EXPORT, f"approval.use:{approval_id}", exc) from None

        def serve() -> list[dict[str, str]]:
            # On the trail before the approval is spent and before any row leaves: what makes the
            # download single-use even against a row put back to its sealed, unused state.
            # The access entry names at most _QUERY_IDS_MAX rows (the event's bound) and an export
            # holds up to EXPORT_MAX_ROWS: the rest are named here, a chunk an entry, so every
            # parcel that leaves is found by its waybill (a data subject's request, an investigation).
            rest = numbers[_QUERY_IDS_MAX:]
            self._record_system(
                caller, "export.download", approval=approval_id, approved_by=approval.decided_by,
                requested_by=approval.requested_by, rows=len(numbers),
                **({"waybills": rest[:_QUERY_IDS_MAX]} if rest else {}),
            )  # fmt: skip
            for i in range(_QUERY_IDS_MAX, len(rest), _QUERY_IDS_MAX):
                self._record_system(
                    caller,
                    "export.download.waybills",
                    approval=approval_id,
                    waybills=rest[i : i + _QUERY_IDS_MAX],
                )
            if not self._update_approval(approval_id, {"used_at": self.clock.now()}, used_at=None):
                # Another download of it won the race: this one's entries above served nothing.
                self._record_system(
                    caller, "export.download.rejected", approval=approval_id, error="Conflict"
                )
                raise Conflict(f"export {approval_id} was already downloaded")
            rows = []
            with self.vault.engine.connect() as conn:
                for number in numbers:
                    try:
                        clear = self.vault.reveal_in(conn, number, approval.fields)
                    except VaultError as exc:
                        # A crypto-shredded parcel has nothing left to hand over: its cells stay
                        # blank. Failing here failed every later export of the unit, each after
                        # its approval was spent. A row that does not decrypt (tampering) still stops it.
                        if exc.failure is not VaultFailure.SHREDDED:
                            raise
                        clear = {}
                    rows.append({"number": number, **{f.value: clear.get(f, "") for f in approval.fields}})
            return rows

        verdict = self._guard(
            caller, Action.WAYBILL_EXPORT, PolicyAction.EXPORT_DOWNLOAD, org_unit=approval.scope.get("org_unit"),
            fields=approval.fields, approved_by=approval.decided_by, requested_by=approval.requested_by,
            purpose=f"export:{approval.id};approved_by:{approval.decided_by}"[:128],
            query=Query(kind=QueryKind.BY_ORG_UNIT, result_count=len(numbers), result_ids=tuple(numbers[:_QUERY_IDS_MAX])),
            serve=serve,
        )  # fmt: skip
        return self._settle(verdict)

    def approval(self, caller: Caller, approval_id: str) -> Approval:
        """An approval as it stands, for its requester and for officers and auditors (who take part
        in four-eyes). Anyone else gets the 404 an unknown id gets, recorded (``approval.read``):
        someone trying approval ids is probing the four-eyes rule."""
        approval = self._approval(approval_id)
        if caller.principal.id != approval.requested_by and caller.principal.role not in _AUDIT_READERS:
            raise self._refused(
                caller, Action.ADMIN_CHANGE, f"approval.read:{approval_id}",
                NotFound(f"approval {approval_id} not found"),
            )  # fmt: skip
        return approval

    def _approval(self, approval_id: str) -> Approval:
        """The approval as it stands now: a pending request past its deadline reads ``expired``.

        The one reader of the row: while pending (or expired) its ``expires_at`` column is the
        deadline for a decision, returned as ``decide_by`` (``expires_at`` None), so that no caller
        takes it for an approved request's use window. A row stored before requests expired has no
        deadline: it gets ``created_at`` plus ``approval_pending_hours``."""
        with self.vault.engine.connect() as conn:
            row = self._sealed_approval_row(conn, approval_id)
        return self._approval_of(row)

    def _approval_of(self, row: Any) -> Approval:
        """:meth:`_approval` of a row already read and its seal checked."""
        created, stored = utc(row.created_at), utc_or_none(row.expires_at)
        status, expires, decide_by = row.status, stored, None
        if status in ("pending", "expired"):
            expires, decide_by = None, stored or self._decide_by(created)
            if status == "pending" and decide_by <= self.clock.now():
                status = "expired"
        return Approval(
            row.id, row.kind, row.requested_by, row.justification, json.loads(row.scope),
            tuple(PiiField(f) for f in json.loads(row.fields)), status, created, row.decided_by,
            utc_or_none(row.decided_at), expires, utc_or_none(row.used_at), decide_by,
        )  # fmt: skip

    def _sealed_approval_row(self, conn: Connection, approval_id: str) -> Any:
        """This tenant's approval row, its seal checked (NotFound, or the seal's refusal)."""
        row = conn.execute(
            select(approvals).where(approvals.c.id == approval_id, approvals.c.tenant == self.settings.tenant)
        ).first()
        if row is None:
            raise NotFound(f"approval {approval_id} not found")
        self.company.seals.check_row("approvals", row)
        return row

    def _update_approval(self, approval_id: str, values: dict[str, Any], **where: object) -> bool:
        """Change the approval's ``values`` and re-seal it, if it is still as sealed and its columns
        match ``where`` (e.g. ``status="pending"``); False when a concurrent change won. The row is
        read and its seal checked in the same transaction, and the update names the seal it checked:
        a row changed meanwhile (with or without the key) is not overwritten."""
        seals = self.company.seals
        # Stored in UTC: SQLite keeps a timestamp's wall time without its offset, so a clock in
        # +08:00 would read back eight hours off and no longer match its seal.
        values = {k: utc(v) if isinstance(v, datetime) else v for k, v in values.items()}
        with self.vault.engine.begin() as conn:
            row = self._sealed_approval_row(conn, approval_id)
            current = dict(row._mapping)
            if any(current[column] != value for column, value in where.items()):
                return False
            current.update(values)
            return bool(
                conn.execute(
                    update(approvals)
                    .where(approvals.c.id == approval_id, approvals.c.mac == row.mac)
                    .values(**values, mac=seals.mac_of("approvals", current))
                ).rowcount
            )

    def _spent_on_trail(self, approval: Approval) -> bool:
        """Whether the audit trail already records a download of export ``approval``."""
        since = (approval.decided_at or approval.created_at) - timedelta(minutes=5)
        return any(
            (record.body or {}).get("what") == "export.download"
            and (record.body or {}).get("approval") == approval.id
            for record in self.audit_queries.each(
                actor=approval.requested_by, since=since, kinds=[EntryKind.SYSTEM]
            )
        )

    def _check_cases_on_trail(self, caller: Caller, facts: WaybillFacts) -> None:
        """Refuse a reveal that an open case of the caller's would explain if the audit trail
        records that case closed: its row was put back as it was sealed while open (a seal cannot
        tell an older sealed state from the current one; the trail, a Merkle log, can).

        Only when the caller owns an open case on the waybill (a customer-service reveal); read
        from the trail's waybill index, a handful of system entries per waybill. A case closed
        before the retention period is archived is judged by its row alone."""
        owned = {c.id for c in facts.cases if c.state is CaseState.OPEN and c.owner == caller.principal.id}
        if not owned:
            return
        for case_id, closed_at in self._cases_closed_on_trail(facts.number, owned).items():
            _log.error("row refused: cases %s/%s is open, the audit trail closed it at %s",
                      self.settings.tenant, case_id, closed_at)  # fmt: skip
            raise self._refused(
                caller, Action.WAYBILL_REVEAL, f"case.rolled_back:{case_id}",
                RowIntegrityError(
                    f"case {case_id} is open in the database but the audit trail records it closed at "
                    f"{closed_at}: its row was put back; refused (a security officer should compare "
                    "`courierguard audit query --waybill` with the database)",
                    reason="row_rolled_back", table="cases", key=f"{self.settings.tenant}/{case_id}",
                ),
                waybill=facts.number,
            )  # fmt: skip

    def _cases_closed_on_trail(self, number: str, cases: set[str]) -> dict[str, str]:
        """Of ``cases`` (on waybill ``number``), those whose last recorded change is a closing, with when.

        A closing is recorded before it is applied, and followed by ``case.closed.rejected`` if it
        then failed: that one leaves the case open."""
        last: dict[str, tuple[str, str]] = {}
        for record in self.audit_queries.each(waybills=[number], kinds=[EntryKind.SYSTEM]):
            body = record.body or {}
            case_id = body.get("case")
            if case_id not in cases or body.get("tenant") != self.settings.tenant:
                continue
            what = body.get("what")
            if what == "case.closed":
                last[case_id] = ("closed", str(body.get("ts")))
            elif what in ("case.opened", "case.closed.rejected"):
                last[case_id] = ("open", str(body.get("ts")))
        return {case_id: ts for case_id, (state, ts) in last.items() if state == "closed"}

    def _usable_approval(
        self, approval_id: str, caller: Caller, *, kind: str, waybill: str | None = None
    ) -> Approval:
        """The approval ``caller`` may use now; any refusal is recorded (and scored) first: trying
        other people's approvals, or stale ones, is how an insider probes the four-eyes rule."""
        action = Action.WAYBILL_REVEAL if kind == "reveal" else Action.WAYBILL_EXPORT
        what = f"approval.use:{approval_id}"
        try:
            approval = self._approval(approval_id)
        except (NotFound, RowIntegrityError) as exc:
            raise self._refused(caller, action, what, exc, waybill=waybill) from None
        error = self._unusable(approval, caller, kind)
        if error is None and kind == "export" and self._spent_on_trail(approval):
            error = Conflict(f"export {approval.id} was already downloaded (the audit trail records it)")
        if error is not None:
            raise self._refused(caller, action, what, error, waybill=waybill)
        return approval

    def _unusable(self, approval: Approval, caller: Caller, kind: str) -> CourierGuardError | None:
        """Why ``caller`` may not use ``approval`` now, or None."""
        if approval.kind != kind or approval.requested_by != caller.principal.id:
            return AccessDenied("this approval is not yours to use", reason=DenyReason.FOUR_EYES)
        if approval.status != "approved":
            return AccessDenied(f"approval {approval.id} is {approval.status}", reason=DenyReason.FOUR_EYES)
        if approval.expires_at is None or approval.expires_at <= self.clock.now():
            return AccessDenied(f"approval {approval.id} has expired", reason=DenyReason.FOUR_EYES)
        if kind == "export" and approval.used_at is not None:
            return Conflict(f"export {approval.id} was already downloaded")
        return None

    def _refused(
        self,
        caller: Caller,
        action: Action,
        what: str,
        error: CourierGuardError,
        *,
        waybill: str | None = None,
    ) -> CourierGuardError:
        """Record and score a refusal that no policy decision made (a misused approval, a change to
        one's own account); returns ``error`` for the caller to raise. A risk lock wins over it."""
        code = getattr(error, "reason", None) or error.__class__.__name__.lower()
        event = self._event(
            caller, action, outcome=Outcome.DENY, purpose=what[:128], reason=f"guard:{code}"[:256],
            facts=self._facts_or_none(waybill),
        )  # fmt: skip
        self._judge_now(event)
        return error

    def _facts_or_none(self, number: str | None) -> WaybillFacts | None:
        if number is None:
            return None
        try:
            return self.company.facts(number)
        except NotFound:
            return None

    # --- investigations ------------------------------------------------------------------------------------

    def check_audit_reader(self, caller: Caller, what: str) -> None:
        """Officers and auditors read the audit trail (``what``: which part, e.g. ``audit.head``).
        Anyone else is refused, and the attempt recorded and scored: an account probing the trail
        (whose phone was searched, who looked at whom) is one an officer wants to see."""
        if caller.principal.role not in _AUDIT_READERS:
            raise self._refused(
                caller, Action.ADMIN_CHANGE, what,
                AccessDenied("the audit trail is for security officers and auditors"),
            )  # fmt: skip

    def employee_record(self, caller: Caller, employee_id: str) -> Employee:
        """One employee's record: their own, or anyone's for admins, officers and auditors. A look
        at a colleague's record by anyone else is refused and recorded, as a probe of the trail is."""
        if caller.principal.role not in _EMPLOYEE_READERS and caller.principal.id != employee_id:
            raise self._refused(
                caller, Action.ADMIN_CHANGE, f"employee.read:{employee_id}",
                AccessDenied("only admins and officers look up other employees"),
            )  # fmt: skip
        return self.company.employee(employee_id)

    def audit_search(
        self,
        caller: Caller,
        *,
        actor: str | None = None,
        subject: str | None = None,
        employee: str | None = None,
        session: str | None = None,
        waybills: Sequence[str] = (),
        phone: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Sequence[EntryKind] = (),
        cursor: int | None = None,
        limit: int = 100,
        proofs: bool = False,
        head_size: int | None = None,
    ) -> Page:
        """Who accessed what: audit entries by actor, by the employee acted on (``subject``), by
        either (``employee``: an account's whole timeline), waybill, a data subject's phone, time,
        kind (``alert``: risk control's alert queue, from the tamper-evident trail), session (with
        an actor or employee: what the session an alert names did, and the alerts it drew).

        With ``proofs`` the page is evidence (as ``courierguard audit query --proofs``): each record
        carries its inclusion proof in a signed tree head, the page names that head. Without
        ``head_size`` a head is signed after the search is recorded, so that it covers every entry
        committed by then; with it, the stored head of that many entries.

        Officers and auditors only, and the search is itself recorded (never the phone: only that a
        phone was searched and how many waybills it matched).
        """
        self.check_audit_reader(caller, "audit.search")
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise InvalidInput(name, "needs a UTC offset")
        if employee is not None and (actor is not None or subject is not None):
            raise InvalidInput(
                "employee", "is the actor or the subject: give it alone, not with actor or subject"
            )
        if session is not None and actor is None and employee is None:
            raise InvalidInput("session", "is one account's: give it with actor or employee")
        if head_size is not None and not proofs:
            raise InvalidInput("head_size", "names the head of the proofs: give it with proofs")
        numbers = list(waybills)
        matched = None
        if phone is not None:
            try:
                normalize_phone(phone)
            except InvalidPhone:  # else "matched 0": to a data subject, "nobody accessed your data"
                raise InvalidInput("phone", "is not a phone number; nothing was searched") from None
            found = self.vault.waybills_by_phone(phone)
            matched = len(found)
            numbers += found
        people = "".join(
            f":{k}={v}"
            for k, v in (("subject", subject), ("employee", employee), ("session", session))
            if v is not None
        )
        sorts = f":kinds={','.join(sorted(kinds))}" if kinds else ""
        what = f"audit.search:actor={actor or '-'}{people}:waybills={len(waybills)}:phone={'matched ' + str(matched) if matched is not None else '-'}{sorts}"
        # The parcels looked up are named (never the phone), so the search is filed under them: a
        # look-up of someone's phone is itself an access to their data, which their own request
        # (by phone or waybill) and an investigator must find, not only "a phone, 3 matches".
        looked_up = (
            Query(
                kind=QueryKind.BY_PHONE if phone is not None else QueryKind.OTHER,
                result_count=len(numbers), result_ids=tuple(numbers[:_QUERY_IDS_MAX]),
            )
            if numbers else None
        )  # fmt: skip
        self._judge_now(
            self._event(
                caller, Action.ADMIN_CHANGE, outcome=Outcome.ALLOW, purpose=what[:128], query=looked_up
            )
        )
        if proofs and head_size is None:
            # The latest stored head may be up to a second behind (the writer signs one a second
            # while entries arrive): proofs in it would leave this search's own entry, and any
            # committed since, without one.
            self.audit.checkpoint()
        if phone is not None and not numbers:
            # Nothing to find; with proofs, still the head, so that the answer is an evidence file.
            return Page([], None, self.audit_queries.tree_head() if proofs and head_size is None else None)
        # One audit log may serve several tenants (waybill numbers can repeat between them): an
        # investigator sees only their own tenant's entries.
        return self.audit_queries.search(
            actor=actor, subject=subject, employee=employee, session=session, tenant=self.settings.tenant,
            waybills=numbers or None, since=since, until=until, kinds=list(kinds) or None, cursor=cursor,
            limit=limit, with_proofs=proofs, head_size=head_size,
        )  # fmt: skip

    # --- writes from the order and PDA systems -----------------------------------------------------------

    def ingest(self, caller: Caller, records: Sequence[Any]) -> Any:
        """Checked and sealed, recorded with the numbers about to be stored, then stored: personal
        data enters the vault only under an entry on the trail (none if the trail is down)."""
        self._require(caller, PolicyAction.INGEST)
        prepared = self.vault.prepare_records(records, known_outlets=True)
        numbers = list(prepared.numbers)
        self._record_system(
            caller, "waybill.ingest", stored=len(numbers), failed=len(prepared.failed), waybills=numbers
        )
        try:
            result = self.vault.store(prepared)
        except Exception as exc:
            with contextlib.suppress(Exception):  # the original failure is what the caller must see
                self._record_system(
                    caller, "waybill.ingest.rejected", waybills=numbers, error=exc.__class__.__name__
                )
            raise
        lost = sorted(set(numbers) - set(result.stored))
        if lost:  # stored by another writer between the check and the insert
            self._record_system(caller, "waybill.ingest.rejected", waybills=lost, error="Conflict")
        return result

    # Assignments, sign-offs and tickets are what open a courier's or an agent's reveal rights: each
    # is checked, then recorded, then applied, so none takes effect without its entry on the trail.
    # A change refused between the check and the write (a race) gets a second, "rejected" entry.

    def lifecycle(self, caller: Caller, change: LifecycleChange) -> Any:
        self._require(caller, PolicyAction.INGEST)
        change = replace(change, ts=reported_time(change.ts, "ts", now=self.clock.now()))
        what: dict[str, SystemDetail] = {
            "waybills": [change.number], "status": change.status.value, "ts": change.ts.isoformat(),
            "assignee": change.assignee,
        }  # fmt: skip
        try:
            changes = self.company.check(change)
        except CourierGuardError as exc:
            # A step the waybill's state refuses (one the lifecycle does not allow, out of order, to
            # an assignee who may not have it) is on the trail too: a source sending sign-offs of
            # parcels never out for delivery is a broken or a misused key, which an officer sees.
            self._record_rejected(caller, "waybill.lifecycle.rejected", what, exc)
            raise
        self._record_system(caller, "waybill.lifecycle", **what)
        try:
            applied = self.company.apply(change)
        except Exception as exc:
            self._record_rejected(caller, "waybill.lifecycle.rejected", what, exc)
            raise
        if changes and applied.task is not None and applied.assignee is not None:  # a retry is no new task
            self._note_task(caller, applied.assignee, "courier", applied.task.value, change.number)
        return applied

    def open_case(self, caller: Caller, case: Case) -> None:
        self._require(caller, PolicyAction.INGEST)
        owner = self.company.check_case(case)
        what: dict[str, SystemDetail] = {
            "waybills": [case.waybill], "case": case.id, "kind": case.kind.value, "owner": case.owner,
        }  # fmt: skip
        self._record_system(caller, "case.opened", **what)
        try:
            self.company.open_case(case)
        except Exception as exc:
            self._record_rejected(caller, "case.opened.rejected", what, exc)
            raise
        # The owner's own role: a return or claim case goes to outlet staff, whose task budget differs.
        self._note_task(caller, case.owner, owner.role.value, "case", case.id)

    def _record_rejected(
        self, caller: Caller, what: str, details: dict[str, SystemDetail], exc: Exception
    ) -> None:
        """The second entry of a change recorded and then not applied. A refusal (a race) fails the
        request if it cannot be recorded; a database error (a connection lost, a database gone
        read-only) may have taken the trail down with it, so that entry is best effort and the
        caller sees the database error: before, none was tried, and the trail named an assignment
        or a ticket that never took effect."""
        if isinstance(exc, CourierGuardError):
            self._record_system(caller, what, **details, error=exc.__class__.__name__)
            return
        with contextlib.suppress(Exception):
            self._record_system(caller, what, **details, error=exc.__class__.__name__)

    def _note_task(self, caller: Caller, assignee: str, role: str, kind: str, ref: str) -> None:
        """Tell risk control a task was handed out: a burst to one account raises an alert there.

        After the task is applied, and never refusing it: tasks are the source systems' to give,
        and the reveals they explain stay held to the role's reveal budgets either way."""
        note = getattr(self.risk, "note_task", None)
        if note is None:
            return
        try:
            note(assignee, role, kind, self.clock.now(), caller.principal.id, ref)
        except Exception as exc:  # risk state down: the budgets on the reveals still hold
            _log.error("task of %s not counted by risk control: %s", assignee, exc.__class__.__name__)

    def close_case(self, caller: Caller, case_id: str) -> Case:
        self._require(caller, PolicyAction.INGEST)
        case = self.company.case(case_id)
        if case.state is CaseState.CLOSED:
            raise Conflict(f"case {case_id} is already closed")
        what: dict[str, SystemDetail] = {"waybills": [case.waybill], "case": case.id, "owner": case.owner}
        self._record_system(caller, "case.closed", **what)
        try:
            return self.company.close_case(case_id, self.clock.now())
        except Exception as exc:
            self._record_rejected(caller, "case.closed.rejected", what, exc)
            raise

    # --- administration -------------------------------------------------------------------------------------

    # An admin change is authorised, then checked, then recorded, then made: the trail holds one
    # entry per attempt, a deny naming what refused it or an allow for a change that was made (a
    # change refused by a race after its allow gets a second, deny, entry). An employee PUT that
    # changes a status is two changes to risk control, the status (``employee.status``, judged first,
    # as status judges it) and the rest (``employee.put``): two allows, or the status refused alone.
    # Risk control refusing the put right after allowing its status (it judges both from the same
    # session, so only if it failed in between) is followed by a deny of the status too
    # (``guard:not_made``): the trail says of each that it was not made.

    def put_employee(self, caller: Caller, employee: Employee) -> Employee:
        """Create or update an employee. One that changes an existing employee's status is that
        status change as well, judged by risk control as :meth:`set_employee_status` judges it, before
        anything is written: the containment rule steps it up or refuses it alike (docs/risk.md)."""
        what = f"employee.put:{employee.id}"
        current = self._existing(employee.id)  # None: a new employee has no status to change
        new_status = current is not None and current.status is not employee.status

        def check() -> None:
            self._own_account_refused(caller, employee.id)
            if employee.role is Role.SERVICE:
                # Service accounts are API keys; an employee with this role would sign in as a person
                # and pass the ingest policy, handing out assignments and tickets unnoticed.
                raise InvalidInput(
                    "role", "service is for API keys (courierguard admin api-key create), not employees"
                )
            self.company.check_employee(employee)
            self._no_privileged_change(employee, current)
            if current is not None and new_status:
                self._status_change_allowed(caller, current)
                if employee.status is EmployeeStatus.ACTIVE:
                    self._no_privileged_reactivation(current)
            if employee.status is EmployeeStatus.ACTIVE and current is not None:  # a new one is under no hold
                self._hold_stays(caller, employee.id)

        status = _status_change(employee.id, employee.status) if new_status else None
        self._admin(caller, what, check, first=status)
        self._admin_apply(
            caller, what, lambda: self.company.put_employee(employee, self.clock.now(), checked=current)
        )
        if new_status:
            self._status_changed(caller, employee.id, employee.status)
        return self.company.employee(employee.id)

    def put_org_unit(self, caller: Caller, unit: OrgUnit) -> OrgUnit:
        what = f"org_unit.put:{unit.id}"
        self._admin(caller, what, lambda: self.company.check_org_unit(unit))
        self._admin_apply(caller, what, lambda: self.company.put_org_unit_checked(unit))
        return self.company.org_unit(unit.id)

    def set_employee_status(self, caller: Caller, employee_id: str, status: EmployeeStatus) -> Employee:
        """Suspend, reinstate or record that an employee left. Authorised by ``account_status``
        with the account's role (default rules: an admin for operational accounts, a security
        officer for privileged ones); making a disabled privileged account active again is refused
        here (``four_eyes_required``): it is a ``kind: role`` approval."""
        what = _status_change(employee_id, status)
        current = self._existing(employee_id)

        def check() -> None:
            self._own_account_refused(caller, employee_id)
            known = self.company.employee(employee_id)  # NotFound, recorded as the refusal
            if status is EmployeeStatus.ACTIVE:
                self._hold_stays(caller, employee_id)
                self._no_privileged_reactivation(known)

        request = PolicyRequest(
            caller.principal, PolicyAction.ACCOUNT_STATUS, None, self.clock.now(),
            org_unit=current.org_unit if current is not None else None,
            account_role=current.role if current is not None else None,
        )  # fmt: skip
        self._admin(caller, what, check, request=request)
        employee = self._admin_apply(
            caller,
            what,
            lambda: self.company.set_employee_status(employee_id, status, self.clock.now(), reason="officer"),
        )
        self._status_changed(caller, employee_id, status)
        return employee

    def unlock(self, caller: Caller, employee_id: str, *, ticket: str) -> Employee:
        """An officer's review ends a risk lock: the account is active again. Authorised by the
        policies' ``account_unlock`` (a security officer; an admin for accounts without a privileged
        role; nobody alone for a privileged account, whose lock ends through a reactivation
        approval), checked, recorded and judged by risk control as an officer's other account actions.

        Recorded as ``employee.unlocked:<id>:<ticket>``, then ``employee.reinstated:<id>`` as the
        other ways back are: the review that gave a contained account back names its ticket, as the
        hold's lift does, so an analyst finds why (it used to name none)."""
        ticket = _ticket(ticket)

        def check() -> None:
            suspended_for = self.company.suspended_for(employee_id)  # NotFound, recorded as the refusal
            if suspended_for == SECURITY_HOLD:
                raise Conflict(
                    f"account {employee_id} is under a security hold: a security officer lifts it (reinstate)"
                )
            if suspended_for != RISK_LOCK_REASON:
                raise Conflict(
                    f"account {employee_id} is not locked by risk control: its status changes through status "
                    "(an admin's, or a security officer's for a privileged account)"
                )

        employee = self._officer(
            caller, PolicyAction.ACCOUNT_UNLOCK, employee_id, f"employee.unlocked:{employee_id}:{ticket}", check,
            lambda: self._end_risk_lock(employee_id), other="security officer or admin", four_eyes=True,
        )  # fmt: skip
        if employee.status is EmployeeStatus.ACTIVE:
            self._status_changed(caller, employee_id, EmployeeStatus.ACTIVE)
        return employee

    def _end_risk_lock(self, employee_id: str) -> Employee:
        # Only a risk lock ends here: an account that left, or that an admin suspended, stays so.
        return self._released(self.company.end_lock(employee_id, RISK_LOCK_REASON, self.clock.now()))

    def _lift_hold(self, employee_id: str) -> Employee:
        # A hold may have been placed on a risk lock: the review that lifts it ends that too.
        return self._released(self.company.lift_hold(employee_id, self.clock.now()))

    def _released(self, employee: Employee) -> Employee:
        """Tell risk control that a review gave ``employee`` its access back (a hook without
        ``unlock``, such as AllowAll, holds no lock to end)."""
        unlock = getattr(self.risk, "unlock", None)
        if callable(unlock):
            unlock(employee.id)
        return employee

    # --- incident response: security officers contain an account and hand it back ---------------------

    # Each is authorised by its policy action (the resource is the employee's org unit), checked,
    # recorded and then made, as an admin change is: the trail holds one entry per attempt, a deny
    # naming what refused it or an allow for a change that was made. The allow is judged by risk
    # control before it is made: an officer's session in doubt steps up before it acts on anyone.

    def suspend_account(self, caller: Caller, employee_id: str, *, ticket: str) -> Employee:
        """A security hold: the account is suspended and every session of it ends at once; only a
        security officer lifts it (:meth:`reinstate_account`)."""
        ticket = _ticket(ticket)

        def check() -> None:
            employee = self.company.employee(employee_id)
            if employee.status is EmployeeStatus.LEFT:
                raise Conflict(f"account {employee_id} has left: it has no session and cannot sign in")
            if self.company.held(employee_id):
                raise Conflict(f"account {employee_id} is under a security hold already")

        def hold() -> Employee:
            now = self.clock.now()
            employee = self.company.place_hold(employee_id, now)
            self.sessions.revoke_all(employee_id, now, SECURITY_HOLD)
            return employee

        employee = self._officer(
            caller,
            PolicyAction.ACCOUNT_SUSPEND,
            employee_id,
            f"employee.hold:{employee_id}:{ticket}",
            check,
            hold,
        )
        self._status_changed(caller, employee_id, EmployeeStatus.SUSPENDED)
        return employee

    def reinstate_account(self, caller: Caller, employee_id: str, *, ticket: str) -> Employee:
        """Lift a security hold after review: the account is active again (one that left meanwhile
        stays left). A risk lock ends with :meth:`unlock`, an admin's suspension through status; a
        privileged account's hold, like its lock, through a reactivation approval (two people)."""
        ticket = _ticket(ticket)

        def check() -> None:
            if not self.company.held(employee_id):  # NotFound for an unknown id
                raise Conflict(
                    f"account {employee_id} is under no security hold: a risk lock ends with unlock, "
                    "an admin's suspension through status"
                )

        employee = self._officer(
            caller, PolicyAction.ACCOUNT_REINSTATE, employee_id, f"employee.hold_lifted:{employee_id}:{ticket}",
            check, lambda: self._lift_hold(employee_id), four_eyes=True,
        )  # fmt: skip
        if employee.status is EmployeeStatus.ACTIVE:
            self._status_changed(caller, employee_id, EmployeeStatus.ACTIVE)
        return employee

    def revoke_sessions(self, caller: Caller, employee_id: str, *, ticket: str) -> int:
        """End every open session of the account at once; it stays active, and its next sign-in is
        judged afresh by risk control. Returns how many sessions ended."""
        ticket = _ticket(ticket)
        return self._officer(
            caller, PolicyAction.SESSIONS_REVOKE, employee_id, f"sessions.revoke:{employee_id}:{ticket}",
            lambda: self._known(employee_id),
            lambda: self.sessions.revoke_all(employee_id, self.clock.now(), "officer_revoked"),
        )  # fmt: skip

    def reset_devices(
        self, caller: Caller, employee_id: str, *, reason: DeviceResetReason | str, ticket: str
    ) -> DevicesReset:
        """A lost, stolen or replaced phone: unbind every device of the account (their TOTP seeds
        with them) and end its sessions, so that its next enrolment is a first one. That enrolment
        is still judged by risk control: a session in doubt cannot enrol (``enrol_while_doubted``).

        Recorded before it is made with the officer, the employee, the devices, the reason code
        and the ticket (an ``admin`` entry beside the ``admin.change`` event)."""
        ticket = _ticket(ticket)
        try:
            reason = DeviceResetReason(reason)
        except ValueError:
            raise InvalidInput(
                "reason", f"must be one of {', '.join(r.value for r in DeviceResetReason)}"
            ) from None
        bound: list[str] = []

        def check() -> None:
            self._known(employee_id)
            bound[:] = self.devices.bound(employee_id)
            if not bound:
                raise Conflict(
                    f"employee {employee_id} has no bound device: their next enrolment is a first one already"
                )

        def reset() -> DevicesReset:
            self._append(
                EntryKind.ADMIN, caller, "devices.reset",
                {"employee": employee_id, "devices": list(bound), "reason": reason.value, "ticket": ticket},
            )  # fmt: skip
            revoked = self.sessions.revoke_all(employee_id, self.clock.now(), "devices_reset")
            return DevicesReset(employee_id, self.devices.remove(employee_id, bound), revoked)

        return self._officer(
            caller, PolicyAction.DEVICES_RESET, employee_id, f"devices.reset:{employee_id}:{ticket}", check, reset,
            purpose=reason.value,
        )  # fmt: skip

    def _known(self, employee_id: str) -> None:
        self.company.employee(employee_id)  # NotFound, recorded as the refusal

    def _existing(self, employee_id: str) -> Employee | None:
        """The employee, or None for an id not (yet) in the directory."""
        try:
            return self.company.employee(employee_id)
        except NotFound:
            return None

    def _officer(
        self,
        caller: Caller,
        action: PolicyAction,
        employee_id: str,
        what: str,
        check: Callable[[], None],
        change: Callable[[], T],
        *,
        purpose: str | None = None,
        other: str = "security officer",
        four_eyes: bool = False,
    ) -> T:
        """Authorise ``action`` on the employee's account (their org unit is the resource and their
        role ``context.account_role``; neither for an unknown id, which the check then refuses), check
        (nobody acts on their own account: ``other`` must), record the allow as judged by risk
        control, and make ``change``. With ``four_eyes`` (giving an account its access back), a
        ``four_eyes_required`` refusal points at the reactivation approval that takes its place."""
        what = what[:128]
        current = self._existing(employee_id)
        hint = None
        if four_eyes and current is not None:
            hint = (
                f"giving the {current.role} account {employee_id} its access back needs a second person: "
                f"ask for its reactivation with POST /v1/approvals (kind role, employee {employee_id}, "
                f"role {current.role}) and a security officer other than you and {employee_id} approves it"
            )
        self._authorise(
            caller,
            PolicyRequest(
                caller.principal, action, None, self.clock.now(), purpose=purpose,
                org_unit=current.org_unit if current is not None else None,
                account_role=current.role if current is not None else None,
            ),
            what, four_eyes=hint,
        )  # fmt: skip
        try:
            self._own_account_refused(caller, employee_id, other=other)
            check()
        except CourierGuardError as exc:
            raise self._refused(caller, Action.ADMIN_CHANGE, what, exc) from None
        event = self._event(caller, Action.ADMIN_CHANGE, purpose=what, outcome=Outcome.ALLOW)
        return self._settle(self._judge(event, serve=lambda: self._admin_apply(caller, what, change)))

    def _status_changed(self, caller: Caller, employee_id: str, status: EmployeeStatus) -> None:
        label = {"left": "employee.left", "suspended": "employee.suspended", "active": "employee.reinstated"}[
            status.value
        ]
        self._judge_now(
            self._event(caller, Action.ADMIN_CHANGE, outcome=Outcome.ALLOW, purpose=f"{label}:{employee_id}")
        )
        if status is not EmployeeStatus.ACTIVE:
            self.sessions.revoke_all(employee_id, self.clock.now(), f"employee_{status.value}")

    @staticmethod
    def _own_account_refused(caller: Caller, employee_id: str, *, other: str = "admin") -> None:
        """Separation of duties: nobody changes their own role, unit or status (an admin could make
        themselves an officer and approve their own exports), nor lifts a hold on, ends the
        sessions of or resets the devices of their own account; another admin or officer must."""
        if employee_id == caller.principal.id:
            raise AccessDenied(f"nobody changes their own account: ask another {other}")

    @staticmethod
    def _no_privileged_change(employee: Employee, current: Employee | None) -> None:
        """Giving or taking away a privileged role is a four-eyes change (``kind: role`` approvals),
        never a plain admin edit: one admin could otherwise make two rented accounts officers who
        approve each other's company-wide export, or demote every officer alone. Other edits of a
        privileged account pass. ``current`` is the employee as it stands (None: a new one)."""
        before = current.role if current is not None else None
        if before is employee.role or (
            before not in PRIVILEGED_ROLES and employee.role not in PRIVILEGED_ROLES
        ):
            return
        changed = employee.role if employee.role in PRIVILEGED_ROLES else before
        raise AccessDenied(
            f"giving or taking away the role {changed} needs a second person: ask for it with "
            "POST /v1/approvals (kind role) and a security officer approves it",
            reason=DenyReason.FOUR_EYES,
        )

    def _status_change_allowed(self, caller: Caller, current: Employee) -> None:
        """The policies' ``account_status`` on ``current`` (its role and unit): a status change made
        through another route (an employee's ``PUT``) is held to the same rule as ``status``."""
        decision = self.policy.decide(
            PolicyRequest(
                caller.principal, PolicyAction.ACCOUNT_STATUS, None, self.clock.now(),
                org_unit=current.org_unit, account_role=current.role,
            )
        )  # fmt: skip
        if not decision.allowed:
            raise AccessDenied(
                f"the status of {current.id} ({current.role}) is not yours to change ({decision.detail}): "
                "a privileged account's status is a security officer's to set",
                reason=decision.reason or DenyReason.POLICY_DENIED,
            )

    @staticmethod
    def _no_privileged_reactivation(current: Employee) -> None:
        """Making a disabled privileged account active again gives its role back: a four-eyes change
        (``kind: role`` approval naming the account's current role), never a plain status change."""
        if current.role in PRIVILEGED_ROLES and current.status is not EmployeeStatus.ACTIVE:
            raise AccessDenied(
                f"making the {current.status.value} {current.role} account {current.id} active again gives "
                "its role back, which needs a second person: ask for it with POST /v1/approvals (kind role, "
                f"employee {current.id}, role {current.role}) and a security officer approves it",
                reason=DenyReason.FOUR_EYES,
            )

    def _hold_stays(self, caller: Caller, employee_id: str) -> None:
        """Making a held account active is lifting the hold, whichever route asks: the policies'
        ``account_reinstate`` decides (security officers only in the default rules), so an admin's
        status change cannot undo a security officer's containment. NotFound for an unknown id."""
        if not self.company.held(employee_id):
            return
        decision = self.policy.decide(
            PolicyRequest(
                caller.principal, PolicyAction.ACCOUNT_REINSTATE, None, self.clock.now(),
                org_unit=self.company.employee(employee_id).org_unit,
            )
        )  # fmt: skip
        if not decision.allowed:
            raise AccessDenied(
                f"account {employee_id} is under a security hold, which a security officer lifts "
                f"({decision.detail})",
                reason=decision.reason or DenyReason.POLICY_DENIED,
            )

    def _admin(
        self,
        caller: Caller,
        what: str,
        check: Callable[[], None],
        *,
        request: PolicyRequest | None = None,
        first: str | None = None,
    ) -> None:
        """Authorise (the policies' ``admin``, or ``request``: a non-admin learns nothing from
        validation), check, and record the change about to be made as judged by risk control (an
        admin's session in doubt steps up first); a refusal at any step is recorded and raised.

        ``first`` is a part of the change that risk control judges under its own name, before
        ``what`` (an employee PUT's status change, as ``employee.status`` names it): risk control
        counts containment by what a purpose names, so the same change is judged the same whichever
        route makes it. Refused, it is the one entry on the trail, and nothing is written."""
        self._authorise(
            caller,
            request or PolicyRequest(caller.principal, PolicyAction.ADMIN, None, self.clock.now()),
            what,
        )
        try:
            check()
        except CourierGuardError as exc:
            raise self._refused(caller, Action.ADMIN_CHANGE, what, exc) from None
        if first is not None:
            self._judge_now(self._event(caller, Action.ADMIN_CHANGE, purpose=first, outcome=Outcome.ALLOW))
        try:
            self._judge_now(self._event(caller, Action.ADMIN_CHANGE, purpose=what, outcome=Outcome.ALLOW))
        except CourierGuardError as refused:
            if first is not None:
                # ``first`` was allowed, yet the change it is part of will not be made: a deny entry
                # follows its allow, as for a change a race refuses after its allow.
                self._refused(
                    caller, Action.ADMIN_CHANGE, first, _NotMade(f"{what} was refused ({refused.reason})")
                )
            raise

    def _admin_apply(self, caller: Caller, what: str, change: Callable[[], T]) -> T:
        """Make a recorded change; one refused in between (a race) gets a deny entry too."""
        try:
            return change()
        except CourierGuardError as exc:
            raise self._refused(caller, Action.ADMIN_CHANGE, what, exc) from None

    def _require(self, caller: Caller, action: PolicyAction) -> None:
        self._authorise(caller, PolicyRequest(caller.principal, action, None, self.clock.now()), action.value)

    def _authorise(
        self, caller: Caller, request: PolicyRequest, what: str, *, four_eyes: str | None = None
    ) -> None:
        """Ask the policies; a deny is recorded (an ``admin.change`` deny naming ``what`` and the
        deny reason) and raised, so every refused administration or account action is on the trail.
        ``four_eyes`` says what to do instead when a ``four_eyes_required`` rule refused."""
        decision = self.policy.decide(request)
        if not decision.allowed:
            self._record(
                self._event(caller, Action.ADMIN_CHANGE, purpose=what, outcome=Outcome.DENY,
                            reason=f"policy:{decision.reason}")
            )  # fmt: skip
            detail = decision.detail
            if four_eyes and decision.reason is DenyReason.FOUR_EYES:
                detail = f"{four_eyes} ({detail})"
            raise AccessDenied(detail, reason=decision.reason or DenyReason.POLICY_DENIED)

    def _record_system(self, caller: Caller, what: str, **details: SystemDetail) -> None:
        self._append(EntryKind.SYSTEM, caller, what, details)

    def _append(self, kind: EntryKind, caller: Caller, what: str, details: dict[str, SystemDetail]) -> None:
        """Append a ``kind`` entry (``system``, ``admin``) naming ``what`` and the caller, durably."""
        try:
            self.audit.append(
                kind,
                {
                    "what": what,
                    "actor": caller.principal.id,
                    "tenant": self.settings.tenant,
                    "ts": self.clock.now().isoformat(),
                    **details,
                },
            )
        except CourierGuardError:
            raise
        except Exception as exc:
            raise AuditUnavailable(f"audit append failed ({exc.__class__.__name__})") from None

    # --- the guarded core --------------------------------------------------------------------------------------

    def _known_facts(
        self, caller: Caller, action: Action, number: str, read: WaybillRead | None
    ) -> WaybillFacts:
        """:meth:`_facts`, where a number that is no waybill is a refusal recorded and scored (purpose
        ``waybill.unknown``) before the 404: unrecorded, 404 against 403 told an insider which numbers
        exist without a trace, and risk control never saw the guessing."""
        try:
            return self._facts(number, read)
        except NotFound:
            self._judge_now(
                self._event(
                    caller, action, outcome=Outcome.DENY, number=number, purpose="waybill.unknown",
                    reason="guard:not_found",
                )
            )  # fmt: skip
            raise

    def _facts(self, number: str, read: WaybillRead | None = None) -> WaybillFacts:
        """The waybill's facts: as read with the session for this request, else read now."""
        if read is not None and read.number == number:
            return self.company.facts_from(number, read.rows)
        return self.company.facts(number)

    def _page_size(self, requested: int) -> int:
        if requested < 1:
            raise InvalidInput("page_size", "must be at least 1")
        return min(requested, self.settings.page_size_max)

    def _guard(
        self,
        caller: Caller,
        action: Action,
        policy_action: PolicyAction,
        *,
        serve: Callable[[], T],
        facts: WaybillFacts | None = None,
        fields: tuple[PiiField, ...] = (),
        purpose: str | None = None,
        org_unit: str | None = None,
        approved_by: str | None = None,
        requested_by: str | None = None,
        query: Query | None = None,
    ) -> Verdict[T]:
        """Policy, then risk: the verdict on one access, to be recorded before anything is served."""
        decision = self.policy.decide(
            PolicyRequest(
                caller.principal, policy_action, facts, self.clock.now(), purpose=purpose, fields=fields,
                org_unit=org_unit, approved_by=approved_by, requested_by=requested_by,
            )
        )  # fmt: skip
        event = self._event(
            caller, action, facts=facts, fields=fields if decision.allowed else (), purpose=purpose, query=query,
            outcome=Outcome.ALLOW if decision.allowed else Outcome.DENY,
            reason=None if decision.allowed else f"policy:{decision.reason}",
        )  # fmt: skip
        verdict = self._judge(event, serve=serve)  # denied attempts are recorded and scored too
        if not decision.allowed:
            # Answered as risk control asks when it asks anything: a session under step-up got
            # "no_task" for others' parcels and "step_up_required" for its own, which told a renter
            # which parcels the account holds.
            verdict.refusal = verdict.risk_error or AccessDenied(
                decision.detail, reason=decision.reason or DenyReason.POLICY_DENIED
            )
        return verdict

    def _judge(self, event: AccessEvent, *, serve: Callable[[], T]) -> Verdict[T]:
        """Ask the risk hook; the final outcome it leads to is what will be recorded."""
        try:
            risk = self._assess(event)
        except AccessDenied as refused:
            # Refused, and recorded as refused: an attempt made while risk control is down is the
            # one an officer most wants to see afterwards.
            final = event.model_copy(
                update={
                    "fields": None,
                    "outcome": EventOutcome(decision=Outcome.DENY, reason="risk:unavailable"),
                }
            )
            return Verdict(final, serve, error=refused)
        if risk.action is RiskAction.ALLOW:
            return Verdict(event, serve)
        risk_codes = tuple(r.code for r in risk.reasons)
        codes = ",".join(risk_codes) or "risk"
        lock = risk.action is RiskAction.LOCK
        if event.outcome is not None and event.outcome.decision is not Outcome.ALLOW:
            # Refused already: recorded as that. What risk control asks is kept for a policy refusal
            # to answer with (see _guard), not raised here: a wrong step-up code stays a 401.
            return Verdict(
                event, serve, risk_error=_risk_error(risk, codes), lock=lock, risk_codes=risk_codes
            )
        decision = Outcome.CHALLENGE if risk.action is RiskAction.STEP_UP else Outcome.DENY
        final = event.model_copy(
            update={
                "fields": None,
                "outcome": EventOutcome(decision=decision, reason=f"risk:{risk.action.value}:{codes}"[:256]),
            }
        )
        return Verdict(final, serve, error=_risk_error(risk, codes), lock=lock, risk_codes=risk_codes)

    def _judge_now(self, event: AccessEvent) -> None:
        """Score and record an event that serves nothing (logins, step-ups, admin changes)."""
        self._settle(self._judge(event, serve=_nothing))

    def _settle(self, verdict: Verdict[T]) -> T:
        """Record the verdict durably (blocking), then lock, refuse or serve."""
        self._record(verdict.event)
        return self._conclude(verdict)

    async def settle_async(self, verdict: Verdict[T]) -> T:
        """Record ``verdict`` durably, awaiting the commit without blocking a thread; then lock,
        refuse or serve. A conclusion that needs no database (nothing to lock, rows already in
        hand) runs on the event loop; any other where :meth:`offload` runs database work."""
        await self._record_async(verdict.event)
        if verdict.offline and not verdict.lock:
            return self._conclude(verdict)
        return await self.offload(self._conclude, verdict)

    def _conclude(self, verdict: Verdict[T]) -> T:
        """After the record is durable: apply a lock, raise a refusal, or serve."""
        error = verdict.error
        if verdict.lock:
            self._lock(verdict.event.actor.id)
            if error is None:
                error = AccessDenied(
                    "account locked pending review by a security officer", reason=DenyReason.RISK_LOCKED
                )
        error = error or verdict.refusal
        if error is not None:
            raise error
        return verdict.serve()

    async def offload(self, work: Callable[..., T], *args: Any) -> T:
        """Run database work for a coroutine: inline for an embedded database, else in a thread.

        SQLite answers in microseconds, less than a thread hop costs; a networked database would
        stall every request of the event loop for a round trip (``Settings.inline_database``).
        """
        if self.inline_database:
            return work(*args)
        return await asyncio.to_thread(work, *args)

    def _assess(self, event: AccessEvent) -> RiskDecision:
        try:
            return self.risk.assess(event)
        except Exception as exc:  # a broken risk engine must not open the gate: fail closed
            raise AccessDenied(
                f"risk assessment unavailable ({exc.__class__.__name__})", reason=DenyReason.RISK_DENIED
            ) from None

    def _record(self, event: AccessEvent) -> int:
        try:
            index = self.audit.append_event(event)
        except CourierGuardError:
            raise
        except Exception as exc:
            raise AuditUnavailable(f"audit append failed ({exc.__class__.__name__})") from None
        last_receipt.set((index, event.id))
        return index

    async def _record_async(self, event: AccessEvent) -> int:
        try:
            index = await self.audit.append_event_async(event)
        except CourierGuardError:
            raise
        except Exception as exc:
            raise AuditUnavailable(f"audit append failed ({exc.__class__.__name__})") from None
        last_receipt.set((index, event.id))
        return index

    def _lock(self, employee_id: str) -> None:
        if employee_id.startswith("svc:"):
            return
        now = self.clock.now()
        try:
            self.company.set_employee_status(
                employee_id, EmployeeStatus.SUSPENDED, now, reason=RISK_LOCK_REASON
            )
        except NotFound:
            return
        self.sessions.revoke_all(employee_id, now, RISK_LOCK_REASON)
        for hook in self.on_lock:
            hook(employee_id)

    def _event(
        self,
        caller: Caller,
        action: Action,
        *,
        outcome: Outcome,
        facts: WaybillFacts | None = None,
        fields: tuple[PiiField, ...] = (),
        purpose: str | None = None,
        query: Query | None = None,
        reason: str | None = None,
        number: str | None = None,
    ) -> AccessEvent:
        """``number``: a waybill known by its number alone (no such waybill), when there are no facts."""
        # One validation of the whole tree: pydantic checks nested dicts in one call, where a
        # model constructed per part costs a call (and its validators) each, on every request.
        resource: dict[str, Any] | None = None if number is None else {"type": "waybill", "id": number}
        if facts is not None:
            # Only a case the caller owns: risk control reads resource.ticket as "a task of the
            # actor explains this access", and the trail must not name a colleague's ticket as the
            # reason an agent looked at a parcel (the policies grant clear text on owned cases only).
            ticket = next(
                (c.id for c in facts.cases if c.state is CaseState.OPEN and c.owner == caller.principal.id),
                None,
            )
            resource = {
                "type": "waybill",
                "id": facts.number,
                "org_unit": facts.dest_outlet
                if facts.task is not None and facts.task.value == "delivery"
                else facts.origin_outlet,
                "assignee": facts.assignee,
                "status": facts.status,
                "status_ts": facts.status_ts,
                "ticket": ticket,
            }
        p = caller.principal
        location = caller.location
        return AccessEvent.model_validate(
            {
                "id": new_event_id(),
                "ts": self.clock.now(),
                "tenant": self.settings.tenant,
                "actor": {
                    "id": p.id,
                    "kind": "service" if caller.kind == "service" else "employee",
                    "role": p.role,
                    "org_unit": p.org_unit,
                },
                "session": {
                    "id": caller.session_id,
                    "device_id": caller.device_id,
                    "ip": caller.ip,
                    "user_agent": (caller.user_agent or None) and caller.user_agent[:512],
                    "location": {"lat": location[0], "lon": location[1]} if location else None,
                    "auth": caller.auth,
                },
                "action": action,
                "resource": resource,
                "query": query,
                "fields": fields or None,
                "purpose": purpose,
                "outcome": {"decision": outcome, "reason": reason},
            }
        )


_OUTLET_ROLES = (Role.COURIER, Role.OUTLET_CLERK, Role.OUTLET_MANAGER)


def _nothing() -> None:
    return None


def _default_scope(caller: Caller, org_unit: str | None) -> str | None:
    """Outlet staff work within their outlet: with no org unit given, that is the scope."""
    if org_unit is None and caller.principal.role in _OUTLET_ROLES:
        return caller.principal.org_unit
    return org_unit


def _purpose(purpose: str) -> str:
    purpose = (purpose or "").strip()
    if not purpose:
        raise InvalidInput("purpose", "is required: say why this data is needed (e.g. delivery_contact)")
    if not _PURPOSE.fullmatch(purpose):
        raise InvalidInput(
            "purpose", "must be a purpose code: lowercase letters and _, such as delivery_contact"
        )
    return purpose


PRIVILEGED_ROLES = frozenset({Role.ADMIN, Role.SECURITY_OFFICER, Role.AUDITOR})
"""Roles that are separate duties (operations, security, audit: GB/T 35273 §7.1) and decide who
sees personal data: giving or taking one away is a four-eyes change (``kind: role`` approvals)."""


class _NotMade(CourierGuardError):
    """A part of an admin change that was allowed, then not made because the rest was refused: the
    reason of its deny entry (``guard:not_made``); never raised to the caller."""

    status = 403
    title = "Access denied"
    reason = "not_made"


def _ticket(ticket: str) -> str:
    """The ticket an officer's action names, checked as the HTTP layer checks it: a reference, not
    free text, and nothing written like a phone number (it goes into the entry, kept for years)."""
    if not _TICKET.fullmatch(ticket or ""):
        raise InvalidInput(
            "ticket", "must be a ticket, case or alert reference: up to 40 letters, digits or _ . -"
        )
    if contains_phone(ticket):
        raise InvalidInput("ticket", "must not hold a phone number: name the ticket or the alert")
    return ticket


def _status_change(employee_id: str, status: EmployeeStatus) -> str:
    """The ``admin.change`` purpose of setting ``employee_id``'s status: what risk control judges
    before it is made, whether ``status`` or an employee PUT asks for it."""
    return f"employee.status:{employee_id}:{status.value}"


def _risk_error(risk: RiskDecision, codes: str) -> CourierGuardError:
    if risk.action is RiskAction.STEP_UP:
        return StepUpRequired(f"unusual activity ({codes}): confirm with a code from your bound device")
    if risk.action is RiskAction.THROTTLE:
        return Throttled(f"too much activity ({codes}); slow down", retry_after=60)
    if risk.action is RiskAction.LOCK:
        return AccessDenied(f"account locked pending review ({codes})", reason=DenyReason.RISK_LOCKED)
    return AccessDenied(f"refused by risk control ({codes})", reason=DenyReason.RISK_DENIED)


__all__ = ["Approval", "Caller", "DeviceResetReason", "DevicesReset", "Guard", "PageResult", "Verdict"]
