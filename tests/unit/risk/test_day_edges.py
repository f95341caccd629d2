"""The day's budgets at the day's edge: an account's day only moves forward.

The engine's day is the calendar day of the event's own ``ts``, in the UTC offset it is written in
(the gateway stamps UTC). An event dated the day before the account's current day used to roll the
account back to that day, clearing the day's counts, and the next event rolled it forward again,
clearing them once more.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .helpers import PHONE, Feed, at, codes, wb


def test_the_same_instant_in_another_offset_does_not_give_the_day_budget_back(feed: Feed) -> None:
    # Monitor mode over two sources' events: one writes +08:00, the other UTC. Before 08:00 in
    # Beijing the two name different days for the same instant.
    feed.warm()
    budget = feed.engine.config.budget("courier").unexplained_reveals_per_day  # 12
    actions = []
    for i in range(20):
        t = at(4, 7, i * 2)  # 07:00-07:38 Beijing, 23:00-23:38 UTC the day before
        if i % 2:
            t = t.astimezone(UTC)
        actions.append(feed.one(t, waybill=wb(i), fields=PHONE, action="waybill.reveal"))
    names = [a[0] for a in actions]
    assert names[:budget] == ["allow"] * budget
    assert names[budget:] == ["deny"] * (20 - budget)  # was: all 20 allowed, the count never above 1
    assert "unexplained_reveals" in codes(actions[-1][2])


def test_a_clock_stepped_back_across_midnight_does_not_give_the_day_budget_back(feed: Feed) -> None:
    feed.warm()
    budget = feed.engine.config.budget("courier").unexplained_reveals_per_day
    midnight = datetime(2026, 11, 7, tzinfo=UTC)  # the gateway's day: UTC (08:00 in Beijing)
    for i in range(budget):
        t = midnight + timedelta(minutes=2 * i)
        assert feed.one(t, waybill=wb(i), fields=PHONE, action="waybill.reveal")[0] == "allow"
    # NTP steps the clock back two minutes, or the next request reaches a worker whose clock is behind
    back = feed.one(midnight - timedelta(seconds=30), waybill=wb(50), fields=PHONE, action="waybill.reveal")
    assert back[0] == "deny" and "unexplained_reveals" in codes(back[2])
    again = feed.one(midnight + timedelta(minutes=30), waybill=wb(51), fields=PHONE, action="waybill.reveal")
    assert again[0] == "deny"
    assert feed.engine.state.load("E1").d_unexpl == budget + 2


def test_a_task_dated_the_day_before_counts_today(feed: Feed) -> None:
    engine = feed.engine
    today = datetime(2026, 11, 7, 0, 0, 5, tzinfo=UTC)
    for i in range(3):
        engine.note_task("E1", "courier", "delivery", today, "svc:pda", wb(i))
    engine.note_task("E1", "courier", "delivery", today - timedelta(seconds=10), "svc:pda", wb(9))
    acc = engine.state.load("E1")
    assert acc.cur_day == today.toordinal() and acc.d_tasks == 4  # was: rolled back, 1


def test_the_day_budget_is_a_fixed_utc_day_and_the_hour_holds_across_its_edge(feed: Feed) -> None:
    # As docs/risk.md says: a day's budget on each side of the edge (00:00 UTC, 08:00 Beijing), never
    # more than the hour's budget in any hour.
    feed.warm()
    budget = feed.engine.config.budget("courier")  # 40 an hour, 120 a day
    edge = datetime(2026, 11, 7, tzinfo=UTC)
    served = []
    for i in range(313):  # one every 92 s (just under 40 an hour), from 04:00 to 12:00 Beijing
        t = edge - timedelta(hours=4) + timedelta(seconds=92 * i)
        if feed.one(t, waybill=wb(i), assignee="E1", fields=PHONE, action="waybill.reveal")[0] == "allow":
            served.append(t)
    assert len(served) == 2 * budget.revealed_per_day
    assert sum(t < edge for t in served) == budget.revealed_per_day
    assert (
        max(sum(s <= t < s + timedelta(hours=1) for t in served) for s in served) <= budget.revealed_per_hour
    )
