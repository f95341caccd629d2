"""Masked reads and phone probing (the acceptance review's D7), on process memory and on real Redis.

Masked rows (lists, searches, views no task explains) count against a per-role budget an hour and
a day and against peers, and climb the ladder throttle, step-up, lock; searches by phone that find
nothing, or find parcels no task follows up, are probes with their own budget and the same ladder.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from typing import Any

import orjson
import pytest
import redis

from courierguard.risk.engine import RiskEngine
from courierguard.risk.state import AccountState, MemoryState, RedisState, RiskState

from .helpers import Feed, at, codes, wb

REDIS_URL = os.environ.get("COURIERGUARD_REDIS_URL", "redis://127.0.0.1:6379/0")
CLERK = {"role": "outlet_clerk", "org": "OUT-BJ-001", "device": "PC-7", "ip": "10.1.2.3", "loc": None}
AGENT = {"role": "customer_service", "org": "CS-BJ", "device": "PC-CS", "ip": "10.9.8.7", "loc": None}
# Synthetic numbers a gang would probe with: none may reach an alert, a reason or a decision.
PHONES = [f"1390000{i:04d}" for i in range(60)]


@pytest.fixture
def fed(state: RiskState) -> Feed:
    return Feed(RiskEngine(state=state))


def _list(feed: Feed, ts: datetime, actor: str = "K1", rows: int = 100, first: int = 0, **kw: Any) -> tuple:
    ids = [wb(first + i) for i in range(rows)]
    query = {"kind": "by_org_unit", "result_count": rows, "result_ids": ids}
    return feed.one(ts, actor, "waybill.list", query=query, **{**CLERK, **kw})


def _search(feed: Feed, ts: datetime, hits: list[str], actor: str = "S1", **kw: Any) -> tuple:
    query = {"kind": "by_phone", "result_count": len(hits), "result_ids": hits}
    return feed.one(ts, actor, "waybill.search", query=query, **{**AGENT, **kw})


def _clerk_day(feed: Feed, d: int, actor: str = "K1") -> list[str]:
    """A clerk's ordinary day: 12 lists of a 20-row page and 120 views of the outlet's parcels."""
    out = []
    for i in range(12):
        out.append(_list(feed, at(d, 9, i * 40), actor, rows=20, first=d * 1000 + i * 20)[0])
    for i in range(120):
        out.append(feed.one(at(d, 9, i * 4), actor, "waybill.view", waybill=wb(d * 1000 + i), **CLERK)[0])
    return out


def test_a_clerks_own_outlet_work_stays_quiet(fed: Feed) -> None:
    for d in range(5):
        assert set(_clerk_day(fed, d)) == {"allow"}
    assert not fed.sink.alerts


def test_paging_masked_lists_throttles_then_steps_up_then_locks(fed: Feed) -> None:
    # The review's case: a renter pages the outlet 100 rows a request; the clerk's hour holds 200.
    actions = [_list(fed, at(0, 22, i), first=i * 100)[0] for i in range(10)]
    assert actions[:2] == ["allow", "allow"]
    assert actions[2:4] == ["throttle", "throttle"]  # 300, 400 rows: over the budget, not twice
    assert actions[4:8] == ["step_up"] * 4  # 500-800 rows: over twice the budget
    assert actions[8] == "lock"  # 900 rows: over four times
    assert fed.engine.is_locked("K1")
    _, _, reasons = _list(fed, at(0, 22, 11))
    assert codes(reasons) == {"account_locked"}
    alerts = [a for a in fed.sink.alerts if "masked_volume" in {c for c, _ in a.reasons}]
    assert [a.action for a in alerts] == ["throttle", "step_up", "lock"]
    assert alerts[-1].evidence["masked_last_hour"] == 900


def test_after_a_passed_step_up_the_ladder_throttles_instead(fed: Feed) -> None:
    for i in range(5):
        _list(fed, at(0, 10, i), first=i * 100, session="S1")
    assert fed.one(at(0, 10, 5), "K1", "auth.step_up", session="S1", **CLERK)[0] == "allow"
    assert _list(fed, at(0, 10, 6), first=600, session="S1")[0] == "throttle"
    assert _list(fed, at(0, 10, 7), first=700, session="S1")[0] == "throttle"


def test_the_hour_slides_and_the_day_budget_holds(fed: Feed) -> None:
    # 180 rows an hour stays under the hourly budget, but the clerk's day holds 700 rows.
    out = [_list(fed, at(0, 8 + h, h), rows=180, first=h * 180)[0] for h in range(5)]
    assert out == ["allow", "allow", "allow", "throttle", "throttle"]
    _, _, reasons = _list(fed, at(0, 13), rows=10, first=5000)
    assert any(c == "masked_volume" and "today" in (d or "") for c, d in reasons)
    assert _list(fed, at(1, 9), rows=100, first=6000)[0] == "allow"  # a new day


def test_views_a_task_explains_and_routing_views_do_not_count(fed: Feed) -> None:
    courier = {"role": "courier", "org": "OUT-BJ-001", "device": "PDA-1"}
    for i in range(1500):  # far beyond any masked budget, but every parcel is the courier's own
        assert fed.one(at(0, 8, 0, i * 2), "C1", waybill=wb(i), assignee="C1", **courier)[0] == "allow"
    hub = {"role": "hub_operator", "org": "HUB-BJ", "device": "HUB-1", "loc": None}
    for i in range(1500):  # a hub operator is shown routing data only: no party at all
        assert fed.one(at(0, 8, 0, i * 2), "H1", waybill=wb(i), **hub)[0] == "allow"
    assert not fed.sink.alerts


def test_single_views_are_judged_on_the_row_that_passes_the_budget(fed: Feed, state: RiskState) -> None:
    # Views of parcels no task explains, a few seconds apart: only counted until the 201st row.
    out = [fed.one(at(0, 9, 0, i * 5), "K1", waybill=wb(i), **CLERK)[0] for i in range(201)]
    assert set(out[:200]) == {"allow"} and out[200] == "throttle"
    # The day's rows reached the peer group in whole steps of 25 on the way (200 of 201).
    assert state.peer_stats(f"m:outlet_clerk:OUT-BJ-001:{at(0, 9).toordinal()}", "other") == (1, 200.0, 0.0)


def test_a_list_naming_no_rows_counts_one_page(fed: Feed) -> None:
    # A legacy list whose result_count is every match (2,000) is taken as one page of 50 rows.
    for i in range(4):
        action, _, _ = fed.one(at(0, 9, i), "K1", "waybill.list", result_count=2000, **CLERK)
        assert action == "allow"
    assert fed.one(at(0, 9, 5), "K1", "waybill.list", result_count=2000, **CLERK)[0] == "throttle"


def test_a_doubted_session_paging_past_the_budget_is_locked(fed: Feed) -> None:
    for d in range(4):
        _clerk_day(fed, d)
    renter = {"device": "LAPTOP-X", "ip": "58.60.1.2", "session": "R1"}
    assert _list(fed, at(4, 23), first=9000, **renter)[0] == "step_up"
    assert _list(fed, at(4, 23, 1), first=9100, **renter)[0] == "step_up"
    action, _, reasons = _list(fed, at(4, 23, 2), first=9200, **renter)
    assert action == "lock" and "masked_volume" in codes(reasons)


def test_peers_raise_the_day_budget_on_a_busy_day_and_flag_an_outlier() -> None:
    feed = Feed()
    courier = {"role": "courier", "org": "OUT-BJ-009"}

    def day(d: int, rows: dict[str, int]) -> list[str]:
        # Masked views no assignment explains (the morning scan), 5 an event-minute, interleaved.
        out = []
        for minute in range(max(rows.values()) // 5):
            for who, n in rows.items():
                if minute * 5 < n:
                    ts = at(d, 7, minute * 0.5)
                    query = {"kind": "by_status", "result_count": 5, "result_ids": [wb(minute)] * 5}
                    out.append(
                        feed.one(ts, who, "waybill.list", query=query, device=f"PDA-{who}", **courier)[0]
                    )
        return out

    team = {f"E{i}": 240 for i in range(6)}
    for d in range(3):
        assert set(day(d, team)) == {"allow"}
    assert set(day(3, {who: 1300 for who in team})) == {"allow"}, "a festival for all flags no one"
    # The festival's second morning: one early starter is through 1,300 rows while colleagues have
    # done 100 so far. Yesterday's colleagues set the bar too (a clerk was throttled here).
    assert set(day(4, dict({who: 100 for who in team}, E0=1300))) == {"allow"}
    out = day(5, dict(team, E0=1300))
    assert "throttle" in out or "step_up" in out
    assert any(c == "masked_volume" and "peers" in (d or "") for a in feed.sink.alerts for c, d in a.reasons)


def test_an_agents_searches_followed_up_in_tickets_stay_quiet(fed: Feed) -> None:
    for d in range(3):
        for i in range(45):  # a busy agent: 45 tickets, each found by phone and opened in the ticket
            hit = wb(d * 100 + i)
            assert _search(fed, at(d, 9, i * 10), [hit])[0] == "allow"
            assert fed.one(at(d, 9, i * 10, 20), "S1", waybill=hit, ticket=f"TK{d}{i}", **AGENT)[0] == "allow"
    assert not fed.sink.alerts


def test_phone_probing_throttles_steps_up_then_locks(fed: Feed) -> None:
    # A gang's list of numbers, one a minute, nearly all misses: the agent's hour holds 12 probes.
    actions = []
    for i, _phone in enumerate(PHONES):
        actions.append(_search(fed, at(0, 19, i), [])[0])
    assert actions[:12] == ["allow"] * 12
    assert actions[12] == "throttle" and actions[24] == "step_up"
    assert "lock" in actions and actions.index("lock") == 48
    alerts = [a for a in fed.sink.alerts if "phone_probing" in {c for c, _ in a.reasons}]
    assert [a.action for a in alerts] == ["throttle", "step_up", "lock"]
    text = orjson.dumps([(a.reasons, a.evidence) for a in fed.sink.alerts]).decode()
    assert not any(p in text for p in PHONES)  # counts only: the engine never sees the numbers


def test_hits_no_task_follows_up_are_probes_and_a_ticket_clears_one(fed: Feed) -> None:
    for i in range(13):  # hits, each looked at (masked) without a ticket: linked, never worked on
        hit = wb(500 + i)
        _search(fed, at(0, 19, i * 2), [hit])
        fed.one(at(0, 19, i * 2, 10), "S1", resource={"type": "waybill", "id": hit, "org_unit": "OUT-SZ-3"},
                **AGENT)  # fmt: skip
    # Ten minutes on, none was followed up: all are probes, over the budget of 12.
    action, _, reasons = _search(fed, at(0, 19, 40), [wb(999)])
    assert action == "throttle" and "phone_probing" in codes(reasons)

    other = Feed(RiskEngine())
    for i in range(13):
        hit = wb(500 + i)
        _search(other, at(0, 19, i * 2), [hit], actor="S2")
        res = {"type": "waybill", "id": hit, "org_unit": "OUT-SZ-3", "ticket": f"TK{i}"}
        other.one(at(0, 19, i * 2, 10), "S2", resource=res, **AGENT)
    assert _search(other, at(0, 19, 40), [wb(999)], actor="S2")[0] == "allow"


def test_unlock_clears_the_masked_and_probe_counts(fed: Feed) -> None:
    for i in range(9):
        _list(fed, at(0, 22, i), first=i * 100)
    assert fed.engine.is_locked("K1")
    fed.engine.unlock("K1")
    # The lock revoked the clerk's sessions: after the review they sign in anew.
    assert _list(fed, at(0, 22, 30), first=5000, session="S-K1-reviewed")[0] == "allow"


def test_masked_and_probe_state_round_trips(state: RiskState) -> None:
    feed = Feed(RiskEngine(state=state))
    for i in range(8):
        _list(feed, at(0, 9, i), first=i * 100)
    for i in range(3):
        _search(feed, at(0, 9, i), [] if i else [wb(1)])
    for actor in ("K1", "S1"):
        acc = state.load(actor)
        clone = AccountState.from_state(orjson.loads(orjson.dumps(acc.to_state())))
        assert clone.to_state() == acc.to_state()
    k1 = state.load("K1")
    assert k1.d_masked == 800 and k1.hour_masked == 800 and k1.m_over == 800 / 700 and k1.sessions
    s1 = state.load("S1")
    assert s1.probes is not None and s1.d_probes == 2 and len(s1.probes.pending) == 1


def test_state_saved_before_masked_reads_still_loads() -> None:
    acc = AccountState("E1")
    old = acc.to_state()
    for key in (
        "d_masked",
        "hour_masked",
        "masked_times",
        "m_sent",
        "m_over",
        "m_free",
        "daily_masked",
        "probes",
        "d_probes",
    ):
        del old[key]
    old["sessions"] = {"S": ["D", 1.0, 0.0, {}, False, False, 0]}
    again = AccountState.from_state(old)
    assert again.d_masked == 0 and again.probes is None and again.sessions["S"].masked == 0


@pytest.mark.redis
def test_masked_decisions_are_the_same_on_redis_and_memory() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"cg:test:{uuid.uuid4().hex}:"
    try:
        decisions = []
        for state in (MemoryState(), RedisState(client, prefix=prefix)):
            feed = Feed(RiskEngine(state=state))
            out = [_list(feed, at(0, 22, i), first=i * 100)[0] for i in range(10)]
            out += [_search(feed, at(0, 19, i), [])[0] for i in range(50)]
            decisions.append(out)
        assert decisions[0] == decisions[1] and "lock" in decisions[0]
        assert RiskEngine(state=RedisState(client, prefix=prefix)).is_locked("K1")
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
