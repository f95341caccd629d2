"""One requester holds at most ``PENDING_PER_REQUESTER`` four-eyes requests waiting for a decision.

A red team with a rented outlet manager's account filed 60 export requests in a few seconds (201
each, no alert): the officers' queue (``GET /v1/approvals``, oldest first, 100 at most, read from
the oldest 1,000 pending rows) then showed nothing but them, a genuine request filed later was
out of sight, and every one was another chance of a tired officer approving a whole outlet's
export. A further request is now refused (409, recorded as a deny, which risk control counts)
until one is decided or expires.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from courierguard.gateway.service import PENDING_PER_REQUESTER, Guard

from .conftest import World

EXPORT = {"kind": "export", "justification": "quarterly claims reconciliation", "fields": ["recipient.name"],
          "org_unit": "OUT-BJ-01"}  # fmt: skip
REVEAL = {"kind": "reveal", "justification": "police request 2026-117 about this parcel",
          "fields": ["recipient.phone"], "waybill": "YT0000000000001"}  # fmt: skip


def ask(world: World, who: str, body: dict[str, Any]) -> Any:
    return world.client.post("/v1/approvals", json=body, headers=world.login(who))


def test_a_requester_cannot_flood_the_officers_queue(world: World) -> None:
    made = [ask(world, "M1", EXPORT) for _ in range(PENDING_PER_REQUESTER)]
    assert [r.status_code for r in made] == [201] * PENDING_PER_REQUESTER
    refused = ask(world, "M1", EXPORT)
    assert refused.status_code == 409, refused.text
    assert refused.json()["reason"] == "conflict" and "waiting for a decision" in refused.json()["detail"]
    last = [e for e in world.access_events() if e["actor"]["id"] == "M1"][-1]
    assert last["outcome"] == {"decision": "deny", "reason": "guard:conflict"}
    assert last["purpose"] == "approval.request"

    # Another requester's request is unaffected, and the officer sees it.
    other = ask(world, "X1", REVEAL)
    assert other.status_code == 201, other.text
    queue = world.client.get("/v1/approvals", headers=world.login("X2")).json()["approvals"]
    assert other.json()["id"] in {a["id"] for a in queue}
    assert len(queue) == PENDING_PER_REQUESTER + 1

    # A decision frees a place; so does a request expiring undecided.
    x1 = world.login("X1")
    assert world.client.post(f"/v1/approvals/{made[0].json()['id']}/reject", headers=x1).status_code == 200
    assert ask(world, "M1", EXPORT).status_code == 201
    assert ask(world, "M1", EXPORT).status_code == 409
    world.clock.advance(timedelta(hours=73))
    assert ask(world, "M1", EXPORT).status_code == 201


def test_requests_made_at_once_do_not_pass_the_limit_together(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests sent at once all passed the early count (30 of 30 stored on two workers against
    PostgreSQL); the count is made again, under a lock on the requester, where the row is stored.
    Here the early check sees nothing, as each of thirty simultaneous requests saw the others."""
    monkeypatch.setattr(Guard, "_room_to_ask", lambda self, caller, kind: None)
    made = [ask(world, "M1", EXPORT) for _ in range(PENDING_PER_REQUESTER + 2)]
    assert [r.status_code for r in made] == [201] * PENDING_PER_REQUESTER + [409] * 2, [r.text for r in made]
    assert made[-1].json()["reason"] == "conflict" and "waiting for a decision" in made[-1].json()["detail"]
    # The allow recorded before the store is followed by the refusal.
    last = [e for e in world.access_events() if e["actor"]["id"] == "M1"][-2:]
    assert [e["outcome"]["decision"] for e in last] == ["allow", "deny"]
    assert last[-1]["outcome"]["reason"] == "guard:conflict" and last[-1]["purpose"] == "approval.request"
    role = {"kind": "role", "justification": "new regional security lead", "employee": "C2",
            "role": "security_officer"}  # fmt: skip
    for _ in range(PENDING_PER_REQUESTER):
        ask(world, "A1", role)
    assert ask(world, "A1", role).status_code == 409


def test_thirty_requests_at_once_store_at_most_the_limit(world: World) -> None:
    headers = world.login("M1")
    guard = world.deployment.guard
    barrier = threading.Barrier(30)

    def one() -> int:
        barrier.wait()
        return world.client.post("/v1/approvals", json=EXPORT, headers=headers).status_code

    with ThreadPoolExecutor(30) as pool:
        codes = list(pool.map(lambda _: one(), range(30)))
    assert codes.count(201) == PENDING_PER_REQUESTER, codes
    with guard.vault.engine.connect() as conn:
        assert guard._waiting(conn, "M1") == PENDING_PER_REQUESTER
