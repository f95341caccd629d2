"""The truth file: every scenario labelled, its events present, its actors right."""

from __future__ import annotations

import collections
import itertools
from datetime import datetime, timedelta

import orjson
import pytest

from courierguard.sim.config import SCENARIOS

from .conftest import Run


def test_meta_line_describes_the_run(small_run: Run) -> None:
    meta = small_run.truth[0]
    assert meta["type"] == "meta"
    assert meta["seed"] == small_run.config.seed
    assert meta["events"] == len(small_run.events)
    assert meta["scenarios"] == sorted(SCENARIOS)


def test_each_scenario_is_labelled_and_its_events_exist(small_run: Run) -> None:
    by_id = {e["id"]: e for e in small_run.events}
    for sid, name in SCENARIOS.items():
        truth = small_run.scenario(sid)
        assert truth["name"] == name
        assert "skipped" not in truth["notes"], truth["notes"]
        assert truth["event_ids"], name
        assert truth["event_count"] == len(truth["event_ids"])
        for eid in truth["event_ids"]:
            event = by_id[eid]
            assert event["actor"]["id"] in truth["actors"]
        first = by_id[truth["event_ids"][0]]
        assert first["ts"] == truth["start"]
        assert first["ts"] >= f"{small_run.config.start.isoformat()[:8]}09"  # attacks after the first week


def test_attack_events_do_not_label_themselves(small_run: Run) -> None:
    labels = small_run.labels()
    normal_keys: set[str] = set()
    session_keys: set[str] = set()
    for e in small_run.events:
        if e["id"] not in labels:
            normal_keys.update(e)
            session_keys.update(e.get("session") or {})
    for event in small_run.events:
        if event["id"] in labels:
            assert set(event) <= normal_keys, event
            assert set(event.get("session") or {}) <= session_keys
            assert "scenario" not in str(event) and "attack" not in str(event)


def test_gang_shares_devices_across_accounts_in_different_outlets(small_run: Run) -> None:
    truth = small_run.scenario(6)
    labelled = set(truth["event_ids"])
    devices: dict[str, set[str]] = {}
    outlets = set()
    for event in small_run.events:
        if event["id"] in labelled:
            devices.setdefault(event["session"]["device_id"], set()).add(event["actor"]["id"])
            outlets.add(event["actor"]["org_unit"])
    assert len(truth["actors"]) >= 2 and len(outlets) == len(truth["actors"])
    assert any(len(accounts) >= 2 for accounts in devices.values())


def test_former_employee_is_announced_before_the_account_is_used(small_run: Run) -> None:
    truth = small_run.scenario(10)
    actor = truth["actors"][0]
    left = [
        e
        for e in small_run.events
        if e["action"] == "admin.change" and e.get("purpose") == f"employee.left:{actor}"
    ]
    assert len(left) == 1
    assert left[0]["actor"]["role"] == "admin" and "resource" not in left[0]
    assert left[0]["ts"] < truth["start"]
    normal_after = [
        e
        for e in small_run.events
        if e["actor"]["id"] == actor and e["ts"] > left[0]["ts"] and e["id"] not in set(truth["event_ids"])
    ]
    assert normal_after == []


def test_enumeration_walks_consecutive_numbers(small_run: Run) -> None:
    labelled = set(small_run.scenario(7)["event_ids"])
    numbers = [
        int(e["resource"]["id"][2:])
        for e in small_run.events
        if e["id"] in labelled and e["action"] == "waybill.reveal"
    ]
    assert len(numbers) > 1000
    assert all(b == a + 1 for a, b in itertools.pairwise(numbers))


def test_concurrent_scenario_overlaps_the_owner_on_another_device(small_run: Run) -> None:
    truth = small_run.scenario(3)
    actor = truth["actors"][0]
    labelled = set(truth["event_ids"])
    renter_days = {e["ts"][:10] for e in small_run.events if e["id"] in labelled}
    owner = [e for e in small_run.events if e["actor"]["id"] == actor and e["id"] not in labelled]
    owner_days = {e["ts"][:10] for e in owner}
    assert renter_days <= owner_days
    owner_devices = {e["session"]["device_id"] for e in owner if e["ts"][:10] in renter_days}
    assert not owner_devices & set(truth["devices"])


