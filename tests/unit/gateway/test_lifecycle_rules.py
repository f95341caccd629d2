"""Assignments, sign-offs and tickets: what opens reveal rights is checked, then recorded, then applied.

A courier may reveal a recipient's phone because a lifecycle step assigned the delivery to them; a
customer-service agent because a ticket names them. So each of these changes is on the audit trail
before it takes effect (findable by waybill), and its times and names are checked: a sign-off
dated in 2099 would stretch the 24-hour grace for 70 years, an assignment to a mistyped id or a
clerk would hand reveal rights to the wrong account.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from courierguard.audit import AuditQueries
from courierguard.domain import Employee, EmployeeStatus, OrgUnit, OrgUnitKind
from courierguard.events import Role

from .conftest import START, World, record

W1 = "YT0000000000001"
US = timedelta(microseconds=1)


def system_entries(world: World, what: str | None = None, waybill: str | None = None) -> list[dict[str, Any]]:
    queries = AuditQueries(world.deployment.core.audit_engine)
    page = queries.search(limit=1000, waybills=[waybill] if waybill else None, tenant=world.tenant)
    return [
        r.body for r in page.records if r.kind == "system" and (what is None or r.body.get("what") == what)
    ]


def step(world: World, status: str, **body: Any) -> Any:
    return world.client.post(f"/v1/waybills/{W1}/events", json={"status": status, **body}, headers=world.svc)


def test_an_assignment_is_recorded_before_it_opens_reveal_rights(world: World) -> None:
    c1 = world.login("C1")
    world.step(W1, "in_transit")
    r = step(world, "out_for_delivery", assignee="C1", ts=world.clock.now().isoformat())
    assert r.status_code == 200, r.text
    entry = system_entries(world, "waybill.lifecycle", waybill=W1)[-1]
    assert entry["actor"] == "svc:order-system" and entry["assignee"] == "C1"
    assert entry["status"] == "out_for_delivery" and entry["waybills"] == [W1]
    revealed = world.client.post(
        f"/v1/waybills/{W1}/reveal", json={"fields": ["recipient.phone"], "purpose": "delivery"}, headers=c1
    )
    assert revealed.status_code == 200
    assert step(world, "delivered").status_code == 200
    assert [e["status"] for e in system_entries(world, "waybill.lifecycle", waybill=W1)] == [
        "picked_up",
        "in_transit",
        "out_for_delivery",
        "delivered",
    ]


def test_a_refused_step_leaves_the_waybill_and_the_trail_as_they_were(world: World) -> None:
    world.step(W1, "in_transit")
    assert step(world, "out_for_delivery", assignee="C1").status_code == 200
    assert step(world, "delivered").status_code == 200
    before = world.client.get(f"/v1/waybills/{W1}", headers=world.login("K1")).json()
    assert step(world, "in_transit").status_code == 409  # a delivered waybill does not move on
    assert (
        world.client.get(f"/v1/waybills/{W1}", headers=world.login("K1")).json()["status"] == before["status"]
    )
    assert len(system_entries(world, "waybill.lifecycle", waybill=W1)) == 4


@pytest.mark.parametrize(
    ("ts", "message"),
    [
        ("2099-01-01T00:00:00Z", "ahead of the server's clock"),
        ("1999-12-31T23:59:59Z", "before 2000-01-01"),
        ("9999-12-31T23:59:59-23:59", "out of range"),
        ("0001-01-01T00:00:00+23:59", "out of range"),
        ("2026-11-01T00:00:00+08:00", "before the waybill was created"),
    ],
)
def test_a_step_time_outside_what_is_possible_is_a_422_naming_ts(world: World, ts: str, message: str) -> None:
    r = step(world, "out_for_delivery", assignee="C1", ts=ts)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "ts" and message in r.json()["detail"]
    assert system_entries(world, "waybill.lifecycle", waybill=W1) == []


def test_a_device_clock_a_few_minutes_ahead_is_accepted(world: World) -> None:
    world.step(W1, "in_transit")
    ahead = (world.clock.now() + timedelta(minutes=9)).isoformat()
    assert step(world, "out_for_delivery", assignee="C1", ts=ahead).status_code == 200


def test_a_sign_off_dated_in_the_future_cannot_stretch_the_grace_period(world: World) -> None:
    world.step(W1, "in_transit")
    assert step(world, "out_for_delivery", assignee="C1").status_code == 200
    r = step(world, "delivered", ts="2099-01-01T00:00:00Z")
    assert r.status_code == 422
    world.clock.advance(timedelta(hours=25))
    c1 = world.login("C1")
    late = world.client.post(
        f"/v1/waybills/{W1}/reveal", json={"fields": ["recipient.phone"], "purpose": "delivery"}, headers=c1
    )
    assert late.status_code == 200  # still out for delivery: the refused sign-off changed nothing


@pytest.mark.parametrize(
    ("assignee", "message"),
    [("NOBODY-XYZ", "is not an employee"), ("S1", "must be a courier"), ("K1", "must be a courier")],
)
def test_a_task_goes_only_to_a_courier_on_the_staff_list(world: World, assignee: str, message: str) -> None:
    r = step(world, "out_for_delivery", assignee=assignee)
    assert r.status_code == 422 and r.json()["field"] == "assignee" and message in r.json()["detail"], r.text


def test_a_task_does_not_go_to_a_courier_who_left(world: World) -> None:
    world.deployment.guard.company.put_employee(
        Employee("C3", Role.COURIER, "OUT-BJ-01", EmployeeStatus.LEFT), world.clock.now()
    )
    r = step(world, "awaiting_pickup", assignee="C3")
    assert r.status_code == 422 and "not an active employee" in r.json()["detail"]


def test_tickets_are_recorded_when_opened_and_closed(world: World) -> None:
    case = {"id": "TK-1", "kind": "ticket", "waybill": W1, "owner": "S1"}
    assert world.client.post("/v1/cases", json=case, headers=world.svc).status_code == 201
    assert world.client.post("/v1/cases/TK-1/close", headers=world.svc).status_code == 200
    entries = [e for e in system_entries(world, waybill=W1) if e["what"].startswith("case.")]
    assert [(e["what"], e["case"], e["owner"]) for e in entries] == [
        ("case.opened", "TK-1", "S1"),
        ("case.closed", "TK-1", "S1"),
    ]


def test_a_ticket_names_an_owner_on_the_staff_list(world: World) -> None:
    case = {"id": "TK-2", "kind": "ticket", "waybill": W1, "owner": "NOBODY"}
    r = world.client.post("/v1/cases", json=case, headers=world.svc)
    assert r.status_code == 422 and r.json()["field"] == "owner"
    assert system_entries(world, "case.opened") == []
    assert world.client.post("/v1/cases/TK-404/close", headers=world.svc).status_code == 404


@pytest.mark.parametrize(
    ("created_at", "message"),
    [
        ("2099-01-01T00:00:00Z", "ahead of the server's clock"),
        ("0001-01-01T00:00:00Z", "before 2000-01-01"),
        ("9999-12-31T23:59:59-23:59", "out of range"),
    ],
)
def test_an_impossible_creation_time_fails_its_record_alone(
    world: World, created_at: str, message: str
) -> None:
    records = [record(90, created_at=created_at), record(91, created_at=START.isoformat())]
    r = world.client.post("/v1/waybills", json={"records": records}, headers=world.svc)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == ["YT0000000000091"]
    [failed] = r.json()["failed"]
    assert failed["index"] == 0 and failed["field"] == "created_at" and message in failed["message"]


def test_an_ingest_is_recorded_with_the_numbers_it_stored(world: World) -> None:
    [entry] = system_entries(world, "waybill.ingest", waybill="YT0000000000003")
    assert entry["stored"] == 5 and sorted(entry["waybills"]) == [f"YT{n:013d}" for n in range(1, 6)]


def test_a_prefix_search_pages_through_every_match(world: World) -> None:
    more = [record(n) for n in range(100, 130)]
    assert world.client.post("/v1/waybills", json={"records": more}, headers=world.svc).status_code == 200
    k1 = world.login("K1")
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        body: dict[str, Any] = {"number_prefix": "YT00", "page_size": 7}
        if cursor:
            body["cursor"] = cursor
        page = world.client.post("/v1/waybills/search", json=body, headers=k1).json()
        seen += [item["number"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 35


def test_a_phone_search_pages_too(world: World) -> None:
    k1 = world.login("K1")
    first = world.client.post(
        "/v1/waybills/search", json={"phone": "13912345678", "page_size": 3}, headers=k1
    )
    assert first.status_code == 200 and len(first.json()["items"]) == 3
    cursor = first.json()["next_cursor"]
    rest = world.client.post(
        "/v1/waybills/search", json={"phone": "13912345678", "page_size": 3, "cursor": cursor}, headers=k1
    ).json()
    assert [i["number"] for i in rest["items"]] == ["YT0000000000004", "YT0000000000005"]
    assert rest["next_cursor"] is None


def test_a_ticket_closed_twice_is_a_409_and_recorded_once(world: World) -> None:
    case = {"id": "TK-3", "kind": "ticket", "waybill": W1, "owner": "S1"}
    assert world.client.post("/v1/cases", json=case, headers=world.svc).status_code == 201
    first = world.client.post("/v1/cases/TK-3/close", headers=world.svc)
    assert first.status_code == 200
    again = world.client.post("/v1/cases/TK-3/close", headers=world.svc)
    assert again.status_code == 409
    assert len(system_entries(world, "case.closed", waybill=W1)) == 1


def test_a_ticket_id_taken_by_a_concurrent_request_is_a_409_with_a_rejected_entry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = {"id": "TK-4", "kind": "ticket", "waybill": W1, "owner": "S1"}
    assert world.client.post("/v1/cases", json=case, headers=world.svc).status_code == 201
    # The race: a second request passed its check before the first committed.
    monkeypatch.setattr(world.deployment.guard.company, "check_case", lambda case: None)
    r = world.client.post("/v1/cases", json={**case, "owner": "C1"}, headers=world.svc)
    assert r.status_code == 409, r.text
    opened = system_entries(world, "case.opened", waybill=W1)
    rejected = system_entries(world, "case.opened.rejected", waybill=W1)
    assert [e["owner"] for e in opened] == ["S1", "C1"] and [e["owner"] for e in rejected] == ["C1"]
    assert world.deployment.guard.company.case("TK-4").owner == "S1"


@pytest.mark.parametrize(
    "after", [["exception", "at_destination", "in_locker"], ["returned", "exception", "at_destination"]]
)
def test_no_later_step_revives_a_delivery_task(world: World, after: list[str]) -> None:
    def reveal() -> int:
        return world.client.post(
            f"/v1/waybills/{W1}/reveal",
            json={"fields": ["recipient.phone"], "purpose": "delivery"},
            headers=world.login("C1"),
        ).status_code

    world.step(W1, "in_transit")
    assert step(world, "out_for_delivery", assignee="C1").status_code == 200
    assert step(world, "delivered").status_code == 200
    assert reveal() == 200  # the grace period after sign-off
    for status in after:
        assert step(world, status).status_code == 200
    assert reveal() == 403
    assert step(world, "out_for_delivery", assignee="C1").status_code in (200, 409)


def test_a_stale_assignment_arriving_late_does_not_take_the_task_back(world: World) -> None:
    # The PDA backend retries a pickup assignment after a timeout; by the time it arrives the parcel
    # is out for delivery with another courier. Applying it would hand C1 the task back (and take
    # C2's away): a step dated before the waybill's current status is out of order.
    t0 = world.clock.now()
    assert step(world, "awaiting_pickup", assignee="C1", ts=t0.isoformat()).status_code == 200
    world.clock.advance(timedelta(hours=3))
    later = world.clock.now().isoformat()
    assert step(world, "picked_up", ts=later).status_code == 200
    assert step(world, "out_for_delivery", assignee="C2", ts=later).status_code == 200
    stale = step(world, "awaiting_pickup", assignee="C1", ts=t0.isoformat())
    assert stale.status_code == 409, stale.text
    assert "out of order" in stale.json()["detail"]
    assert step(world, "in_transit", ts=(t0 + timedelta(hours=1)).isoformat()).status_code == 409
    waybill = world.deployment.guard.company.waybill(W1)
    assert (waybill.status.value, waybill.assignee) == ("out_for_delivery", "C2")
    # A step that only ends the task is taken whatever its time: a sign-off from a PDA whose clock
    # runs a minute slow must not leave the courier's task open.
    assert (
        step(world, "delivered", ts=(world.clock.now() - timedelta(minutes=1)).isoformat()).status_code == 200
    )


def test_a_step_retried_after_a_timeout_is_answered_again_without_a_second_change(world: World) -> None:
    world.step(W1, "in_transit")
    body = {"assignee": "C1", "ts": world.clock.now().isoformat()}
    first = step(world, "out_for_delivery", **body)
    assert first.status_code == 200
    assert step(world, "delivered", ts=body["ts"]).status_code == 200
    again = step(world, "delivered", ts=body["ts"])
    assert again.status_code == 200, again.text  # the same step: the retry learns it was applied
    assert again.json()["status"] == "delivered"
    with world.deployment.core.engine.connect() as conn:
        from sqlalchemy import func, select

        from courierguard.db.tables import waybill_history

        signed_off = conn.execute(
            select(func.count())
            .select_from(waybill_history)
            .where(waybill_history.c.tenant == world.tenant, waybill_history.c.number == W1)
            .where(waybill_history.c.status == "delivered")
        ).scalar_one()
    assert signed_off == 1


@pytest.mark.parametrize("case_id", ["13812345678", "TK-138-1234-5678", "010-62551234"])
def test_a_case_id_written_like_a_phone_number_is_refused(world: World, case_id: str) -> None:
    # A case id is kept in clear on the trail and in every Access Event naming the ticket, exported
    # to the SIEM beyond crypto-shredding: an order system that numbers tickets by the caller's
    # phone must be told, not have the phone kept for years.
    case = {"id": case_id, "kind": "ticket", "waybill": W1, "owner": "S1"}
    r = world.client.post("/v1/cases", json=case, headers=world.svc)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "id" and case_id not in r.text
    assert system_entries(world, "case.opened", waybill=W1) == []


def test_a_change_the_database_fails_to_apply_gets_a_rejected_entry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded, then lost to a database error (seen when the database went read-only under load):
    the trail says so, as ingest's does, instead of naming an assignment that never took effect."""
    from sqlalchemy.exc import OperationalError

    def lost(*args: object) -> None:
        raise OperationalError("UPDATE", {}, Exception("read-only transaction"))

    company = world.deployment.guard.company
    world.step(W1, "in_transit")
    monkeypatch.setattr(company, "apply", lost)
    monkeypatch.setattr(company, "open_case", lost)
    r = step(world, "out_for_delivery", assignee="C1", ts=world.clock.now().isoformat())
    assert r.status_code == 503 and r.json()["reason"] == "database_unavailable", r.text
    case = {"id": "TK-5", "kind": "ticket", "waybill": W1, "owner": "S1"}
    assert world.client.post("/v1/cases", json=case, headers=world.svc).status_code == 503
    [rejected] = system_entries(world, "waybill.lifecycle.rejected", waybill=W1)
    assert rejected["assignee"] == "C1" and rejected["error"] == "OperationalError"
    [rejected_case] = system_entries(world, "case.opened.rejected", waybill=W1)
    assert rejected_case["owner"] == "S1"


