"""A number that is no waybill: refused with a 404, and recorded and scored first.

Unrecorded, 404 against 403 told an insider which numbers exist without a trace on the trail, and
risk control never saw the guessing."""

from __future__ import annotations

from collections import Counter

from .conftest import World

UNKNOWN = [f"YT99{i:011d}" for i in range(60)]


def test_a_number_that_is_no_waybill_is_a_recorded_refusal(world: World) -> None:
    c1 = world.login("C1")
    r = world.client.get(f"/v1/waybills/{UNKNOWN[0]}", headers=c1)
    assert r.status_code == 404 and r.json()["reason"] == "not_found", r.text
    body = {"fields": ["recipient.phone"], "purpose": "delivery_contact"}
    r = world.client.post(f"/v1/waybills/{UNKNOWN[1]}/reveal", json=body, headers=c1)
    assert r.status_code == 404, r.text
    refused = [
        e for e in world.access_events() if e["actor"]["id"] == "C1" and e["outcome"]["decision"] == "deny"
    ]
    assert [(e["action"], e["resource"], e["purpose"], e["outcome"]["reason"]) for e in refused] == [
        ("waybill.view", {"type": "waybill", "id": UNKNOWN[0]}, "waybill.unknown", "guard:not_found"),
        ("waybill.reveal", {"type": "waybill", "id": UNKNOWN[1]}, "waybill.unknown", "guard:not_found"),
    ]
    assert "fields" not in refused[1]


def test_guessing_numbers_is_stopped_by_risk_control(engine_world: World) -> None:
    """With the real engine: a courier walking through numbers that do not exist is not answered
    404 for ever."""
    c1 = engine_world.login("C1")
    statuses = Counter(
        engine_world.client.get(f"/v1/waybills/{number}", headers=c1).status_code for number in UNKNOWN
    )
    # A handful of 404s (a mistyped number or two is no attack), then refusals.
    assert statuses[404] <= 10 and set(statuses) - {404} <= {401, 403, 429}, statuses
