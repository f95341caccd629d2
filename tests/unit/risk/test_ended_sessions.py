"""Risk control remembers the sessions containment ended, outside the database.

A session row is sealed, but a DBA who kept the row from before an officer revoked it (seal
included) can put it back, and the gateway serves it again. The revocation is on the trail, and
risk control saw it: a session it knows as ended that is served again locks the account
(``ended_session``). Held in risk state (process memory, or Redis in production), which a database
administrator does not hold.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from courierguard.events import AccessEvent
from courierguard.risk.engine import RiskEngine
from courierguard.risk.state import ENDED_KEEP, ENDED_KEEP_S, RedisState, RiskState, with_ended
from courierguard.risk.streams import event

from .helpers import Feed, at, codes, live_decisions, replayed_decisions, wb

OFFICER = {"role": "security_officer", "org": "SEC", "device": "SEC-PC", "loc": None}
RENTER = "S-rented"


def _officer(feed: Feed, ts: datetime, purpose: str, outcome: str = "allow") -> str:
    return feed.one(ts, "X1", "admin.change", purpose=purpose, outcome=outcome, **OFFICER)[0]


def _use(feed: Feed, ts: datetime, session: str = RENTER, **kw: object) -> tuple[str, set[str]]:
    action, _, reasons = feed.one(ts, session=session, waybill=wb(1), assignee="E1", **kw)  # type: ignore[arg-type]
    return action, codes(reasons)


@pytest.mark.parametrize(
    "purpose",
    [
        "sessions.revoke:E1:INC-1",
        "devices.reset:E1:INC-1",
        "employee.hold:E1:INC-1",
        "employee.suspended:E1",
        "employee.left:E1",
    ],
)
def test_a_session_containment_ended_locks_the_account_when_it_serves_again(
    state: RiskState, purpose: str
) -> None:
    feed = Feed(RiskEngine(state=state))
    feed.warm()
    assert _use(feed, at(4, 9))[0] == "allow"
    assert _officer(feed, at(4, 10), purpose) == "allow"
    if purpose.startswith(("employee.suspended", "employee.left", "employee.hold")):
        # A hold or a suspension is reviewed and lifted; one who left is rehired: the account is
        # active again, and its new sessions work.
        feed.engine.set_employee_status("E1", "active")
    # The owner's new session works (after a device reset, once the new phone answers a step-up).
    assert _use(feed, at(4, 11), session="S-after")[0] == ("step_up" if "devices" in purpose else "allow")
    # The renter's session row, put back as it was sealed before the revocation.
    action, reasons = _use(feed, at(4, 12))
    assert (action, reasons) == ("lock", {"ended_session"})
    assert feed.engine.is_locked("E1")
    alert = feed.sink.alerts[-1]
    assert alert.actor_id == "E1" and alert.session_id == RENTER and alert.action == "lock"
    assert datetime.fromisoformat(alert.evidence["session_ended_at"]) == at(4, 10)
    # It stays locked (an officer reviews it), the session it came back on and every other alike.
    assert _use(feed, at(4, 13), session="S-after")[0] == "lock"


def test_sessions_of_a_risk_lock_stay_ended_after_the_review(state: RiskState) -> None:
    feed = Feed(RiskEngine(state=state))
    feed.warm()
    reveal = {"action": "waybill.reveal", "fields": ["recipient.phone"]}
    outs = [
        feed.one(
            at(4, 23, i),
            session=RENTER,
            device="PHONE-X",
            ip="36.1.2.3",
            loc=(23.1, 113.3),
            waybill=wb(20 + i),
            **reveal,
        )[0]
        for i in range(8)
    ]
    assert "lock" in outs
    feed.engine.unlock("E1")
    assert _use(feed, at(5, 9), session="S-owner-again", device="PDA-1")[0] == "allow"
    assert _use(feed, at(5, 10), device="PHONE-X") == ("lock", {"ended_session"})


def test_refused_attempts_of_an_ended_session_are_not_a_comeback(feed: Feed) -> None:
    """The gateway refuses a revoked session's token and records the try; that is the gateway
    working, not a session brought back."""
    feed.warm()
    _use(feed, at(4, 9))
    _officer(feed, at(4, 10), "sessions.revoke:E1:INC-1")
    action, _, _ = feed.one(at(4, 11), "E1", "auth.login_failed", session=RENTER, outcome="deny")
    assert action != "lock" and not feed.engine.is_locked("E1")
    assert _use(feed, at(4, 12), session="S-after")[0] == "allow"


@pytest.mark.parametrize("outcome", ["deny", "challenge"])
def test_a_revocation_that_was_not_made_ends_nothing(feed: Feed, outcome: str) -> None:
    feed.warm()
    _use(feed, at(4, 9))
    assert _officer(feed, at(4, 10), "sessions.revoke:E1:INC-1", outcome=outcome) != "lock"
    assert _use(feed, at(4, 11))[0] == "allow"


def test_other_accounts_sessions_are_not_ended(feed: Feed) -> None:
    feed.warm()
    feed.warm(actor="E2", device="PDA-2")
    _use(feed, at(4, 9))
    feed.one(at(4, 9), "E2", session="S-E2", device="PDA-2", waybill=wb(2), assignee="E2")
    _officer(feed, at(4, 10), "sessions.revoke:E1:INC-1")
    assert (
        feed.one(at(4, 11), "E2", session="S-E2", device="PDA-2", waybill=wb(3), assignee="E2")[0] == "allow"
    )


@pytest.mark.redis
def test_a_stale_copy_saved_by_another_worker_does_not_bring_sessions_back(redis_state: RedisState) -> None:
    feed = Feed(RiskEngine(state=redis_state))
    feed.warm()
    _use(feed, at(4, 9))
    stale = redis_state.load("E1")  # another worker holds the account...
    _officer(feed, at(4, 10), "sessions.revoke:E1:INC-1")
    redis_state.save(stale)  # ...and saves its copy from before the revocation
    assert RENTER in redis_state.load("E1").ended
    assert _use(feed, at(4, 11)) == ("lock", {"ended_session"})


@pytest.mark.redis
def test_two_revocations_at_once_both_count(redis_state: RedisState) -> None:
    feed = Feed(RiskEngine(state=redis_state))
    feed.warm()
    _use(feed, at(4, 9))
    redis_state.end_sessions("E1", at(4, 10).timestamp())
    _use(feed, at(4, 11), session="S-second")  # opened before the second officer's revocation
    redis_state.end_sessions("E1", at(4, 12).timestamp())
    ended = redis_state.load("E1").ended
    assert ended[RENTER] == at(4, 10).timestamp()  # the first time it ended is kept
    assert ended["S-second"] == at(4, 12).timestamp()


def _stream() -> list[dict[str, Any]]:
    officer = {"role": "security_officer", "org": "SEC", "device": "SEC-PC", "loc": None}
    return [
        event("e1", at(0, 9), "E1", session=RENTER, waybill=wb(1), assignee="E1"),
        event(
            "e2",
            at(0, 10),
            "X1",
            "admin.change",
            purpose="sessions.revoke:E1:INC-1",
            outcome="allow",
            **officer,
        ),
        event("e3", at(0, 11), "E1", session="S-after", waybill=wb(2), assignee="E1"),
        event("e4", at(0, 12), "E1", session=RENTER, waybill=wb(3), assignee="E1"),
    ]


def test_live_and_replay_agree() -> None:
    events = _stream()
    live = live_decisions(RiskEngine(), events)
    assert live == replayed_decisions(RiskEngine(), events) == {"e4": "lock"}
    engine = RiskEngine()
    reasons = [engine.assess(AccessEvent.model_validate(e)).reasons for e in events][-1]
    assert [r.code for r in reasons] == ["ended_session"]


@given(
    st.dictionaries(st.text(min_size=1, max_size=8), st.floats(0, 2e9), max_size=300),
    st.lists(st.text(min_size=1, max_size=8), max_size=40),
    st.floats(0, 2e9),
)
def test_with_ended_keeps_first_times_recent_entries_and_a_bounded_number(
    ended: dict[str, float], sessions: list[str], ts: float
) -> None:
    out = with_ended(ended, sessions, ts)
    assert len(out) <= ENDED_KEEP
    assert all(ts - t < ENDED_KEEP_S for t in out.values())
    kept = {sid: t for sid, t in ended.items() if ts - t < ENDED_KEEP_S}
    for sid, t in out.items():
        assert t == kept.get(sid, ts)  # an entry already there keeps its first time
    if len(kept) + len(set(sessions) - set(kept)) <= ENDED_KEEP:
        assert set(out) == set(kept) | set(sessions)
    else:  # the newest are kept
        dropped = (set(kept) | set(sessions)) - set(out)
        assert max({**kept, **dict.fromkeys(set(sessions) - set(kept), ts)}[s] for s in dropped) <= min(
            out.values()
        )


# --- a second factor from before a device reset --------------------------------------------------------


def _enrol(feed: Feed, ts: datetime, actor: str = "E1", session: str = "S-own", device: str = "PDA-1") -> str:
    return feed.one(ts, actor, "auth.device_bound", session=session, device=device, outcome="allow")[0]


def _step_up(
    feed: Feed, ts: datetime, session: str, device: str = "PDA-1", actor: str = "E1"
) -> tuple[str, set[str]]:
    action, _, reasons = feed.one(ts, actor, "auth.step_up", session=session, device=device, outcome="allow")
    return action, codes(reasons)


def test_a_step_up_before_any_enrolment_after_a_reset_locks(state: RiskState) -> None:
    """The reset unbound every device: no seed is left to answer a step-up until one is enrolled.
    One that answers was put back (a device row restored from a DBA's copy)."""
    feed = Feed(RiskEngine(state=state))
    feed.warm()
    assert _enrol(feed, at(4, 8)) == "allow"
    assert _step_up(feed, at(4, 8, 5), "S-own") == ("allow", set())  # before the reset: the owner
    assert _officer(feed, at(4, 9), "devices.reset:E1:INC-7") == "allow"
    assert _use(feed, at(4, 10), session="S-thief")[0] == "step_up"  # the old phone is new again
    assert _step_up(feed, at(4, 10, 1), "S-thief") == ("lock", {"seed_from_before_reset"})
    assert feed.engine.is_locked("E1")
    alert = feed.sink.alerts[-1]
    assert alert.action == "lock" and datetime.fromisoformat(alert.evidence["devices_reset_at"]) == at(4, 9)


def test_after_a_reset_the_owner_enrols_and_steps_up(state: RiskState) -> None:
    feed = Feed(RiskEngine(state=state))  # not warmed: a new phone is not doubted yet
    assert _enrol(feed, at(0, 8)) == "allow"
    assert _officer(feed, at(0, 9), "devices.reset:E1:INC-7") == "allow"
    assert _enrol(feed, at(0, 10), session="S-new", device="PHONE-NEW") == "allow"
    assert _step_up(feed, at(0, 11), "S-new", device="PHONE-NEW") == ("allow", set())
    assert not feed.engine.is_locked("E1")


def test_without_a_reset_step_ups_are_as_before(feed: Feed) -> None:
    """Accounts never reset, and state from before the rule (no enrolment recorded), are untouched."""
    feed.warm()
    assert _step_up(feed, at(4, 9), "S-own") == ("allow", set())


@pytest.mark.redis
def test_an_enrolment_outlives_a_stale_copy_saved_by_another_worker(redis_state: RedisState) -> None:
    feed = Feed(RiskEngine(state=redis_state))
    assert _officer(feed, at(0, 9), "devices.reset:E1:INC-7") == "allow"
    stale = redis_state.load("E1")
    assert _enrol(feed, at(0, 10), session="S-new", device="PHONE-NEW") == "allow"
    redis_state.save(stale)  # saved without the enrolment
    assert _step_up(feed, at(0, 11), "S-new", device="PHONE-NEW") == ("allow", set())


def test_a_request_in_flight_when_an_officer_revoked_its_session_is_refused_not_a_comeback(
    state: RiskState,
) -> None:
    # An officer signs an employee out while their reveals are in flight: those judged after the
    # revocation was recorded are refused, and the account is not locked (the race review: 7 of 30
    # in-flight reveals locked an account the officer had only signed out).
    feed = Feed(RiskEngine(state=state))
    feed.warm()
    assert _use(feed, at(4, 9))[0] == "allow"
    assert _officer(feed, at(4, 10), "sessions.revoke:E1:INC-1") == "allow"
    assert _use(feed, at(4, 10, 0, 0.2)) == ("deny", {"session_ended"})
    assert _use(feed, at(4, 10, 0, 4)) == ("deny", {"session_ended"})
    assert not feed.engine.is_locked("E1") and not [a for a in feed.sink.alerts if a.action == "lock"]
    # Minutes later it is no request in flight: the row was put back.
    assert _use(feed, at(4, 10, 2)) == ("lock", {"ended_session"})