# --- the lifecycle is a state machine ------------------------------------------------------------------


@pytest.mark.parametrize("before", [[], ["awaiting_pickup"], ["picked_up"], ["picked_up", "in_transit"]])
def test_a_sign_off_of_a_parcel_never_out_for_delivery_is_refused_and_recorded(
    world: World, before: list[str]
) -> None:
    """A fake or broken PDA event must not make a waybill delivered (which opens the delivering
    courier's grace period) before anyone was handed it to deliver: 409, nothing changes, and the
    refusal is on the trail for an officer to see."""
    for status in before:
        world.step(W1, status, assignee="C1" if status == "awaiting_pickup" else None)
    was = world.deployment.guard.company.waybill(W1)
    r = step(world, "delivered", ts=world.clock.now().isoformat())
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["reason"] == "conflict" and "cannot follow" in r.json()["detail"]
    assert world.deployment.guard.company.waybill(W1) == was
    [rejected] = system_entries(world, "waybill.lifecycle.rejected", waybill=W1)
    assert rejected["status"] == "delivered" and rejected["error"] == "Conflict"
    assert [e["status"] for e in system_entries(world, "waybill.lifecycle", waybill=W1)] == before


def test_every_step_is_taken_or_refused_as_the_lifecycle_table_says(world: World) -> None:
    """NEXT_STEPS is the rule: each status against each step, on the store itself."""
    from courierguard.company.store import LifecycleChange
    from courierguard.domain import NEXT_STEPS, lifecycle_path
    from courierguard.errors import Conflict
    from courierguard.events import WaybillStatus

    company = world.deployment.guard.company
    records = [record(200 + i) for i in range(len(WaybillStatus))]
    assert world.client.post("/v1/waybills", json={"records": records}, headers=world.svc).status_code == 200
    world.clock.advance(timedelta(minutes=1))
    mismatches = []
    for i, current in enumerate(WaybillStatus):
        number = f"YT{200 + i:013d}"
        path = lifecycle_path(WaybillStatus.CREATED, current)
        assert path is not None, current
        for status in path:
            assignee = (
                "C1" if status in (WaybillStatus.AWAITING_PICKUP, WaybillStatus.OUT_FOR_DELIVERY) else None
            )
            company.apply(LifecycleChange(number, status, world.clock.now(), assignee))
        assert company.waybill(number).status is current
        later = world.clock.now() + timedelta(minutes=1)
        for status in WaybillStatus:
            assignee = (
                "C2" if status in (WaybillStatus.AWAITING_PICKUP, WaybillStatus.OUT_FOR_DELIVERY) else None
            )
            try:
                company.check(LifecycleChange(number, status, later, assignee))
                taken = True
            except Conflict:
                taken = False
            if taken != (status in NEXT_STEPS[current]):
                mismatches.append((current.value, status.value, taken))
    assert mismatches == []


