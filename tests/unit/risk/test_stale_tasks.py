"""A task open for days explains no reveal: a parcel "out for delivery" since last week, or a
waybill row put back from an assignment long over (it carries its old ``status_ts``), counts as a
reveal no task explains, with a ``stale_task`` alert once a day."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from courierguard.risk.config import RiskConfig
from courierguard.risk.engine import RiskEngine
from courierguard.risk.streams import event

from .helpers import PHONE, Feed, at, codes, live_decisions, replayed_decisions, wb


def _reveal(n: int, ts: datetime, status_age: timedelta, actor: str = "E1") -> dict[str, Any]:
    e = event(f"r{n}", ts, actor, "waybill.reveal", waybill=wb(n), assignee=actor, fields=PHONE)
    e["resource"]["status"] = "out_for_delivery"
    e["resource"]["status_ts"] = (ts - status_age).isoformat()
    return e


def _decide(feed: Feed, e: dict[str, Any]) -> tuple[str, set[str]]:
    from courierguard.events import AccessEvent

    decision = feed.engine.assess(AccessEvent.model_validate(e))
    return decision.action.value, {r.code for r in decision.reasons}


def test_a_task_within_two_days_explains_the_reveal_and_one_older_does_not() -> None:
    feed = Feed()
    feed.warm()
    act, why = _decide(feed, _reveal(1, at(4, 10), timedelta(hours=47)))
    assert (act, why) == ("allow", set())
    assert feed.sink.alerts == []
    act, why = _decide(feed, _reveal(2, at(4, 10, 5), timedelta(hours=49)))
    assert act == "allow" and why == {"stale_task"}
    [alert] = feed.sink.alerts
    assert [c for c, _ in alert.reasons] == ["stale_task"]
    assert alert.evidence["stale_task"] == {"status": "out_for_delivery", "hours": 49.0}
    assert alert.evidence["unexplained_today"] == 1  # counted as a reveal no task explains
    _decide(feed, _reveal(3, at(4, 10, 10), timedelta(days=6)))
    assert len(feed.sink.alerts) == 1  # once a day


def test_stale_reveals_reach_the_unexplained_budget_and_are_refused() -> None:
    feed = Feed()
    feed.warm()
    budget = RiskConfig().budget("courier").unexplained_reveals_per_day
    got = [_decide(feed, _reveal(10 + i, at(4, 9, 2 * i), timedelta(days=3))) for i in range(budget + 2)]
    assert got[:budget] == [("allow", {"stale_task"})] * budget
    assert got[budget:] == [("deny", {"stale_task", "unexplained_reveals"})] * 2
    assert "stale_task" not in codes(feed.one(at(4, 11), "E1", "waybill.view")[2])  # no reveal


def test_the_threshold_is_configurable_and_events_without_status_ts_are_not_judged() -> None:
    feed = Feed(RiskEngine(config=RiskConfig(task_stale_hours=6)))
    feed.warm()
    assert _decide(feed, _reveal(1, at(4, 10), timedelta(hours=7)))[1] == {"stale_task"}
    e = _reveal(2, at(4, 10, 1), timedelta(hours=7))
    del e["resource"]["status_ts"]
    assert _decide(feed, e)[1] == set()


def test_replay_judges_stale_tasks_as_live_does() -> None:
    events = []
    feed = Feed()
    for day in range(4):
        for i in range(30):
            events.append(_reveal(day * 100 + i, at(day, 9, 5 * i), timedelta(hours=2)))
    events += [_reveal(1000 + i, at(4, 9, i), timedelta(days=4)) for i in range(20)]
    live = live_decisions(feed.engine, events)
    assert live, "twenty reveals of week-old tasks in twenty minutes are refused"
    assert live == replayed_decisions(RiskEngine(), events)
