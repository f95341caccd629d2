"""The attack scenarios, hidden inside normal work.

Attack events look exactly like real ones (same apps, same formats, outcomes as the legacy system
would have decided them); only the truth file says which they are. Each scenario has its own seeded
``random.Random``, so adding or removing one leaves the others (and normal work) unchanged, except
where the attack changes the world itself (scenario 2's owner stays at home, scenario 10's courier
leaves, scenario 15's courier works on a new phone after an officer's device reset, scenario 16's
officers and admins are held).
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from courierguard.sim.world import ADMIN, CLERK, COURIER, CS, MANAGER, PDA_UA, SECURITY, Staff, device_id

if TYPE_CHECKING:
    from courierguard.sim.engine import Day, Delivery, ScenarioTruth, Simulation

DAY_MS = 86_400_000
MIN_MS = 60_000
ALLOW = {"decision": "allow"}
F_RNPA = ["recipient.name", "recipient.phone", "recipient.address"]
F_RP = ["recipient.phone"]
F_ALL = [
    "sender.name",
    "sender.phone",
    "sender.address",
    "recipient.name",
    "recipient.phone",
    "recipient.address",
]
SCRIPT_UA = "YTPDA/6.2.1 (Android 12; Redmi Note 11)"


class Scenario:
    """One attack: chooses its actors when built, then adds labelled events day by day."""

    sid = 0
    description = ""
    duration = 1  # days
    late = False
    """Chosen after life events are planned (see :func:`finish_setup`): scenarios added after the
    first ten pick their actors among staff without life events, so that they consume nothing of
    the life-event draw and every earlier run's normal work and attacks stay as they were."""

    def __init__(self, sim: Simulation, rng: random.Random, truth: ScenarioTruth, first_day: int) -> None:
        self.sim = sim
        self.rng = rng
        self.truth = truth
        self.first_day = first_day
        self.truth.description = self.description
        self.active = first_day < sim.config.days
        if not self.late:
            self.setup()

    def setup(self) -> None:
        """Choose actors and devices; mark them busy so no life event disturbs the attack."""

    def run_day(self, day: Day) -> None:
        """Add this scenario's events for ``day`` (labelled with ``sid``)."""
        if self.active and self.first_day <= day.d < self.first_day + self.duration:
            self.attack(day, day.d - self.first_day)

    def attack(self, day: Day, nth: int) -> None:
        """The attack's events on its ``nth`` day."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------------

    def pick(self, role: str, *, exclude_outlets: set[str] | None = None) -> Staff | None:
        """A random employee of ``role`` not yet involved in any scenario."""
        candidates = [
            s
            for s in self.sim.world.staff
            if s.role == role
            and not s.busy
            and (exclude_outlets is None or s.unit.id not in exclude_outlets)
            and s.left_day is None
            and s.move_day is None
            and s.device_day is None
        ]
        if not candidates:
            return None
        person = self.rng.choice(candidates)
        person.busy = True
        self.truth.actors.append(person.id)
        return person

    def skip(self, why: str) -> None:
        """Record that the world is too small or the period too short for this scenario."""
        self.active = False
        self.truth.notes["skipped"] = why

    def new_device(self) -> str:
        """A device never seen before, recorded in the truth."""
        dev = device_id(self.rng, "pda")
        self.truth.devices.append(dev)
        return dev

    def other_city(self, person: Staff) -> str:
        """The code of a city far from ``person``'s own (all cities exist in the IP plan)."""
        from courierguard.sim.synthetic import CITIES

        return self.rng.choice([c.code for c in CITIES if c.code != person.unit.city.code])

    def emit(self, day: Day, t: int, body: dict[str, Any]) -> None:
        """Queue one labelled event."""
        day.emit(t, body, self.sid)

    def login(self, day: Day, person: Staff, t: int, **kwargs: Any) -> dict[str, Any]:
        """A labelled login; the session's ip is recorded in the truth."""
        kwargs.setdefault("user_agent", PDA_UA)
        kwargs.setdefault("auth", person.auth)
        if kwargs["ip"] not in self.truth.ips:
            self.truth.ips.append(kwargs["ip"])
        return self.sim.login(day, person, t, label=self.sid, rng=self.rng, **kwargs)

    def reveal(
        self,
        day: Day,
        person: Staff,
        session: dict[str, Any],
        t: int,
        w: Delivery,
        fields: list[str],
        purpose: str = "delivery_contact",
    ) -> None:
        """A served reveal of delivery ``w`` (the legacy system allowed it)."""
        self.emit(
            day,
            t,
            {
                "actor": person.actor,
                "session": session,
                "action": "waybill.reveal",
                "resource": self.sim.resource(w),
                "fields": fields,
                "purpose": purpose,
                "outcome": ALLOW,
            },
        )

    def list_page(
        self,
        day: Day,
        person: Staff,
        session: dict[str, Any],
        t: int,
        page: list[Delivery],
        total: int,
        kind: str,
    ) -> None:
        """A masked list query returning ``page`` out of ``total`` results."""
        self.emit(
            day,
            t,
            {
                "actor": person.actor,
                "session": session,
                "action": "waybill.list",
                "query": {"kind": kind, "result_count": total, "result_ids": [w.number for w in page]},
                "outcome": ALLOW,
            },
        )

    def scrape(
        self,
        day: Day,
        person: Staff,
        session: dict[str, Any],
        t: int,
        until: int,
        count: int,
        gap: tuple[int, int],
        pool: list[Delivery],
        fields: list[str],
        *,
        page: int = 50,
        breaks: bool = False,
    ) -> int:
        """List a page, reveal each row, repeat: the shape of every scraping script. Returns the end time."""
        rng = self.rng
        targets = rng.sample(pool, min(count, len(pool)))
        for i in range(0, len(targets), page):
            chunk = targets[i : i + page]
            self.list_page(
                day, person, session, t, chunk, len(pool), rng.choice(("by_status", "by_org_unit"))
            )
            for w in chunk:
                t += rng.randint(*gap)
                if breaks and rng.random() < 0.01:
                    t += rng.randint(5, 40) * MIN_MS
                if t >= until:
                    return t
                self.reveal(day, person, session, t, w, fields)
        return t