def test_what_a_real_network_does_is_accepted(world: World) -> None:
    """A failed attempt back at the outlet and out again with another courier the next day, a parcel
    misrouted between hubs and sent on, a refused parcel's trip back to its sender, an exception
    resolved by a redelivery, a return after the sign-off."""
    flows = {
        "YT0000000000002": [
            ("picked_up", None), ("in_transit", None), ("in_transit", None), ("at_destination", None),
            ("in_transit", None), ("at_destination", None), ("out_for_delivery", "C1"),
            ("at_destination", None), ("out_for_delivery", "C2"), ("in_locker", None), ("delivered", None),
            ("returned", None),
        ],
        "YT0000000000003": [
            ("awaiting_pickup", "C1"), ("awaiting_pickup", "C2"), ("picked_up", None), ("in_transit", None),
            ("out_for_delivery", "C1"), ("refused", None), ("in_transit", None), ("at_destination", None),
            ("returned", None),
        ],
        "YT0000000000004": [
            ("picked_up", None), ("out_for_delivery", "C1"), ("exception", None), ("out_for_delivery", "C1"),
            ("delivered", None), ("exception", None),
        ],
    }  # fmt: skip
    for number, steps in flows.items():
        for status, assignee in steps:
            world.clock.advance(timedelta(hours=1))
            body: dict[str, Any] = {"status": status, "ts": world.clock.now().isoformat()}
            if assignee:
                body["assignee"] = assignee
            r = world.client.post(f"/v1/waybills/{number}/events", json=body, headers=world.svc)
            assert r.status_code == 200, (number, status, r.text)
    assert system_entries(world, "waybill.lifecycle.rejected") == []