def test_masked_scrape_pages_lists_at_night_from_the_outlet_pc(small_run: Run) -> None:
    truth = small_run.scenario(11)
    by_id = {e["id"]: e for e in small_run.events}
    events = [by_id[eid] for eid in truth["event_ids"]]
    lists = [e for e in events if e["action"] == "waybill.list"]
    assert lists and {e["action"] for e in events} == {"auth.login", "waybill.list"}
    assert not any(e.get("fields") for e in events)  # masked only
    assert all(len(e["query"]["result_ids"]) <= 100 for e in lists)
    assert sum(len(e["query"]["result_ids"]) for e in lists) >= 1000
    assert all(e["ts"][11:13] in ("22", "23", "00", "01") for e in lists)
    owner = truth["actors"][0]
    own = next(e for e in small_run.events if e["actor"]["id"] == owner and e["id"] not in truth["event_ids"])
    assert {e["session"]["device_id"] for e in events} == {own["session"]["device_id"]}  # the outlet PC


def test_phone_probing_searches_many_numbers_mostly_missing(small_run: Run) -> None:
    truth = small_run.scenario(12)
    by_id = {e["id"]: e for e in small_run.events}
    events = [by_id[eid] for eid in truth["event_ids"]]
    searches = [e for e in events if e["action"] == "waybill.search"]
    assert all(e["query"]["kind"] == "by_phone" for e in searches)
    misses = [e for e in searches if not e["query"]["result_ids"]]
    assert len(searches) >= 80 and len(misses) >= 0.6 * len(searches)
    views = [e for e in events if e["action"] == "waybill.view"]
    assert views and not any(e["resource"].get("ticket") for e in views)  # hits looked at, never worked


