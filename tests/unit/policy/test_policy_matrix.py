"""The policy matrix: every role × action, in the most favourable and in hostile situations."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from policy_factories import NOW, OUTLET, case, principal, waybill

from courierguard.domain import CaseState, EmployeeStatus, TaskKind
from courierguard.errors import DenyReason
from courierguard.events import PiiField, Role, WaybillStatus
from courierguard.policy import PolicyAction, PolicyDecider, PolicyEngine, PolicyRequest

A = PolicyAction
MASKED_OUTLET = {A.VIEW, A.VIEW_ROUTING, A.PRINT, A.LIST, A.SEARCH}

# What each role may do when everything is in its favour: the waybill is of its outlet, assigned to
# it for delivery, referenced by its own open ticket, a second person approved, it asked for the export.
ALLOWED: dict[Role, set[PolicyAction]] = {
    Role.COURIER: {A.VIEW, A.VIEW_ROUTING, A.PRINT, A.REVEAL, A.CALL, A.LIST},
    Role.OUTLET_CLERK: MASKED_OUTLET,
    Role.OUTLET_MANAGER: MASKED_OUTLET | {A.EXPORT_REQUEST, A.EXPORT_DOWNLOAD},
    Role.HUB_OPERATOR: {A.VIEW_ROUTING},
    Role.CUSTOMER_SERVICE: {A.VIEW, A.VIEW_ROUTING, A.SEARCH, A.REVEAL, A.CALL},
    Role.SECURITY_OFFICER: {
        A.VIEW,
        A.VIEW_ROUTING,
        A.LIST,
        A.SEARCH,
        A.REVEAL,
        A.EXPORT_REQUEST,
        A.EXPORT_APPROVE,
        A.EXPORT_DOWNLOAD,
        A.ACCOUNT_SUSPEND,
        A.ACCOUNT_REINSTATE,
        A.SESSIONS_REVOKE,
        A.DEVICES_RESET,
        A.ROLE_REQUEST,
        A.ROLE_APPROVE,
        A.ACCOUNT_STATUS,
        A.ACCOUNT_UNLOCK,
    },
    Role.AUDITOR: {A.VIEW, A.VIEW_ROUTING, A.LIST, A.SEARCH, A.REVEAL, A.EXPORT_APPROVE},
    Role.ADMIN: {A.ADMIN, A.ROLE_REQUEST, A.ACCOUNT_STATUS, A.ACCOUNT_UNLOCK},
    Role.SERVICE: {A.INGEST},
}


def favourable(role: Role, action: PolicyAction) -> PolicyRequest:
    resource = None
    if action.needs_waybill or action is A.INGEST:
        resource = waybill(cases=(case(),))
    return PolicyRequest(
        principal=principal(role),
        action=action,
        resource=resource,
        now=NOW,
        purpose="device_lost" if action is A.DEVICES_RESET else "matrix",
        fields=(PiiField.RECIPIENT_PHONE,),
        org_unit=OUTLET,
        approved_by="E-2",
        requested_by="E-2" if action in (A.EXPORT_APPROVE, A.ROLE_APPROVE) else "E-1",
        # In a security officer's favour a privileged account's status, in anyone else's (and for
        # a hold lifted or a lock ended, which on a privileged account take two people) an
        # operational one.
        account_role=Role.AUDITOR
        if role is Role.SECURITY_OFFICER and action is A.ACCOUNT_STATUS
        else Role.COURIER,
    )


MATRIX = [(role, action) for role in Role for action in PolicyAction]


def test_engine_satisfies_the_protocol(engine: PolicyEngine) -> None:
    assert isinstance(engine, PolicyDecider)


@pytest.mark.parametrize(("role", "action"), MATRIX, ids=[f"{r}-{a}" for r, a in MATRIX])
def test_favourable_request(engine: PolicyEngine, role: Role, action: PolicyAction) -> None:
    decision = engine.decide(favourable(role, action))
    assert decision.allowed == (action in ALLOWED[role]), decision.detail
    if decision.allowed:
        assert decision.policy_ids and decision.reason is None
    else:
        assert decision.reason is not None


@pytest.mark.parametrize(("role", "action"), MATRIX, ids=[f"{r}-{a}" for r, a in MATRIX])
@pytest.mark.parametrize("status", [EmployeeStatus.SUSPENDED, EmployeeStatus.LEFT])
def test_inactive_account_gets_nothing(
    engine: PolicyEngine, role: Role, action: PolicyAction, status: EmployeeStatus
) -> None:
    request = favourable(role, action)
    request = replace(request, principal=replace(request.principal, status=status))
    decision = engine.decide(request)
    assert not decision.allowed
    assert decision.reason == DenyReason.ACCOUNT_INACTIVE
    assert "forbid-inactive-account" in decision.policy_ids


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", [A.ACCOUNT_REINSTATE, A.ACCOUNT_UNLOCK])
@pytest.mark.parametrize("account_role", [Role.ADMIN, Role.SECURITY_OFFICER, Role.AUDITOR])
def test_nobody_alone_gives_a_privileged_account_its_access_back(
    engine: PolicyEngine, role: Role, action: PolicyAction, account_role: Role
) -> None:
    # Lifting a hold on, or ending a risk lock of, a privileged account is a reactivation approval.
    decision = engine.decide(replace(favourable(role, action), account_role=account_role))
    assert not decision.allowed
    assert decision.reason == DenyReason.FOUR_EYES
    assert "forbid-privileged-account-back-alone" in decision.policy_ids


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", [A.REVEAL, A.CALL])
def test_contact_without_task_is_denied_for_every_role(
    engine: PolicyEngine, role: Role, action: PolicyAction
) -> None:
    # Another outlet's parcel, assigned to someone else, no case, nobody approved.
    resource = waybill(assignee="E-9", origin="OUT-BJ-01", dest="OUT-GZ-03")
    request = PolicyRequest(principal(role), action, resource, NOW, "curious", (PiiField.RECIPIENT_PHONE,))
    decision = engine.decide(request)
    assert not decision.allowed
    expected = DenyReason.FOUR_EYES if role in (Role.SECURITY_OFFICER, Role.AUDITOR) else DenyReason.NO_TASK
    if role is Role.HUB_OPERATOR:
        expected = DenyReason.POLICY_DENIED
    assert decision.reason == expected


def reveal(engine: PolicyEngine, who: str = "E-1", **changes: object) -> PolicyRequest:
    base = PolicyRequest(
        principal(Role.COURIER, id=who),
        A.REVEAL,
        waybill(),
        NOW,
        "delivery_contact",
        (PiiField.RECIPIENT_PHONE,),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_courier_reveals_own_delivery(engine: PolicyEngine) -> None:
    decision = engine.decide(reveal(engine))
    assert decision.allowed
    assert decision.policy_ids == ("courier-contact-recipient-while-delivering",)


def test_courier_cannot_read_another_couriers_waybill(engine: PolicyEngine) -> None:
    decision = engine.decide(reveal(engine, who="E-2"))
    assert not decision.allowed
    assert decision.reason == DenyReason.NO_TASK


@pytest.mark.parametrize(("hours", "allowed"), [(23, True), (25, False)])
def test_grace_after_sign_off(engine: PolicyEngine, hours: int, allowed: bool) -> None:
    signed = NOW - timedelta(hours=hours)
    request = reveal(engine, resource=waybill(status=WaybillStatus.DELIVERED, delivered_at=signed))
    decision = engine.decide(request)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason == DenyReason.NO_TASK


def test_grace_hours_is_configurable() -> None:
    signed = NOW - timedelta(hours=25)
    request = reveal(
        PolicyEngine.default(), resource=waybill(status=WaybillStatus.DELIVERED, delivered_at=signed)
    )
    assert PolicyEngine.default(grace_hours=48).decide(request).allowed
    assert (
        not PolicyEngine.default(grace_hours=0)
        .decide(replace(request, now=signed + timedelta(seconds=1)))
        .allowed
    )


def test_delivered_without_sign_off_time_is_denied(engine: PolicyEngine) -> None:
    assert not engine.decide(reveal(engine, resource=waybill(status=WaybillStatus.DELIVERED))).allowed


def test_pickup_reveals_sender_only(engine: PolicyEngine) -> None:
    pickup = waybill(status=WaybillStatus.AWAITING_PICKUP, task=TaskKind.PICKUP)
    sender = reveal(engine, resource=pickup, fields=(PiiField.SENDER_NAME, PiiField.SENDER_PHONE))
    assert engine.decide(sender).allowed
    assert not engine.decide(reveal(engine, resource=pickup)).allowed


def test_every_field_must_be_allowed(engine: PolicyEngine) -> None:
    mixed = reveal(engine, fields=(PiiField.RECIPIENT_PHONE, PiiField.SENDER_PHONE))
    assert not engine.decide(mixed).allowed


@pytest.mark.parametrize("purpose", [None, "", "   "])
def test_reveal_without_purpose_is_denied(engine: PolicyEngine, purpose: str | None) -> None:
    decision = engine.decide(reveal(engine, purpose=purpose))
    assert not decision.allowed
    assert decision.policy_ids == ("forbid-contact-or-export-without-purpose",)


def test_reveal_without_fields_is_denied(engine: PolicyEngine) -> None:
    assert not engine.decide(reveal(engine, fields=())).allowed


@pytest.mark.parametrize(
    ("state", "owner", "allowed"),
    [
        (CaseState.OPEN, "E-1", True),
        (CaseState.CLOSED, "E-1", False),
        (CaseState.OPEN, "E-2", False),
    ],
)
def test_customer_service_needs_own_open_case(
    engine: PolicyEngine, state: CaseState, owner: str, allowed: bool
) -> None:
    cases = (case(owner="E-9", state=CaseState.CLOSED), case(owner=owner, state=state))
    request = PolicyRequest(
        principal(Role.CUSTOMER_SERVICE),
        A.REVEAL,
        waybill(assignee=None, cases=cases),
        NOW,
        "ticket",
        (PiiField.RECIPIENT_PHONE, PiiField.SENDER_ADDRESS),
    )
    decision = engine.decide(request)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason == DenyReason.NO_TASK


@pytest.mark.parametrize("role", [Role.SECURITY_OFFICER, Role.AUDITOR])
@pytest.mark.parametrize(("approver", "allowed"), [(None, False), ("E-1", False), ("E-2", True)])
def test_officer_reveal_needs_a_second_person(
    engine: PolicyEngine, role: Role, approver: str | None, allowed: bool
) -> None:
    request = PolicyRequest(
        principal(role),
        A.REVEAL,
        waybill(assignee=None, dest="OUT-GZ-03"),
        NOW,
        "investigation",
        (PiiField.RECIPIENT_PHONE,),
        approved_by=approver,
    )
    decision = engine.decide(request)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason == DenyReason.FOUR_EYES


@pytest.mark.parametrize(("requester", "allowed"), [("E-1", False), (None, False), ("E-2", True)])
def test_export_approval_is_four_eyes(engine: PolicyEngine, requester: str | None, allowed: bool) -> None:
    request = PolicyRequest(
        principal(Role.SECURITY_OFFICER), A.EXPORT_APPROVE, None, NOW, requested_by=requester
    )
    decision = engine.decide(request)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason == DenyReason.FOUR_EYES


def test_export_download_only_by_requester_after_approval(engine: PolicyEngine) -> None:
    base = PolicyRequest(principal(Role.OUTLET_MANAGER), A.EXPORT_DOWNLOAD, None, NOW, org_unit=OUTLET)
    assert engine.decide(replace(base, requested_by="E-1", approved_by="E-2")).allowed
    assert engine.decide(replace(base, requested_by="E-1")).reason == DenyReason.FOUR_EYES
    assert engine.decide(replace(base, requested_by="E-1", approved_by="E-1")).reason == DenyReason.FOUR_EYES
    assert (
        engine.decide(replace(base, requested_by="E-3", approved_by="E-2")).reason == DenyReason.POLICY_DENIED
    )


def test_waybill_action_without_waybill_is_denied(engine: PolicyEngine) -> None:
    decision = engine.decide(PolicyRequest(principal(Role.SECURITY_OFFICER), A.VIEW, None, NOW))
    assert not decision.allowed
    assert decision.reason == DenyReason.POLICY_DENIED


def test_detail_never_carries_request_values(engine: PolicyEngine) -> None:
    decision = engine.decide(reveal(engine, purpose="call 13800138000"))
    assert "13800138000" not in decision.detail
    assert "YT4512000000017" not in decision.detail
