"""The simulation loop: a day at a time, every employee's normal work, then the attacks.

Speed matters (10 million events in three minutes on one core), so events are plain dicts that are
serialized with orjson the moment they are made; only ``id`` and ``ts`` are added after the day is
sorted into time order. Randomness comes from seeded ``random.Random`` instances keyed by purpose
(world, day, scenario), so the normal work of a day does not change when another scenario is chosen.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson

from courierguard.sim.config import SCENARIOS, SimConfig
from courierguard.sim.world import (
    ADMIN,
    CLERK,
    COURIER,
    CS,
    HUB,
    MANAGER,
    SECURITY,
    Staff,
    Unit,
    World,
    build_world,
    plan_life_events,
)

Event = dict[str, Any]
DAY_MS = 86_400_000
MIN_MS = 60_000
ALLOW = {"decision": "allow"}
_dumps = orjson.dumps

F_RP = ["recipient.phone"]
F_RPA = ["recipient.phone", "recipient.address"]
F_RA = ["recipient.address"]
F_RNA = ["recipient.name", "recipient.address"]
F_SP = ["sender.phone"]
F_RNPA = ["recipient.name", "recipient.phone", "recipient.address"]
F_ALL = [
    "sender.name",
    "sender.phone",
    "sender.address",
    "recipient.name",
    "recipient.phone",
    "recipient.address",
]

# Waybill numbers: outlets print from their own sequential block (pickups inside the simulated
# network); parcels arriving from the rest of the country carry numbers from anywhere.
_OUTLET_BLOCK_BASE = 7_000_000_000_000
_OUTLET_BLOCK_SIZE = 10_000_000
_EXTERNAL_LOW = 1_000_000_000_000
_EXTERNAL_HIGH = 6_900_000_000_000
_EXTERNAL_SPAN = _EXTERNAL_HIGH - _EXTERNAL_LOW


class Clock:
    """Simulation time (integer milliseconds since the first midnight) to RFC 3339 at +08:00."""

    def __init__(self, config: SimConfig) -> None:
        self._prefix = [(config.start + timedelta(days=d)).isoformat() + "T" for d in range(config.days + 3)]
        # Looked up, not formatted, for every one of millions of timestamps; built here, not at
        # import, so that loading the CLI stays fast.
        self._hms = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
        self._mss = [f"{i:03d}" for i in range(1000)]

    def fmt(self, t: int) -> str:
        """The RFC 3339 timestamp of simulation time ``t``."""
        day, rest = divmod(t, DAY_MS)
        sec, ms = divmod(rest, 1000)
        return f"{self._prefix[day]}{self._hms[sec]}.{self._mss[ms]}+08:00"


@dataclass(slots=True)
class ScenarioTruth:
    """Ground truth for one attack: who, when, and which events belong to it."""

    scenario: int
    name: str
    actors: list[str] = field(default_factory=list)
    description: str = ""
    devices: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    start: str | None = None
    end: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The truth-file line for this scenario."""
        return {
            "type": "scenario",
            "scenario": self.scenario,
            "name": self.name,
            "description": self.description,
            "actors": self.actors,
            "devices": self.devices,
            "ips": self.ips,
            "start": self.start,
            "end": self.end,
            "event_count": len(self.event_ids),
            "notes": self.notes,
            "event_ids": self.event_ids,
        }


@dataclass(slots=True)
class Delivery:
    """A parcel out for delivery today, as later readers (clerks, agents, attackers) see it."""

    number: str
    outlet: str
    assignee: str
    status: str
    status_ts: str


class Day:
    """Everything generated for one day before sorting: ``(t, seq, body bytes, label)`` items.

    The body is the event's JSON without ``id``/``ts`` and without its opening brace.
    """

    __slots__ = ("d", "items", "rng", "seq", "weekday")

    def __init__(self, d: int, weekday: int, rng: random.Random, seq: Iterator[int]) -> None:
        self.d = d
        self.weekday = weekday
        self.rng = rng
        self.seq = seq
        self.items: list[tuple[int, int, bytes, int]] = []

    def emit(self, t: int, body: Event, label: int = 0) -> None:
        """Queue one event body (no ``id``/``ts`` yet) at simulation time ``t``."""
        # Slicing off the "{" also copies orjson's 4 KB output buffer into a right-sized object;
        # keeping orjson's own bytes for a day of events would cost gigabytes.
        self.items.append((t, next(self.seq), _dumps(body)[1:], label))


