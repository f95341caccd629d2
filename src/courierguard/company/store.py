"""Storage of org units, employees, waybill lifecycle and cases (SQLAlchemy Core)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    null,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from courierguard.db.fast import DriverQuery, timestamp
from courierguard.db.rowseal import RowSeals
from courierguard.db.tables import cases, employees, org_units, tenants, waybill_history, waybills
from courierguard.domain import (
    NEXT_STEPS,
    Case,
    CaseKind,
    CaseState,
    Employee,
    EmployeeStatus,
    OrgUnit,
    OrgUnitKind,
    Shift,
    TaskKind,
    Waybill,
    says_something,
)
from courierguard.errors import Conflict, InvalidInput, NotFound
from courierguard.events import Role, WaybillStatus
from courierguard.policy import CaseFacts, WaybillFacts
from courierguard.timeutil import CLOCK_SKEW, utc, utc_or_none
from courierguard.vault.service import waybill_from_row

SECURITY_HOLD = "security_hold"
"""``status_reason`` of an account a security officer suspended (a security hold): only the
security team lifts it, and no other status change but reinstatement removes it."""
HOLD_LIFTED = "hold_lifted"
"""``status_reason`` once a security officer has lifted the hold."""

EMPLOYEE_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
"""An employee id: the identifier characters less ``:``, which names service principals (``svc:<name>``)
and separates the fields of an ``admin.change`` purpose (``employee.left:<id>``): an employee
``svc:order-system`` would share the order system's audit trail and escape a risk lock's suspension,
and ``E1:x`` would be read as a change to ``E1``."""


def check_employee_id(employee_id: str, what: str = "id") -> str:
    """``employee_id`` if it is a valid employee id, else :class:`InvalidInput` naming ``what``."""
    if not EMPLOYEE_ID_RE.fullmatch(employee_id):
        raise InvalidInput(what, "an employee id is 1 to 64 letters, digits or the characters _ . - (no ':')")
    return employee_id


FACTS_COLUMNS = (
    "w.number, w.origin_outlet, w.dest_outlet, w.status, w.status_ts, w.assignee, w.task, w.delivered_at, "
    "c.id, c.kind, c.owner, c.state, w.mac, c.mac"
)
"""What :func:`facts_from_rows` reads, in this order: ``w`` the waybill, ``c`` its cases (left-joined),
then the two rows' seals (:mod:`courierguard.db.rowseal`)."""
# Built from this module's constants only; values are always bound.
_FACTS_SQL = (
    f"SELECT {FACTS_COLUMNS} FROM waybills w LEFT JOIN cases c "  # noqa: S608
    "ON c.tenant = w.tenant AND c.waybill = w.number WHERE w.tenant = ? AND w.number = ?"
)


def facts_from_rows(
    number: str, rows: Sequence[Sequence[Any]], *, seals: RowSeals, tenant: str
) -> WaybillFacts:
    """The policy facts of waybill ``number`` from rows of :data:`FACTS_COLUMNS` (one per case).

    :class:`NotFound` when there is no waybill: no rows, or a left join that found none;
    :class:`RowIntegrityError` when the waybill's or a case's row is not sealed under ``seals``.
    """
    if not rows or rows[0][0] is None:
        raise NotFound(f"waybill {number} not found")
    first = rows[0]
    seals.check("waybills", (tenant, *first[:8]), first[12], first[0])
    for r in rows:
        if r[8] is not None:
            seals.check("cases", (tenant, r[8], r[9], first[0], r[10], r[11]), r[13], r[8])
    status_ts = timestamp(first[4])
    assert status_ts is not None
    return WaybillFacts(
        number=number,
        origin_outlet=first[1],
        dest_outlet=first[2],
        status=WaybillStatus(first[3]),
        status_ts=status_ts,
        assignee=first[5],
        task=TaskKind(first[6]) if first[6] else None,
        delivered_at=timestamp(first[7]),
        cases=tuple(
            CaseFacts(r[8], CaseKind(r[9]), r[10], CaseState(r[11])) for r in rows if r[8] is not None
        ),
    )


