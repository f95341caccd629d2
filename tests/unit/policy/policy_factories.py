"""Builders and the shared engine fixture for the policy tests (imported by conftest and tests)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from courierguard.domain import CaseKind, CaseState, EmployeeStatus, TaskKind
from courierguard.events import Role, WaybillStatus
from courierguard.policy import CaseFacts, PolicyEngine, Principal, WaybillFacts

SHANGHAI = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 11, 12, 0, tzinfo=SHANGHAI)
OUTLET = "OUT-SH-01"


@pytest.fixture(scope="session")
def engine() -> PolicyEngine:
    return PolicyEngine.default()


def principal(
    role: Role, *, id: str = "E-1", org_unit: str = OUTLET, status: EmployeeStatus = EmployeeStatus.ACTIVE
) -> Principal:
    return Principal(id=id, role=role, org_unit=org_unit, status=status)


def waybill(
    *,
    status: WaybillStatus = WaybillStatus.OUT_FOR_DELIVERY,
    assignee: str | None = "E-1",
    task: TaskKind | None = TaskKind.DELIVERY,
    delivered_at: datetime | None = None,
    origin: str = "OUT-BJ-01",
    dest: str = OUTLET,
    cases: tuple[CaseFacts, ...] = (),
) -> WaybillFacts:
    return WaybillFacts(
        number="YT4512000000017",
        origin_outlet=origin,
        dest_outlet=dest,
        status=status,
        status_ts=NOW - timedelta(hours=2),
        assignee=assignee,
        task=task,
        delivered_at=delivered_at,
        cases=cases,
    )


def case(
    owner: str = "E-1", state: CaseState = CaseState.OPEN, kind: CaseKind = CaseKind.TICKET
) -> CaseFacts:
    return CaseFacts(id="T-1", kind=kind, owner=owner, state=state)
