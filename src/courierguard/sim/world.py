"""The synthetic courier company: cities, outlets, hubs, departments and the people who work there.

Built once per run from the seed. Staff are mutable because their lives change during the run:
they replace phones, move outlets and leave.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from courierguard.sim.synthetic import CITIES, City

COURIER = "courier"
CLERK = "outlet_clerk"
MANAGER = "outlet_manager"
HUB = "hub_operator"
CS = "customer_service"
SECURITY = "security_officer"
ADMIN = "admin"

PDA_UA = "YTPDA/6.2.1 (Android 10; UROVO DT50)"
DESK_UA = "YTDesk/3.8.0 (Windows 10; x64)"
CS_UA = "YTCS/2.4.3 (Windows 11; x64)"
HUB_UA = "YTHub/1.9.7 (Android 9; Zebra MC3300)"


@dataclass(slots=True)
class Unit:
    """An outlet, hub or department, with where it is and the network its desks leave from."""

    id: str
    kind: str
    city: City
    lat: float
    lon: float
    egress_ip: str
    couriers: list[Staff] = field(default_factory=list)
    clerks: list[Staff] = field(default_factory=list)
    managers: list[Staff] = field(default_factory=list)


@dataclass(slots=True)
class Staff:
    """One employee and the habits that drive their simulated day."""

    id: str
    role: str
    unit: Unit
    shift_start: int  # minutes after midnight
    shift_end: int  # may pass 1440 for a night shift
    workdays: frozenset[int]  # weekdays, 0 = Monday
    device: str
    user_agent: str
    auth: str
    area_lat: float
    area_lon: float
    volume: float  # role-specific daily volume mean (parcels, tickets, scans)
    reveal_rate: float
    actor: dict[str, str] = field(default_factory=dict)
    left_day: int | None = None  # day index on which the account was closed
    move_day: int | None = None
    move_to: Unit | None = None
    device_day: int | None = None  # day index on which the phone was replaced
    busy: bool = False  # taken by an attack scenario: no life events

    def refresh_actor(self) -> None:
        """Rebuild the shared actor dict after an org-unit change."""
        self.actor = {"id": self.id, "kind": "employee", "role": self.role, "org_unit": self.unit.id}


@dataclass(slots=True)
class World:
    """Everything static about the company for one run."""

    units: list[Unit]
    outlets: list[Unit]
    hubs: dict[str, Unit]
    staff: list[Staff]
    admin: Staff
    mobile_pools: dict[str, tuple[int, int]]
    home_pools: dict[str, tuple[int, int]]

    def by_role(self, role: str) -> list[Staff]:
        """Staff of one role, in id order."""
        return [s for s in self.staff if s.role == role]


def device_id(rng: random.Random, kind: str) -> str:
    """A serial-number-like device id; the renter's phone looks just like a company PDA."""
    if kind == "pda":
        return f"UR{rng.getrandbits(40):010X}"
    if kind == "hub":
        return f"ZB{rng.getrandbits(40):010X}"
    return f"PC-{rng.getrandbits(32):08X}"


def _jitter(rng: random.Random, value: float, spread: float) -> float:
    return round(value + rng.uniform(-spread, spread), 5)


