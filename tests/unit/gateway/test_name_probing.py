"""Search by name behind the real risk engine: a miss is a probe, as a search by phone's is.

A penetration test unmasked recipients' names with an agent's account: the masked row shows the
surname (``吕*``), the name search is an exact match through the blind index, and a search that
finds nothing counted against no budget. 85 searches (the common one-character given names), with
the cursor just before the target waybill and a page of one, named the recipient of a parcel the
agent had no ticket for; 83 misses cost nothing and the two hits two masked rows. A name search
that misses, or whose hits no task follows up, now counts against the same probe budget as a
search by phone: 429 over it, a step-up further on, a lock far beyond; every refusal on the trail.
"""

from __future__ import annotations

import logging

import pytest

from .conftest import RECIPIENT_NAME, World

# Guesses at the given name behind 欧阳** (the test company holds none of these names).
GUESSES = [f"欧阳{a}{b}" for a in "伟芳敏静丽强磊军" for b in "洋勇艳杰娟涛明超"][:60]


def test_guessing_a_masked_name_by_search_is_throttled_stepped_up_then_locked(
    engine_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world = engine_world
    assert RECIPIENT_NAME not in GUESSES
    s1 = world.login("S1")
    caplog.set_level(logging.DEBUG)
    answers = []
    bodies = []
    for name in GUESSES:
        r = world.client.post("/v1/waybills/search", json={"name": name}, headers=s1)
        answers.append((r.status_code, r.json().get("reason") if r.status_code != 200 else "ok"))
        bodies.append(r.text)
        if r.status_code == 401:
            break
    assert answers[:12] == [(200, "ok")] * 12
    assert answers[12][0] == 429
    assert answers[24] == (403, "step_up_required")
    assert answers[48] == (403, "risk_locked") and answers[49][0] == 401

    searches = [
        e for e in world.access_events() if e["actor"]["id"] == "S1" and e["action"] == "waybill.search"
    ]
    assert len(searches) == 49
    assert all(e["query"]["kind"] == "by_name" and e["query"]["result_count"] == 0 for e in searches)
    assert searches[12]["outcome"]["reason"] == "risk:throttle:name_probing"
    alerts = world.deployment.alerts.fetch("S1", tenant=world.tenant)
    assert [a["action"] for a in alerts] == ["throttle", "step_up", "lock"]
    assert all("name_probing" in {x["code"] for x in a["reasons"]} for a in alerts)
    # The guessed names appear nowhere: not in answers, the trail, alerts or logs.
    seen = " ".join(bodies) + repr(world.access_events()) + repr(alerts) + caplog.text
    assert not any(name in seen for name in GUESSES)


def test_an_agents_search_by_name_that_finds_a_customer_is_served(engine_world: World) -> None:
    world = engine_world
    s1 = world.login("S1")
    for _ in range(5):
        r = world.client.post("/v1/waybills/search", json={"name": RECIPIENT_NAME}, headers=s1)
        assert r.status_code == 200 and r.json()["items"], r.text
    assert not world.deployment.alerts.fetch("S1", tenant=world.tenant)