def _shapes(events: list[dict[str, object]]) -> list[bytes]:
    """The events as compared across scenario sets: everything but their ids and session ids."""
    out = []
    for e in events:
        body = {k: v for k, v in e.items() if k != "id"}
        session = dict(body.get("session") or {})  # type: ignore[call-overload]
        session.pop("id", None)
        body["session"] = session
        out.append(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    return out


def test_new_scenarios_leave_normal_work_and_the_first_ten_unchanged(small_run: Run) -> None:
    from dataclasses import replace

    from courierguard.sim.engine import Simulation

    # Scenario 15 changes the world (the owner's phone, the officer's reset), so 11 to 14 are
    # compared on a run without it.
    sim = Simulation(replace(small_run.config, scenarios=tuple(range(1, 11))))
    before = [e for e, _ in sim.labelled()]
    fourteen = Simulation(replace(small_run.config, scenarios=tuple(range(1, 15))))
    after = [e for e, label in fourteen.labelled() if label not in (11, 12, 13, 14)]
    assert _shapes(before) == _shapes(after)
    counts = {t["scenario"]: t["event_count"] for t in sim.truth()[1:]}
    assert counts == {sid: small_run.scenario(sid)["event_count"] for sid in range(1, 11)}


def test_a_stolen_phone_is_used_after_the_reset_and_the_owner_works_on_a_new_one(small_run: Run) -> None:
    truth = small_run.scenario(15)
    by_id = {e["id"]: e for e in small_run.events}
    events = [by_id[eid] for eid in truth["event_ids"]]
    owner, [stolen] = truth["actors"][0], truth["devices"]
    [reset] = [e for e in small_run.events if e.get("purpose", "").startswith(f"devices.reset:{owner}:")]
    assert reset["action"] == "admin.change" and reset["actor"]["role"] == "security_officer"
    assert reset["id"] not in truth["event_ids"]  # the officer's work, not the attack
    assert {e["session"]["device_id"] for e in events} == {stolen} and events[0]["ts"] > reset["ts"]
    reveals = [e for e in events if e["action"] == "waybill.reveal"]
    assert reveals and all(e["resource"]["assignee"] != owner for e in reveals if "assignee" in e["resource"])
    own_after = [e for e in small_run.events if e["actor"]["id"] == owner and e["ts"] > reset["ts"]
                 and e["id"] not in truth["event_ids"]]  # fmt: skip
    assert own_after and stolen not in {e["session"]["device_id"] for e in own_after}
    assert own_after[0]["action"] == "auth.device_bound"  # the new phone, enrolled first


def test_a_rented_officer_holds_every_other_officer_and_admin_from_the_officers_own_desk(
    small_run: Run,
) -> None:
    truth = small_run.scenario(16)
    by_id = {e["id"]: e for e in small_run.events}
    events = [by_id[eid] for eid in truth["event_ids"]]
    [officer] = truth["actors"]
    victims = truth["notes"]["victims"]
    roles = {e["actor"]["id"]: e["actor"]["role"] for e in small_run.events}
    assert victims and officer not in victims
    assert {roles[v] for v in victims} <= {"security_officer", "admin"}
    assert {e["actor"]["id"] for e in events} == {officer} and roles[officer] == "security_officer"
    assert {e["action"] for e in events} == {"admin.change"}
    # Each victim held, then the suspension announced (as the gateway does), one after another.
    purposes = [e["purpose"] for e in events]
    assert [p.split(":")[0] for p in purposes] == ["employee.hold", "employee.suspended"] * len(victims)
    assert [p.split(":")[1] for p in purposes[::2]] == victims
    # The officer's own session and desk device: nothing but what is done tells the renter apart.
    own = [e for e in small_run.events if e["actor"]["id"] == officer and e["id"] not in truth["event_ids"]]
    assert {e["session"]["device_id"] for e in events} <= {e["session"]["device_id"] for e in own}
    assert not truth["devices"] and not truth["ips"]


def test_a_courier_reveals_parcels_delivered_days_ago_from_restored_rows(small_run: Run) -> None:
    truth = small_run.scenario(17)
    by_id = {e["id"]: e for e in small_run.events}
    events = [by_id[eid] for eid in truth["event_ids"]]
    [courier] = truth["actors"]
    assert events and truth["notes"]["restored"] == len(events)
    assert {e["action"] for e in events} == {"waybill.reveal"}
    assert {e["actor"]["id"] for e in events} == {courier}
    # Each restored row: out for delivery to him, since 3-5 days before the start day (the reveals
    # come on his first working days from it): always well over two days old.
    for e in events:
        res = e["resource"]
        assert res["assignee"] == courier and res["status"] == "out_for_delivery"
        age = datetime.fromisoformat(e["ts"]) - datetime.fromisoformat(res["status_ts"])
        assert timedelta(days=2, hours=12) < age < timedelta(days=12)
    assert len({e["resource"]["id"] for e in events}) == len(events)  # each parcel once
    per_day = collections.Counter(e["ts"][:10] for e in events)
    assert len(per_day) <= 2 and all(15 <= n <= 25 for n in per_day.values())
    # His own session and PDA: nothing tells it from his work but the age of the task.
    own = [e for e in small_run.events if e["actor"]["id"] == courier and e["id"] not in truth["event_ids"]]
    assert {e["session"]["id"] for e in events} <= {e["session"]["id"] for e in own}
    assert not truth["devices"] and not truth["ips"]


@pytest.mark.parametrize("sid", [16, 17])
def test_a_late_scenario_leaves_normal_work_and_the_earlier_ones_unchanged(small_run: Run, sid: int) -> None:
    from dataclasses import replace

    from courierguard.sim.engine import Simulation

    sim = Simulation(replace(small_run.config, scenarios=tuple(range(1, sid))))
    before = [e for e, _ in sim.labelled()]
    with_it = Simulation(replace(small_run.config, scenarios=tuple(range(1, sid + 1))))
    after = [e for e, label in with_it.labelled() if label != sid]
    assert _shapes(before) == _shapes(after)
    counts = {t["scenario"]: t["event_count"] for t in sim.truth()[1:]}
    assert counts == {s: small_run.scenario(s)["event_count"] for s in range(1, sid)}