class RentedNightFast(Scenario):
    """1: a rented courier account scraped at night by a script, from a new device in another province."""

    sid = 1
    description = "rented account, fast scraping at night from a new device and network"
    duration = 2

    def setup(self) -> None:
        person = self.pick(COURIER)
        if person is None:
            return self.skip("no courier")
        self.person = person
        self.device = self.new_device()
        self.city = self.other_city(person)

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        t = day.d * DAY_MS + (23 * 60 + rng.randint(0, 50)) * MIN_MS
        session = self.login(
            day, self.person, t, device=self.device, ip=self.sim.home_ip(self.city, rng), user_agent=SCRIPT_UA
        )
        until = t + 6 * 60 * MIN_MS
        self.scrape(
            day,
            self.person,
            session,
            t + 40_000,
            until,
            rng.randint(1500, 3000),
            (400, 1600),
            self.sim.recent(),
            F_RNPA,
        )


class RentedPacedSameCity(Scenario):
    """2: a rented account used in working hours, paced like a person, in the owner's own city."""

    sid = 2
    description = "rented account, paced scraping in working hours in the same city"
    duration = 5

    def setup(self) -> None:
        person = self.pick(COURIER)
        if person is None:
            return self.skip("no courier")
        self.person = person
        self.device = self.new_device()
        # The owner hands the account over and stays home on those days.
        for d in range(self.first_day, self.first_day + self.duration):
            self.sim.absent.add((person.id, d))

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        city = person.unit.city
        base = day.d * DAY_MS
        pool = self.sim.recent()
        for start_min, end_min in (
            (9 * 60 + rng.randint(0, 40), 12 * 60),
            (13 * 60 + 30 + rng.randint(0, 30), 18 * 60),
        ):
            t = base + start_min * MIN_MS
            session = self.login(
                day,
                person,
                t,
                device=self.device,
                ip=self.sim.mobile_ip(city.code, rng),
                location=self.sim.location(city.lat, city.lon, rng, 0.08),
            )
            count = (end_min - start_min) * 60 // 55
            self.scrape(
                day,
                person,
                session,
                t + 60_000,
                base + end_min * MIN_MS,
                count,
                (25_000, 90_000),
                pool,
                F_RNPA,
                page=20,
                breaks=True,
            )


class ConcurrentOwnerRenter(Scenario):
    """3: the owner works as usual while a renter in another city uses the same account."""

    sid = 3
    description = "owner and renter on the same account at the same time on two devices"
    duration = 3

    def setup(self) -> None:
        person = self.pick(COURIER)
        if person is None:
            return self.skip("no courier")
        self.person = person
        self.device = self.new_device()
        self.city = self.other_city(person)

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        if person.id not in self.sim.sessions:
            return  # the owner is off today; the renter waits for a day when both are on
        from courierguard.sim.synthetic import CITIES

        city = next(c for c in CITIES if c.code == self.city)
        t = day.d * DAY_MS + (10 * 60 + rng.randint(0, 60)) * MIN_MS
        session = self.login(
            day,
            person,
            t,
            device=self.device,
            ip=self.sim.mobile_ip(city.code, rng),
            location=self.sim.location(city.lat, city.lon, rng, 0.05),
        )
        until = day.d * DAY_MS + 17 * 60 * MIN_MS
        self.scrape(
            day,
            person,
            session,
            t + 30_000,
            until,
            400,
            (40_000, 150_000),
            self.sim.recent(),
            F_RNPA,
            page=20,
        )


