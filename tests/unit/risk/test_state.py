"""One contract for every risk state backend: process memory and the real Redis server."""

from __future__ import annotations

import io

import pytest

from courierguard.risk.engine import RiskEngine
from courierguard.risk.replay import replay
from courierguard.risk.state import AccountState, RedisState, RiskState
from courierguard.risk.streams import iter_lines, rented_stream


def test_account_round_trip(state: RiskState) -> None:
    acc = state.load("E1")
    assert acc.n == 0 and acc.status == "active" and not acc.locked
    acc.n = 7
    acc.devices["D1"] = 1.0
    acc.hours.learn_one({"hour": 9})
    acc.unexpl_times.append((5.0, 2))
    state.save(acc)
    again = state.load("E1")
    assert again.n == 7 and again.devices == {"D1": 1.0} and again.hours.seen == 1
    assert list(again.unexpl_times) == [(5.0, 2)]


def test_lock_and_status_survive_a_stale_save(state: RiskState) -> None:
    stale = state.load("E1")
    state.set_lock("E1", "enumeration")
    state.set_status("E2", "left")
    state.save(stale)  # another worker saving an older copy must not unlock
    assert state.load("E1").locked and state.load("E1").lock_reason == "enumeration"
    assert state.load("E2").status == "left"
    state.set_lock("E1", None)
    assert not state.load("E1").locked


def test_a_device_reset_survives_a_stale_save(state: RiskState) -> None:
    acc = state.load("E1")
    acc.devices["PHONE-OLD"] = 10.0
    acc.dev_days["PHONE-OLD"] = [1, 2, 3]
    acc.dev_last["PHONE-OLD"] = 10.0
    state.save(acc)
    stale = state.load("E1")  # another worker holds the account while an officer resets it
    state.reset_devices("E1", 50.0)
    state.save(stale)  # ... and saves its older copy afterwards
    again = state.load("E1")
    assert again.devices == {} and again.dev_days == {} and again.reset_ts == 50.0
    assert again.dev_last == {"PHONE-OLD": 10.0}  # kept: when it was last used, for concurrent_devices
    # What is learned after the reset stays learned once a copy that saw the reset is saved.
    again.devices["PHONE-NEW"] = 60.0
    state.save(again)
    assert state.load("E1").devices == {"PHONE-NEW": 60.0}
    state.reset_devices("E1", 50.0)  # the same reset seen again (a replay): nothing more to forget
    assert state.load("E1").devices == {"PHONE-NEW": 60.0}


def test_device_registry_counts_accounts_and_units_in_window(state: RiskState) -> None:
    assert state.device_touch("D", "E1", "O1", 100.0, 1000.0) == (1, 1)
    assert state.device_touch("D", "E2", "O2", 200.0, 1000.0) == (2, 2)
    assert state.device_touch("D", "E3", "O2", 300.0, 1000.0) == (3, 2)
    assert state.device_touch("D", "E3", "O2", 1150.0, 1000.0) == (2, 1)  # E1 fell out of the window


def test_peer_counters(state: RiskState) -> None:
    assert state.peer_stats("g", "E1") == (0, 0.0, 0.0)
    state.peer_add("g", "E1", 10, 2)
    state.peer_add("g", "E2", 4, 0)
    state.peer_add("g", "E3", 6, 2)
    state.peer_add("g", "E1", 5, 1)
    assert state.peer_stats("g", "E1") == (2, 5.0, 1.0)
    assert state.peer_stats("g", "E9") == (3, 25 / 3, 5 / 3)


def test_full_state_json_round_trip() -> None:
    engine = RiskEngine()
    events, _ = rented_stream(seed=5, couriers=2, days=4, attack_events=10)
    replay(iter_lines(events), io.BytesIO(), engine)
    acc = engine.state.load("E000000")
    clone = AccountState.from_state(acc.to_state())
    assert clone.to_state() == acc.to_state()


@pytest.mark.redis
def test_engine_decides_the_same_on_redis_and_memory(redis_state: RedisState) -> None:
    events, _ = rented_stream(seed=6, couriers=3, days=4, attack_day=3, attack_events=15)
    a, b = io.BytesIO(), io.BytesIO()
    replay(iter_lines(events), a, RiskEngine())
    replay(iter_lines(events), b, RiskEngine(state=redis_state))
    assert a.getvalue() == b.getvalue() and a.getvalue()
    # a second worker sees the lock the first one set
    assert RiskEngine(state=redis_state).is_locked("E000000")
