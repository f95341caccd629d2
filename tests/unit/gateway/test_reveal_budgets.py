"""The security tester's finding F3 behind the real risk engine.

A gang holding an order/PDA-system API key assigned 522 waybills of every outlet in two cities to one
rented courier account, which revealed them at ~1.8/s: 399 served before the 400-an-hour reveal rate
of every role denied. On the customer-service side, 60 tickets opened for one agent were all revealed
in ~3 s. Now an assignment must stay within the waybill's outlets, every role has reveal budgets that
hold explained reveals too, and a burst of tasks to one account raises an alert.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from courierguard.domain import OrgUnit, OrgUnitKind

from .conftest import World, record

ALL6 = [f"{p}.{f}" for p in ("sender", "recipient") for f in ("name", "phone", "address")]
RECIPIENT = ["recipient.name", "recipient.phone", "recipient.address"]


def _ingest(world: World, first: int, count: int, **over: Any) -> list[str]:
    records = [record(n, **over) for n in range(first, first + count)]
    r = world.client.post("/v1/waybills", json={"records": records}, headers=world.svc)
    assert r.status_code == 200 and len(r.json()["stored"]) == count, r.text
    return [rec["number"] for rec in records]


def _assign(world: World, number: str, assignee: str = "C1") -> Any:
    if world.deployment.guard.company.waybill(number).status.value == "created":
        world.step(number, "picked_up")  # a courier is sent out with a parcel in hand
    body = {"status": "out_for_delivery", "assignee": assignee, "ts": world.clock.now().isoformat()}
    return world.client.post(f"/v1/waybills/{number}/events", json=body, headers=world.svc)


def test_an_assignment_to_a_courier_of_another_outlet_is_refused(engine_world: World) -> None:
    world = engine_world
    for unit in ("OUT-SH-02", "OUT-SH-07"):
        world.deployment.guard.company.put_org_unit(OrgUnit(unit, OrgUnitKind.OUTLET, unit))
    [elsewhere] = _ingest(world, 100, 1, origin_outlet="OUT-SH-02", dest_outlet="OUT-SH-07")
    r = _assign(world, elsewhere)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == "assignee" and "outlet" in r.json()["detail"]
    lifecycle = [e for e in world.entries("system") if e.get("what") == "waybill.lifecycle"]
    assert (
        not [  # refused before recorded
            e for e in lifecycle if e.get("waybills") == [elsewhere] and e["status"] == "out_for_delivery"
        ]
    )
    c1 = world.login("C1")
    revealed = world.client.post(
        f"/v1/waybills/{elsewhere}/reveal",
        json={"fields": RECIPIENT, "purpose": "delivery_contact"},
        headers=c1,
    )
    assert revealed.status_code == 403
    # either end of the parcel's route is the courier's own outlet: accepted
    [inbound] = _ingest(world, 101, 1, origin_outlet="OUT-SH-02", dest_outlet="OUT-BJ-01")
    [outbound] = _ingest(world, 102, 1, origin_outlet="OUT-BJ-01", dest_outlet="OUT-SH-02")
    assert _assign(world, inbound).status_code == 200
    assert _assign(world, outbound).status_code == 200


def test_a_rented_courier_revealing_a_mass_assignment_is_stopped_at_the_budget(engine_world: World) -> None:
    world = engine_world
    numbers = _ingest(world, 100, 120)
    for number in numbers:
        assert _assign(world, number).status_code == 200
    c1 = world.login("C1")
    answers: list[tuple[int, str | None]] = []
    for number in numbers:
        r = world.client.post(
            f"/v1/waybills/{number}/reveal",
            json={"fields": RECIPIENT, "purpose": "delivery_contact"},
            headers=c1,
        )
        answers.append((r.status_code, None if r.status_code == 200 else r.json().get("reason")))
        world.clock.advance(timedelta(seconds=0.55))  # ~1.8 a second
        if r.status_code == 401:
            break
    served = [a for a in answers if a[0] == 200]
    assert len(served) == 40  # the courier's hour budget (26 measured at most, x 1.5), not 399
    assert answers[40][0] == 429
    assert (403, "step_up_required") in answers
    # no clear text in any refusal
    alerts = world.deployment.alerts.fetch("C1", tenant=world.tenant)
    assert "reveal_budget" in {x["code"] for a in alerts for x in a["reasons"]}
    for a in alerts:
        assert "18687654321" not in str(a) and "欧阳娜娜" not in str(a)


def test_sixty_tickets_for_one_agent_are_not_sixty_reveals(engine_world: World) -> None:
    world = engine_world
    numbers = _ingest(world, 200, 60)
    for i, number in enumerate(numbers):
        case = {"id": f"TK-{i}", "kind": "ticket", "waybill": number, "owner": "S1"}
        assert world.client.post("/v1/cases", json=case, headers=world.svc).status_code == 201
    s1 = world.login("S1")
    codes = []
    for number in numbers:
        r = world.client.post(
            f"/v1/waybills/{number}/reveal", json={"fields": ALL6, "purpose": "ticket"}, headers=s1
        )
        codes.append(r.status_code)
        world.clock.advance(timedelta(seconds=0.05))
    assert codes.count(200) == 18  # the agents' hour budget (11 measured at most, x 1.5)
    assert codes[18] == 429


def test_a_burst_of_cases_for_one_agent_raises_an_alert(engine_world: World) -> None:
    world = engine_world
    numbers = _ingest(world, 300, 81)
    for i, number in enumerate(numbers):
        case = {"id": f"TK-{i}", "kind": "ticket", "waybill": number, "owner": "S1"}
        assert world.client.post("/v1/cases", json=case, headers=world.svc).status_code == 201
    alerts = world.deployment.alerts.fetch("S1", tenant=world.tenant)
    bursts = [a for a in alerts if a["reasons"][0]["code"] == "task_burst"]
    assert len(bursts) == 1  # the 81st case: agents' budget 80 (53 measured at most, x 1.5)
    assert bursts[0]["evidence"]["by"] == "svc:order-system" and bursts[0]["evidence"]["task"] == "case"
