"""A data subject's request ("who accessed my data, when and why") answered from the trail: every
entry that touched their parcels is found by their phone or waybill, including those that say why
nothing was served, and the officers' own look-ups of them."""

from __future__ import annotations

from typing import Any

from .conftest import World

W1 = "YT0000000000001"


def _search(world: World, headers: dict[str, str], body: dict[str, Any]) -> list[dict[str, Any]]:
    r = world.client.post("/v1/audit/search", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return [rec["body"] for rec in r.json()["records"]]


def test_a_reveal_that_served_nothing_is_found_with_its_reason(world: World) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    c1, x1 = world.login("C1"), world.login("X1")
    world.deployment.guard.vault.shred_month("2026-11")
    r = world.client.post(
        f"/v1/waybills/{W1}/reveal", json={"fields": ["recipient.phone"], "purpose": "delivery_contact"}, headers=c1
    )
    assert r.status_code == 409
    found = _search(world, x1, {"waybills": [W1]})
    reveal = next(b for b in found if b.get("action") == "waybill.reveal")
    # The reveal's own entry says allow (it was decided before the vault answered): the answer to
    # the data subject must carry what followed, or it reads as if their phone was handed out.
    failure = [b for b in found if b.get("what") == "vault.failure"]
    assert failure and failure[-1]["event"] == reveal["id"] and failure[-1]["failure"] == "shredded"

