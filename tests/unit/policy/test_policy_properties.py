"""Properties that must hold for every request, whatever the facts."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from policy_factories import NOW

from courierguard.domain import CaseKind, CaseState, EmployeeStatus, TaskKind
from courierguard.events import PiiField, Role, WaybillStatus
from courierguard.policy import CaseFacts, PolicyAction, PolicyEngine, PolicyRequest, Principal, WaybillFacts
from courierguard.policy._internal import cedar, compiled, translate

ENGINE = PolicyEngine.default()
REFERENCE = PolicyEngine.default(compile_policies=False)
PII_ACTIONS = [
    a for a in PolicyAction if a not in (PolicyAction.VIEW_ROUTING, PolicyAction.ADMIN, PolicyAction.INGEST)
]
IDS = st.sampled_from(["H-1", "E-2", "E-3"])
UNITS = st.sampled_from(["HUB-SH", "OUT-SH-01", "OUT-BJ-01"])
TIMES = st.integers(min_value=-72, max_value=72).map(lambda h: NOW + timedelta(hours=h))

cases = st.builds(
    CaseFacts, id=st.just("T-1"), kind=st.sampled_from(CaseKind), owner=IDS, state=st.sampled_from(CaseState)
)
waybills = st.builds(
    WaybillFacts,
    number=st.just("YT4512000000017"),
    origin_outlet=UNITS,
    dest_outlet=UNITS,
    status=st.sampled_from(WaybillStatus),
    status_ts=TIMES,
    assignee=st.none() | IDS,
    task=st.none() | st.sampled_from(TaskKind),
    delivered_at=st.none() | TIMES,
    cases=st.lists(cases, max_size=3).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from(EmployeeStatus),
    unit=UNITS,
    action=st.sampled_from(PII_ACTIONS),
    resource=st.none() | waybills,
    purpose=st.none() | st.sampled_from(["sorting", "delivery_contact", "investigation"]),
    fields=st.lists(st.sampled_from(PiiField), unique=True, max_size=6).map(tuple),
    org_unit=st.none() | UNITS,
    approved_by=st.none() | IDS,
    requested_by=st.none() | IDS,
)
def test_hub_operator_never_gets_personal_data(
    status: EmployeeStatus,
    unit: str,
    action: PolicyAction,
    resource: WaybillFacts | None,
    purpose: str | None,
    fields: tuple[PiiField, ...],
    org_unit: str | None,
    approved_by: str | None,
    requested_by: str | None,
) -> None:
    principal = Principal("H-1", Role.HUB_OPERATOR, unit, status)
    request = PolicyRequest(
        principal, action, resource, NOW, purpose, fields, org_unit, approved_by, requested_by
    )
    decision = ENGINE.decide(request)
    assert not decision.allowed, decision.detail


@settings(max_examples=150, deadline=None)
@given(
    role=st.sampled_from(Role),
    action=st.sampled_from(PolicyAction),
    resource=st.none() | waybills,
    approved_by=st.none() | IDS,
    requested_by=st.none() | IDS,
)
def test_inactive_principal_never_allowed(
    role: Role,
    action: PolicyAction,
    resource: WaybillFacts | None,
    approved_by: str | None,
    requested_by: str | None,
) -> None:
    principal = Principal("E-2", role, "OUT-SH-01", EmployeeStatus.LEFT)
    request = PolicyRequest(
        principal,
        action,
        resource,
        NOW,
        "p",
        (PiiField.RECIPIENT_PHONE,),
        "OUT-SH-01",
        approved_by,
        requested_by,
    )
    assert not ENGINE.decide(request).allowed


@settings(max_examples=400, deadline=None)
@given(
    role=st.sampled_from(Role),
    status=st.sampled_from(EmployeeStatus),
    unit=UNITS,
    action=st.sampled_from(PolicyAction),
    resource=st.none() | waybills,
    purpose=st.none() | st.sampled_from(["", "delivery_contact"]),
    fields=st.lists(st.sampled_from(PiiField), unique=True, max_size=3).map(tuple),
    org_unit=st.none() | UNITS,
    approved_by=st.none() | IDS,
    requested_by=st.none() | IDS,
    now=TIMES,
    account_role=st.none() | st.sampled_from(Role),
)
def test_slices_and_compiled_policies_decide_as_the_whole_set(
    role: Role,
    status: EmployeeStatus,
    unit: str,
    action: PolicyAction,
    resource: WaybillFacts | None,
    purpose: str | None,
    fields: tuple[PiiField, ...],
    org_unit: str | None,
    approved_by: str | None,
    requested_by: str | None,
    now: datetime,
    account_role: Role | None,
) -> None:
    # The engine decides with only the policies that may apply to the action and role, compiled to
    # Python; Cedar over that slice, and the compiled slice, must give the whole set's answer and
    # name the same policies as its reasons.
    request = PolicyRequest(
        Principal("E-2", role, unit, status), action, resource, now, purpose, fields, org_unit,
        approved_by, requested_by, account_role,
    )  # fmt: skip
    if action.needs_waybill and resource is None:
        return
    facts = translate.build(request, 24 * 3600)
    cedar_request, who, what = facts.for_cedar()
    loaded = ENGINE._loaded
    whole = cedar.authorize(cedar_request, loaded.policy_set, who, what)
    sliced = cedar.authorize(cedar_request, loaded.by_action[action.value, role.value], who, what)
    assert sliced["decision"] == whole["decision"]
    assert sorted(sliced["diagnostics"]["reason"]) == sorted(whole["diagnostics"]["reason"])
    assert sliced["diagnostics"]["errors"] == whole["diagnostics"]["errors"] == []
    # The shipped policies are all in the compiled subset and never err: no fallback to Cedar.
    program = loaded.programs[action.value, role.value]
    env = compiled.environment(facts.principal, facts.action, facts.resource, facts.context)
    allowed, reasons = program.decide(env)
    assert allowed == (whole["decision"] == "Allow")
    assert sorted(reasons) == sorted(whole["diagnostics"]["reason"])
    assert ENGINE.decide(request) == REFERENCE.decide(request)