class ClerkBacklog(Scenario):
    """4: an outlet clerk's account lists and reveals the whole outlet backlog, from the outlet PC."""

    sid = 4
    description = "an outlet clerk's account used to list and reveal the whole outlet backlog"
    duration = 2

    def setup(self) -> None:
        person = self.pick(CLERK)
        if person is None:
            return self.skip("no clerk")
        self.person = person
        self.done: set[str] = set()

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        oid = person.unit.id
        backlog = [w for w in self.sim.today.get(oid, []) + self.sim.recent(oid) if w.number not in self.done]
        if not backlog:
            return
        t = day.d * DAY_MS + (19 * 60 + rng.randint(0, 90)) * MIN_MS
        session = self.login(
            day, person, t, device=person.device, ip=person.unit.egress_ip, user_agent=person.user_agent
        )
        until = day.d * DAY_MS + 26 * 60 * MIN_MS
        rng.shuffle(backlog)
        t += 60_000
        for i in range(0, len(backlog), 50):
            chunk = backlog[i : i + 50]
            self.list_page(day, person, session, t, chunk, len(backlog), "by_org_unit")
            for w in chunk:
                t += rng.randint(2000, 6000)
                if t >= until:
                    return
                self.done.add(w.number)
                self.reveal(day, person, session, t, w, F_ALL, purpose="return")


class InsiderSlow(Scenario):
    """5: a courier reveals a few dozen records a day that none of their tasks explains, for weeks."""

    sid = 5
    description = "an insider revealing a few dozen records a day beyond their tasks, for weeks"
    duration = 10_000

    def setup(self) -> None:
        person = self.pick(COURIER)
        if person is None:
            return self.skip("no courier")
        self.person = person

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        pool = [w for w in self.sim.recent() if w.assignee != person.id]
        if not pool:
            return
        base = day.d * DAY_MS
        start = base + (person.shift_start + 60) * MIN_MS
        span = (person.shift_end - person.shift_start - 90) * MIN_MS
        for w in rng.sample(pool, min(len(pool), rng.randint(20, 40))):
            t = start + int(rng.random() * span)
            session = self.sim.session_at(person.id, t)
            if session is None:
                continue  # not at work today
            self.reveal(
                day,
                person,
                session,
                t,
                w,
                F_RNPA if rng.random() < 0.5 else F_RP,
            )


class Gang(Scenario):
    """6: several rented accounts in different outlets, worked from a shared pool of devices and networks."""

    sid = 6
    description = "a gang of several rented accounts in different outlets sharing devices and networks"
    duration = 3

    def setup(self) -> None:
        outlets: set[str] = set()
        self.people: list[Staff] = []
        for _ in range(4):
            person = self.pick(COURIER, exclude_outlets=outlets)
            if person is None:
                break
            outlets.add(person.unit.id)
            self.people.append(person)
        if len(self.people) < 2:
            return self.skip("fewer than two outlets with couriers")
        self.devices = [self.new_device() for _ in range(2)]
        city = self.other_city(self.people[0])
        self.ips = [self.sim.home_ip(city, self.rng) for _ in range(2)]

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        pool = self.sim.recent()
        for k, person in enumerate(self.people):
            t = day.d * DAY_MS + (19 * 60 + rng.randint(0, 90)) * MIN_MS
            slot = (k + nth) % 2
            session = self.login(
                day, person, t, device=self.devices[slot], ip=self.ips[slot], user_agent=SCRIPT_UA
            )
            until = day.d * DAY_MS + (23 * 60 + 30) * MIN_MS
            self.scrape(
                day,
                person,
                session,
                t + 30_000,
                until,
                rng.randint(200, 400),
                (8000, 40_000),
                pool,
                F_RNPA,
                page=20,
            )