# Which task a status change implies for the assignee, and which statuses end a task.
_TASK_FOR_STATUS = {
    WaybillStatus.AWAITING_PICKUP: TaskKind.PICKUP,
    WaybillStatus.OUT_FOR_DELIVERY: TaskKind.DELIVERY,
}
_TERMINAL = {WaybillStatus.DELIVERED, WaybillStatus.REFUSED, WaybillStatus.RETURNED}
_TASK_ENDS = {
    WaybillStatus.PICKED_UP,
    WaybillStatus.IN_TRANSIT,
    WaybillStatus.REFUSED,
    WaybillStatus.RETURNED,
    WaybillStatus.EXCEPTION,
}
"""Steps that end a courier's task. Delivered keeps it, for the grace period the policies bound;
any later step (a return, an exception) ends it, so no status that follows revives the courier's
access: a new assignment does that, and it is recorded."""
_ANY_TIME = {
    WaybillStatus.DELIVERED,
    WaybillStatus.REFUSED,
    WaybillStatus.RETURNED,
    WaybillStatus.EXCEPTION,
}
"""Steps taken whatever their time against the current status: each ends the courier's task (or
starts the grace period), so taking one late only narrows access, while refusing a sign-off from a
PDA whose clock runs slow would leave the task open."""


@dataclass(frozen=True, slots=True)
class LifecycleChange:
    """One step of a waybill's life, as the PDA or order system reports it."""

    number: str
    status: WaybillStatus
    ts: datetime
    assignee: str | None = None
    """For awaiting_pickup and out_for_delivery: the courier now assigned to the task."""


# Hot path (every guarded request reads an employee and a waybill's facts): statements built once
# with bound parameters; building a Core select per call costs more than the lookup itself.
_HELD = and_(
    func.coalesce(employees.c.status_reason, "") == SECURITY_HOLD,
    employees.c.status != EmployeeStatus.ACTIVE.value,
)
"""A security hold is on: the reason says so and the account has not been made active since."""
_EMPLOYEE = select(employees).where(
    employees.c.tenant == bindparam("tenant"), employees.c.id == bindparam("id")
)
_WAYBILL = select(waybills).where(
    waybills.c.tenant == bindparam("tenant"), waybills.c.number == bindparam("number")
)


def _case_from_row(row: Any) -> Case:
    return Case(
        row.id,
        CaseKind(row.kind),
        row.waybill,
        row.owner,
        CaseState(row.state),
        utc(row.opened_at),
        utc_or_none(row.closed_at),
    )


def _shifts_to_json(shifts: tuple[Shift, ...]) -> str:
    return json.dumps([[s.weekday, s.start.strftime("%H:%M"), s.end.strftime("%H:%M")] for s in shifts])


def _shifts_from_json(text: str) -> tuple[Shift, ...]:
    return tuple(
        Shift(int(d), time.fromisoformat(a), time.fromisoformat(b)) for d, a, b in json.loads(text or "[]")
    )


def employee_from_row(row: Any) -> Employee:
    return Employee(
        id=row.id,
        role=Role(row.role),
        org_unit=row.org_unit,
        status=EmployeeStatus(row.status),
        shifts=_shifts_from_json(row.shifts),
        name=row.name,
    )