def test_a_new_waybill_is_created_never_stored_further_on(world: World) -> None:
    """A record's ``status`` would skip every lifecycle check (a waybill stored out for delivery)."""
    records = [record(300, status="delivered"), record(301, status="created"), record(302)]
    r = world.client.post("/v1/waybills", json={"records": records}, headers=world.svc)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == ["YT0000000000301", "YT0000000000302"]
    [failed] = r.json()["failed"]
    assert failed["index"] == 0 and failed["field"] == "status"


def test_a_record_naming_an_outlet_the_company_does_not_have_fails_alone(world: World) -> None:
    """A mistyped outlet code would leave the parcel to no outlet's staff and no courier, or to a
    unit created later under that code; a unit of another tenant is not this company's."""
    from courierguard.company import CompanyStore

    core = world.deployment.core
    other = CompanyStore(core.engine, tenant=world.tenant + "x", seals=core.vault.seals)
    other.ensure_tenant("Other Express", world.clock.now())
    other.put_org_unit(OrgUnit("OUT-GZ-03", OrgUnitKind.OUTLET, "OUT-GZ-03"))
    records = [
        record(400, origin_outlet="OUT-SZ-99"),
        record(401, dest_outlet="OUT-GZ-03"),
        record(402, origin_outlet="HUB-01"),  # an org unit of the company: a parcel handed in at the hub
        record(403),
    ]
    r = world.client.post("/v1/waybills", json={"records": records}, headers=world.svc)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == ["YT0000000000402", "YT0000000000403"]
    failed = [(f["index"], f["field"], f["message"]) for f in r.json()["failed"]]
    assert failed == [
        (0, "origin_outlet", "is not an org unit of this company"),
        (1, "dest_outlet", "is not an org unit of this company"),
    ]
    assert "OUT-SZ-99" not in r.text and "OUT-GZ-03" not in r.text
    [entry] = [e for e in system_entries(world, "waybill.ingest") if e["stored"] == 2]
    assert entry["failed"] == 2 and sorted(entry["waybills"]) == ["YT0000000000402", "YT0000000000403"]


