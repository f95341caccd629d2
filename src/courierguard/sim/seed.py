"""Seeds a running deployment with a demo company built from the simulator's world.

Org units and staff come from :func:`courierguard.sim.world.build_world`; waybills with synthetic
parties go through the vault like any order-system batch; a share of them is assigned to couriers
for pickup or delivery, some are signed off, and customer-service agents get open tickets. All
personal data is synthetic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from courierguard.company import CompanyStore, LifecycleChange
from courierguard.domain import (
    Case,
    CaseKind,
    CaseState,
    Employee,
    EmployeeStatus,
    NewWaybill,
    OrgUnit,
    OrgUnitKind,
    Shift,
)
from courierguard.events import Role, WaybillStatus
from courierguard.sim.synthetic import PartyGenerator
from courierguard.sim.world import Staff, World, build_world
from courierguard.vault import Vault

DEMO_TENANT_NAME = "Demo Express (synthetic)"


@dataclass
class SeededCompany:
    """What the seeder created, by role, for the demo script and tests to pick actors from."""

    world: World
    waybills: list[str]
    deliveries: dict[str, list[str]] = field(default_factory=dict)
    """courier id → waybills out for delivery assigned to them"""
    pickups: dict[str, list[str]] = field(default_factory=dict)
    tickets: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """agent id → (ticket id, waybill)"""
    officers: list[str] = field(default_factory=list)

    def staff(self, role: str) -> list[Staff]:
        return self.world.by_role(role)


def _shifts(person: Staff) -> tuple[Shift, ...]:
    start = time(person.shift_start // 60 % 24, person.shift_start % 60)
    end_minute = person.shift_end % 1440
    end = time(end_minute // 60, end_minute % 60)
    return tuple(Shift(day, start, end) for day in sorted(person.workdays))


_KIND = {"outlet": OrgUnitKind.OUTLET, "hub": OrgUnitKind.HUB, "department": OrgUnitKind.DEPARTMENT}


def seed_company(
    company: CompanyStore,
    vault: Vault,
    *,
    now: datetime,
    employees: int = 80,
    waybills_per_outlet: int = 120,
    seed: int = 7,
) -> SeededCompany:
    """Create a demo company in ``company`` and ``vault`` as of ``now``; deterministic for ``seed``."""
    rng = random.Random(seed)
    world = build_world(employees, rng)
    company.ensure_tenant(DEMO_TENANT_NAME, now)
    company.put_org_unit(OrgUnit("HQ", OrgUnitKind.HQ, "Headquarters"))
    for unit in world.units:
        company.put_org_unit(
            OrgUnit(
                unit.id,
                _KIND[unit.kind],
                f"{unit.city.name} {unit.id}",
                "HQ",
                unit.city.name,
                unit.lat,
                unit.lon,
            )
        )
    for person in world.staff:
        company.put_employee(
            Employee(person.id, Role(person.role), person.unit.id, EmployeeStatus.ACTIVE, _shifts(person)),
            now,
        )
    # Four-eyes needs two officers, and auditors read the trail: make sure both exist.
    officers = [p.id for p in world.by_role("security_officer")]
    while len(officers) < 2:
        extra = f"E9{len(officers):05d}"
        company.put_employee(Employee(extra, Role.SECURITY_OFFICER, "HQ-SEC"), now)
        officers.append(extra)
    company.put_employee(Employee("E990100", Role.AUDITOR, "HQ-SEC"), now)

    parties = PartyGenerator(seed)
    numbers: list[str] = []
    batch: list[NewWaybill] = []
    serial = rng.randrange(10**11, 10**12)
    for outlet in world.outlets:
        for _ in range(waybills_per_outlet):
            origin = rng.choice(world.outlets)
            serial += rng.randint(1, 3)
            number = f"YT{serial:013d}"
            batch.append(
                NewWaybill(
                    number=number,
                    origin_outlet=origin.id,
                    dest_outlet=outlet.id,
                    routing_code=f"{origin.city.area_code}-{outlet.city.area_code}-{rng.randint(1, 40):02d}",
                    sender=parties.party(),
                    recipient=parties.party(),
                    created_at=now - timedelta(hours=rng.randint(20, 60)),
                )
            )
            numbers.append(number)
    for start in range(0, len(batch), 1000):
        vault.ingest(batch[start : start + 1000])

    seeded = SeededCompany(world, numbers, officers=officers)
    by_dest: dict[str, list[str]] = {}
    for wb in batch:
        by_dest.setdefault(wb.dest_outlet, []).append(wb.number)
    for outlet in world.outlets:
        queue = by_dest.get(outlet.id, [])
        if not outlet.couriers:
            continue
        for i, number in enumerate(queue):
            courier = outlet.couriers[i % len(outlet.couriers)]
            for status in (WaybillStatus.PICKED_UP, WaybillStatus.IN_TRANSIT, WaybillStatus.AT_DESTINATION):
                company.apply(LifecycleChange(number, status, now - timedelta(hours=6)))
            roll = rng.random()
            if roll < 0.45:
                company.apply(
                    LifecycleChange(
                        number, WaybillStatus.OUT_FOR_DELIVERY, now - timedelta(hours=2), courier.id
                    )
                )
                seeded.deliveries.setdefault(courier.id, []).append(number)
            elif roll < 0.6:
                company.apply(
                    LifecycleChange(
                        number, WaybillStatus.OUT_FOR_DELIVERY, now - timedelta(hours=5), courier.id
                    )
                )
                company.apply(LifecycleChange(number, WaybillStatus.DELIVERED, now - timedelta(hours=3)))
    agents = world.by_role("customer_service")
    for i, number in enumerate(rng.sample(numbers, min(len(numbers), 10 * max(1, len(agents))))):
        agent = agents[i % len(agents)]
        ticket = f"TK{i + 1:06d}"
        company.open_case(
            Case(ticket, CaseKind.TICKET, number, agent.id, CaseState.OPEN, now - timedelta(hours=1))
        )
        seeded.tickets.setdefault(agent.id, []).append((ticket, number))
    return seeded
