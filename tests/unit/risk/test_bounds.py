"""What the engine keeps per account and per device stays bounded, whatever the client sends.

``X-Device-Id`` and ``X-Device-Location`` are the client's word: one account sending a new device
id or position on every request must not grow the worker's memory (or its Redis blob) for ever, and
the bound must not let it push what is known about the owner out of memory.
"""

from __future__ import annotations

import time

from courierguard.risk.engine import RiskEngine
from courierguard.risk.state import DEVICES_KEPT, PLACES_KEPT, MemoryState, RiskState, remember

from .helpers import Feed, at, codes


def test_a_flood_of_device_ids_is_refused_and_nothing_of_it_kept(state: RiskState) -> None:
    feed = Feed(RiskEngine(state=state))
    feed.warm()
    per_day = feed.engine.config.devices_per_day
    decided = [feed.one(at(5, 9, second=i), device=f"FLOOD-{i}", session="S-flood") for i in range(600)]
    actions = [action for action, _, _ in decided]
    assert "deny" not in actions[:per_day] and "lock" not in actions[:per_day]
    assert actions[per_day] == "deny" and "concurrent_devices" in codes(decided[per_day][2])
    assert actions[-1] == "lock"  # repeated denials lock the account, as any others do
    acc = state.load("E1")
    kept = per_day + 1  # the warm-up's PDA-1 too
    assert len(acc.dev_last) <= kept and len(acc.dev_days) <= kept and len(acc.dev_doubted) <= kept
    assert "PDA-1" in acc.dev_last and "PDA-1" in acc.devices  # the owner's phone is not pushed out
    if isinstance(state, MemoryState):
        assert len(state.device_registry) <= kept


def test_device_maps_stay_bounded_over_months_and_keep_the_owners_phone() -> None:
    feed = Feed()
    feed.warm()
    for day in range(5, 25):
        feed.one(at(day, 8), device="PDA-1", session=f"S-{day}")
        for i in range(feed.engine.config.devices_per_day - 1):
            feed.one(at(day, 9, i), device=f"D-{day}-{i}", session=f"S-{day}")
        feed.one(at(day, 18), device="PDA-1", session=f"S-{day}")
    acc = feed.engine.state.load("E1")
    assert DEVICES_KEPT < 20 * 15  # more devices than kept were used
    for seen in (acc.dev_last, acc.dev_days, acc.dev_doubted, acc.devices):
        assert len(seen) <= DEVICES_KEPT
    assert "PDA-1" in acc.devices and "PDA-1" in acc.dev_days and "PDA-1" in acc.dev_last


def test_networks_and_places_learned_by_a_verified_session_stay_bounded() -> None:
    feed = Feed()
    feed.warm()
    feed.one(at(5, 8), action="auth.step_up", session="S-v")
    for i in range(500):
        feed.one(at(5, 9, second=i), session="S-v", ip=f"{i % 200 + 1}.{i // 200}.0.1",
                 loc=(-60 + (i % 100) * 1.0, -170 + (i // 100) * 10.0))  # fmt: skip
    acc = feed.engine.state.load("E1")
    assert len(acc.nets) <= PLACES_KEPT and len(acc.places) <= PLACES_KEPT


def test_the_device_registry_forgets_devices_nobody_used_within_the_window() -> None:
    state = MemoryState()
    window = 86_400.0
    for i in range(20_000):
        state.device_touch(f"D{i}", f"E{i % 50}", "OUT-1", i * 30.0, window)  # 30 s apart: 1 week
    assert len(state.device_registry) <= 2 * (window / 30 + 1)
    # Those still in the window are all kept, and still count.
    assert state.device_touch("D19999", "E7", "OUT-2", 20_000 * 30.0, window) == (2, 2)


def test_a_doubted_device_pushed_out_of_memory_is_not_then_learned_by_use() -> None:
    feed = Feed()
    feed.warm()
    acc = feed.engine.state.load("E1")
    acc.dev_doubted.update({f"OLD-{i}": float(i) for i in range(DEVICES_KEPT)})
    # A doubted session (new device, new network) on PHONE-R: remembered as doubted, one old one goes.
    first = feed.one(at(5, 9), device="PHONE-R", session="S-r", ip="10.9.1.1")
    assert first[0] == "step_up"
    assert "PHONE-R" in acc.dev_doubted and len(acc.dev_doubted) == DEVICES_KEPT and acc.doubted_evicted
    # A new phone used cleanly on several days is no longer learned by use alone: only a step-up.
    for day in (6, 7, 8):
        action, _, reasons = feed.one(at(day, 9), device="PHONE-N", session=f"S-n{day}")
        assert action == "step_up" and "new_device" in codes(reasons)
    assert "PHONE-N" not in acc.devices


def test_state_an_earlier_version_grew_is_trimmed_at_once_on_its_first_event(state: RiskState) -> None:
    """An account flooded before the bounds existed keeps every id in its stored state; its first
    event after the upgrade trims each map to the most recent ids in one pass. Trimmed one id at a
    time, each by a scan of the whole map, 8,000 ids took 7.6 s under the account's lock (100,000:
    about 20 minutes), every other decision of its lock stripe or Redis hold waiting."""
    feed = Feed(RiskEngine(state=state))
    feed.warm()
    acc = state.load("E1")
    base = at(3, 8).timestamp()
    n = 10_000
    for i in range(n):  # as 75ec620 kept them: newest first
        acc.dev_last[f"X{i}"] = base - i
        acc.dev_days[f"X{i}"] = [0, 1] if i % 2 else [1]
        acc.dev_doubted[f"X{i}"] = base - i
    state.save(acc)
    started = time.perf_counter()
    assert feed.one(at(4, 9), device="PDA-1", session="S-after")[0] == "allow"
    assert time.perf_counter() - started < 1.5
    acc = state.load("E1")
    assert len(acc.dev_last) == len(acc.dev_days) == DEVICES_KEPT
    # The most recently used are the ones kept: the owner's phone and the newest of the old ids.
    assert "PDA-1" in acc.dev_last and "X0" in acc.dev_last and f"X{DEVICES_KEPT}" not in acc.dev_last


def test_remember_keeps_the_most_recent_entries_whatever_it_drops() -> None:
    seen: dict[str, object] = {f"k{i}": float(i) for i in range(300)}
    seen.update({f"d{i}": [1, 1000 + i] for i in range(10)})  # lists of days: the last is the latest
    assert remember(seen, "new", 5000.0, 16) is True
    assert set(seen) == {"new", *(f"d{i}" for i in range(10)), *(f"k{i}" for i in range(295, 300))}
    assert remember(seen, "new", 5001.0, 16) is False and len(seen) == 16
