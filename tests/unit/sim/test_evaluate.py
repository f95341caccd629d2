"""evaluate() on a hand-made example whose figures are worked out by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from courierguard.sim.evaluate import evaluate, evaluate_lines

ALLOW = {"decision": "allow"}


def ev(eid: str, ts: str, actor: str, action: str, **extra: Any) -> bytes:
    body = {
        "v": 1,
        "id": eid,
        "ts": ts,
        "actor": {"id": actor, "kind": "employee", "role": "courier"},
        "action": action,
    }
    body.update(extra)
    return orjson.dumps(body)


def reveal(
    eid: str, ts: str, actor: str, waybill: str, fields: list[str], outcome: dict[str, str] = ALLOW
) -> bytes:
    return ev(
        eid,
        ts,
        actor,
        "waybill.reveal",
        resource={"type": "waybill", "id": waybill},
        fields=fields,
        outcome=outcome,
    )


def dec(eid: str, action: str) -> bytes:
    return orjson.dumps(
        {
            "v": 1,
            "event_id": eid,
            "ts": "2026-11-10T00:00:00+08:00",
            "actor_id": "x",
            "action": action,
            "score": 50,
            "reasons": [],
        }
    )


D1, D2 = "2026-11-10", "2026-11-11"
EVENTS = [
    ev("e1", f"{D1}T08:00:00+08:00", "A", "waybill.view", resource={"type": "waybill", "id": "W0"}),
    reveal("e2", f"{D1}T09:00:00+08:00", "A", "W1", ["recipient.phone"]),
    ev("e3", f"{D1}T23:00:00+08:00", "R", "auth.login"),
    reveal("e4", f"{D1}T23:00:10+08:00", "R", "W2", ["recipient.name", "recipient.phone"]),
    reveal("e5", f"{D1}T23:00:20+08:00", "R", "W3", ["recipient.phone"]),
    reveal("e6", f"{D1}T23:00:30+08:00", "R", "W2", ["recipient.address"]),
    reveal("e7", f"{D1}T23:01:00+08:00", "R", "W4", ["recipient.phone"]),
    reveal("e8", f"{D1}T23:01:10+08:00", "R", "W5", ["recipient.phone"]),
    ev(
        "e9",
        f"{D2}T10:00:00+08:00",
        "Q",
        "waybill.export",
        query={"result_ids": ["W6", "W7", "W8"]},
        fields=["recipient.phone"],
        outcome={"decision": "deny"},
    ),
    ev(
        "e10",
        f"{D2}T10:05:00+08:00",
        "Q",
        "waybill.export",
        query={"result_ids": ["W6", "W7"]},
        fields=["recipient.phone"],
        outcome=ALLOW,
    ),
    reveal("e11", f"{D2}T11:00:00+08:00", "B", "W9", ["recipient.phone"]),
    ev("e12", f"{D2}T12:00:00+08:00", "A", "waybill.view", resource={"type": "waybill", "id": "W0"}),
    ev("e13", f"{D2}T12:30:00+08:00", "R", "waybill.view", resource={"type": "waybill", "id": "W10"}),
]
TRUTH = [
    {"type": "meta"},
    {
        "type": "scenario",
        "scenario": 1,
        "name": "rented_night_fast",
        "actors": ["R"],
        "start": f"{D1}T23:00:00+08:00",
        "event_ids": ["e3", "e4", "e5", "e6", "e7", "e8"],
        "notes": {},
    },
    {
        "type": "scenario",
        "scenario": 8,
        "name": "bulk_export_abuse",
        "actors": ["Q"],
        "start": f"{D2}T10:00:00+08:00",
        "event_ids": ["e9", "e10"],
        "notes": {},
    },
]
DECISIONS = [
    dec("e2", "step_up"),
    dec("e5", "step_up"),
    dec("e7", "deny"),
    dec("e11", "lock"),
    dec("e12", "step_up"),
    dec("e13", "lock"),
    dec("nope", "deny"),
]


def test_hand_worked_example() -> None:
    result = evaluate_lines(EVENTS, TRUTH, DECISIONS)
    s1, s8 = result.scenarios
    assert (s1.detected, s1.contained) == (True, True)
    assert (s1.first_flag_s, s1.first_step_up_s, s1.first_contain_s, s1.all_contained_s) == (20, 20, 60, 60)
    assert s1.records_exposed == 2  # W2, W3: served before the deny of e7
    assert s1.fields_exposed == 4  # W2 name/phone/address, W3 phone
    assert s1.records_without_engine == 4  # W2, W3, W4, W5
    assert (s8.detected, s8.contained, s8.first_contain_s) == (False, False, None)
    assert s8.records_exposed == 2 and s8.fields_exposed == 2  # the denied export served nothing
    n = result.normal
    assert (n.employee_days, n.events) == (3, 4)  # e13: R's own account after the attack began
    assert (n.step_up_days, n.step_up_decisions, n.block_days, n.block_decisions) == (2, 2, 1, 1)
    assert n.step_ups_per_1000 == pytest.approx(2000 / 3)
    assert n.blocks_per_10000 == pytest.approx(10000 / 3)
    assert result.unmatched_decisions == 1 and result.events == len(EVENTS)


def test_a_lock_on_the_owners_event_contains_the_account() -> None:
    decisions = [dec("e13", "lock")]
    truth = [dict(TRUTH[1], event_ids=["e3", "e4"], start=f"{D1}T23:00:00+08:00")]
    extra = reveal("e14", f"{D2}T13:00:00+08:00", "R", "W11", ["recipient.phone"])
    truth[0]["event_ids"] = ["e3", "e4", "e14"]
    result = evaluate_lines([EVENTS[2], EVENTS[3], EVENTS[12], extra], truth, decisions)
    s1 = result.scenarios[0]
    assert s1.contained and not s1.detected
    assert s1.records_exposed == 1 and s1.records_without_engine == 2


def test_files_and_json(tmp_path: Path) -> None:
    (tmp_path / "e").write_bytes(b"\n".join(EVENTS) + b"\n")
    (tmp_path / "t").write_bytes(b"\n".join(orjson.dumps(t) for t in TRUTH) + b"\n")
    (tmp_path / "d").write_bytes(b"\n".join(DECISIONS) + b"\n")
    data = evaluate(tmp_path / "e", tmp_path / "t", tmp_path / "d").to_dict()
    assert data["scenarios"][0]["records_exposed"] == 2
    assert data["normal"]["false_blocks_per_10000_employee_days"] == pytest.approx(10000 / 3)
    orjson.dumps(data)


def test_masked_rows_and_phone_searches_before_containment() -> None:
    events = [
        ev("m1", f"{D1}T22:00:00+08:00", "K", "waybill.list", query={"result_ids": ["W1", "W2"]}),
        ev("m2", f"{D1}T22:00:30+08:00", "K", "waybill.list", query={"result_ids": ["W2", "W3"]}),
        ev("m3", f"{D1}T22:01:00+08:00", "K", "waybill.view", resource={"type": "waybill", "id": "W4"}),
        ev("m4", f"{D1}T22:01:10+08:00", "K", "waybill.list", query={"result_ids": ["W5"]},
           outcome={"decision": "deny"}),  # refused by the source: nothing shown
        ev("m5", f"{D1}T22:02:00+08:00", "K", "waybill.list", query={"result_ids": ["W6", "W7"]}),
        ev("p1", f"{D1}T20:00:00+08:00", "S", "waybill.search", query={"kind": "by_phone", "result_ids": []}),
        ev("p2", f"{D1}T20:01:00+08:00", "S", "waybill.search", query={"kind": "by_phone", "result_ids": ["W8"]}),
        ev("p3", f"{D1}T20:02:00+08:00", "S", "waybill.search", query={"kind": "by_phone", "result_ids": []}),
        ev("p4", f"{D1}T20:03:00+08:00", "S", "waybill.search", query={"kind": "by_name", "result_ids": ["W9"]}),
    ]  # fmt: skip
    truth = [
        {"type": "meta"},
        {"type": "scenario", "scenario": 11, "name": "masked_scrape", "actors": ["K"],
         "start": f"{D1}T22:00:00+08:00", "event_ids": ["m1", "m2", "m3", "m4", "m5"], "notes": {}},
        {"type": "scenario", "scenario": 12, "name": "phone_probing", "actors": ["S"],
         "start": f"{D1}T20:00:00+08:00", "event_ids": ["p1", "p2", "p3", "p4"], "notes": {}},
    ]  # fmt: skip
    result = evaluate_lines(events, truth, [dec("m2", "throttle"), dec("m5", "lock"), dec("p3", "deny")])
    s11, s12 = result.scenarios
    assert s11.contained and s11.first_contain_s == 120
    assert s11.masked_exposed == 4 and s11.masked_without_engine == 6  # W1-W4 before the lock; W5 refused
    assert s11.records_exposed == 0  # no clear text in a masked scrape
    assert (s12.phone_searches_answered, s12.phone_searches_without_engine) == (2, 3)
    assert s12.masked_exposed == 1 and s12.masked_without_engine == 2


def test_accounts_a_scenario_held_are_no_false_alarm_from_its_start_on() -> None:
    """Scenario 16's victims: their use after the hold is refused because they are held."""
    events = [
        ev("v1", f"{D1}T08:00:00+08:00", "V", "waybill.view"),  # before the attack: normal staff
        ev("h1", f"{D1}T10:00:00+08:00", "X", "admin.change", purpose="employee.hold:V:INC1", outcome=ALLOW),
        ev("h2", f"{D1}T10:02:00+08:00", "X", "admin.change", purpose="employee.hold:W:INC1", outcome=ALLOW),
        ev("v2", f"{D1}T11:00:00+08:00", "V", "waybill.view"),
        ev("n1", f"{D1}T11:00:00+08:00", "N", "waybill.view"),
    ]
    truth = [
        {"type": "meta"},
        {"type": "scenario", "scenario": 16, "name": "rented_officer_holds_responders", "actors": ["X"],
         "start": f"{D1}T10:00:00+08:00", "event_ids": ["h1", "h2"], "notes": {"victims": ["V", "W"]}},
    ]  # fmt: skip
    decisions = [dec("v1", "lock"), dec("h2", "deny"), dec("v2", "lock"), dec("n1", "lock")]
    result = evaluate_lines(events, truth, decisions)
    [s16] = result.scenarios
    assert s16.contained and s16.first_contain_s == 120
    assert result.normal.events == 2 and result.normal.block_decisions == 2  # v1 and n1, not v2
