"""The courier company as Courier Guard sees it: org units, employees, waybills, parties, tickets.

Plain frozen dataclasses, no framework. Storage lives in ``courierguard.db``; personal data (parties)
is only ever stored through ``courierguard.vault``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time
from enum import StrEnum

from courierguard.events import Role, WaybillStatus

WAYBILL_NUMBER = re.compile(r"^[A-Z]{2}\d{13}$")
"""Carrier-style waybill number: two letters and 13 digits, e.g. ``YT4512000000017``."""


class OrgUnitKind(StrEnum):
    HQ = "hq"
    REGION = "region"
    OUTLET = "outlet"
    HUB = "hub"
    DEPARTMENT = "department"


class EmployeeStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    LEFT = "left"


class TaskKind(StrEnum):
    """Why an employee is currently assigned to a waybill."""

    PICKUP = "pickup"
    DELIVERY = "delivery"


class CaseKind(StrEnum):
    TICKET = "ticket"
    RETURN = "return"
    CLAIM = "claim"


class CaseState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class OrgUnit:
    id: str
    kind: OrgUnitKind
    name: str
    parent: str | None = None
    city: str | None = None
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True, slots=True)
class Shift:
    """One working window on a weekday (0 = Monday). ``end`` before ``start`` means it crosses midnight."""

    weekday: int
    start: time
    end: time

    def covers(self, when: datetime) -> bool:
        minute = when.hour * 60 + when.minute
        start = self.start.hour * 60 + self.start.minute
        end = self.end.hour * 60 + self.end.minute
        if start <= end:
            return when.weekday() == self.weekday and start <= minute < end
        if when.weekday() == self.weekday and minute >= start:
            return True
        return when.weekday() == (self.weekday + 1) % 7 and minute < end


@dataclass(frozen=True, slots=True)
class Employee:
    id: str
    role: Role
    org_unit: str
    status: EmployeeStatus = EmployeeStatus.ACTIVE
    shifts: tuple[Shift, ...] = ()
    name: str | None = None

    def on_shift(self, when: datetime) -> bool:
        return any(s.covers(when) for s in self.shifts)


@dataclass(frozen=True, slots=True)
class Address:
    province: str
    city: str
    district: str
    detail: str

    def full(self) -> str:
        return f"{self.province}{self.city}{self.district}{self.detail}"


@dataclass(frozen=True, slots=True)
class Party:
    """A sender or recipient. Clear-text values exist only in memory, on the way into or out of the vault."""

    name: str
    phone: str
    address: Address

    def __repr__(self) -> str:  # never let a party's PII slip into a log line or a traceback
        return "Party(<redacted>)"


@dataclass(frozen=True, slots=True)
class Waybill:
    number: str
    origin_outlet: str
    dest_outlet: str
    routing_code: str
    status: WaybillStatus
    status_ts: datetime
    created_at: datetime
    assignee: str | None = None
    task: TaskKind | None = None
    delivered_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewWaybill:
    """What the order system sends when a waybill is created: routing data plus both parties."""

    number: str
    origin_outlet: str
    dest_outlet: str
    routing_code: str
    sender: Party
    recipient: Party
    created_at: datetime
    status: WaybillStatus = WaybillStatus.CREATED
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Case:
    """A customer-service ticket, or a return or claim case, that references a waybill."""

    id: str
    kind: CaseKind
    waybill: str
    owner: str
    state: CaseState
    opened_at: datetime
    closed_at: datetime | None = None


def says_something(text: str) -> bool:
    """Whether ``text`` has a character a reader sees: not only blanks, zero-width spaces or
    other format characters (a unit named "\u200b" would look unnamed on every screen)."""
    return any(ch.isprintable() and not ch.isspace() for ch in text)