class Enumeration(Scenario):
    """7: a rented account walks sequential waybill numbers from one outlet's block."""

    sid = 7
    description = "enumeration of sequential waybill numbers"
    duration = 1

    def setup(self) -> None:
        person = self.pick(COURIER)
        if person is None:
            return self.skip("no courier")
        self.person = person
        self.device = self.new_device()
        self.city = self.other_city(person)

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        sim = self.sim
        person = self.person
        outlet = rng.choice(sim.world.outlets).id
        first, next_free = sim.outlet_block(outlet)
        allocated = sim.allocated[outlet]
        count = rng.randint(2000, 3500)
        number = max(first, next_free - count + rng.randint(0, 300))
        self.truth.notes["outlet_block"] = outlet
        self.truth.notes["first_number"] = f"YT{number}"
        t = day.d * DAY_MS + (20 * 60 + rng.randint(0, 60)) * MIN_MS
        session = self.login(
            day, person, t, device=self.device, ip=sim.mobile_ip(self.city, rng), user_agent=SCRIPT_UA
        )
        status_ts = sim.clock.fmt(day.d * DAY_MS)
        for _ in range(count):
            t += rng.randint(800, 2500)
            num = f"YT{number}"
            if number in allocated:
                body: dict[str, Any] = {
                    "actor": person.actor,
                    "session": session,
                    "action": "waybill.reveal",
                    "resource": {
                        "type": "waybill",
                        "id": num,
                        "status": "in_transit",
                        "status_ts": status_ts,
                    },
                    "fields": F_RNPA,
                    "purpose": "delivery_contact",
                    "outcome": ALLOW,
                }
            else:
                body = {
                    "actor": person.actor,
                    "session": session,
                    "action": "waybill.reveal",
                    "resource": {"type": "waybill", "id": num},
                    "purpose": "delivery_contact",
                    "outcome": {"decision": "deny", "reason": "not_found"},
                }
            self.emit(day, t, body)
            number += 1


class ExportAbuse(Scenario):
    """8: an outlet manager requests clear-text bulk exports again and again."""

    sid = 8
    description = "repeated bulk export requests"
    duration = 4

    def setup(self) -> None:
        person = self.pick(MANAGER)
        if person is None:
            return self.skip("no manager")
        self.person = person

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        t = day.d * DAY_MS + (10 * 60 + rng.randint(0, 60)) * MIN_MS
        session = self.sim.session_at(person.id, t) or self.login(
            day,
            person,
            t - 20 * MIN_MS,
            device=person.device,
            ip=person.unit.egress_ip,
            user_agent=person.user_agent,
        )
        pool = self.sim.recent()
        for i in range(rng.randint(3, 6)):
            t += rng.randint(15, 70) * MIN_MS
            rows = rng.sample(pool, min(len(pool), rng.randint(300, 1500)))
            query = {"kind": "by_org_unit", "result_count": len(rows), "result_ids": [w.number for w in rows]}
            if i == 0 and rng.random() < 0.5:
                outcome = {"decision": "deny", "reason": "approval_required"}
                body: dict[str, Any] = {
                    "actor": person.actor,
                    "session": session,
                    "action": "waybill.export",
                    "query": query,
                }
            else:
                outcome = {"decision": "allow", "reason": f"approved:APR-{rng.randrange(10**6):06d}"}
                body = {
                    "actor": person.actor,
                    "session": session,
                    "action": "waybill.export",
                    "query": query,
                    "fields": F_RNPA,
                }
            body["purpose"] = "report"
            body["outcome"] = outcome
            self.emit(day, t, body)


class CsSnooping(Scenario):
    """9: a customer-service agent looks people up by phone with no ticket behind it."""

    sid = 9
    description = "a customer-service agent looking up phones without tickets (snooping)"
    duration = 10

    def setup(self) -> None:
        person = self.pick(CS)
        if person is None:
            return self.skip("no customer-service agent")
        self.person = person

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        pool = self.sim.recent()
        if person.id not in self.sim.sessions or not pool:
            return
        base = day.d * DAY_MS
        start = base + (person.shift_start + 30) * MIN_MS
        span = (person.shift_end - person.shift_start - 60) * MIN_MS
        for _ in range(rng.randint(8, 20)):
            t = start + int(rng.random() * span)
            w = rng.choice(pool)
            session = self.sim.session_at(person.id, t)
            if session is None:
                continue
            self.emit(
                day,
                t,
                {
                    "actor": person.actor,
                    "session": session,
                    "action": "waybill.search",
                    "query": {"kind": "by_phone", "result_count": 1, "result_ids": [w.number]},
                    "outcome": ALLOW,
                },
            )
            self.reveal(
                day, person, session, t + rng.randint(8000, 60_000), w, F_RNPA, purpose="customer_inquiry"
            )


