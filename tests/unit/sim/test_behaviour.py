"""Normal work per role stays within the ranges documented in docs/simulator.md."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from .conftest import Run

FESTIVAL = {"2026-11-11", "2026-11-12"}


def _per_day(run: Run) -> dict[str, list[Counter[str]]]:
    labels = run.labels()
    counters: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    roles: dict[str, str] = {}
    for e in run.events:
        day = e["ts"][:10]
        if e["id"] in labels or day in FESTIVAL:
            continue
        roles[e["actor"]["id"]] = e["actor"]["role"]
        c = counters[(e["actor"]["id"], day)]
        c[e["action"]] += 1
        resource = e.get("resource") or {}
        if e["action"] == "waybill.view" and resource.get("status") == "at_destination":
            c["parcels"] += 1
        if e["action"] == "waybill.reveal":
            if (e.get("outcome") or {}).get("decision") == "deny":
                c["denied"] += 1
            elif resource.get("ticket"):
                c["ticket_reveals"] += 1
            elif resource.get("assignee") == e["actor"]["id"]:
                c["assigned_reveals"] += 1
            else:
                c["other_reveals"] += 1
    out: dict[str, list[Counter[str]]] = defaultdict(list)
    for (actor, _day), c in counters.items():
        if c["auth.login"]:  # a whole working day (night shifts spill into the next date)
            out[roles[actor]].append(c)
    return out


def _check(days: list[Counter[str]], key: str, low: float, high: float) -> None:
    values = [c[key] for c in days]
    mean = statistics.fmean(values)
    assert low <= mean <= high, (key, mean)


def test_couriers(small_run: Run) -> None:
    days = _per_day(small_run)["courier"]
    assert len(days) > 150
    _check(days, "parcels", 150, 260)
    _check(days, "waybill.reveal", 12, 40)
    _check(days, "number.call", 30, 70)
    assert all(c["other_reveals"] == 0 and c["ticket_reveals"] == 0 for c in days)
    assert all(3 <= c["waybill.reveal"] <= 100 for c in days)
    assert all(80 <= c["parcels"] <= 620 for c in days)
    assert all(c["waybill.export"] == 0 and c["waybill.list"] == 0 for c in days)


def test_customer_service(small_run: Run) -> None:
    days = _per_day(small_run)["customer_service"]
    _check(days, "waybill.search", 20, 45)
    _check(days, "waybill.reveal", 12, 30)
    assert all(c["waybill.reveal"] == c["ticket_reveals"] for c in days)


def test_clerks_managers_hub(small_run: Run) -> None:
    per = _per_day(small_run)
    clerks, managers, hub = per["outlet_clerk"], per["outlet_manager"], per["hub_operator"]
    _check(clerks, "waybill.view", 30, 130)
    assert all(c["waybill.reveal"] == c["ticket_reveals"] <= 3 for c in clerks)
    _check(managers, "waybill.view", 5, 20)
    assert all(c["waybill.export"] <= 1 and c["waybill.reveal"] == 0 for c in managers)
    _check(hub, "waybill.view", 100, 500)
    assert all(c["waybill.reveal"] <= 10 for c in hub)


def test_mistakes_and_retries_happen(small_run: Run) -> None:
    actions = Counter(e["action"] for e in small_run.events)
    logins = actions["auth.login"]
    assert 0.005 < actions["auth.login_failed"] / logins < 0.06
    denied = sum(
        1
        for e in small_run.events
        if e["action"] == "waybill.reveal" and (e.get("outcome") or {}).get("reason") == "not_assigned"
    )
    assert denied > 20


def test_life_events_are_planned_and_announced(small_run: Run) -> None:
    from courierguard.sim import SimConfig, Simulation

    sim = Simulation(SimConfig(employees=400, days=14, seed=4, scenarios=()))
    assert any(p.device_day is not None for p in sim.world.staff)
    assert any(p.move_day is not None for p in sim.world.staff)
    assert any(p.left_day is not None for p in sim.world.staff)
    changes = [e for e in small_run.events if e["action"] == "admin.change" and e["actor"]["role"] == "admin"]
    assert changes and all(e["purpose"].startswith(("employee.left:", "employee.moved:")) for e in changes)
    # The only other directory change is scenario 15's: a security officer resets a stolen phone
    # (scenario 16's holds are the attack's, labelled).
    attack = set(small_run.scenario(16)["event_ids"])
    others = [
        e
        for e in small_run.events
        if e["action"] == "admin.change" and e not in changes and e["id"] not in attack
    ]
    assert [e["actor"]["role"] for e in others] == ["security_officer"]
    assert others[0]["purpose"].startswith("devices.reset:")
