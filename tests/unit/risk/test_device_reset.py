"""A security officer's device reset (a lost or stolen phone) makes the engine forget the account's
devices, from the ``admin.change`` event alone, so that live, replay and Redis agree.

Before: the reset unbound the phone's second factor, but the engine still knew the phone as the
account's own device, so whoever held it worked as the owner with no step-up ever asked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from courierguard.risk.engine import ACTION_NAMES, RiskEngine
from courierguard.risk.record import from_dict
from courierguard.risk.state import RiskState
from courierguard.risk.streams import courier_day, event

from .helpers import PHONE, Feed, at, codes, live_decisions, replayed_decisions, wb

OFFICER = {"role": "security_officer", "org": "SEC", "device": "SEC-PC", "loc": None}


def _reset(feed: Feed, ts: datetime, target: str = "E1", outcome: str = "allow") -> str:
    return feed.one(
        ts, "X1", "admin.change", purpose=f"devices.reset:{target}:INC-7", outcome=outcome, **OFFICER
    )[0]


def test_the_lost_phone_is_a_new_device_after_a_reset(feed: Feed) -> None:
    feed.warm()  # E1 on PDA-1, days 0-3
    assert feed.one(at(4, 8), waybill=wb(1), assignee="E1")[0] == "allow"  # the owner, as every day
    assert _reset(feed, at(4, 9)) == "allow"
    acc = feed.engine.state.load("E1")
    assert acc.devices == {} and acc.dev_days == {} and acc.sessions == {} and acc.trusted_key is None
    assert acc.nets and acc.places  # the owner's networks and places are not the phone's

    # Whoever holds the phone now, at the outlet in working hours, is asked for a step-up that only
    # a newly bound phone can answer, and a doubted session cannot enrol the old one again.
    action, _, reasons = feed.one(at(4, 10), session="S-thief", waybill=wb(2), assignee="E1")
    assert action == "step_up" and codes(reasons) == {"new_device"}
    action, _, reasons = feed.one(at(4, 10, 1), "E1", "auth.device_bound", session="S-thief")
    assert action == "step_up" and codes(reasons) == {"enrol_while_doubted"}
    # Revealing what no task explains from the doubted session locks the account, as for any renter.
    outs = [
        feed.one(
            at(4, 10, 2 + i), session="S-thief", action="waybill.reveal", waybill=wb(10 + i), fields=PHONE
        )[0]
        for i in range(4)
    ]
    assert outs[-1] == "lock"


def test_without_a_reset_the_phone_stays_the_owners(feed: Feed) -> None:
    feed.warm()
    assert feed.one(at(4, 10), session="S-2", waybill=wb(2), assignee="E1")[0] == "allow"


@pytest.mark.parametrize("outcome", ["deny", "challenge"])
def test_a_reset_that_was_not_made_forgets_nothing(feed: Feed, outcome: str) -> None:
    feed.warm()
    _reset(feed, at(4, 9), outcome=outcome)
    assert "PDA-1" in feed.engine.state.load("E1").devices
    assert feed.one(at(4, 10), session="S-2", waybill=wb(2), assignee="E1")[0] == "allow"


def test_a_reset_by_an_officer_risk_control_refuses_forgets_nothing(feed: Feed) -> None:
    """Live, the gateway makes the change only on the officer's allow; the engine agrees."""
    feed.warm()
    feed.engine.lock("X1")
    assert _reset(feed, at(4, 9)) == "lock"
    assert "PDA-1" in feed.engine.state.load("E1").devices


def test_a_reset_phone_is_trusted_again_only_as_a_new_one_would_be(feed: Feed) -> None:
    """The old phone's days of clean use start again at the reset: the owner who finds it (or the
    owner's new phone) is learned after ``device_trust_days`` distinct days, not on the next event."""
    feed.warm()
    _reset(feed, at(4, 7))
    first = feed.one(at(4, 9), session="S-a", waybill=wb(2), assignee="E1")
    assert first[0] == "step_up" and "new_device" in codes(first[2])
    second = feed.one(at(5, 9), session="S-b", waybill=wb(3), assignee="E1")
    assert second[0] == "allow"  # a second clean day at the usual place and hours, as for any phone


def _stream() -> tuple[list[dict[str, Any]], str]:
    """Two couriers for four days, a reset of E000000's devices, then the old phone in use."""
    import random

    rng = random.Random(3)
    events: list[dict[str, Any]] = []
    for d in range(4):
        for c in range(2):
            events += courier_day(rng, f"E{c:06d}", d, device=f"PDA-{c}")
    events.append(
        event("reset-1", at(4, 7), "X1", "admin.change", purpose="devices.reset:E000000:INC-7",
              outcome="allow", role="security_officer", org="SEC", device="SEC-PC", loc=None)
    )  # fmt: skip
    events += courier_day(rng, "E000000", 4, device="PDA-0")
    events.sort(key=lambda e: e["ts"])
    return events, "E000000-4-0"


def test_live_and_replay_forget_the_same_devices() -> None:
    events, first_after = _stream()
    live, replayed = live_decisions(RiskEngine(), events), replayed_decisions(RiskEngine(), events)
    assert live == replayed
    assert live[first_after] == "step_up"  # the first event on the old phone after the reset


def test_replay_is_the_same_on_every_state_backend(state: RiskState) -> None:
    events, first_after = _stream()
    expected = replayed_decisions(RiskEngine(), events)
    assert replayed_decisions(RiskEngine(state=state), events) == expected
    assert expected[first_after] == "step_up"
    assert "PDA-0" not in state.load("E000000").devices


def test_decide_on_a_parsed_event_reads_the_reset_purpose() -> None:
    rec = from_dict(event("r", at(0, 9), "X1", "admin.change", purpose="devices.reset:E9:T", outcome="allow"))
    engine = RiskEngine()
    assert ACTION_NAMES[engine.decide(rec)[0]] == "allow"
    assert engine.state.load("E9").reset_ts == rec.ts