class FormerEmployee(Scenario):
    """10: a courier leaves; their account keeps working from their own phone at home."""

    sid = 10
    description = "a former employee's account used after they left"
    duration = 4

    def setup(self) -> None:
        person = self.pick(COURIER)
        if person is None:
            return self.skip("no courier")
        self.person = person
        left = max(1, self.first_day - 1)
        self.first_day = max(self.first_day, left + 1)
        self.active = self.first_day < self.sim.config.days
        person.left_day = left
        self.truth.notes["left_day"] = (self.sim.config.start + timedelta(days=left)).isoformat()
        self.truth.notes["left_signal"] = f"admin.change purpose=employee.left:{person.id}"
        self.device = self.new_device()

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        city = person.unit.city
        t = day.d * DAY_MS + (20 * 60 + rng.randint(0, 60)) * MIN_MS
        session = self.login(
            day,
            person,
            t,
            device=self.device,
            ip=self.sim.home_ip(city.code, rng),
            location=self.sim.location(person.area_lat, person.area_lon, rng, 0.03),
        )
        until = day.d * DAY_MS + (23 * 60 + 30) * MIN_MS
        self.scrape(
            day,
            person,
            session,
            t + 30_000,
            until,
            rng.randint(100, 250),
            (10_000, 60_000),
            self.sim.recent(),
            F_RNPA,
            page=20,
        )


class MaskedScrape(Scenario):
    """11: a rented clerk account pages masked lists of its outlet and the neighbouring ones at night.

    No clear text at all: partial names, 138****1234 and districts, which fraud rings still buy.
    The renter drives the outlet's own PC by remote desktop, so device and network are the
    account's own; only the hour and the volume give it away.
    """

    sid = 11
    description = "a rented clerk account paging masked lists of its outlet and neighbouring outlets at night"
    duration = 2
    late = True

    def setup(self) -> None:
        person = self.pick(CLERK)
        if person is None:
            return self.skip("no clerk")
        self.person = person

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        unit = person.unit
        neighbours = [
            u.id for u in self.sim.world.outlets if u.city.code == unit.city.code and u.id != unit.id
        ]
        outlets = [unit.id, *rng.sample(neighbours, min(3, len(neighbours)))]
        pool = [w for oid in outlets for w in self.sim.today.get(oid, []) + self.sim.recent(oid)]
        if not pool:
            return
        t = day.d * DAY_MS + (22 * 60 + rng.randint(0, 60)) * MIN_MS
        session = self.login(
            day, person, t, device=person.device, ip=unit.egress_ip, user_agent=person.user_agent
        )
        rows = rng.sample(pool, min(len(pool), rng.randint(3000, 5000)))
        self.truth.notes.setdefault("outlets", []).append(outlets)
        for i in range(0, len(rows), 100):
            t += rng.randint(15_000, 45_000)
            kind = rng.choice(("by_org_unit", "by_status"))
            self.list_page(day, person, session, t, rows[i : i + 100], len(pool), kind)


class PhoneProbing(Scenario):
    """12: a rented customer-service account probes a gang's list of phone numbers by search.

    Each search tells the gang whether a number is a customer and links it to parcels and places;
    most numbers are not (misses), and the hits are looked at, never worked on in a ticket. The
    renter uses the agent's own desk after the shift (remote desktop), so only the searches show.
    """

    sid = 12
    description = "a rented customer-service account probing a list of phone numbers by search"
    duration = 2
    late = True

    def setup(self) -> None:
        person = self.pick(CS)
        if person is None:
            return self.skip("no customer-service agent")
        self.person = person

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        pool = self.sim.recent()
        if not pool:
            return
        t = day.d * DAY_MS + (person.shift_end + rng.randint(20, 60)) * MIN_MS
        session = self.login(
            day, person, t, device=person.device, ip=person.unit.egress_ip, user_agent=person.user_agent
        )
        until = t + rng.randint(120, 180) * MIN_MS
        hit_rate = rng.uniform(0.15, 0.3)
        while True:
            t += rng.randint(35_000, 90_000)
            if t >= until:
                return
            if rng.random() >= hit_rate:
                query: dict[str, Any] = {"kind": "by_phone", "result_count": 0, "result_ids": []}
                self._search(day, person, session, t, query)
                continue
            w = rng.choice(pool)
            query = {"kind": "by_phone", "result_count": 1, "result_ids": [w.number]}
            self._search(day, person, session, t, query)
            body = {"actor": person.actor, "session": session, "action": "waybill.view"}
            body.update({"resource": self.sim.resource(w), "outcome": ALLOW})
            self.emit(day, t + rng.randint(3000, 15_000), body)

    def _search(
        self, day: Day, person: Staff, session: dict[str, Any], t: int, query: dict[str, Any]
    ) -> None:
        body = {"actor": person.actor, "session": session, "action": "waybill.search", "query": query}
        body["outcome"] = ALLOW
        self.emit(day, t, body)


