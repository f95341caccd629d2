"""Which employee an entry is about: the ``admin.change`` purposes of docs/events.md and the
``employee`` an ``admin`` or ``system`` entry names; nothing else, and never an exception."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from courierguard.audit._internal.core import subject_of, subject_of_purpose
from courierguard.gateway.service import TICKET_PATTERN

# The gateway's id pattern (``courierguard.gateway.http.ID``): ``:`` included, as in ``svc:<name>``.
IDS = st.from_regex(r"\A[A-Za-z0-9_.:\-]{1,64}\Z")
TICKETS = st.from_regex(TICKET_PATTERN.replace("^", r"\A").replace("$", r"\Z"))


def change(purpose: str) -> dict[str, Any]:
    return {"actor": {"id": "X1"}, "action": "admin.change", "purpose": purpose}


@pytest.mark.parametrize(
    ("purpose", "subject"),
    [
        ("employee.hold:E1:INC-2026-0042", "E1"),
        ("employee.hold_lifted:E1:INC-1", "E1"),
        ("sessions.revoke:E1:INC-1", "E1"),
        ("devices.reset:svc:order:INC-1", "svc:order"),
        ("employee.status:E1:suspended", "E1"),
        ("employee.moved:E1:OUT-BJ-01", "E1"),
        ("employee.put:E1", "E1"),
        ("employee.suspended:E1", "E1"),
        ("employee.left:E1", "E1"),
        ("employee.reinstated:E1", "E1"),
        # About no employee, or not of the documented shape.
        ("org_unit.put:OUT-BJ-01", None),
        ("approval.approved:ap_1", None),
        ("audit.search:actor=E1:waybills=0:phone=-", None),
        ("account_suspend", None),
        ("employee.put", None),
        ("employee.put:", None),
        ("devices.reset:E1", None),  # the ticket is missing: not a shape the gateway writes
        ("devices.reset::INC-1", None),
    ],
)
def test_admin_change_purposes(purpose: str, subject: str | None) -> None:
    assert subject_of(change(purpose)) == subject


def test_employee_field_and_other_actions() -> None:
    assert subject_of({"what": "devices.reset", "actor": "X1", "employee": "E1"}) == "E1"
    assert subject_of({"what": "admin.bootstrap", "employee": "A1", "org_unit": "HQ"}) == "A1"
    # Only an admin change's purpose names an account: a reveal's stated purpose is the caller's.
    assert subject_of({"action": "waybill.reveal", "purpose": "employee.hold:E1:INC-1"}) is None
    assert subject_of({"actor_id": "E1", "action": "lock"}) is None  # an alert: filed under its actor
    assert subject_of({"employee": "E\x001"}) is None  # PostgreSQL text cannot hold a NUL
    assert subject_of({"employee": "E" * 80}) == "E" * 64  # cut as the search columns are


@given(employee=IDS, ticket=TICKETS, what=st.sampled_from(["employee.hold", "employee.hold_lifted",
                                                          "sessions.revoke", "devices.reset"]))  # fmt: skip
def test_every_ticketed_purpose_the_gateway_writes_names_its_employee(
    employee: str, ticket: str, what: str
) -> None:
    assert subject_of_purpose(f"{what}:{employee}:{ticket}"[:128]) == employee


@given(employee=IDS, status=st.sampled_from(["active", "suspended", "left"]))
def test_status_and_plain_purposes_name_their_employee(employee: str, status: str) -> None:
    assert subject_of_purpose(f"employee.status:{employee}:{status}") == employee
    for what in ("employee.put", "employee.left", "employee.suspended", "employee.reinstated"):
        assert subject_of_purpose(f"{what}:{employee}") == employee


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@given(
    body=st.dictionaries(
        st.sampled_from(["employee", "action", "purpose", "actor", "what"]) | st.text(max_size=8),
        JSON,
        max_size=6,
    ),
    purpose=st.text(max_size=140),
)
def test_any_body_gives_none_or_a_storable_id(body: dict[str, Any], purpose: str) -> None:
    for candidate in (body, {**body, "action": "admin.change", "purpose": purpose}):
        found = subject_of(candidate)
        assert found is None or (isinstance(found, str) and 0 < len(found) <= 64 and "\x00" not in found)
