"""A data subject's request ("who accessed my data, when and why") answered from the trail: every
entry that touched their parcels is found by their phone or waybill, including those that say why
nothing was served, and the officers' own look-ups of them."""

from __future__ import annotations

from typing import Any

from .conftest import RECIPIENT_PHONE, World, approved_export

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
        f"/v1/waybills/{W1}/reveal",
        json={"fields": ["recipient.phone"], "purpose": "delivery_contact"},
        headers=c1,
    )
    assert r.status_code == 409
    found = _search(world, x1, {"waybills": [W1]})
    reveal = next(b for b in found if b.get("action") == "waybill.reveal")
    # The reveal's own entry says allow (it was decided before the vault answered): the answer to
    # the data subject must carry what followed, or it reads as if their phone was handed out.
    failure = [b for b in found if b.get("what") == "vault.failure"]
    assert failure and failure[-1]["event"] == reveal["id"] and failure[-1]["failure"] == "shredded"


def test_an_officers_look_up_of_a_phone_is_found_by_that_phone(world: World) -> None:
    x1, x2 = world.login("X1"), world.login("X2")
    _search(world, x1, {"phone": RECIPIENT_PHONE})
    later = _search(world, x2, {"phone": RECIPIENT_PHONE})
    lookups = [b for b in later if str(b.get("purpose", "")).startswith("audit.search")]
    # X1 went from the phone to the person's parcels (and who handled them): that is an access
    # to their data the data subject and the investigators must see, not "a phone, 5 matches".
    # (X2's own search is recorded before it runs, so it is in its answer too.)
    assert [(b["actor"]["id"], b["query"]["result_count"]) for b in lookups] == [("X1", 5), ("X2", 5)]
    assert sorted(lookups[0]["query"]["result_ids"]) == [f"YT{n:013d}" for n in range(1, 6)]
    assert RECIPIENT_PHONE not in str(lookups)


def test_an_export_after_a_shred_hands_over_what_is_left(world: World) -> None:
    from datetime import UTC, datetime

    from .conftest import RECIPIENT_NAME, record

    old = record(9, created_at=datetime(2026, 10, 20, tzinfo=UTC).isoformat())
    assert world.client.post("/v1/waybills", json={"records": [old]}, headers=world.svc).status_code == 200
    world.deployment.guard.vault.shred_month("2026-10")  # deleted on request, or by retention
    ap, m1 = approved_export(world, ["recipient.name"])
    csv = world.client.get(f"/v1/exports/{ap}/download", headers=m1)
    # One shredded parcel in the unit made every export of it 409 record_unavailable, after the
    # approval was spent and the trail said the rows were handed over: the shredded row has
    # nothing left to give, its cells stay blank, and the rest is exported.
    assert csv.status_code == 200, csv.text
    lines = csv.text.splitlines()
    assert "YT0000000000009," in lines and csv.text.count(RECIPIENT_NAME) == 5


def test_every_parcel_of_a_large_export_is_found_by_its_waybill(world: World) -> None:
    from .conftest import record

    # An export holds up to EXPORT_MAX_ROWS (50,000) rows; its access entry names 10,000 of them.
    for first in range(10, 10_010, 5_000):
        batch = [record(n) for n in range(first, first + 5_000)]
        assert (
            world.client.post("/v1/waybills", json={"records": batch}, headers=world.svc).status_code == 200
        )
    ap, m1 = approved_export(world, ["recipient.name"])
    csv = world.client.get(f"/v1/exports/{ap}/download", headers=m1)
    assert csv.status_code == 200 and len(csv.text.splitlines()) == 1 + 10_005
    for n in (1, 10_009):  # the first row and the last, beyond the access entry's 10,000
        found = _search(world, world.login("X1"), {"waybills": [f"YT{n:013d}"]})
        assert any(ap in str(b.get("purpose", "")) or b.get("approval") == ap for b in found), n


def test_an_officers_request_to_reveal_a_parcel_is_found_by_that_parcel(world: World) -> None:
    x1, x2 = world.login("X1"), world.login("X2")
    body = {"kind": "reveal", "justification": "police request 2026-117 about this parcel",
            "fields": ["recipient.phone"], "waybill": W1}  # fmt: skip
    asked = world.client.post("/v1/approvals", json=body, headers=x1)
    assert asked.status_code == 201, asked.text
    found = _search(world, x2, {"waybills": [W1]})
    assert f"approval.request:{asked.json()['id']}" in [b.get("purpose") for b in found]