class MassAssigned(Scenario):
    """13: a colluding order/PDA-system key assigns a city's parcels to one rented courier account.

    The security tester's finding F3. Every parcel is "out for delivery, assigned to" the account, so
    every reveal looks explained by a task. The first day the renter reveals at ~1.8 a second, as the
    tester did; the second day it paces itself just under the old 400-an-hour reveal rate all shift.
    The account's own phone and session are used (the owner lends them), so only volume shows.
    """

    sid = 13
    description = "a service key mass-assigning a city's waybills to a rented courier who reveals them"
    duration = 10_000  # two working days of the account, the first from the start day on
    late = True
    done = 0

    def setup(self) -> None:
        person = self.pick(COURIER)
        if person is None:
            return self.skip("no courier")
        self.person = person

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        city = person.unit.city.code
        pool = [
            w
            for u in self.sim.world.outlets
            if u.city.code == city
            for w in self.sim.today.get(u.id, []) + self.sim.recent(u.id)
        ]
        t = day.d * DAY_MS + (person.shift_start + 60) * MIN_MS
        session = self.sim.session_at(person.id, t)
        if session is None or not pool or self.done >= 2:
            return  # not at work today
        nth, self.done = self.done, self.done + 1
        if nth == 0:
            count, gap, until = 522, (400, 700), t + 60 * MIN_MS  # the tester's ~1.8 a second
        else:
            count, gap, until = 4000, (9000, 10_000), t + 9 * 60 * MIN_MS  # ~380 an hour, all shift
        self.truth.notes.setdefault("assigned", []).append(min(count, len(pool)))
        for w in rng.sample(pool, min(count, len(pool))):
            t += rng.randint(*gap)
            if t >= until:
                return
            res = self.sim.resource(w)
            # the key's assignment, made minutes before the reveal
            res.update(
                assignee=person.id, status="out_for_delivery", status_ts=self.sim.clock.fmt(t - 5 * MIN_MS)
            )
            body = {"actor": person.actor, "session": session, "action": "waybill.reveal", "resource": res}
            body.update(fields=F_RNPA, purpose="delivery_contact", outcome=ALLOW)
            self.emit(day, t, body)


class MassTicketed(Scenario):
    """14: a colluding key opens tickets for one rented customer-service account, which reveals all
    six fields of each: 60 in three seconds the first day (the tester), then 500 paced under the old
    400-an-hour rate. From the agent's own desk, so only volume shows."""

    sid = 14
    description = "a service key opening tickets for a rented customer-service agent who reveals them"
    duration = 10_000  # two working days of the account, the first from the start day on
    late = True
    done = 0

    def setup(self) -> None:
        person = self.pick(CS)
        if person is None:
            return self.skip("no customer-service agent")
        self.person = person

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        pool = self.sim.recent()
        t = day.d * DAY_MS + (person.shift_start + 60) * MIN_MS
        session = self.sim.session_at(person.id, t)
        if session is None or not pool or self.done >= 2:
            return  # not at work today
        nth, self.done = self.done, self.done + 1
        count, gap = (60, (30, 70)) if nth == 0 else (500, (9000, 10_000))
        for i, w in enumerate(rng.sample(pool, min(count, len(pool)))):
            t += rng.randint(*gap)
            res = self.sim.resource(w)
            res["ticket"] = (
                f"TKX{self.sid}{nth}{i:05d}"  # the scenario's own numbers: normal work keeps its own
            )
            body = {"actor": person.actor, "session": session, "action": "waybill.reveal", "resource": res}
            body.update(fields=F_ALL, purpose="ticket", outcome=ALLOW)
            self.emit(day, t, body)


