"""Small synthetic event streams: normal couriers and one rented account, for tests and benchmarks.

Much simpler than the company simulator (``courierguard.sim``): enough to exercise every detector and
to measure the engine's speed without the simulator. All data is synthetic and carries no PII values.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

CST = timezone(timedelta(hours=8))
START = datetime(2026, 11, 2, tzinfo=CST)


def event(
    eid: str,
    ts: datetime,
    actor: str,
    action: str = "waybill.view",
    *,
    role: str = "courier",
    org: str = "OUT-BJ-001",
    session: str | None = None,
    device: str | None = "PDA-1",
    ip: str | None = "111.160.3.4",
    loc: tuple[float, float] | None = (39.9, 116.4),
    waybill: str | None = None,
    assignee: str | None = None,
    ticket: str | None = None,
    fields: list[str] | None = None,
    outcome: str | None = None,
    result_count: int | None = None,
    purpose: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One Access Event v1 as a dict, with only the properties given."""
    e: dict[str, Any] = {"v": 1, "id": eid, "ts": ts.isoformat(timespec="milliseconds"), "action": action}
    e["actor"] = {"id": actor, "kind": "employee", "role": role, "org_unit": org}
    sess: dict[str, Any] = {}
    if session is not None or device is not None:
        sess["id"] = session or f"S-{actor}-{device}-{ts.date().isoformat()}"
    if device is not None:
        sess["device_id"] = device
    if ip is not None:
        sess["ip"] = ip
    if loc is not None:
        sess["location"] = {"lat": loc[0], "lon": loc[1]}
    if sess:
        e["session"] = sess
    if waybill is not None:
        res: dict[str, Any] = {"type": "waybill", "id": waybill, "org_unit": org}
        if assignee is not None:
            res["assignee"] = assignee
        if ticket is not None:
            res["ticket"] = ticket
        e["resource"] = res
    if result_count is not None:
        e["query"] = {"kind": "by_org_unit", "result_count": result_count}
    if fields:
        e["fields"] = fields
    if outcome is not None:
        e["outcome"] = {"decision": outcome}
    if purpose is not None:
        e["purpose"] = purpose
    e.update(extra)
    return e


def courier_day(
    rng: random.Random, actor: str, day: int, *, device: str, org: str = "OUT-BJ-001", parcels: int = 40,
    unexplained: int = 1, city: tuple[float, float] = (39.9, 116.4),
) -> list[dict[str, Any]]:  # fmt: skip
    """A courier's working day: views of assigned waybills, some phone reveals, a few unexplained."""
    out = []
    base = START + timedelta(days=day, hours=8)
    for i in range(parcels):
        ts = base + timedelta(minutes=i * 600 / parcels + rng.uniform(0, 5))
        wb = f"YT{rng.randrange(10**12, 10**13):013d}"
        explained = i >= unexplained
        reveal = rng.random() < 0.3 or not explained
        out.append(
            event(
                f"{actor}-{day}-{i}",
                ts,
                actor,
                "waybill.reveal" if reveal else "waybill.view",
                org=org,
                device=device,
                ip=f"111.160.{rng.randrange(256)}.{rng.randrange(256)}",
                loc=(city[0] + rng.uniform(-0.03, 0.03), city[1] + rng.uniform(-0.03, 0.03)),
                waybill=wb,
                assignee=actor if explained else None,
                fields=["recipient.phone"] if reveal else None,
            )
        )
    return out


def rented_stream(
    seed: int = 0, *, couriers: int = 12, days: int = 6, attack_day: int = 4, attack_events: int = 300
) -> tuple[list[dict[str, Any]], set[str]]:
    """Normal couriers for ``days`` days and, from ``attack_day``, one account scraped at night from a
    new device in another city. Returns the events in time order and the ids of the attack events."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for c in range(couriers):
        actor = f"E{c:06d}"
        for day in range(days):
            events += courier_day(rng, actor, day, device=f"PDA-{c}", unexplained=rng.randrange(3))
    victim = "E000000"
    attack_ids: set[str] = set()
    base = START + timedelta(days=attack_day, hours=23)
    first = rng.randrange(10**12, 10**13 - attack_events)
    for i in range(attack_events):
        ts = base + timedelta(seconds=i * 4)
        eid = f"ATT-{i}"
        attack_ids.add(eid)
        events.append(
            event(
                eid,
                ts,
                victim,
                "waybill.reveal",
                device="PHONE-X",
                ip="58.20.1.2",
                loc=(23.1, 113.3),
                waybill=f"YT{first + i if i % 2 else rng.randrange(10**12, 10**13):013d}",
                fields=["recipient.name", "recipient.phone", "recipient.address"],
            )
        )
    events.sort(key=lambda e: e["ts"])
    return events, attack_ids


def iter_lines(events: list[dict[str, Any]]) -> Iterator[bytes]:
    """The events as JSON Lines bytes."""
    import orjson

    for e in events:
        yield orjson.dumps(e) + b"\n"


__all__ = ["CST", "START", "courier_day", "event", "iter_lines", "rented_stream"]
