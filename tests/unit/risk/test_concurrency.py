"""Decisions on one account made at the same time, as a worker's threads and several workers make them.

A red-team test rented a courier account, had 300 waybills assigned to it and fired its reveals 100 at
a time at a worker on the thread-pool path (a networked database): each decision loaded the account
(reveals in the last hour: n), counted its own reveal and saved n + 1 over the others', so 116 records
were served against a budget of 40 before the account locked. Decisions on one account must count
every event, however many arrive at once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from courierguard.risk.engine import ACTION_NAMES, RiskEngine
from courierguard.risk.record import from_dict
from courierguard.risk.state import RedisState, RiskState
from courierguard.risk.streams import event

from .helpers import ALL3, Feed, at, wb


def test_parallel_reveals_of_one_account_are_all_counted(state: RiskState) -> None:
    engine = RiskEngine(state=state)
    feed = Feed(engine)
    feed.warm()
    budget = engine.config.budget("courier").revealed_per_hour  # 40
    n = 3 * budget
    recs = [
        from_dict(event(f"p{i}", at(4, 10, 0, i * 0.01), "E1", "waybill.reveal", waybill=wb(i), assignee="E1",
                        fields=ALL3))
        for i in range(n)
    ]  # fmt: skip
    start = threading.Barrier(16)

    def decide(i: int) -> str:
        if i < 16:
            start.wait()  # the first sixteen at the very same instant
        return ACTION_NAMES[engine.decide(recs[i])[0]]

    with ThreadPoolExecutor(16) as pool:
        names = list(pool.map(decide, range(n)))
    assert names.count("allow") <= budget, names.count("allow")
    assert engine.state.load("E1").locked is False or "lock" in names


@pytest.mark.redis
def test_two_workers_on_one_redis_count_every_reveal(redis_state: RedisState) -> None:
    # Several workers behind a load balancer, each with its own engine over the one Redis.
    other = RedisState(redis_state.r, prefix=redis_state.prefix)
    one, two = RiskEngine(state=redis_state), RiskEngine(state=other)
    Feed(one).warm()
    budget = one.config.budget("courier").revealed_per_hour
    recs = [
        from_dict(event(f"w{i}", at(4, 10, 0, i * 0.01), "E1", "waybill.reveal", waybill=wb(i), assignee="E1",
                        fields=ALL3))
        for i in range(3 * budget)
    ]  # fmt: skip
    with ThreadPoolExecutor(16) as pool:
        names = list(pool.map(lambda i: ACTION_NAMES[(one, two)[i % 2].decide(recs[i])[0]], range(len(recs))))
    assert names.count("allow") <= budget, names.count("allow")