def test_a_record_with_a_key_no_record_has_fails_alone_naming_the_key(world: World) -> None:
    """A ``recipent_phone`` typo used to be dropped silently: the waybill stored without what the
    order system meant to send. Now that record fails, named by the key's path, never its value."""
    typo = record(500)
    typo["recipent_phone"] = "+86 139 0013 9000"
    nested = record(501)
    nested["recipient"]["address"]["floor"] = "3"
    r = world.client.post("/v1/waybills", json={"records": [typo, nested, record(502)]}, headers=world.svc)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == ["YT0000000000502"]
    failed = [(f["index"], f["number"], f["field"]) for f in r.json()["failed"]]
    assert failed == [
        (0, "YT0000000000500", "recipent_phone"),
        (1, "YT0000000000501", "recipient.address.floor"),
    ]
    assert "139" not in r.text


# --- device clocks: a few minutes apart, within CLOCK_SKEW ----------------------------------------------

Real = tuple[int, int, str, str | None]
"""(real minute the step happens and is sent, how many minutes the device's clock is off, status, assignee)"""


def _send(world: World, t0: datetime, real: int, off: int, status: str, assignee: str | None = None) -> Any:
    world.clock.set(t0 + timedelta(minutes=real))
    ts = (t0 + timedelta(minutes=real + off)).isoformat()
    return step(world, status, ts=ts, **({"assignee": assignee} if assignee else {}))


