"""The coroutine request path: ``Guard.reveal_async``/``view_async`` decide, record and serve like the
blocking methods; database work runs where ``inline_database`` says; a failed record serves nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from courierguard.audit import AuditQueries, SqlAuditLog
from courierguard.domain import EmployeeStatus
from courierguard.errors import AccessDenied, AuditUnavailable, InvalidInput, StepUpRequired, Throttled
from courierguard.events import AccessEvent, Outcome, PiiField, RiskAction
from courierguard.gateway.service import Caller, Guard, last_receipt
from courierguard.policy import Principal

from .conftest import RECIPIENT_NAME, RECIPIENT_PHONE, SENDER_PHONE, STAFF, World

W1 = "YT0000000000001"
W2 = "YT0000000000002"
PHONE = [PiiField.RECIPIENT_PHONE]


def _caller(employee: str) -> Caller:
    role, unit = STAFF[employee]
    return Caller(Principal(employee, role, unit, EmployeeStatus.ACTIVE), f"sess-{employee}", "dev-1")


def _without_id(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "id"}


def _reveals(world: World) -> list[dict[str, Any]]:
    return [e for e in world.access_events() if e["action"] == "waybill.reveal"]


def _views(world: World) -> list[dict[str, Any]]:
    return [e for e in world.access_events() if e["action"] == "waybill.view"]


class Calls:
    """Wraps a method: counts calls and records the thread each ran on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
        self.threads: list[int] = []
        original: Callable[..., Any] = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.threads.append(threading.get_ident())
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    @property
    def count(self) -> int:
        return len(self.threads)


def test_reveal_async_gives_the_same_answer_and_record_as_reveal(world: World) -> None:
    guard = world.deployment.guard
    world.step(W1, "out_for_delivery", assignee="C1")
    c1 = _caller("C1")
    fields = [PiiField.RECIPIENT_PHONE, PiiField.RECIPIENT_NAME]
    blocking = guard.reveal(c1, W1, fields, "delivery_contact")

    async def main() -> tuple[dict[PiiField, str], tuple[int, str] | None]:
        clear = await guard.reveal_async(c1, W1, fields, "delivery_contact")
        return clear, last_receipt.get()

    awaited, receipt = asyncio.run(main())
    assert (
        awaited
        == blocking
        == {
            PiiField.RECIPIENT_PHONE: "+86" + RECIPIENT_PHONE,
            PiiField.RECIPIENT_NAME: RECIPIENT_NAME,
        }
    )
    events = _reveals(world)
    assert len(events) == 2
    assert _without_id(events[0]) == _without_id(events[1])
    assert events[1]["outcome"]["decision"] == "allow" and events[1]["fields"] == [f.value for f in fields]
    # The receipt names the durable entry of this very access.
    assert receipt is not None
    index, event_id = receipt
    assert event_id == events[1]["id"]
    entry = AuditQueries(world.deployment.core.audit_engine).entry(index)
    assert entry.body is not None and entry.body["id"] == event_id


@pytest.mark.parametrize("employee", ["K1", "H1"])
def test_view_async_gives_the_same_answer_and_record_as_view(world: World, employee: str) -> None:
    guard = world.deployment.guard
    who = _caller(employee)
    blocking = guard.view(who, W1)
    awaited = asyncio.run(guard.view_async(who, W1))
    assert awaited == blocking
    if employee == "H1":  # hub operators get routing data only
        assert awaited.sender is None and awaited.recipient is None
    else:
        assert awaited.recipient is not None and RECIPIENT_PHONE not in str(awaited)
    events = [e for e in _views(world) if e["actor"]["id"] == employee]
    assert len(events) == 2 and _without_id(events[0]) == _without_id(events[1])
    assert events[1]["outcome"]["decision"] == "allow"


def test_denied_async_reveal_is_recorded_and_reads_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard = world.deployment.guard
    world.step(W1, "out_for_delivery", assignee="C1")
    reads = Calls(monkeypatch, guard.vault, "_open")
    with pytest.raises(AccessDenied) as denied:
        asyncio.run(guard.reveal_async(_caller("C2"), W1, PHONE, "delivery_contact"))
    assert denied.value.reason == "no_task"
    with pytest.raises(AccessDenied) as blocking:
        guard.reveal(_caller("C2"), W1, PHONE, "delivery_contact")
    assert blocking.value.reason == "no_task"
    assert reads.count == 0
    events = _reveals(world)
    assert len(events) == 2 and _without_id(events[0]) == _without_id(events[1])
    event = events[1]
    assert event["actor"]["id"] == "C2" and event["outcome"]["decision"] == "deny"
    assert event["outcome"]["reason"].startswith("policy:") and "fields" not in event
    # The denied attempt was shown to the risk hook too.
    assert any(
        e.actor.id == "C2" and e.outcome is not None and e.outcome.decision is Outcome.DENY
        for e in world.risk.seen
    )