class Simulation:
    """One run: the world, its days and the attacks hidden inside them.

    Iterate :meth:`batches` (JSON Lines bytes per day) or :meth:`labelled` (dicts with the scenario
    id, 0 for normal work); after the iteration :meth:`truth` holds the ground truth.
    """

    def __init__(self, config: SimConfig) -> None:
        from courierguard.sim.scenarios import build_scenarios, finish_setup

        self.config = config
        self.clock = Clock(config)
        self.world: World = build_world(config.employees, random.Random(f"{config.seed}:world"))
        self.start_weekday = config.start.weekday()
        self.festival = {(d - config.start).days for d in config.festival_days()}
        self.absent: set[tuple[str, int]] = set()
        self.truths: dict[int, ScenarioTruth] = {
            sid: ScenarioTruth(sid, SCENARIOS[sid]) for sid in sorted(set(config.scenarios))
        }
        self.scenarios = build_scenarios(self)
        plan_life_events(self.world, config.days, random.Random(f"{config.seed}:life"))
        finish_setup(self, self.scenarios)
        self._pending: dict[str, list[tuple[int, str]]] = {u.id: [] for u in self.world.outlets}
        self._block_next: dict[str, int] = {
            u.id: _OUTLET_BLOCK_BASE + k * _OUTLET_BLOCK_SIZE + 1 for k, u in enumerate(self.world.outlets)
        }
        self.today: dict[str, list[Delivery]] = {}
        self.yesterday: dict[str, list[Delivery]] = {}
        self.pickups_today: dict[str, list[tuple[int, str]]] = {}
        self.sessions: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._recent_all: list[Delivery] | None = None
        self.allocated: dict[str, set[int]] = {u.id: set() for u in self.world.outlets}
        self._session_seq = itertools.count(1)
        self._ticket_seq = itertools.count(100_001)
        self.event_count = 0
        self.employee_days = 0
        self.done = False

    # -- helpers shared with the scenarios ------------------------------------------------------

    def session_id(self, rng: random.Random) -> str:
        """A new session id (unique within the run, not guessable from the actor)."""
        return f"S{next(self._session_seq):07d}{rng.getrandbits(24):06x}"

    def ticket_id(self, prefix: str = "TK") -> str:
        """A new ticket or case number."""
        return f"{prefix}{next(self._ticket_seq):08d}"

    def mobile_ip(self, city_code: str, rng: random.Random) -> str:
        """An address from the mobile carrier pool of a city (changes with every session)."""
        a, b = self.world.mobile_pools[city_code]
        return f"{a}.{b}.{rng.randrange(256)}.{rng.randrange(1, 255)}"

    def home_ip(self, city_code: str, rng: random.Random) -> str:
        """A fixed-broadband address in a city."""
        a, b = self.world.home_pools[city_code]
        return f"{a}.{b + 1}.{rng.randrange(256)}.{rng.randrange(1, 255)}"

    def external_number(self, rng: random.Random) -> str:
        """A waybill printed outside the simulated network."""
        return f"YT{rng.randrange(_EXTERNAL_LOW, _EXTERNAL_HIGH)}"

    def outlet_block(self, outlet: str) -> tuple[int, int]:
        """The first and next-free number of an outlet's sequential block."""
        index = [u.id for u in self.world.outlets].index(outlet)
        return _OUTLET_BLOCK_BASE + index * _OUTLET_BLOCK_SIZE + 1, self._block_next[outlet]

    def login(
        self,
        day: Day,
        person: Staff,
        t: int,
        *,
        device: str,
        ip: str,
        user_agent: str,
        auth: str,
        location: dict[str, float] | None = None,
        label: int = 0,
        fail_p: float = 0.03,
        rng: random.Random | None = None,
    ) -> dict[str, Any]:
        """Emit ``auth.login`` (sometimes after a mistyped password) and return the session dict."""
        rng = rng or day.rng
        session: dict[str, Any] = {
            "id": self.session_id(rng),
            "device_id": device,
            "ip": ip,
            "user_agent": user_agent,
        }
        if location is not None:
            session["location"] = location
        session["auth"] = auth
        if rng.random() < fail_p:
            failed = {"device_id": device, "ip": ip, "user_agent": user_agent, "auth": auth}
            day.emit(
                t - rng.randint(4000, 60_000),
                {
                    "actor": person.actor,
                    "session": failed,
                    "action": "auth.login_failed",
                    "outcome": {"decision": "deny", "reason": "bad_password"},
                },
                label,
            )
        day.emit(
            t, {"actor": person.actor, "session": session, "action": "auth.login", "outcome": ALLOW}, label
        )
        if label == 0:
            self.sessions.setdefault(person.id, []).append((t, session))
        return session

    def session_at(self, person_id: str, t: int) -> dict[str, Any] | None:
        """The employee's own session open at ``t`` today, if any (insiders act inside their work)."""
        found = None
        for start, session in self.sessions.get(person_id, ()):
            if start < t:
                found = session
        return found

    def location(self, lat: float, lon: float, rng: random.Random, spread: float = 0.01) -> dict[str, float]:
        """A device-reported position near (lat, lon)."""
        return {
            "lat": round(lat + rng.uniform(-spread, spread), 5),
            "lon": round(lon + rng.uniform(-spread, spread), 5),
        }

    def resource(self, w: Delivery) -> dict[str, Any]:
        """The ``resource`` object of an event about delivery ``w``."""
        return {
            "type": "waybill",
            "id": w.number,
            "org_unit": w.outlet,
            "assignee": w.assignee,
            "status": w.status,
            "status_ts": w.status_ts,
        }

    def recent(self, outlet: str | None = None) -> list[Delivery]:
        """Deliveries of yesterday (today on the first day), of one outlet or of all."""
        source = self.yesterday or self.today
        if outlet is not None:
            return source.get(outlet, [])
        if self._recent_all is None:
            # Built once a day: every agent, officer and attacker draws from the same pool.
            self._recent_all = [w for items in source.values() for w in items]
        return self._recent_all

    def working(self, person: Staff, d: int, weekday: int) -> bool:
        """Whether ``person`` works on day ``d`` under normal circumstances."""
        if person.left_day is not None and d >= person.left_day:
            return False
        return weekday in person.workdays and (person.id, d) not in self.absent

    # -- the run --------------------------------------------------------------------------------

    def _days(self) -> Iterator[tuple[list[bytes], list[int]]]:
        seq = itertools.count()
        carry: list[tuple[int, int, bytes, int]] = []
        n = 0
        tenant = self.config.tenant
        clock_fmt = self.clock.fmt
        for d in range(self.config.days):
            weekday = (self.start_weekday + d) % 7
            day = Day(d, weekday, random.Random(f"{self.config.seed}:day:{d}"), seq)
            day.items = carry
            self._normal_day(day)
            for scenario in self.scenarios:
                scenario.run_day(day)
            items = day.items
            items.sort()
            if d == self.config.days - 1:
                cut = len(items)
            else:
                cut = bisect.bisect_left(items, ((d + 1) * DAY_MS, -1))
            carry = items[cut:]
            lines: list[bytes] = []
            labels: list[int] = []
            append = lines.append
            template = (
                b'{"v":1,"id":"ev%09d","ts":"%s",'
                + (b'"tenant":"%s",' % tenant.encode() if tenant else b"")
                + b"%s\n"
            )
            for t, _, body, label in items[:cut]:
                n += 1
                ts = clock_fmt(t)
                append(template % (n, ts.encode(), body))
                labels.append(label)
                if label:
                    truth = self.truths[label]
                    truth.event_ids.append(f"ev{n:09d}")
                    if truth.start is None:
                        truth.start = ts
                    truth.end = ts
            self.event_count = n
            del items, day  # a festival day holds over a million events; free them before yielding
            yield lines, labels
        self.done = True

    def batches(self) -> Iterator[list[bytes]]:
        """The event file, one day (newline-terminated JSON lines) at a time, in time order."""
        for lines, _ in self._days():
            yield lines

    def labelled(self) -> Iterator[tuple[Event, int]]:
        """Each event as a dict with its scenario id (0 for normal work), in time order."""
        loads = orjson.loads
        for lines, labels in self._days():
            for line, label in zip(lines, labels, strict=True):
                yield loads(line), label

    def truth(self) -> list[dict[str, Any]]:
        """The truth file: a ``meta`` line, then one ``scenario`` line per scenario."""
        if not self.done:
            raise RuntimeError("truth is known only after the whole run has been generated")
        roles: dict[str, int] = {}
        for person in self.world.staff:
            roles[person.role] = roles.get(person.role, 0) + 1
        meta = {
            "type": "meta",
            "format": "courierguard-sim-truth/1",
            "seed": self.config.seed,
            "employees": self.config.employees,
            "days": self.config.days,
            "start": self.config.start.isoformat(),
            "attack_after_days": self.config.attack_after_days,
            "festival": [f.isoformat() for f in self.config.festival_days()],
            "scenarios": sorted(self.truths),
            "events": self.event_count,
            "employee_days": self.employee_days,
            "roles": roles,
            "outlets": len(self.world.outlets),
        }
        return [meta] + [t.to_dict() for t in self.truths.values()]

    # -- normal work ----------------------------------------------------------------------------

    def _normal_day(self, day: Day) -> None:
        d, weekday, rng = day.d, day.weekday, day.rng
        self.yesterday = self.today
        self.today = {u.id: [] for u in self.world.outlets}
        self.sessions = {}
        self._recent_all = None
        self.pickups_today = {u.id: [] for u in self.world.outlets}
        factor = self.config.festival_factor if d in self.festival else 1.0
        if weekday == 5:
            factor *= 0.9
        elif weekday == 6:
            factor *= 0.8
        self._admin_changes(day)
        for outlet in self.world.outlets:
            self._outlet_couriers(day, outlet, factor)
        handlers: dict[str, Callable[[Day, Staff, float], None]] = {
            CLERK: self._clerk,
            MANAGER: self._manager,
            HUB: self._hub,
            CS: self._cs,
            SECURITY: self._security,
        }
        for person in self.world.staff:
            handler = handlers.get(person.role)
            if handler is not None and self.working(person, d, weekday) and rng.random() > 0.01:
                self.employee_days += 1
                handler(day, person, factor)

    def _admin_changes(self, day: Day) -> None:
        """Directory changes, announced the way a downstream engine can learn them (``admin.change``)."""
        d, rng = day.d, day.rng
        changes: list[tuple[str, Staff]] = []
        for person in self.world.staff:
            if person.left_day == d:
                changes.append((f"employee.left:{person.id}", person))
            if person.move_day == d and person.move_to is not None:
                changes.append((f"employee.moved:{person.id}:{person.move_to.id}", person))
                self._move(person, person.move_to)
            if person.device_day == d:
                person.device = f"UR{rng.getrandbits(40):010X}"
        if not changes:
            return
        admin = self.world.admin
        t = d * DAY_MS + rng.randint(7 * 60, 7 * 60 + 40) * MIN_MS
        session = self.login(
            day,
            admin,
            t,
            device=admin.device,
            ip=admin.unit.egress_ip,
            user_agent=admin.user_agent,
            auth=admin.auth,
        )
        for reason, _person in changes:
            t += rng.randint(20_000, 300_000)
            day.emit(
                t,
                {
                    "actor": admin.actor,
                    "session": session,
                    "action": "admin.change",
                    "purpose": reason,
                    "outcome": {"decision": "allow", "reason": reason},
                },
            )

    def _move(self, person: Staff, target: Unit) -> None:
        old = person.unit
        for old_group, new_group in (
            (old.couriers, target.couriers),
            (old.clerks, target.clerks),
            (old.managers, target.managers),
        ):
            if person in old_group:
                old_group.remove(person)
                new_group.append(person)
        person.unit = target
        person.area_lat = round(target.lat + (person.area_lat - old.lat), 5)
        person.area_lon = round(target.lon + (person.area_lon - old.lon), 5)
        person.refresh_actor()

    def _outlet_couriers(self, day: Day, outlet: Unit, factor: float) -> None:
        d, weekday, rng = day.d, day.weekday, day.rng
        working = []
        off = []
        for c in outlet.couriers:
            if self.working(c, d, weekday) and rng.random() > 0.01:
                working.append(c)
            elif c.left_day is None or d < c.left_day:
                off.append(c)
        if not working:
            return
        # A colleague covers each absent courier's area: extra parcels and a longer day.
        cover: dict[str, tuple[int, Staff]] = {}
        for absent in off:
            helper = rng.choice(working)
            extra = int(absent.volume * rng.uniform(0.3, 0.6) * factor)
            cover[helper.id] = (cover.get(helper.id, (0, absent))[0] + extra, absent)
        pending = self._pending[outlet.id]
        arrived = [num for (avail, num) in pending if avail <= d]
        self._pending[outlet.id] = [(avail, num) for (avail, num) in pending if avail > d]
        rng.shuffle(arrived)
        for c in working:
            self.employee_days += 1
            extra, covered = cover.get(c.id, (0, c))
            self._courier(day, c, outlet, factor, extra, covered, arrived)

    def _courier(
        self,
        day: Day,
        c: Staff,
        outlet: Unit,
        factor: float,
        extra: int,
        covered: Staff,
        arrived: list[str],
    ) -> None:
        d, rng = day.d, day.rng
        emit = day.emit
        fmt = self.clock.fmt
        base = d * DAY_MS
        actor = c.actor
        cid = c.id
        oid = outlet.id
        today = self.today[oid]
        overtime = (90 if factor > 1.5 else 0) + (60 if extra else 0) + (45 if rng.random() < 0.05 else 0)
        start = base + (c.shift_start + rng.randint(-10, 15)) * MIN_MS
        end = base + (c.shift_end + overtime + rng.randint(-15, 20)) * MIN_MS
        parcels = int(min(300.0, max(100.0, rng.gauss(c.volume, c.volume * 0.12))) * factor) + extra
        city = outlet.city.code
        if c.device_day == d:
            bound = {
                "device_id": c.device,
                "ip": self.mobile_ip(city, rng),
                "user_agent": c.user_agent,
                "auth": "totp",
            }
            emit(
                start - 90_000,
                {"actor": actor, "session": bound, "action": "auth.device_bound", "outcome": ALLOW},
            )
        session = self.login(
            day,
            c,
            start,
            device=c.device,
            ip=self.mobile_ip(city, rng),
            user_agent=c.user_agent,
            auth=c.auth,
            location=self.location(outlet.lat, outlet.lon, rng, 0.002),
        )
        # Morning: scan every parcel out for delivery (masked view), a few seconds apart.
        t = start + rng.randint(5, 20) * MIN_MS
        arrival_ts = fmt(base + rng.randint(4 * 60, 6 * 60 + 30) * MIN_MS)
        own: list[tuple[str, dict[str, Any]]] = []
        rand = rng.random
        for i in range(parcels):
            number = arrived.pop() if arrived else f"YT{int(_EXTERNAL_LOW + rand() * _EXTERNAL_SPAN)}"
            t += 2500 + int(rand() * 8500)
            emit(
                t,
                {
                    "actor": actor,
                    "session": session,
                    "action": "waybill.view",
                    "resource": {
                        "type": "waybill",
                        "id": number,
                        "org_unit": oid,
                        "status": "at_destination",
                        "status_ts": arrival_ts,
                    },
                    "outcome": ALLOW,
                },
            )
            res = {
                "type": "waybill",
                "id": number,
                "org_unit": oid,
                "assignee": cid,
                "status": "out_for_delivery",
                "status_ts": fmt(t),
            }
            own.append((number, res))
            if i % 4 == 0:  # keep a sample for clerks, agents and attackers; all would cost memory
                today.append(Delivery(number, oid, cid, "out_for_delivery", res["status_ts"]))
        # The route: deliveries spread over the rest of the shift; a midday re-login on a new IP.
        route_start = t + rng.randint(10, 30) * MIN_MS
        span = max(end - route_start, 60 * MIN_MS)
        times = sorted([route_start + int(rand() * span) for _ in range(parcels)])
        relogin = route_start + int(span * rng.uniform(0.3, 0.6)) if rng.random() < 0.5 else None
        lat, lon = c.area_lat, c.area_lon
        since = start + 1000  # no event of a session before its login
        last = end
        pickups = int(rng.randint(8, 35) * (1.5 if factor > 1.5 else 1.0))
        pickup_at = {int(rng.random() * parcels) for _ in range(pickups)}
        reveal_p = c.reveal_rate
        colleague = outlet.couriers
        for i, (number, res) in enumerate(own):
            t = times[i]
            if relogin is not None and t >= relogin:
                relogin = None
                since = t - 30_000
                if covered is not c:
                    lat, lon = covered.area_lat, covered.area_lon
                session = self.login(
                    day,
                    c,
                    t - 30_000,
                    device=c.device,
                    ip=self.mobile_ip(city, rng),
                    user_agent=c.user_agent,
                    auth=c.auth,
                    location=self.location(lat, lon, rng, 0.01),
                    fail_p=0.01,
                )
            roll = rand()
            if roll < reveal_p:
                emit(
                    max(since, t - 60_000 - int(rand() * 540_000)),
                    {
                        "actor": actor,
                        "session": session,
                        "action": "waybill.reveal",
                        "resource": res,
                        "fields": F_RPA if roll < reveal_p * 0.25 else F_RP,
                        "purpose": "delivery_contact",
                        "outcome": ALLOW,
                    },
                )
            elif roll < reveal_p + 0.25:
                emit(
                    max(since, t - 60_000 - int(rand() * 540_000)),
                    {
                        "actor": actor,
                        "session": session,
                        "action": "number.call",
                        "resource": res,
                        "purpose": "delivery_contact",
                        "outcome": ALLOW,
                    },
                )
            elif roll > 0.995 and len(colleague) > 1:
                # A mis-scan: the parcel belongs to a colleague, the source system refuses the reveal.
                other = rng.choice(colleague)
                if other is not c:
                    emit(
                        t,
                        {
                            "actor": actor,
                            "session": session,
                            "action": "waybill.reveal",
                            "resource": {
                                "type": "waybill",
                                "id": f"YT{rng.randrange(_EXTERNAL_LOW, _EXTERNAL_HIGH)}",
                                "org_unit": oid,
                                "assignee": other.id,
                                "status": "out_for_delivery",
                                "status_ts": res["status_ts"],
                            },
                            "fields": F_RP,
                            "purpose": "delivery_contact",
                            "outcome": {"decision": "deny", "reason": "not_assigned"},
                        },
                    )
            if rand() < 0.25:
                emit(
                    t,
                    {
                        "actor": actor,
                        "session": session,
                        "action": "waybill.view",
                        "resource": {
                            "type": "waybill",
                            "id": number,
                            "org_unit": oid,
                            "assignee": cid,
                            "status": "in_locker" if rand() < 0.2 else "delivered",
                            "status_ts": fmt(t),
                        },
                        "outcome": ALLOW,
                    },
                )
            if i in pickup_at:
                last = t + rng.randint(60_000, 900_000)
                self._pickup(day, c, outlet, session, last, since)
        if rng.random() < 0.6:
            # Never log out before the last pickup of an overrunning day.
            emit(
                max(end, last + 60_000),
                {"actor": actor, "session": session, "action": "auth.logout", "outcome": ALLOW},
            )
        if rng.random() < 0.03:
            self._evening_check(day, c, own, max(end, last) + rng.randint(60, 150) * MIN_MS)

    def _evening_check(self, day: Day, c: Staff, own: list[tuple[str, dict[str, Any]]], t: int) -> None:
        """A courier calls back a failed delivery from home: off-shift, home broadband, own parcels.

        Honest behaviour that shares signals with a rented account (new network, off shift), so a
        risk engine must weigh them, not trip on them.
        """
        rng = day.rng
        session = self.login(
            day,
            c,
            t,
            device=c.device,
            ip=self.home_ip(c.unit.city.code, rng),
            user_agent=c.user_agent,
            auth=c.auth,
            location=self.location(c.area_lat, c.area_lon, rng, 0.02),
        )
        for _number, res in rng.sample(own, min(len(own), rng.randint(2, 8))):
            t += rng.randint(20_000, 180_000)
            failed = dict(
                res, status="exception", status_ts=self.clock.fmt(t - rng.randint(60, 240) * MIN_MS)
            )
            body: Event = {"actor": c.actor, "session": session, "action": "waybill.view", "resource": failed}
            body["outcome"] = ALLOW
            day.emit(t, body)
            if rng.random() < 0.4:
                t += rng.randint(10_000, 60_000)
                day.emit(
                    t,
                    {
                        "actor": c.actor,
                        "session": session,
                        "action": "waybill.reveal",
                        "resource": failed,
                        "fields": F_RP,
                        "purpose": "delivery_contact",
                        "outcome": ALLOW,
                    },
                )

    def _pickup(self, day: Day, c: Staff, outlet: Unit, session: dict[str, Any], t: int, since: int) -> None:
        rng = day.rng
        number = self._block_next[outlet.id]
        self._block_next[outlet.id] = number + rng.choice((1, 1, 1, 2))
        self.allocated[outlet.id].add(number)
        num = f"YT{number}"
        created = self.clock.fmt(t - rng.randint(20, 240) * MIN_MS)
        res = {
            "type": "waybill",
            "id": num,
            "org_unit": outlet.id,
            "assignee": c.id,
            "status": "awaiting_pickup",
            "status_ts": created,
        }
        day.emit(
            t,
            {
                "actor": c.actor,
                "session": session,
                "action": "waybill.view",
                "resource": res,
                "outcome": ALLOW,
            },
        )
        if rng.random() < 0.2:
            day.emit(
                max(since, t - rng.randint(120_000, 900_000)),
                {
                    "actor": c.actor,
                    "session": session,
                    "action": "waybill.reveal",
                    "resource": res,
                    "fields": F_SP,
                    "purpose": "pickup_contact",
                    "outcome": ALLOW,
                },
            )
        self.pickups_today[outlet.id].append((t, num))
        dest = rng.choice(self.world.outlets)
        self._pending[dest.id].append((day.d + rng.randint(1, 3), num))

    def _desk_session(self, day: Day, person: Staff, t: int) -> dict[str, Any]:
        return self.login(
            day,
            person,
            t,
            device=person.device,
            ip=person.unit.egress_ip,
            user_agent=person.user_agent,
            auth=person.auth,
        )

    def _shift(self, day: Day, person: Staff) -> tuple[int, int]:
        base = day.d * DAY_MS
        rng = day.rng
        return (
            base + (person.shift_start + rng.randint(-10, 10)) * MIN_MS,
            base + (person.shift_end + rng.randint(-15, 30)) * MIN_MS,
        )

    def _clerk(self, day: Day, person: Staff, factor: float) -> None:
        rng = day.rng
        start, end = self._shift(day, person)
        session = self._desk_session(day, person, start)
        oid = person.unit.id
        backlog = self.recent(oid)  # yesterday's deliveries: today's are not scanned yet
        n_views = int(rng.gauss(person.volume, person.volume * 0.2) * min(factor, 2.0))
        n_lists = rng.randint(4, 14)
        events: list[tuple[int, Event]] = []
        span = end - start
        for _ in range(n_lists):
            page = rng.sample(backlog, min(20, len(backlog))) if backlog else []
            events.append(
                (
                    start + int(rng.random() * span),
                    {
                        "action": "waybill.list",
                        "query": {
                            "kind": rng.choice(("by_org_unit", "by_status")),
                            "result_count": len(backlog) * 4 + rng.randint(0, 30),
                            "result_ids": [w.number for w in page],
                        },
                    },
                )
            )
        for _ in range(max(0, n_views)):
            if not backlog:
                break
            w = rng.choice(backlog)
            action = "waybill.print" if rng.random() < 0.15 else "waybill.view"
            events.append(
                (start + int(rng.random() * span), {"action": action, "resource": self.resource(w)})
            )
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            if not backlog:
                break
            w = rng.choice(backlog)
            res = self.resource(w)
            res["status"] = "returned" if rng.random() < 0.5 else "exception"
            res["ticket"] = self.ticket_id("RC")
            events.append(
                (
                    start + int(rng.random() * span),
                    {"action": "waybill.reveal", "resource": res, "fields": F_RPA, "purpose": "return"},
                )
            )
        self._emit_desk(day, person, session, events)
        if rng.random() < 0.7:
            day.emit(
                end, {"actor": person.actor, "session": session, "action": "auth.logout", "outcome": ALLOW}
            )

    def _emit_desk(
        self, day: Day, person: Staff, session: dict[str, Any], events: list[tuple[int, Event]]
    ) -> None:
        actor = person.actor
        for t, body in events:
            full: Event = {"actor": actor, "session": session}
            full.update(body)
            full.setdefault("outcome", ALLOW)
            day.emit(t, full)

    def _manager(self, day: Day, person: Staff, factor: float) -> None:
        rng = day.rng
        start, end = self._shift(day, person)
        session = self._desk_session(day, person, start)
        oid = person.unit.id
        backlog = self.recent(oid)  # yesterday's deliveries: today's are not scanned yet
        span = end - start
        events: list[tuple[int, Event]] = []
        for _ in range(rng.randint(2, 8)):
            events.append(
                (
                    start + int(rng.random() * span),
                    {
                        "action": "waybill.list",
                        "query": {
                            "kind": rng.choice(("by_org_unit", "by_status", "other")),
                            "result_count": len(backlog) * 4,
                        },
                    },
                )
            )
        for _ in range(int(person.volume)):
            if backlog:
                events.append(
                    (
                        start + int(rng.random() * span),
                        {"action": "waybill.view", "resource": self.resource(rng.choice(backlog))},
                    )
                )
        if rng.random() < 0.12 and backlog:
            # The weekly delivery report: masked, approved by a second manager (four-eyes).
            size = min(len(backlog), rng.randint(50, 400))
            export: Event = {
                "action": "waybill.export",
                "query": {
                    "kind": "by_org_unit",
                    "result_count": size,
                    "result_ids": [w.number for w in backlog[:size]],
                },
            }
            if rng.random() < 0.15:
                # A claims list for the insurer: names and addresses in clear, still approved.
                export["fields"] = F_RNA
            export["purpose"] = "report"
            export["outcome"] = {"decision": "allow", "reason": f"approved:APR-{rng.randrange(10**6):06d}"}
            events.append((start + int(rng.random() * span), export))
        self._emit_desk(day, person, session, events)

    def _hub(self, day: Day, person: Staff, factor: float) -> None:
        rng = day.rng
        start, end = self._shift(day, person)
        session = self._desk_session(day, person, start)
        actor = person.actor
        hub_id = person.unit.id
        n = int(rng.gauss(person.volume, person.volume * 0.15) * factor)
        t = start + rng.randint(5, 20) * MIN_MS
        step = max(1000, (end - t) // max(1, n))
        status_ts = self.clock.fmt(start)
        emit = day.emit
        rand = rng.random
        for _ in range(max(0, n)):
            t += step // 2 + int(rand() * step)
            emit(
                t,
                {
                    "actor": actor,
                    "session": session,
                    "action": "waybill.view",
                    "resource": {
                        "type": "waybill",
                        "id": f"YT{int(_EXTERNAL_LOW + rand() * _EXTERNAL_SPAN)}",
                        "org_unit": hub_id,
                        "status": "in_transit",
                        "status_ts": status_ts,
                    },
                    "outcome": ALLOW,
                },
            )
            if rand() < person.reveal_rate:
                # An unreadable label: the operator reveals the address to route the parcel by hand.
                emit(
                    t + rng.randint(5000, 60_000),
                    {
                        "actor": actor,
                        "session": session,
                        "action": "waybill.reveal",
                        "resource": {
                            "type": "waybill",
                            "id": f"YT{rng.randrange(_EXTERNAL_LOW, _EXTERNAL_HIGH)}",
                            "org_unit": hub_id,
                            "status": "exception",
                            "status_ts": self.clock.fmt(t),
                        },
                        "fields": F_RA,
                        "purpose": "exception",
                        "outcome": ALLOW,
                    },
                )

    def _cs(self, day: Day, person: Staff, factor: float) -> None:
        rng = day.rng
        start, end = self._shift(day, person)
        session = self._desk_session(day, person, start)
        pool = self.recent()
        if not pool:
            return
        tickets = int(rng.gauss(person.volume, person.volume * 0.15) * min(factor, 2.0))
        t = start + rng.randint(3, 15) * MIN_MS
        step = max(60_000, (end - t) // max(1, tickets))
        actor = person.actor
        emit = day.emit
        for _ in range(max(0, tickets)):
            t += rng.randint(step // 2, step + step // 2)
            if t >= end:
                break
            w = rng.choice(pool)
            ticket = self.ticket_id()
            res = self.resource(w)
            res["ticket"] = ticket
            hits = rng.choice((1, 1, 1, 2, 3))
            emit(
                t,
                {
                    "actor": actor,
                    "session": session,
                    "action": "waybill.search",
                    "query": {"kind": "by_phone", "result_count": hits, "result_ids": [w.number]},
                    "purpose": "ticket",
                    "outcome": ALLOW,
                },
            )
            t += rng.randint(5000, 40_000)
            emit(
                t,
                {
                    "actor": actor,
                    "session": session,
                    "action": "waybill.view",
                    "resource": res,
                    "purpose": "ticket",
                    "outcome": ALLOW,
                },
            )
            if rng.random() < person.reveal_rate:
                t += rng.randint(10_000, 90_000)
                emit(
                    t,
                    {
                        "actor": actor,
                        "session": session,
                        "action": "waybill.reveal",
                        "resource": res,
                        "fields": F_RP if rng.random() < 0.6 else F_SP,
                        "purpose": "ticket",
                        "outcome": ALLOW,
                    },
                )
            if rng.random() < 0.35:
                t += rng.randint(10_000, 60_000)
                emit(
                    t,
                    {
                        "actor": actor,
                        "session": session,
                        "action": "number.call",
                        "resource": res,
                        "purpose": "ticket",
                        "outcome": ALLOW,
                    },
                )

    def _security(self, day: Day, person: Staff, factor: float) -> None:
        rng = day.rng
        start, end = self._shift(day, person)
        session = self._desk_session(day, person, start)
        pool = self.recent()
        span = end - start
        events: list[tuple[int, Event]] = []
        case = self.ticket_id("INV")
        for _ in range(int(person.volume)):
            if not pool:
                break
            w = rng.choice(pool)
            res = self.resource(w)
            res["ticket"] = case
            events.append(
                (
                    start + int(rng.random() * span),
                    {"action": "waybill.view", "resource": res, "purpose": "investigation"},
                )
            )
        for _ in range(rng.randint(0, 2)):
            if not pool:
                break
            res = self.resource(rng.choice(pool))
            res["ticket"] = case
            events.append(
                (
                    start + int(rng.random() * span),
                    {"action": "waybill.reveal", "resource": res, "fields": F_RP, "purpose": "investigation"},
                )
            )
        self._emit_desk(day, person, session, events)


def iter_events(config: SimConfig) -> Iterator[Event]:
    """Every Access Event v1 of a run as a dict, in time order (the live driver's input)."""
    for event, _label in Simulation(config).labelled():
        yield event


__all__ = [
    "ADMIN",
    "COURIER",
    "DAY_MS",
    "MIN_MS",
    "Clock",
    "Day",
    "Delivery",
    "ScenarioTruth",
    "Simulation",
    "iter_events",
]