class CompanyStore:
    """Org units, employees, waybill lifecycle and cases of one tenant."""

    def __init__(self, engine: Engine, *, tenant: str, seals: RowSeals) -> None:
        self.engine = engine
        self.tenant = tenant
        self.seals = seals
        """Seals of the rows that decide access: written on every write, checked on every read."""
        self._facts_query = DriverQuery(engine, _FACTS_SQL)

    # --- row seals ----------------------------------------------------------------------------------

    def facts_from(self, number: str, rows: Sequence[Sequence[Any]]) -> WaybillFacts:
        """:func:`facts_from_rows`, checked under this store's seals."""
        return facts_from_rows(number, rows, seals=self.seals, tenant=self.tenant)

    def _locked(self, conn: Connection, table: Table, where: ColumnElement[bool]) -> Any:
        """The row ``where`` selects, locked for this transaction and its seal checked (None when
        there is none): a write never re-seals a row someone changed without the key."""
        if conn.dialect.name == "sqlite":  # take the write lock first: the read then stays current
            conn.execute(update(table).where(where).values(mac=table.c.mac))
            row = conn.execute(select(table).where(where)).first()
        else:
            row = conn.execute(select(table).where(where).with_for_update()).first()
        if row is not None:
            self.seals.check_row(table.name, row)
        return row

    def lock_employee(self, conn: Connection, employee_id: str) -> None:
        """Lock ``employee_id``'s row for the rest of ``conn``'s transaction (seal checked): it
        serialises one employee's check-then-write across workers (their four-eyes requests)."""
        self._locked(conn, employees, self._employee_key(employee_id))

    def _employee_key(self, employee_id: str) -> ColumnElement[bool]:
        return and_(employees.c.tenant == self.tenant, employees.c.id == employee_id)

    # --- tenant and org units -----------------------------------------------------------------------

    def ensure_tenant(self, name: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            if conn.execute(select(tenants.c.id).where(tenants.c.id == self.tenant)).first() is None:
                conn.execute(insert(tenants).values(id=self.tenant, name=name, created_at=now))

    def put_org_unit_checked(self, unit: OrgUnit) -> None:
        """:meth:`put_org_unit` for an administrator's change: the name must say something, the
        parent exist and the units stay a tree (in a cycle every unit is an ancestor of itself,
        which the policies read as "within"). Check and write are one transaction, serialised per
        tenant, so two concurrent moves cannot close a cycle between them. :meth:`put_org_unit`
        itself stays permissive, for importers that load a whole company in any order."""
        if not says_something(unit.name):
            raise InvalidInput("name", "is required")
        with self.engine.begin() as conn:
            self._serialise_hierarchy_changes(conn)
            if unit.parent is not None:
                self._check_parent(conn, unit.id, unit.parent)
            self._put_org_unit(conn, unit)

    def check_org_unit(self, unit: OrgUnit) -> None:
        """The checks of :meth:`put_org_unit_checked`, read-only: for recording a change before it is
        made. A concurrent move can still refuse it at the write (rare, and then recorded again)."""
        if not says_something(unit.name):
            raise InvalidInput("name", "is required")
        if unit.parent is not None:
            with self.engine.connect() as conn:
                self._check_parent(conn, unit.id, unit.parent)

    def _serialise_hierarchy_changes(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"org_units:{self.tenant}"}
            )
        else:  # SQLite: the first write takes the database's write lock until commit
            conn.execute(update(tenants).where(tenants.c.id == self.tenant).values(name=tenants.c.name))

    def check_employee(self, employee: Employee) -> None:
        """Refuse an administrator's change to an invalid employee id or naming an org unit that does
        not exist (or whose row was written without the seal key: :class:`RowIntegrityError`)."""
        check_employee_id(employee.id)
        with self.engine.connect() as conn:
            unit = self._org_unit_row(conn, employee.org_unit)
        if unit is None:
            raise InvalidInput("org_unit", "is not an org unit")

    def _org_unit_key(self, unit_id: str) -> ColumnElement[bool]:
        return and_(org_units.c.tenant == self.tenant, org_units.c.id == unit_id)

    def _org_unit_row(self, conn: Connection, unit_id: str) -> Any:
        """The org unit's row, its seal checked (None when there is none)."""
        row = conn.execute(select(org_units).where(self._org_unit_key(unit_id))).first()
        if row is not None:
            self.seals.check_row("org_units", row)
        return row

    def put_org_unit(self, unit: OrgUnit) -> None:
        with self.engine.begin() as conn:
            self._put_org_unit(conn, unit)

    def _put_org_unit(self, conn: Connection, unit: OrgUnit) -> None:
        values = {
            "kind": unit.kind.value,
            "name": unit.name,
            "parent": unit.parent,
            "city": unit.city,
            "lat": unit.lat,
            "lon": unit.lon,
        }
        key = self._org_unit_key(unit.id)
        if self._locked(conn, org_units, key) is not None:
            conn.execute(update(org_units).where(key).values(**values))
        else:
            conn.execute(insert(org_units).values(tenant=self.tenant, id=unit.id, **values))
        self.seals.reseal(conn, org_units, key)

    def _check_parent(self, conn: Connection, unit_id: str, parent: str) -> None:
        seen = {unit_id}
        ancestor: str | None = parent
        while ancestor is not None:
            if ancestor in seen:
                raise InvalidInput("parent", "would make the org-unit hierarchy a cycle")
            seen.add(ancestor)
            row = self._org_unit_row(conn, ancestor)
            if row is None:
                raise InvalidInput("parent", "is not an org unit")
            ancestor = row.parent

    def org_unit(self, unit_id: str) -> OrgUnit:
        with self.engine.connect() as conn:
            row = self._org_unit_row(conn, unit_id)
        if row is None:
            raise NotFound(f"org unit {unit_id} not found")
        return OrgUnit(row.id, OrgUnitKind(row.kind), row.name, row.parent, row.city, row.lat, row.lon)

    def org_units(self) -> list[OrgUnit]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(org_units).where(org_units.c.tenant == self.tenant).order_by(org_units.c.id)
            ).all()
        for row in rows:
            self.seals.check_row("org_units", row)
        return [OrgUnit(r.id, OrgUnitKind(r.kind), r.name, r.parent, r.city, r.lat, r.lon) for r in rows]

    # --- employees ----------------------------------------------------------------------------------

    def put_employee(self, employee: Employee, now: datetime, *, checked: Employee | None = None) -> None:
        """Create or update ``employee``. ``checked``: the row as the caller read and judged it (its
        role, unit and status); Conflict if it changed since. An admin's PUT checked against a
        clerk, racing the approval that made that clerk an officer, demoted the new officer alone."""
        check_employee_id(employee.id)
        values = {
            "role": employee.role.value,
            "org_unit": employee.org_unit,
            "status": employee.status.value,
            "shifts": _shifts_to_json(employee.shifts),
            "name": employee.name,
            "updated_at": now,
        }
        key = self._employee_key(employee.id)
        with self.engine.begin() as conn:
            row = self._locked(conn, employees, key)
            if checked is not None and (
                row is None
                or (row.role, row.org_unit, row.status)
                != (checked.role.value, checked.org_unit, checked.status.value)
            ):
                raise Conflict(f"employee {employee.id} changed meanwhile: ask again")
            if row is not None:
                conn.execute(update(employees).where(key).values(**values))
            else:
                conn.execute(insert(employees).values(tenant=self.tenant, id=employee.id, **values))
            self.seals.reseal(conn, employees, key)

    def employee(self, employee_id: str, conn: Connection | None = None) -> Employee:
        params = {"tenant": self.tenant, "id": employee_id}
        if conn is None:
            with self.engine.connect() as own:
                row = own.execute(_EMPLOYEE, params).first()
        else:
            row = conn.execute(_EMPLOYEE, params).first()
        if row is None:
            raise NotFound(f"employee {employee_id} not found")
        self.seals.check_row("employees", row)
        return employee_from_row(row)

    def employees(self, *, org_unit: str | None = None) -> list[Employee]:
        stmt = select(employees).where(employees.c.tenant == self.tenant)
        if org_unit is not None:
            stmt = stmt.where(employees.c.org_unit == org_unit)
        with self.engine.connect() as conn:
            return [employee_from_row(r) for r in conn.execute(stmt.order_by(employees.c.id))]

    def set_employee_status(
        self, employee_id: str, status: EmployeeStatus, now: datetime, *, reason: str | None = None
    ) -> Employee:
        """Set the status. A security hold stays on through any status but ``active``: an admin who
        records that a held employee left, or a risk lock of a held account, keeps it, so that
        neither lets the account back without a security officer (see :meth:`lift_hold`)."""
        new_reason: Any = literal(reason) if reason is not None else null()
        if status is not EmployeeStatus.ACTIVE:
            new_reason = case((_HELD, literal(SECURITY_HOLD)), else_=new_reason)
        key = self._employee_key(employee_id)
        with self.engine.begin() as conn:
            self._locked(conn, employees, key)
            result = conn.execute(
                update(employees)
                .where(key)
                .values(status=status.value, status_reason=new_reason, updated_at=now)
            )
            if not result.rowcount:
                raise NotFound(f"employee {employee_id} not found")
            self.seals.reseal(conn, employees, key)
            return self.employee(employee_id, conn)

    def suspended_for(self, employee_id: str) -> str | None:
        """Why the account is suspended (e.g. ``risk_lock``), or None when it is not suspended."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(employees.c.status, employees.c.status_reason).where(
                    employees.c.tenant == self.tenant, employees.c.id == employee_id
                )
            ).first()
        if row is None:
            raise NotFound(f"employee {employee_id} not found")
        return (row.status_reason or "unknown") if row.status == EmployeeStatus.SUSPENDED.value else None

    def held(self, employee_id: str) -> bool:
        """Whether a security officer's hold is on the account (suspended, or left since)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_HELD).where(employees.c.tenant == self.tenant, employees.c.id == employee_id)
            ).first()
        if row is None:
            raise NotFound(f"employee {employee_id} not found")
        return bool(row[0])

    def place_hold(self, employee_id: str, now: datetime) -> Employee:
        """Suspend the account under a security hold (a risk lock or an admin's suspension becomes
        one). Conflict for an account that left, or that is held already."""
        key = self._employee_key(employee_id)
        with self.engine.begin() as conn:
            self._locked(conn, employees, key)
            result = conn.execute(
                update(employees)
                .where(key, employees.c.status != EmployeeStatus.LEFT.value, ~_HELD)
                .values(status=EmployeeStatus.SUSPENDED.value, status_reason=SECURITY_HOLD, updated_at=now)
            )
            self.seals.reseal(conn, employees, key)
            employee = self.employee(employee_id, conn)  # NotFound for an unknown id
            if not result.rowcount:
                raise Conflict(
                    f"account {employee_id} is {employee.status.value}"
                    + (
                        ", under a security hold already"
                        if employee.status is EmployeeStatus.SUSPENDED
                        else ""
                    )
                )
            return employee

    def lift_hold(self, employee_id: str, now: datetime) -> Employee:
        """End a security hold: a suspended account is active again, one that left meanwhile stays
        left (re-hiring is an admin's). Conflict for an account under no security hold."""
        key = self._employee_key(employee_id)
        with self.engine.begin() as conn:
            self._locked(conn, employees, key)
            result = conn.execute(
                update(employees)
                .where(key, _HELD)
                .values(
                    status=case(
                        (employees.c.status == EmployeeStatus.SUSPENDED.value, EmployeeStatus.ACTIVE.value),
                        else_=employees.c.status,
                    ),
                    status_reason=HOLD_LIFTED,
                    updated_at=now,
                )
            )
            self.seals.reseal(conn, employees, key)
            employee = self.employee(employee_id, conn)  # NotFound for an unknown id
            if not result.rowcount:
                raise Conflict(f"account {employee_id} is {employee.status.value}, under no security hold")
            return employee

    def end_lock(self, employee_id: str, locked_reason: str, now: datetime) -> Employee:
        """Reinstate an account suspended with ``locked_reason`` (a risk lock), and only such an
        account: one that left, or that an admin suspended, is not "unlocked" back to work."""
        key = self._employee_key(employee_id)
        with self.engine.begin() as conn:
            self._locked(conn, employees, key)
            result = conn.execute(
                update(employees)
                .where(
                    key,
                    employees.c.status == EmployeeStatus.SUSPENDED.value,
                    employees.c.status_reason == locked_reason,
                )
                .values(status=EmployeeStatus.ACTIVE.value, status_reason="unlocked", updated_at=now)
            )
            self.seals.reseal(conn, employees, key)
            employee = self.employee(employee_id, conn)  # NotFound for an unknown id
            if not result.rowcount:
                raise Conflict(
                    f"account {employee_id} is {employee.status.value}, not locked by risk control"
                )
            return employee

    # --- waybills -----------------------------------------------------------------------------------

    def waybill(self, number: str, conn: Connection | None = None) -> Waybill:
        params = {"tenant": self.tenant, "number": number}
        if conn is None:
            with self.engine.connect() as own:
                row = own.execute(_WAYBILL, params).first()
        else:
            row = conn.execute(_WAYBILL, params).first()
        if row is None:
            raise NotFound(f"waybill {number} not found")
        self.seals.check_row("waybills", row)
        return waybill_from_row(row)

    def facts(self, number: str) -> WaybillFacts:
        """What the policies need about one waybill: routing, status, assignment, open cases.

        On every guarded request: one driver-level query for the waybill and its cases together.
        """
        return self.facts_from(number, self._facts_query.fetch(self.engine, (self.tenant, number)))

    def apply(self, change: LifecycleChange) -> Waybill:
        """Move a waybill to a new status. Pickup and delivery steps (re)assign the courier's task."""
        key = and_(waybills.c.tenant == self.tenant, waybills.c.number == change.number)
        with self.engine.begin() as conn:
            self._locked(conn, waybills, key)
            values = self._planned(conn, change)
            if not values:
                return self.waybill(change.number, conn)
            conn.execute(update(waybills).where(key).values(**values))
            self.seals.reseal(conn, waybills, key)
            conn.execute(
                insert(waybill_history).values(
                    tenant=self.tenant,
                    number=change.number,
                    status=change.status.value,
                    ts=utc(change.ts),
                    assignee=values.get("assignee"),
                    task=values.get("task"),
                )
            )
            return self.waybill(change.number, conn)

    def check(self, change: LifecycleChange) -> bool:
        """Refuse, as :meth:`apply` would, a change that cannot be applied now; writes nothing.
        False for the waybill's current step sent again, which :meth:`apply` leaves as it is.

        For a caller that records a change on the audit trail before it takes effect.
        """
        with self.engine.connect() as conn:
            return bool(self._planned(conn, change))

    def _planned(self, conn: Connection, change: LifecycleChange) -> dict[str, Any]:
        """The waybill columns ``change`` sets (none for the current step sent again), or the error
        that refuses it."""
        current = self.waybill(change.number, conn)
        ts = utc(change.ts)
        same = change.status is current.status and (
            change.status not in _TASK_FOR_STATUS or change.assignee == current.assignee
        )
        if same and (ts == current.status_ts or (ts < current.status_ts and self._is_last(conn, change))):
            return {}  # a retry after a timeout: it was applied, and is not applied twice
        if (
            change.status not in _ANY_TIME
            and current.status is not WaybillStatus.CREATED  # then the creation rule below decides
            and ts < current.status_ts
        ):
            self._check_order(conn, change, current)
        if utc(change.ts) < current.created_at - CLOCK_SKEW:
            raise InvalidInput("ts", "is before the waybill was created")
        # The status time never goes back: the latest time any device gave, so that a step tolerated
        # within the skew cannot open a window for one dated further back still.
        values: dict[str, Any] = {"status": change.status.value, "status_ts": max(ts, current.status_ts)}
        task = _TASK_FOR_STATUS.get(change.status)
        if task is not None:
            if not change.assignee:
                raise InvalidInput("assignee", f"is required when a waybill becomes {change.status.value}")
            self._check_assignee(conn, change.assignee, current)
            values.update(assignee=change.assignee, task=task.value)
        elif change.status in _TASK_ENDS:
            values.update(assignee=None, task=None)  # the courier's task has ended
        if change.status not in NEXT_STEPS[current.status]:
            # A step the lifecycle does not allow here: a PDA event out of thin air (a sign-off of
            # a parcel never out for delivery) or a broken source, not a state to take on its word.
            if current.status in _TERMINAL:
                raise Conflict(f"waybill {change.number} is already {current.status.value}")
            raise Conflict(
                f"waybill {change.number} is {current.status.value}: {change.status.value} cannot follow it"
            )
        if change.status is WaybillStatus.DELIVERED:
            # The sign-off's own time, not the status time a faster device left: the grace ends at
            # most CLOCK_SKEW after the real sign-off (the check of how far ahead a step may be).
            values["delivered_at"] = ts  # assignee stays: the grace period needs it
        return values

    def _check_order(self, conn: Connection, change: LifecycleChange, current: Waybill) -> None:
        """Refuse a step dated before the waybill's current status unless it is a real change from a
        device whose clock is behind the one that dated the current status: dated at most
        :data:`CLOCK_SKEW` before it, and after every step of its own status the waybill went
        through (a later or equal one in the history means a replay of that step, or one it
        superseded). Whether the step may follow the current status at all is the lifecycle
        table's to say, after this.

        Sources deliver late and retry: a stale assignment would hand a task back to a courier whose
        task a later step ended or gave to another, a stale transit step end a live one. So what
        stays refused inside the skew: a replay of an earlier step (its row is in the history), an
        assignment that lost to another courier's dated after it (a late retry undoing a takeover),
        and an assignment dated before an ``exception`` (which ended the task it would revive)."""
        ts = utc(change.ts)
        if current.status_ts - ts > CLOCK_SKEW or (
            change.status in _TASK_FOR_STATUS and current.status is WaybillStatus.EXCEPTION
        ):
            raise Conflict(
                f"waybill {change.number} is {current.status.value} since "
                f"{current.status_ts.isoformat()}: a step dated before that is out of order"
            )
        went_through = conn.execute(
            select(func.count())
            .select_from(waybill_history)
            .where(
                waybill_history.c.tenant == self.tenant,
                waybill_history.c.number == change.number,
                waybill_history.c.status == change.status.value,
                waybill_history.c.ts >= ts,
            )
        ).scalar_one()
        if went_through:
            raise Conflict(
                f"waybill {change.number} was {change.status.value} at or after {ts.isoformat()}: "
                "a step dated before that is out of order"
            )

    def _is_last(self, conn: Connection, change: LifecycleChange) -> bool:
        """Whether ``change`` is the waybill's latest step as recorded (status, time, assignee): the
        current step sent again when the status time is a faster device's, later than its own."""
        last = conn.execute(
            select(waybill_history.c.status, waybill_history.c.ts, waybill_history.c.assignee)
            .where(waybill_history.c.tenant == self.tenant, waybill_history.c.number == change.number)
            .order_by(waybill_history.c.seq.desc())
            .limit(1)
        ).first()
        return (
            last is not None
            and last.status == change.status.value
            and utc(last.ts) == utc(change.ts)
            and (change.status not in _TASK_FOR_STATUS or last.assignee == change.assignee)
        )

    def _check_assignee(self, conn: Connection, employee_id: str, waybill: Waybill) -> None:
        """A pickup or delivery task goes to an active courier of the waybill's origin or destination
        outlet: an assignment is what lets its holder reveal the parties' contacts, so a mistyped id,
        another role's account, or a courier of an outlet the parcel never passes (a service key
        handing one rented account a city's parcels) must not get one. Either end is accepted, so
        a return travels back; a parcel redirected to a third outlet needs a re-routing step (a change
        of its destination outlet) first, which the API does not have yet."""
        try:
            assignee = self.employee(employee_id, conn)
        except NotFound:
            raise InvalidInput("assignee", "is not an employee") from None
        if assignee.role is not Role.COURIER:
            raise InvalidInput("assignee", "must be a courier")
        if assignee.status is not EmployeeStatus.ACTIVE:
            raise InvalidInput("assignee", "is not an active employee")
        if assignee.org_unit not in (waybill.origin_outlet, waybill.dest_outlet):
            raise InvalidInput("assignee", "is not a courier of the waybill's origin or destination outlet")

    def page(
        self,
        *,
        org_unit: str | None,
        status: WaybillStatus | None,
        after: str | None,
        limit: int,
        assignee: str | None = None,
        sealed: bool = False,
    ) -> list[str]:
        """Waybill numbers in number order after the cursor ``after`` (keyset paging).

        ``sealed``: read the whole rows and refuse (:class:`RowIntegrityError`) the page if any of
        them is not sealed, for a page whose clear text leaves (an export): a waybill moved into an
        outlet by SQL must not ride along."""
        stmt = select(waybills if sealed else waybills.c.number).where(waybills.c.tenant == self.tenant)
        if org_unit is not None:
            stmt = stmt.where((waybills.c.origin_outlet == org_unit) | (waybills.c.dest_outlet == org_unit))
        if status is not None:
            stmt = stmt.where(waybills.c.status == status.value)
        if assignee is not None:
            stmt = stmt.where(waybills.c.assignee == assignee)
        if after is not None:
            stmt = stmt.where(waybills.c.number > after)
        with self.engine.connect() as conn:
            if not sealed:
                return list(conn.execute(stmt.order_by(waybills.c.number).limit(limit)).scalars())
            rows = conn.execute(stmt.order_by(waybills.c.number).limit(limit)).all()
        for row in rows:
            self.seals.check_row("waybills", row)
        return [row.number for row in rows]

    def within(self, numbers: list[str], org_unit: str) -> list[str]:
        """Those of ``numbers`` whose origin or destination is ``org_unit``, in the given order."""
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(numbers), 500):
                chunk = numbers[start : start + 500]
                found.update(
                    conn.execute(
                        select(waybills.c.number).where(
                            waybills.c.tenant == self.tenant,
                            waybills.c.number.in_(chunk),
                            (waybills.c.origin_outlet == org_unit) | (waybills.c.dest_outlet == org_unit),
                        )
                    ).scalars()
                )
        return [n for n in numbers if n in found]

    def numbers_with_prefix(
        self, prefix: str, *, limit: int, after: str | None = None, org_unit: str | None = None
    ) -> list[str]:
        """Waybill numbers starting with ``prefix``, in number order after ``after`` (keyset paging),
        of ``org_unit`` (origin or destination) if given."""
        stmt = select(waybills.c.number).where(
            waybills.c.tenant == self.tenant, waybills.c.number.startswith(prefix, autoescape=True)
        )
        if after is not None:
            stmt = stmt.where(waybills.c.number > after)
        if org_unit is not None:
            stmt = stmt.where((waybills.c.origin_outlet == org_unit) | (waybills.c.dest_outlet == org_unit))
        with self.engine.connect() as conn:
            return list(conn.execute(stmt.order_by(waybills.c.number).limit(limit)).scalars())

    def count_waybills(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(waybills).where(waybills.c.tenant == self.tenant)
                ).scalar_one()
            )

    # --- cases --------------------------------------------------------------------------------------

    def open_case(self, case: Case) -> None:
        try:
            self._open_case(case)
        except IntegrityError:  # the same id, opened by a concurrent request that committed first
            raise Conflict(f"case {case.id} already exists") from None

    def _open_case(self, case: Case) -> None:
        with self.engine.begin() as conn:
            self._check_case(conn, case)
            conn.execute(
                insert(cases).values(
                    tenant=self.tenant,
                    id=case.id,
                    kind=case.kind.value,
                    waybill=case.waybill,
                    owner=case.owner,
                    state=CaseState.OPEN.value,
                    opened_at=utc(case.opened_at),
                    mac=self.seals.mac(
                        "cases",
                        (
                            self.tenant,
                            case.id,
                            case.kind.value,
                            case.waybill,
                            case.owner,
                            CaseState.OPEN.value,
                        ),
                    ),
                )
            )

    def check_case(self, case: Case) -> Employee:
        """Refuse, as :meth:`open_case` would, a case that cannot be opened now; writes nothing.
        Returns the case's owner."""
        with self.engine.connect() as conn:
            return self._check_case(conn, case)

    def _check_case(self, conn: Connection, case: Case) -> Employee:
        self.waybill(case.waybill, conn)
        exists = conn.execute(
            select(cases.c.id).where(cases.c.tenant == self.tenant, cases.c.id == case.id)
        ).first()
        if exists is not None:
            raise Conflict(f"case {case.id} already exists")
        # The owner of an open ticket may reveal the waybill's contacts: it must be a real account.
        try:
            return self.employee(case.owner, conn)
        except NotFound:
            raise InvalidInput("owner", "is not an employee") from None

    def case(self, case_id: str) -> Case:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(cases).where(cases.c.tenant == self.tenant, cases.c.id == case_id)
            ).first()
        if row is None:
            raise NotFound(f"case {case_id} not found")
        self.seals.check_row("cases", row)
        return _case_from_row(row)

    def close_case(self, case_id: str, now: datetime) -> Case:
        key = and_(cases.c.tenant == self.tenant, cases.c.id == case_id)
        with self.engine.begin() as conn:
            self._locked(conn, cases, key)
            result = conn.execute(
                update(cases)
                .where(key, cases.c.state == CaseState.OPEN.value)
                .values(state=CaseState.CLOSED.value, closed_at=utc(now))
            )
            self.seals.reseal(conn, cases, key)
            if not result.rowcount:
                exists = conn.execute(
                    select(cases.c.id).where(cases.c.tenant == self.tenant, cases.c.id == case_id)
                ).first()
                if exists is None:
                    raise NotFound(f"case {case_id} not found")
                raise Conflict(f"case {case_id} is already closed")
            row = conn.execute(
                select(cases).where(cases.c.tenant == self.tenant, cases.c.id == case_id)
            ).one()
        self.seals.check_row("cases", row)
        return _case_from_row(row)