def build_world(employees: int, rng: random.Random) -> World:
    """Lay out the company for ``employees`` people.

    About 66% couriers, 8% clerks, 6% managers (one per outlet), 7% hub operators, 8% customer
    service, 1% security officers, and one admin per 1,000 staff. An outlet holds about 13 people.
    """
    n_admin = max(1, employees // 1000)
    n_security = max(1, employees // 100)
    n_cs = max(2, round(employees * 0.08))
    n_hub = max(2, round(employees * 0.07))
    outlet_staff = employees - n_admin - n_security - n_cs - n_hub
    n_outlets = max(1, round(outlet_staff / 13))
    n_cities = max(1, min(len(CITIES), (n_outlets + 3) // 4))
    cities = CITIES[:n_cities]

    mobile_pools = {c.code: (111 + i * 3, 160 + i * 5) for i, c in enumerate(CITIES)}
    home_pools = {c.code: (58 + i * 2, 20 + i * 7) for i, c in enumerate(CITIES)}

    units: list[Unit] = []
    outlets: list[Unit] = []
    per_city: dict[str, int] = {}
    for k in range(n_outlets):
        city = cities[k % n_cities]
        per_city[city.code] = per_city.get(city.code, 0) + 1
        a, b = home_pools[city.code]
        unit = Unit(
            id=f"OUT-{city.code}-{per_city[city.code]:03d}",
            kind="outlet",
            city=city,
            lat=_jitter(rng, city.lat, 0.12),
            lon=_jitter(rng, city.lon, 0.12),
            egress_ip=f"{a}.{b}.{rng.randrange(1, 255)}.{rng.randrange(2, 250)}",
        )
        outlets.append(unit)
        units.append(unit)
    hubs: dict[str, Unit] = {}
    for city in cities:
        a, b = home_pools[city.code]
        hub = Unit(
            f"HUB-{city.code}",
            "hub",
            city,
            _jitter(rng, city.lat, 0.2),
            _jitter(rng, city.lon, 0.2),
            f"{a}.{b}.{rng.randrange(1, 255)}.{rng.randrange(2, 250)}",
        )
        hubs[city.code] = hub
        units.append(hub)
    cs_cities = cities[: min(2, n_cities)]
    cs_units = []
    for city in cs_cities:
        a, b = home_pools[city.code]
        unit = Unit(
            f"CS-{city.code}", "department", city, city.lat, city.lon, f"{a}.{b}.{rng.randrange(1, 255)}.10"
        )
        cs_units.append(unit)
        units.append(unit)
    hq_city = cities[0]
    a, b = home_pools[hq_city.code]
    sec_unit = Unit("HQ-SEC", "department", hq_city, hq_city.lat, hq_city.lon, f"{a}.{b}.8.20")
    it_unit = Unit("HQ-IT", "department", hq_city, hq_city.lat, hq_city.lon, f"{a}.{b}.8.21")
    units += [sec_unit, it_unit]

    staff: list[Staff] = []

    def add(role: str, unit: Unit) -> Staff:
        number = len(staff) + 1
        off = rng.randrange(7)
        if role == COURIER:
            # Six days a week with a rotating day off, early start, late finish.
            start = rng.randint(7 * 60 + 20, 8 * 60 + 40)
            end = rng.randint(18 * 60 + 30, 20 * 60 + 40)
            workdays = frozenset(range(7)) - {off}
            dev, ua, auth = device_id(rng, "pda"), PDA_UA, rng.choice(("password", "password", "face"))
            volume = rng.uniform(130, 260)
            reveal = rng.uniform(0.05, 0.15)
        elif role in (CLERK, MANAGER):
            start = rng.randint(8 * 60, 9 * 60)
            end = start + rng.randint(8 * 60 + 30, 10 * 60)
            second = (off + rng.choice((1, 3))) % 7
            workdays = frozenset(range(7)) - ({off} if role == MANAGER else {off, second})
            dev, ua, auth = device_id(rng, "pc"), DESK_UA, "sso"
            volume = rng.uniform(60, 140) if role == CLERK else rng.uniform(8, 20)
            reveal = rng.uniform(0.01, 0.04)
        elif role == HUB:
            start = rng.choice((6 * 60, 14 * 60, 22 * 60))
            end = start + 9 * 60
            workdays = frozenset(range(7)) - {off, (off + 1) % 7}
            dev, ua, auth = device_id(rng, "hub"), HUB_UA, "password"
            volume = rng.uniform(150, 450)
            reveal = rng.uniform(0.002, 0.008)
        elif role == CS:
            start = rng.choice((8 * 60, 8 * 60, 12 * 60, 13 * 60 + 30))
            end = start + 8 * 60 + 30
            workdays = frozenset(range(7)) - {off, (off + 1) % 7}
            dev, ua, auth = device_id(rng, "pc"), CS_UA, "sso"
            volume = rng.uniform(25, 50)  # tickets a day
            reveal = rng.uniform(0.5, 0.8)
        else:  # security officers and admins: office hours, weekdays
            start = rng.randint(8 * 60 + 30, 9 * 60 + 30)
            end = start + 9 * 60
            workdays = frozenset(range(5))
            dev, ua, auth = device_id(rng, "pc"), DESK_UA, "webauthn"
            volume = rng.uniform(5, 15)
            reveal = 0.1
        person = Staff(
            id=f"E{number:06d}",
            role=role,
            unit=unit,
            shift_start=start,
            shift_end=end,
            workdays=workdays,
            device=dev,
            user_agent=ua,
            auth=auth,
            area_lat=_jitter(rng, unit.lat, 0.03),
            area_lon=_jitter(rng, unit.lon, 0.03),
            volume=volume,
            reveal_rate=reveal,
        )
        person.refresh_actor()
        staff.append(person)
        return person

    for i in range(outlet_staff):
        unit = outlets[i % n_outlets]
        if not unit.managers:
            unit.managers.append(add(MANAGER, unit))
        elif len(unit.clerks) < 1 or (len(unit.clerks) < 2 and i % 13 == 7):
            unit.clerks.append(add(CLERK, unit))
        else:
            unit.couriers.append(add(COURIER, unit))
    hub_list = list(hubs.values())
    for i in range(n_hub):
        add(HUB, hub_list[i % len(hub_list)])
    for i in range(n_cs):
        add(CS, cs_units[i % len(cs_units)])
    for _ in range(n_security):
        add(SECURITY, sec_unit)
    admins = [add(ADMIN, it_unit) for _ in range(n_admin)]
    return World(units, outlets, hubs, staff, admins[0], mobile_pools, home_pools)


def plan_life_events(world: World, days: int, rng: random.Random) -> None:
    """Schedule phone replacements, moves between outlets and departures.

    About 2% of couriers replace their phone, 1% of outlet staff move to another outlet in the same
    city, and 1.5% of all staff leave. Scenario actors are chosen before this runs and are skipped.
    """
    if days < 3:
        return
    for person in world.staff:
        if person.busy or person.role == ADMIN:
            continue
        roll = rng.random()
        if person.role == COURIER and roll < 0.02:
            person.device_day = rng.randrange(1, days)
        elif person.role in (COURIER, CLERK) and roll < 0.03:
            same_city = [u for u in world.outlets if u.city is person.unit.city and u is not person.unit]
            if same_city:
                person.move_day = rng.randrange(1, days)
                person.move_to = rng.choice(same_city)
        elif roll < 0.045 and person.role != SECURITY:
            person.left_day = rng.randrange(2, days)
