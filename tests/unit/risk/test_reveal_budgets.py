"""Per-role reveal budgets: explained reveals (an assignment, a ticket) are held to a budget too.

The security tester's finding F3: a service key assigned 522 waybills to one rented courier account,
which then revealed them at ~1.8/s; the only brake was the 400-an-hour reveal rate of every role.
"""

from __future__ import annotations

from courierguard.risk.engine import RiskEngine

from .helpers import ALL3, PHONE, Feed, at, codes, wb


def test_courier_burst_of_assigned_reveals_climbs_the_ladder(feed: Feed) -> None:
    feed.warm()
    budget = feed.engine.config.budget("courier").revealed_per_hour  # 40
    actions = [
        feed.one(at(4, 10, 0, i / 1.8), waybill=wb(i), assignee="E1", fields=ALL3, action="waybill.reveal")
        for i in range(522)
    ]
    names = [a[0] for a in actions]
    assert names[:budget] == ["allow"] * budget
    assert names[budget] == "throttle" and "reveal_budget" in codes(actions[budget][2])
    # past twice the budget the session is asked for a step-up, past four times the account locks
    assert names[2 * budget] == "step_up"
    assert "lock" in names and names.index("lock") == 4 * budget
    assert names.count("allow") == budget  # records served: 40, not 399
    locks = [a for a in feed.sink.alerts if a.action == "lock"]
    assert locks and locks[0].reasons[-1][0] == "reveal_budget"
    assert locks[0].evidence["revealed_last_hour"] == 4 * budget + 1


def test_unlock_clears_the_reveal_counts_so_the_reviewed_owner_can_work(feed: Feed) -> None:
    feed.warm()
    budget = feed.engine.config.budget("courier").revealed_per_hour
    for i in range(4 * budget + 1):
        feed.one(at(4, 10, 0, i), waybill=wb(i), assignee="E1", fields=PHONE, action="waybill.reveal")
    assert feed.engine.is_locked("E1")
    feed.engine.unlock("E1")  # the officer's review found the owner, not a renter
    owner = {"session": "S-E1-reviewed", "assignee": "E1", "fields": PHONE, "action": "waybill.reveal"}
    assert feed.one(at(4, 10, 5), waybill=wb(900), **owner)[0] == "allow"
    assert feed.engine.state.load("E1").hour_rv == 1


def test_agent_sixty_ticketed_reveals_in_seconds_are_stopped(feed: Feed) -> None:
    kw = {"role": "customer_service", "org": "CS-BJ", "device": "PC-1", "loc": None}
    names = [
        feed.one(at(0, 9, 0, i * 0.05), "C1", "waybill.reveal", waybill=wb(i), ticket=f"TK{i}", fields=ALL3, **kw)[
            0
        ]
        for i in range(60)
    ]  # fmt: skip
    assert names.count("allow") == 18  # the agents' hour budget: 11 measured at most, x 1.5
    assert names[18] == "throttle" and "step_up" in names


def test_day_budget_holds_slow_explained_reveals(feed: Feed) -> None:
    feed.warm()
    # 12 an hour (under the hour's 40) from 07:00 to 18:00: the day's budget (120) stops the 121st
    names = [
        feed.one(
            at(4, 7 + i // 12, (i % 12) * 5),
            waybill=wb(i),
            assignee="E1",
            fields=PHONE,
            action="waybill.reveal",
        )[0]
        for i in range(132)
    ]
    assert names[:120] == ["allow"] * 120
    assert names[120] == "throttle"


def test_busy_day_of_the_colleagues_raises_the_day_budget(feed: Feed) -> None:
    # a festival: three colleagues of the outlet reveal 100 each, so 4 x 100 = 400 is today's bar
    for peer in ("P1", "P2", "P3"):
        for i in range(100):
            t = at(4, 7 + i // 10, (i % 10) * 6)
            feed.one(t, peer, "waybill.reveal", waybill=wb(1000 + i), assignee=peer, fields=PHONE)
    names = [
        feed.one(at(4, 7 + i // 12, (i % 12) * 5, 30), waybill=wb(i), assignee="E1", fields=PHONE, action="waybill.reveal")[0]
        for i in range(132)
    ]  # fmt: skip
    assert set(names) == {"allow"}


def test_task_burst_raises_one_alert_and_drops_the_peer_raise() -> None:
    feed = Feed(RiskEngine())
    day = at(4, 7)
    for peer in ("P1", "P2", "P3"):
        for i in range(100):
            feed.engine.note_task(peer, "courier", "delivery", day, "svc-orders", wb(2000 + i))
            feed.one(at(4, 7 + i // 10, (i % 10) * 6), peer, "waybill.reveal", waybill=wb(1000 + i), assignee=peer,
                     fields=PHONE)  # fmt: skip
    limit = feed.engine.config.budget("courier").tasks_per_day  # 430
    over = [
        feed.engine.note_task("E1", "courier", "delivery", day, "svc-orders", wb(i))
        for i in range(limit + 50)
    ]
    assert not any(over[:limit]) and all(over[limit:])
    alerts = [a for a in feed.sink.alerts if a.reasons[0][0] == "task_burst"]
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.actor_id == "E1" and alert.evidence["by"] == "svc-orders"
    assert alert.evidence["tasks_today"] == limit + 1
    # the colleagues' busy day no longer raises E1's reveal budget: the 121st reveal is throttled
    names = [
        feed.one(at(4, 7 + i // 12, (i % 12) * 5, 30), waybill=wb(i), assignee="E1", fields=PHONE, action="waybill.reveal")[0]
        for i in range(125)
    ]  # fmt: skip
    assert names[:120] == ["allow"] * 120 and names[120] == "throttle"


def test_festival_tasks_raise_the_task_bar() -> None:
    feed = Feed(RiskEngine())
    day = at(4, 7)
    for i in range(600):  # the morning dispatch: everyone's parcels at once (an outlet of 5 here)
        for peer in ("P1", "P2", "P3", "P4"):
            feed.engine.note_task(peer, "courier", "delivery", day, "svc-orders", wb(i))
    assert not any(feed.engine.note_task("E1", "courier", "delivery", day, "svc", wb(i)) for i in range(900))
    assert not [a for a in feed.sink.alerts if a.reasons[0][0] == "task_burst"]


def test_doubted_session_over_the_reveal_budget_locks(feed: Feed) -> None:
    feed.warm()
    names = [
        feed.one(at(4, 10, 0, i), device="PDA-RENTED", ip="120.1.2.3", waybill=wb(i), assignee="E1", fields=PHONE,
                 action="waybill.reveal")[0]
        for i in range(60)
    ]  # fmt: skip
    assert names[0] == "step_up"  # the new device asks for a factor first
    assert "lock" in names and names.index("lock") <= 41
