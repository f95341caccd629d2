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


_S = WaybillStatus
NEXT_STEPS: dict[WaybillStatus, frozenset[WaybillStatus]] = {
    # from              the steps that may follow it
    _S.CREATED:          frozenset({_S.AWAITING_PICKUP, _S.PICKED_UP, _S.EXCEPTION}),
    _S.AWAITING_PICKUP:  frozenset({_S.AWAITING_PICKUP, _S.PICKED_UP, _S.EXCEPTION}),
    _S.PICKED_UP:        frozenset({_S.PICKED_UP, _S.IN_TRANSIT, _S.AT_DESTINATION, _S.OUT_FOR_DELIVERY,
                                    _S.RETURNED, _S.EXCEPTION}),
    _S.IN_TRANSIT:       frozenset({_S.IN_TRANSIT, _S.AT_DESTINATION, _S.OUT_FOR_DELIVERY, _S.RETURNED,
                                    _S.EXCEPTION}),
    _S.AT_DESTINATION:   frozenset({_S.AT_DESTINATION, _S.OUT_FOR_DELIVERY, _S.IN_LOCKER, _S.DELIVERED,
                                    _S.REFUSED, _S.IN_TRANSIT, _S.RETURNED, _S.EXCEPTION}),
    _S.OUT_FOR_DELIVERY: frozenset({_S.OUT_FOR_DELIVERY, _S.AT_DESTINATION, _S.IN_LOCKER, _S.DELIVERED,
                                    _S.REFUSED, _S.RETURNED, _S.EXCEPTION}),
    _S.IN_LOCKER:        frozenset({_S.IN_LOCKER, _S.DELIVERED, _S.OUT_FOR_DELIVERY, _S.AT_DESTINATION,
                                    _S.RETURNED, _S.EXCEPTION}),
    _S.DELIVERED:        frozenset({_S.RETURNED, _S.EXCEPTION}),
    _S.REFUSED:          frozenset({_S.IN_TRANSIT, _S.AT_DESTINATION, _S.RETURNED, _S.EXCEPTION}),
    _S.RETURNED:         frozenset({_S.RETURNED, _S.EXCEPTION}),
    _S.EXCEPTION:        frozenset({_S.EXCEPTION, _S.AWAITING_PICKUP, _S.PICKED_UP, _S.IN_TRANSIT,
                                    _S.AT_DESTINATION, _S.OUT_FOR_DELIVERY, _S.REFUSED, _S.RETURNED}),
}  # fmt: skip
"""The waybill lifecycle as a state machine: each status and the steps the PDA or order system may
report next (docs/api.md has the same table). A step not listed is refused (409), so a sign-off
(``delivered``, which opens the delivering courier's grace period) follows only a hand-over to the
recipient: from ``out_for_delivery``, a locker, or the outlet's counter (``at_destination``), and a
courier is sent out only with a parcel picked up (at the destination outlet's own counter, say) or
arrived (a source that reports no arrival scan goes from ``in_transit``). What a real network does is
allowed: a pickup or a delivery handed to another courier (the same step again,
another assignee), a failed attempt back at the outlet and out again the next day, scans at each
hub (``in_transit`` again), a misrouted parcel sent on from the wrong outlet (``at_destination`` →
``in_transit``), a refused parcel's trip back to the sender, a return after a sign-off, and an
exception (damage, an unreachable recipient, a held parcel) from anywhere, from which the parcel
resumes where it can (never straight to ``delivered``: it goes out for delivery again first).
``created`` is where a waybill starts, never a step."""
del _S


def lifecycle_path(current: WaybillStatus, target: WaybillStatus) -> list[WaybillStatus] | None:
    """The shortest run of steps from ``current`` to ``target`` that :data:`NEXT_STEPS` allows: what
    a source that missed steps reports to catch up (the simulator's live driver does). On the way
    only the parcel's own movement (picked up, in transit, at the destination), and an exception only
    where nothing else leads on (a redelivery after a sign-off); never an assignment, a sign-off or a
    return. ``[]`` when already there, None when there is no such run."""
    if current is target:
        return []
    moves = {WaybillStatus.PICKED_UP, WaybillStatus.IN_TRANSIT, WaybillStatus.AT_DESTINATION}
    return _path(current, target, moves) or _path(current, target, moves | {WaybillStatus.EXCEPTION})


def _path(
    current: WaybillStatus, target: WaybillStatus, through: set[WaybillStatus]
) -> list[WaybillStatus] | None:
    paths: dict[WaybillStatus, list[WaybillStatus]] = {current: []}
    frontier = [current]
    while frontier:
        reached: list[WaybillStatus] = []
        for status in frontier:
            for step in sorted(NEXT_STEPS[status]):
                if step is target:
                    return [*paths[status], step]
                if step in through and step not in paths:
                    paths[step] = [*paths[status], step]
                    reached.append(step)
        frontier = reached
    return None