class StolenPhoneAfterReset(Scenario):
    """15: a courier's phone is stolen; the thief uses it near the outlet after the owner's devices
    were reset.

    The evening before the first day the phone is stolen. At 06:20-06:40 a security officer
    resets the account's devices (``admin.change`` ``devices.reset:<id>:<ticket>``) and the owner
    enrols a replacement phone before the shift, then works on it as usual. On that evening and the
    next, the thief, who lives near the outlet, signs in on the stolen phone from the city's mobile
    network at the outlet (2.5-3 hours after the owner's shift ends), lists 20 of the outlet's parcels and reveals 8-10 of
    colleagues' deliveries 3-8 minutes apart: under the daily budget and the burst. Nothing but the
    device tells the thief from the owner, and the device is the one the account used for weeks.
    """

    sid = 15
    description = "a stolen courier phone used near the outlet after an officer reset the account's devices"
    duration = 2
    late = True

    def setup(self) -> None:
        # The theft is the evening before: there must be a day before to have worked on the phone.
        self.first_day = max(self.first_day, 1)
        self.active = self.first_day < self.sim.config.days
        person = self.pick(COURIER)
        officers = [s for s in self.sim.world.staff if s.role == SECURITY and s.left_day is None]
        if person is None or not officers:
            return self.skip("no courier or no security officer")
        self.person = person
        self.officer = self.rng.choice(officers)
        self.stolen = person.device
        self.truth.devices.append(self.stolen)
        self.truth.notes["reset_signal"] = f"admin.change purpose=devices.reset:{person.id}:<ticket>"

    def run_day(self, day: Day) -> None:
        if self.active and day.d == self.first_day - 1:
            # Stolen this evening (today's work was done on it): the owner works on a new phone
            # from tomorrow on. Scenarios run after a day's normal work, so it takes effect then.
            self.person.device = device_id(self.rng, "pda")
        super().run_day(day)

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        sim = self.sim
        base = day.d * DAY_MS
        city = person.unit.city.code
        if nth == 0:
            # The officer's reset and the owner's enrolment are normal work (label 0), the thief's
            # use is the attack. Both come before the owner's shift, so the new phone is enrolled
            # after the reset, as the gateway requires.
            officer = self.officer
            t = base + rng.randint(6 * 60 + 20, 6 * 60 + 40) * MIN_MS
            session = sim.login(day, officer, t, device=officer.device, ip=officer.unit.egress_ip,
                                user_agent=officer.user_agent, auth=officer.auth, rng=rng)  # fmt: skip
            ticket = f"INC{rng.randrange(10**6):06d}"
            self.truth.notes["reset_ticket"] = ticket
            day.emit(t + rng.randint(60_000, 180_000), {"actor": officer.actor, "session": session,
                     "action": "admin.change", "purpose": f"devices.reset:{person.id}:{ticket}", "outcome": ALLOW})  # fmt: skip
            bound = {"device_id": person.device, "ip": sim.mobile_ip(city, rng), "user_agent": person.user_agent,
                     "auth": "totp"}  # fmt: skip
            day.emit(base + rng.randint(6 * 60 + 50, 7 * 60 + 5) * MIN_MS,
                     {"actor": person.actor, "session": bound, "action": "auth.device_bound", "outcome": ALLOW})  # fmt: skip
        # Well after the owner's shift and festival overtime: the two phones are not in use at once, so
        # nothing but the device (concurrent_devices aside) tells the thief from the owner.
        t = base + (person.shift_end + rng.randint(150, 180)) * MIN_MS
        session = self.login(
            day, person, t, device=self.stolen, ip=sim.mobile_ip(city, rng), user_agent=person.user_agent,
            location=sim.location(person.unit.lat, person.unit.lon, rng, 0.01),
        )  # fmt: skip
        pool = [w for w in sim.recent(person.unit.id) if w.assignee != person.id]  # colleagues' parcels
        if not pool:
            return
        page = rng.sample(pool, min(20, len(pool)))
        t += rng.randint(20_000, 60_000)
        self.list_page(day, person, session, t, page, len(pool), "by_org_unit")
        for w in page[: rng.randint(8, 10)]:
            t += rng.randint(3, 8) * MIN_MS
            self.reveal(day, person, session, t, w, F_RNPA)


class RentedOfficer(Scenario):
    """16: a rented security officer account holds every other officer and admin, one after another.

    From the officer's own desk session in working hours (the owner lends it), so nothing tells the
    renter from the owner but what is done: 40-150 s apart, a security hold on each responder
    (``employee.hold:<id>:<ticket>``, then ``employee.suspended:<id>`` as the gateway announces it),
    so that nobody is left to answer the alerts that follow. Single-person actions by design
    (incident response must be fast), each allowed by the legacy system. The held accounts are
    ``notes.victims``: their later use is refused because they are held, which is the attack's doing,
    not a false alarm on normal staff.
    """

    sid = 16
    description = "a rented security officer account holding every other officer and admin in turn"
    duration = 10_000  # the account's first working day from the start day on
    late = True
    done = False

    def setup(self) -> None:
        person = self.pick(SECURITY)
        targets = [s for s in self.sim.world.staff if s.role in (SECURITY, ADMIN) and s is not person]
        if person is None or not targets:
            return self.skip("no security officer, or nobody else to hold")
        self.person = person
        self.targets = targets

    def attack(self, day: Day, nth: int) -> None:
        rng = self.rng
        person = self.person
        t = day.d * DAY_MS + (person.shift_start + 90) * MIN_MS
        session = self.sim.session_at(person.id, t)
        if session is None or self.done:
            return  # not at work today
        self.done = True
        ticket = f"INC{rng.randrange(10**6):06d}"
        victims = rng.sample(self.targets, len(self.targets))
        self.truth.notes["victims"] = [v.id for v in victims]
        for victim in victims:
            t += rng.randint(40_000, 150_000)
            for at, purpose in ((t, f"employee.hold:{victim.id}:{ticket}"),
                                (t + rng.randint(300, 1500), f"employee.suspended:{victim.id}")):  # fmt: skip
                self.emit(day, at, {"actor": person.actor, "session": session, "action": "admin.change",
                                    "purpose": purpose, "outcome": ALLOW})  # fmt: skip


