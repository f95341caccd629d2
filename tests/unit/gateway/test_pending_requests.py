"""One requester holds at most ``PENDING_PER_REQUESTER`` four-eyes requests waiting for a decision.

A red team with a rented outlet manager's account filed 60 export requests in a few seconds (201
each, no alert): the officers' queue (``GET /v1/approvals``, oldest first, 100 at most, read from
the oldest 1,000 pending rows) then showed nothing but them, a genuine request filed later was
out of sight, and every one was another chance of a tired officer approving a whole outlet's
export. A further request is now refused (409, recorded as a deny, which risk control counts)
until one is decided or expires.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from courierguard.gateway.service import PENDING_PER_REQUESTER

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
