"""The ticket an access event names is the caller's own (the review's finding on ``resource.ticket``).

An agent whose colleague owns the open ticket on a waybill was recorded as working inside that
ticket: the audit trail named someone else's case, and risk control counted the agent's views as
explained by a task, so browsing a colleague's cases went unmeasured. The Cedar policy still refused
the reveal; the record and the risk decision did not match it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from courierguard.domain import Employee
from courierguard.events import Role

from .conftest import World

W1 = "YT0000000000001"
NUMBERS = [f"YT{n:013d}" for n in range(1, 6)]


def _open(world: World, case: str, number: str, owner: str, kind: str = "ticket") -> None:
    r = world.client.post(
        "/v1/cases", json={"id": case, "kind": kind, "waybill": number, "owner": owner}, headers=world.svc
    )
    assert r.status_code == 201, r.text


def _colleague(world: World) -> None:
    world.deployment.guard.company.put_employee(
        Employee("S2", Role.CUSTOMER_SERVICE, "CS-01"), world.clock.now()
    )


def _events(world: World, actor: str, action: str) -> list[dict[str, Any]]:
    return [e for e in world.access_events() if e["actor"]["id"] == actor and e["action"] == action]


def _reveal(world: World, headers: dict[str, str], number: str = W1) -> int:
    r = world.client.post(
        f"/v1/waybills/{number}/reveal",
        json={"fields": ["recipient.phone"], "purpose": "ticket"},
        headers=headers,
    )
    return int(r.status_code)


def test_a_colleagues_ticket_is_not_named_on_an_agents_access(world: World) -> None:
    _colleague(world)
    _open(world, "T-1", W1, "S1")
    s1, s2 = world.login("S1"), world.login("S2")

    assert world.client.get(f"/v1/waybills/{W1}", headers=s2).status_code == 200  # masked: any parcel
    assert _reveal(world, s2) == 403  # the policy never granted a colleague's ticket
    [view] = _events(world, "S2", "waybill.view")
    [reveal] = _events(world, "S2", "waybill.reveal")
    assert "ticket" not in view["resource"] and "ticket" not in reveal["resource"]
    assert reveal["outcome"]["decision"] == "deny"
    assert all(e.resource is None or e.resource.ticket is None for e in world.risk.seen if e.actor.id == "S2")

    # The owner's own accesses name the ticket that explains them.
    assert world.client.get(f"/v1/waybills/{W1}", headers=s1).status_code == 200
    assert _reveal(world, s1) == 200
    assert [e["resource"]["ticket"] for e in _events(world, "S1", "waybill.view")] == ["T-1"]
    assert [e["resource"]["ticket"] for e in _events(world, "S1", "waybill.reveal")] == ["T-1"]


def test_an_agent_with_a_ticket_of_their_own_on_the_waybill_is_recorded_with_it(world: World) -> None:
    _colleague(world)
    _open(world, "T-1", W1, "S1")  # opened first: the old code's fallback would name it
    _open(world, "RC-2", W1, "S2", kind="return")
    s2 = world.login("S2")
    assert _reveal(world, s2) == 200
    assert [e["resource"]["ticket"] for e in _events(world, "S2", "waybill.reveal")] == ["RC-2"]


def test_a_courier_is_never_recorded_inside_a_customer_service_ticket(world: World) -> None:
    _open(world, "T-1", W1, "S1")
    c1 = world.login("C1")
    assert world.client.get(f"/v1/waybills/{W1}", headers=c1).status_code == 200  # own outlet's parcel
    [view] = _events(world, "C1", "waybill.view")
    assert "ticket" not in view["resource"]


def test_risk_control_counts_an_agent_browsing_a_colleagues_tickets(engine_world: World) -> None:
    """With the real engine: views under a colleague's tickets are masked rows no task explains, so
    the agent's hourly budget (30 for customer service) is reached; the owner's own are work."""
    world = engine_world
    _colleague(world)
    for i, number in enumerate(NUMBERS):
        _open(world, f"T-{i}", number, "S1")
    s1, s2 = world.login("S1"), world.login("S2")
    browsing = []
    owning = []
    for i in range(40):
        world.clock.advance(timedelta(seconds=30))
        number = NUMBERS[i % len(NUMBERS)]
        browsing.append(world.client.get(f"/v1/waybills/{number}", headers=s2).status_code)
        owning.append(world.client.get(f"/v1/waybills/{number}", headers=s1).status_code)
    assert owning == [200] * 40
    assert browsing[:30] == [200] * 30 and 429 in browsing[30:]
    engine = world.deployment.guard.risk
    assert engine.state.load("S1").d_masked == 0  # type: ignore[attr-defined]
    assert engine.state.load("S2").d_masked >= 31  # type: ignore[attr-defined]


def test_risk_control_counts_a_case_under_its_owners_own_role(world: World) -> None:
    # A return case goes to outlet staff: counted as customer service's task, an account risk
    # control had never seen act was judged against the agents' task budget.
    noted: list[tuple[str, str, str]] = []
    world.risk.note_task = lambda who, role, kind, ts, by, ref: noted.append((who, role, kind)) or False  # type: ignore[attr-defined]
    _open(world, "RT-1", W1, "K1", kind="return")
    _open(world, "TK-1", NUMBERS[1], "S1")
    assert noted == [("K1", "outlet_clerk", "case"), ("S1", "customer_service", "case")]