@pytest.mark.parametrize(
    "steps",
    [
        # a hub scanner 5 minutes fast sends the parcel on; the outlet's correct scanner takes it in two
        # minutes later, and a courier is sent out with it
        [(0, 5, "in_transit", None), (2, 0, "at_destination", None), (3, 0, "out_for_delivery", "C2")],
        # the outlet scans the arrival; the courier's PDA, 7 minutes slow, takes the parcel out 3 later
        [(0, 0, "at_destination", None), (3, -7, "out_for_delivery", "C2")],
        # the pickup courier's PDA 8 minutes fast, the hubs right, the delivery courier's PDA 4 slow
        [
            (0, 8, "picked_up", None),
            (1, 0, "in_transit", None),
            (5, 0, "at_destination", None),
            (6, -4, "out_for_delivery", "C2"),
        ],
        # the courier's PDA at the skew's very limit ahead, the locker's right: exactly 10 minutes apart
        [
            (0, 0, "at_destination", None),
            (1, 10, "out_for_delivery", "C2"),
            (1, 0, "in_locker", None),
        ],
        # the outlet's scanner 6 minutes fast; C1 is sent out, and C2 takes the round over a minute later
        [(0, 6, "at_destination", None), (1, 0, "out_for_delivery", "C1"), (2, 0, "out_for_delivery", "C2")],
    ],
    ids=["fast-hub", "slow-pda", "three-clocks", "at-the-skew", "takeover"],
)
def test_steps_from_clocks_within_the_skew_are_taken_in_the_order_they_arrive(
    world: World, steps: list[Real]
) -> None:
    """Devices' clocks differ by minutes in a real network. A step an earlier one (from a faster
    clock) appears to postdate, sent in real order and allowed by the lifecycle, is a real change:
    refusing it as out of order lost the arrival, and the next courier's delivery task with it."""
    t0 = world.clock.now()
    world.step(W1, "picked_up")
    for real, off, status, assignee in steps:
        r = _send(world, t0, real, off, status, assignee)
        assert r.status_code == 200, (real, status, r.text)
    last = steps[-1]
    waybill = world.deployment.guard.company.waybill(W1)
    assert (waybill.status.value, waybill.assignee) == (last[2], "C2")
    # the status time never goes back: the latest any device gave, so the next comparison is sane
    assert waybill.status_ts == max(t0 + timedelta(minutes=real + off) for real, off, _, _ in steps)
    assert system_entries(world, "waybill.lifecycle.rejected", waybill=W1) == []
    c2 = world.login("C2")
    revealed = world.client.post(
        f"/v1/waybills/{W1}/reveal", json={"fields": ["recipient.phone"], "purpose": "delivery"}, headers=c2
    )
    assert revealed.status_code == 200, revealed.text


