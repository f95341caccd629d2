"""The request and decision types of the need-to-know policy engine.

Plain frozen dataclasses, so the gateway builds them from its own records without a framework. They
carry routing facts and employee ids only: no personal data ever reaches the policy engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from courierguard.domain import CaseKind, CaseState, EmployeeStatus, TaskKind
from courierguard.errors import DenyReason
from courierguard.events import PiiField, Role, WaybillStatus


class PolicyAction(StrEnum):
    """What a principal asks to do. The values are the Cedar action ids (``Action::"reveal"``)."""

    VIEW = "view"
    """One waybill with masked parties."""
    VIEW_ROUTING = "view_routing"
    """One waybill's routing data only (routing code, outlets, status): no personal data at all."""
    LIST = "list"
    """A masked, paged list of waybills within ``PolicyRequest.org_unit``."""
    SEARCH = "search"
    """A masked, paged search within ``PolicyRequest.org_unit`` (``None``: company-wide)."""
    REVEAL = "reveal"
    """Clear text of ``PolicyRequest.fields`` of one waybill, for a stated purpose."""
    PRINT = "print"
    """A label with masked parties."""
    CALL = "call"
    """A call through a virtual number; ``fields`` names the phone of the party called."""
    EXPORT_REQUEST = "export_request"
    """Ask for a bulk export of ``org_unit`` (four-eyes: someone else approves)."""
    EXPORT_APPROVE = "export_approve"
    """Approve an export that ``requested_by`` asked for."""
    EXPORT_DOWNLOAD = "export_download"
    """Download an export that ``requested_by`` asked for and ``approved_by`` approved."""
    ADMIN = "admin"
    """Manage employees and org units (operational roles; see ``ROLE_REQUEST``)."""
    ROLE_REQUEST = "role_request"
    """Ask for an employee to be given or to lose a privileged role (admin, security officer,
    auditor): four-eyes, someone else approves; ``org_unit`` is that employee's unit."""
    ROLE_APPROVE = "role_approve"
    """Approve a privileged role change that ``requested_by`` asked for; it is made at once."""
    ACCOUNT_STATUS = "account_status"
    """Set the status (active, suspended, left) of an employee's account; ``account_role`` is that
    account's role (``None`` for an id not known), ``org_unit`` its unit."""
    ACCOUNT_UNLOCK = "account_unlock"
    """End a risk control lock after review; ``account_role`` and ``org_unit`` as for
    ``account_status``."""
    INGEST = "ingest"
    """Write waybills and lifecycle events (order and PDA systems)."""
    ACCOUNT_SUSPEND = "account_suspend"
    """Place a security hold on an employee's account (suspended, every session ended at once);
    ``org_unit`` is that employee's unit."""
    ACCOUNT_REINSTATE = "account_reinstate"
    """Lift a security hold: the account is active again. ``org_unit`` is the employee's unit."""
    SESSIONS_REVOKE = "sessions_revoke"
    """End every open session of an employee, who stays active; ``org_unit`` is their unit."""
    DEVICES_RESET = "devices_reset"
    """Remove an employee's bound devices and their TOTP seeds (a lost or replaced phone), so that
    the next enrolment is a first one; ``purpose`` is the reason code, ``org_unit`` their unit."""

    @property
    def needs_waybill(self) -> bool:
        """True when the action is about exactly one waybill (the Cedar resource is a ``Waybill``)."""
        return self in _WAYBILL_ACTIONS

    @property
    def is_contact(self) -> bool:
        """True for the actions that hand out clear-text contact data (reveal, call)."""
        return self in (PolicyAction.REVEAL, PolicyAction.CALL)


_WAYBILL_ACTIONS = frozenset(
    {PolicyAction.VIEW, PolicyAction.VIEW_ROUTING, PolicyAction.PRINT, PolicyAction.REVEAL, PolicyAction.CALL}
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks: an employee or a service account, as the gateway authenticated it."""

    id: str
    role: Role
    org_unit: str
    status: EmployeeStatus


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """A ticket, return or claim case that references the waybill."""

    id: str
    kind: CaseKind
    owner: str
    state: CaseState


@dataclass(frozen=True, slots=True)
class WaybillFacts:
    """The routing facts of one waybill that policies may use. ``assignee`` and ``task`` describe the
    current (or, once delivered, the last) pickup or delivery assignment."""

    number: str
    origin_outlet: str
    dest_outlet: str
    status: WaybillStatus
    status_ts: datetime
    assignee: str | None
    task: TaskKind | None
    delivered_at: datetime | None
    cases: tuple[CaseFacts, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One question to the policy engine.

    ``resource`` is the waybill for view, view_routing, print, reveal and call (and optionally ingest);
    ``None`` for list, search, export, admin and the account actions, whose target is ``org_unit``
    (``None``: the whole company; for an account action, the unit of the employee acted on). ``fields`` are the personal-data fields a reveal or call wants in clear text.
    ``requested_by`` and ``approved_by`` are employee ids for the four-eyes rules: who asked for the
    export, and who (a different person) approved it or an officer's reveal.
    """

    principal: Principal
    action: PolicyAction
    resource: WaybillFacts | None
    now: datetime
    purpose: str | None = None
    fields: tuple[PiiField, ...] = ()
    org_unit: str | None = None
    approved_by: str | None = None
    requested_by: str | None = None
    account_role: Role | None = None
    """The role of the account an account action is about (``account_status``)."""


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The answer. ``policy_ids`` are the @id of the rules that decided (the permits that allowed,
    or the forbids that refused; empty when nothing permitted). ``reason`` is ``None`` when allowed.
    ``detail`` names the rule and the action, never personal data."""

    allowed: bool
    policy_ids: tuple[str, ...]
    reason: DenyReason | None
    detail: str