class RestoredAssignments(Scenario):
    """17: a courier sells the contacts of parcels delivered days ago, whose rows a DBA put back.

    An accomplice with write access to the database restores the waybill rows of parcels the
    courier delivered three to five days ago, exactly as they were sealed while out for delivery to
    him: the seal cannot tell an old sealed row from the current one, and the policy lets the
    assignee reveal. From his own PDA, in his own session and working hours, the courier reveals
    name, phone and address of 15-25 of them a day, 2-6 minutes apart, on his first two working
    days from the start day: nothing tells it from his work but the age of the task on each event
    (``resource.status_ts``, as old as the restored row). Well under the day's reveal budget.
    """

    sid = 17
    description = "a courier revealing parcels delivered days ago, their assignments restored in the database"
    duration = 10_000  # the courier's first two working days from the start day on
    late = True
    kept_from = 5  # days before the start whose deliveries the DBA restores (to 3 days before)

    def setup(self) -> None:
        self.first_day = max(self.first_day, self.kept_from)
        self.active = self.first_day < self.sim.config.days
        person = self.pick(COURIER)
        if person is None:
            return self.skip("no courier")
        self.person = person
        self.kept: list[Delivery] = []
        self.days_done = 0

    def run_day(self, day: Day) -> None:
        if self.active and self.first_day - self.kept_from <= day.d <= self.first_day - 3:
            # Scenarios run after the day's normal work: today's deliveries are known.
            outlet = self.sim.today.get(self.person.unit.id, [])
            self.kept += [w for w in outlet if w.assignee == self.person.id]
        super().run_day(day)

    def attack(self, day: Day, nth: int) -> None:
        from courierguard.sim.engine import Delivery

        rng = self.rng
        person = self.person
        t = day.d * DAY_MS + (person.shift_start + 60) * MIN_MS
        session = self.sim.session_at(person.id, t)
        if session is None or self.days_done >= 2 or not self.kept:
            return  # not at work today, or done
        self.days_done += 1
        todo = rng.sample(self.kept, min(rng.randint(15, 25), len(self.kept)))
        self.kept = [w for w in self.kept if w not in todo]
        self.truth.notes.setdefault("restored", 0)
        self.truth.notes["restored"] += len(todo)
        for w in todo:
            t += rng.randint(2, 6) * MIN_MS
            restored = Delivery(w.number, w.outlet, person.id, "out_for_delivery", w.status_ts)
            self.reveal(day, person, session, t, restored, F_RNPA)


_CLASSES: dict[int, type[Scenario]] = {
    cls.sid: cls
    for cls in (
        RentedNightFast,
        RentedPacedSameCity,
        ConcurrentOwnerRenter,
        ClerkBacklog,
        InsiderSlow,
        Gang,
        Enumeration,
        ExportAbuse,
        CsSnooping,
        FormerEmployee,
        MaskedScrape,
        PhoneProbing,
        MassAssigned,
        MassTicketed,
        StolenPhoneAfterReset,
        RentedOfficer,
        RestoredAssignments,
    )
}


def build_scenarios(sim: Simulation) -> list[Scenario]:
    """Instantiate the configured scenarios; each starts 0-2 days after ``attack_after_days``.

    Scenarios marked ``late`` choose their actors in :func:`finish_setup`, after life events."""
    out: list[Scenario] = []
    for sid in sorted(set(sim.config.scenarios)):
        own = random.Random(f"{sim.config.seed}:scenario:{sid}")
        first = sim.config.attack_after_days + own.randint(0, 2)
        if first >= sim.config.days and sim.config.attack_after_days < sim.config.days:
            first = sim.config.attack_after_days
        scenario = _CLASSES[sid](sim, own, sim.truths[sid], first)
        if not scenario.late:
            _note_start(sim, scenario)
        out.append(scenario)
    return out


def finish_setup(sim: Simulation, scenarios: list[Scenario]) -> None:
    """Set up the ``late`` scenarios, once life events are planned."""
    for scenario in scenarios:
        if scenario.late:
            if scenario.active:
                scenario.setup()
            _note_start(sim, scenario)


def _note_start(sim: Simulation, scenario: Scenario) -> None:
    if scenario.active:
        scenario.truth.notes["first_day"] = (
            sim.config.start + timedelta(days=scenario.first_day)
        ).isoformat()
    elif "skipped" not in scenario.truth.notes:
        scenario.skip("the period ends before the attack would start")