def test_a_step_dated_more_than_the_skew_before_the_current_status_is_still_out_of_order(
    world: World,
) -> None:
    t0 = world.clock.now()
    world.step(W1, "picked_up")
    assert _send(world, t0, 0, 10, "in_transit").status_code == 200  # dated t0 + 10 min
    world.clock.set(t0 + timedelta(minutes=1))
    late = step(world, "at_destination", ts=(t0 - US).isoformat())  # 10 minutes and 1 µs before
    assert late.status_code == 409 and "out of order" in late.json()["detail"], late.text
    assert step(world, "at_destination", ts=t0.isoformat()).status_code == 200  # exactly the skew


def test_within_the_skew_an_old_step_still_does_not_give_a_task_back(world: World) -> None:
    """What the ordering rule is for, inside the tolerance: a retried or replayed assignment, or one
    another courier's later assignment superseded, is refused even when dated minutes, not hours,
    before the current status and allowed by the lifecycle from it."""
    t0 = world.clock.now()
    world.step(W1, "at_destination")
    assert _send(world, t0, 1, 0, "out_for_delivery", "C1").status_code == 200
    # the same step again, dated earlier: another courier's takeover is not undone by a retry
    assert _send(world, t0, 2, 0, "out_for_delivery", "C2").status_code == 200
    retried = _send(world, t0, 3, -2, "out_for_delivery", "C1")  # C1's step of minute 1, sent again
    assert retried.status_code == 409 and "out of order" in retried.json()["detail"], retried.text
    # C2's task ends (the recipient cannot be reached), the parcel is back at the outlet
    assert _send(world, t0, 3, 0, "exception").status_code == 200
    assert _send(world, t0, 4, 0, "at_destination").status_code == 200
    # from at_destination out_for_delivery is allowed and minute 1 or 2 is within the skew: a replay
    # of a step the waybill already went through, or one superseded by a later one, is refused
    for minute, courier in ((1, "C1"), (2, "C2"), (1, "C2")):
        old = _send(world, t0, 5, minute - 5, "out_for_delivery", courier)
        assert old.status_code == 409 and "out of order" in old.json()["detail"], (minute, courier, old.text)
    waybill = world.deployment.guard.company.waybill(W1)
    assert (waybill.status.value, waybill.assignee, waybill.task) == ("at_destination", None, None)
    assert len(system_entries(world, "waybill.lifecycle.rejected", waybill=W1)) == 4