@pytest.mark.parametrize("inline", [True, False])
def test_database_work_runs_where_inline_database_says(
    world: World, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    guard = world.deployment.guard
    world.step(W1, "out_for_delivery", assignee="C1")
    monkeypatch.setattr(guard, "inline_database", inline)
    decide = Calls(monkeypatch, guard, "reveal_verdict")
    view = Calls(monkeypatch, guard, "view_verdict")
    reads = Calls(monkeypatch, guard.vault, "_open")
    masks = Calls(monkeypatch, guard.vault, "masked")

    async def main() -> tuple[int, dict[PiiField, str]]:
        clear = await guard.reveal_async(_caller("C1"), W1, PHONE, "delivery_contact")
        await guard.view_async(_caller("K1"), W1)
        return threading.get_ident(), clear

    loop_thread, clear = asyncio.run(main())
    assert clear == {PiiField.RECIPIENT_PHONE: "+86" + RECIPIENT_PHONE}
    ran_on = decide.threads + view.threads + reads.threads + masks.threads
    assert len(ran_on) == 4
    if inline:
        assert ran_on == [loop_thread] * 4
    else:
        assert loop_thread not in ran_on


def test_with_its_rows_in_hand_a_networked_request_concludes_on_the_loop(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP path on PostgreSQL: the decision runs in a worker thread (it may wait on the
    network: the session read, a shared risk store); decrypting or masking rows already read
    needs no thread hop. A lock writes to the database, so that conclusion goes to a thread."""
    guard = world.deployment.guard
    guard.inline_database = False
    world.step(W1, "out_for_delivery", assignee="C1")
    session = world.deployment.tokens.verify(world.login("C1")["Authorization"].split(" ", 1)[1]).session_id
    decide = Calls(monkeypatch, guard, "reveal_verdict")
    view = Calls(monkeypatch, guard, "view_verdict")
    opened = Calls(monkeypatch, guard.vault, "_open")
    masked = Calls(monkeypatch, guard.vault, "masked_from_rows")
    locks = Calls(monkeypatch, guard, "_lock")

    def read(parties: Any) -> tuple[Caller, Any]:
        return guard.employee_caller_for("C1", session, W1, device_id="dev-1", parties=parties)

    async def main() -> int:
        caller, sealed = read("sealed")
        assert await guard.reveal_async(caller, W1, PHONE, "delivery_contact", read=sealed)
        caller, rows = read("masked")
        assert (await guard.view_async(caller, W1, read=rows)).waybill.number == W1
        world.risk.script["C1"] = RiskAction.LOCK
        caller, sealed = read("sealed")
        with pytest.raises(AccessDenied):
            await guard.reveal_async(caller, W1, PHONE, "delivery_contact", read=sealed)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert decide.count == 2 and view.count == 1
    assert loop_thread not in decide.threads + view.threads
    assert opened.threads == [loop_thread] and masked.threads == [loop_thread]
    assert locks.count == 1 and locks.threads[0] != loop_thread


def test_an_http_read_on_a_networked_database_makes_one_thread_hop(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Session, facts and decision in one offloaded call: one hop per reveal or view, where a
    hop for the session, one for the decision and one for the conclusion cost a third of the
    worker's CPU on PostgreSQL."""
    guard = world.deployment.guard
    guard.inline_database = False
    world.step(W1, "out_for_delivery", assignee="C1")
    headers = world.login("C1")
    hops: list[str] = []
    original = asyncio.to_thread

    async def to_thread(work: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(work, "__qualname__", repr(work)))
        return await original(work, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    body = {"fields": ["recipient.phone"], "purpose": "delivery_contact"}
    r = world.client.post(f"/v1/waybills/{W1}/reveal", json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["fields"] == {"recipient.phone": "+86" + RECIPIENT_PHONE}
    assert len(hops) == 1
    r = world.client.get(f"/v1/waybills/{W1}", headers=headers)
    assert r.status_code == 200, r.text
    assert len(hops) == 2
    assert [e["action"] for e in world.access_events()[-2:]] == ["waybill.reveal", "waybill.view"]
    # Refused in the same single call: the session check runs first, in the worker thread.
    r = world.client.get(f"/v1/waybills/{W1}", headers={**headers, "Authorization": "Bearer nope"})
    assert r.status_code == 401 and len(hops) == 3


def test_world_resolves_inline_database_from_the_url(world: World) -> None:
    guard = world.deployment.guard
    sqlite = guard.settings.resolved_database_url.startswith("sqlite")
    assert guard.inline_database is sqlite


@pytest.mark.parametrize("inline", [True, False])
def test_offload_returns_and_raises_like_the_work(world: World, inline: bool) -> None:
    guard: Guard = world.deployment.guard
    guard.inline_database = inline

    def work(a: int, b: int) -> tuple[int, int]:
        return a + b, threading.get_ident()

    def broken() -> None:
        raise InvalidInput("x", "bad")

    async def main() -> tuple[int, int, int]:
        total, thread = await guard.offload(work, 2, 3)
        with pytest.raises(InvalidInput):
            await guard.offload(broken)
        return total, thread, threading.get_ident()

    total, thread, loop_thread = asyncio.run(main())
    assert total == 5
    assert (thread == loop_thread) is inline


@pytest.mark.parametrize("inline", [True, False])
def test_async_reveal_fails_closed_when_the_commit_fails(
    world: World, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    guard = world.deployment.guard
    world.step(W1, "out_for_delivery", assignee="C1")
    guard.inline_database = inline
    audit = guard.audit
    assert isinstance(audit, SqlAuditLog)
    before = audit.size
    reads = Calls(monkeypatch, guard.vault, "_open")
    masks = Calls(monkeypatch, guard.vault, "masked")

    def broken(batch: list[Any], *, force_head: bool = False) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(audit, "_write", broken)
    with pytest.raises(AuditUnavailable):
        asyncio.run(guard.reveal_async(_caller("C1"), W1, PHONE, "delivery_contact"))
    with pytest.raises(AuditUnavailable):
        asyncio.run(guard.view_async(_caller("K1"), W1))
    assert reads.count == 0 and masks.count == 0
    assert audit.size == before
    monkeypatch.setattr(audit, "_write", type(audit)._write.__get__(audit))
    assert asyncio.run(guard.reveal_async(_caller("C1"), W1, PHONE, "delivery_contact"))
    assert reads.count == 1


def test_a_reveal_with_its_sealed_read_decrypts_only_after_the_record(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP reveal's path: ciphertext read with the session, opened once the record is durable,
    and no statement of the vault's own."""
    guard = world.deployment.guard
    world.step(W1, "out_for_delivery", assignee="C1")
    headers = world.login("C1")
    session = world.deployment.tokens.verify(headers["Authorization"].split(" ", 1)[1]).session_id
    audit = guard.audit
    assert isinstance(audit, SqlAuditLog)
    opened = Calls(monkeypatch, guard.vault, "_open")
    own_reads = Calls(monkeypatch, guard.vault, "reveal")

    def read_for(employee: str, number: str) -> tuple[Caller, Any]:
        return guard.employee_caller_for(employee, session, number, device_id="dev-1", parties="sealed")

    def broken(batch: list[Any], *, force_head: bool = False) -> None:
        raise RuntimeError("disk full")

    caller, read = read_for("C1", W1)
    monkeypatch.setattr(audit, "_write", broken)
    with pytest.raises(AuditUnavailable):
        asyncio.run(guard.reveal_async(caller, W1, PHONE, "delivery_contact", read=read))
    assert opened.count == 0
    monkeypatch.setattr(audit, "_write", type(audit)._write.__get__(audit))
    clear = asyncio.run(guard.reveal_async(caller, W1, PHONE, "delivery_contact", read=read))
    assert clear == {PiiField.RECIPIENT_PHONE: "+86" + RECIPIENT_PHONE}
    assert opened.count == 1 and own_reads.count == 0
    # Not this courier's delivery: recorded, refused, nothing opened.
    caller, read = read_for("C1", W2)
    with pytest.raises(AccessDenied):
        asyncio.run(guard.reveal_async(caller, W2, PHONE, "delivery_contact", read=read))
    assert opened.count == 1
    # A read made for another waybill is not used for this one: the vault reads it itself.
    caller, other = read_for("C1", W2)
    assert asyncio.run(guard.reveal_async(caller, W1, PHONE, "delivery_contact", read=other)) == clear
    assert own_reads.count == 1


def test_async_reveal_turns_any_append_error_into_audit_unavailable(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard = world.deployment.guard
    world.step(W1, "out_for_delivery", assignee="C1")
    reads = Calls(monkeypatch, guard.vault, "_open")

    async def broken(event: AccessEvent) -> int:
        raise OSError("connection reset")

    monkeypatch.setattr(guard.audit, "append_event_async", broken)

    async def main() -> tuple[int, str] | None:
        last_receipt.set(None)  # earlier blocking calls on this thread leave theirs in the context
        with pytest.raises(AuditUnavailable):
            await guard.reveal_async(_caller("C1"), W1, PHONE, "delivery_contact")
        return last_receipt.get()

    assert asyncio.run(main()) is None  # no receipt for an access that was not recorded
    assert reads.count == 0


@pytest.mark.parametrize(
    ("action", "error", "decision"),
    [
        (RiskAction.THROTTLE, Throttled, "deny"),
        (RiskAction.STEP_UP, StepUpRequired, "challenge"),
        (RiskAction.DENY, AccessDenied, "deny"),
    ],
)
def test_risk_refusals_are_recorded_before_raising(
    world: World, monkeypatch: pytest.MonkeyPatch, action: RiskAction, error: type[Exception], decision: str
) -> None:
    guard = world.deployment.guard
    world.step(W1, "out_for_delivery", assignee="C1")
    reads = Calls(monkeypatch, guard.vault, "_open")
    world.risk.script["C1"] = action
    with pytest.raises(error):
        asyncio.run(guard.reveal_async(_caller("C1"), W1, PHONE, "delivery_contact"))
    assert reads.count == 0
    event = _reveals(world)[-1]
    assert event["outcome"]["decision"] == decision
    assert event["outcome"]["reason"].startswith(f"risk:{action.value}:scripted")
    assert "fields" not in event


@pytest.mark.parametrize("inline", [True, False])
def test_risk_lock_on_async_reveal_suspends_the_account(
    world: World, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    guard = world.deployment.guard
    guard.inline_database = inline
    world.step(W1, "out_for_delivery", assignee="C1")
    reads = Calls(monkeypatch, guard.vault, "_open")
    locked: list[str] = []
    guard.on_lock.append(locked.append)
    world.risk.script["C1"] = RiskAction.LOCK
    with pytest.raises(AccessDenied) as refused:
        asyncio.run(guard.reveal_async(_caller("C1"), W1, PHONE, "delivery_contact"))
    assert refused.value.reason == "risk_locked"
    assert reads.count == 0 and locked == ["C1"]
    assert guard.company.employee("C1").status is EmployeeStatus.SUSPENDED
    assert _reveals(world)[-1]["outcome"]["decision"] == "deny"


def test_invalid_async_reveal_records_nothing(world: World) -> None:
    guard = world.deployment.guard
    before = len(world.access_events())
    with pytest.raises(InvalidInput):
        asyncio.run(guard.reveal_async(_caller("C1"), W1, [], "delivery_contact"))
    with pytest.raises(InvalidInput):
        asyncio.run(guard.reveal_async(_caller("C1"), W1, PHONE, "   "))
    assert len(world.access_events()) == before


def test_concurrent_async_reveals_each_get_their_own_receipt(world: World) -> None:
    guard = world.deployment.guard
    world.step(W1, "out_for_delivery", assignee="C1")
    world.step(W2, "awaiting_pickup", assignee="C2")

    async def one(i: int) -> tuple[str, tuple[int, str] | None]:
        if i % 2:
            clear = await guard.reveal_async(_caller("C1"), W1, PHONE, "delivery_contact")
            value = clear[PiiField.RECIPIENT_PHONE]
        else:
            clear = await guard.reveal_async(_caller("C2"), W2, [PiiField.SENDER_PHONE], "pickup_contact")
            value = clear[PiiField.SENDER_PHONE]
        return value, last_receipt.get()

    async def main() -> list[tuple[str, tuple[int, str] | None]]:
        return list(await asyncio.gather(*(one(i) for i in range(20))))

    results = asyncio.run(main())
    assert [v for v, _ in results] == [
        "+86" + RECIPIENT_PHONE if i % 2 else "+86" + SENDER_PHONE for i in range(20)
    ]
    receipts = [r for _, r in results]
    assert all(r is not None for r in receipts)
    indices = [r[0] for r in receipts if r is not None]
    assert len(set(indices)) == 20
    queries = AuditQueries(world.deployment.core.audit_engine)
    for i, receipt in enumerate(receipts):
        assert receipt is not None
        body = queries.entry(receipt[0]).body
        assert body is not None and body["id"] == receipt[1]
        assert body["actor"]["id"] == ("C1" if i % 2 else "C2")
