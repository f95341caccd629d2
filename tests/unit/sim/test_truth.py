"""The truth file: every scenario labelled, its events present, its actors right."""

from __future__ import annotations

import itertools

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