def test_within_the_skew_an_assignment_dated_before_an_exception_does_not_revive_the_task(
    world: World,
) -> None:
    """An assignment lost and retried: the exception (damage, held parcel) that ended the task came in
    first, from a faster clock. Sent again now, the assignment would give the task back."""
    t0 = world.clock.now()
    world.step(W1, "at_destination")
    assert _send(world, t0, 1, 4, "exception").status_code == 200  # dated t0 + 5
    stale = _send(world, t0, 3, -1, "out_for_delivery", "C1")  # dated t0 + 2, never applied before
    assert stale.status_code == 409 and "out of order" in stale.json()["detail"], stale.text
    assert _send(world, t0, 4, 0, "at_destination").status_code == 200  # the parcel itself may move
    waybill = world.deployment.guard.company.waybill(W1)
    assert (waybill.status.value, waybill.assignee, waybill.task) == ("at_destination", None, None)


def test_a_tolerated_step_retried_after_a_timeout_is_answered_without_a_second_change(world: World) -> None:
    t0 = world.clock.now()
    world.step(W1, "picked_up")
    assert _send(world, t0, 0, 6, "at_destination").status_code == 200
    assert _send(world, t0, 1, 0, "out_for_delivery", "C1").status_code == 200
    again = _send(world, t0, 2, -1, "out_for_delivery", "C1")  # the same step, the same ts
    assert again.status_code == 200, again.text
    assert again.json()["assignee"] == "C1"
    entries = system_entries(world, "waybill.lifecycle", waybill=W1)
    assert [e["status"] for e in entries][1:] == ["at_destination", "out_for_delivery", "out_for_delivery"]
    assert len(task_rows(world, "out_for_delivery")) == 1


def task_rows(world: World, status: str) -> list[Any]:
    from sqlalchemy import select

    from courierguard.db.tables import waybill_history

    with world.deployment.core.engine.connect() as conn:
        return list(
            conn.execute(
                select(waybill_history.c.ts).where(
                    waybill_history.c.tenant == world.tenant,
                    waybill_history.c.number == W1,
                    waybill_history.c.status == status,
                )
            )
        )


def test_a_fast_clock_before_the_sign_off_does_not_stretch_the_grace(world: World) -> None:
    """The grace runs from the sign-off's own time, not from the later status time a faster device
    left: a PDA at most CLOCK_SKEW fast moves the end of the window at most that much."""
    t0 = world.clock.now()
    world.step(W1, "at_destination")
    assert _send(world, t0, 0, 9, "out_for_delivery", "C1").status_code == 200
    assert _send(world, t0, 2, 0, "delivered").status_code == 200
    assert _send(world, t0, 3, -1, "delivered").status_code == 200  # a retry: still the last step
    waybill = world.deployment.guard.company.waybill(W1)
    signed = t0 + timedelta(minutes=2)
    assert waybill.delivered_at == signed and waybill.status_ts == t0 + timedelta(minutes=9)

    def reveal() -> int:
        body = {"fields": ["recipient.phone"], "purpose": "delivery"}
        return world.client.post(
            f"/v1/waybills/{W1}/reveal", json=body, headers=world.login("C1")
        ).status_code

    world.clock.set(signed + timedelta(hours=24) - US)
    assert reveal() == 200
    world.clock.set(signed + timedelta(hours=24))
    assert reveal() == 403
