"""A row forged into the audit trail (the audit review's D5) stops the gateway the way an audit log
that cannot be written does: every request that needs an audit record is answered 503
``audit_unavailable`` and serves nothing, until the row is dealt with."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from courierguard.audit import EntryKind, encode_entry, leaf_hash
from courierguard.audit.models import canonical_json

from .conftest import RECIPIENT_PHONE, World

W1 = "YT0000000000001"


def _reveal(world: World, headers: dict[str, str]) -> httpx.Response:
    return world.client.post(
        f"/v1/waybills/{W1}/reveal",
        json={"fields": ["recipient.phone"], "purpose": "delivery_contact"},
        headers=headers,
    )


def test_a_forged_audit_row_makes_the_gateway_fail_closed(world: World) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    c1 = world.login("C1")
    engine = world.deployment.core.audit_engine
    with engine.begin() as conn:  # a DBA's INSERT at the next index: well formed, but no MAC
        seq = int(conn.execute(text("SELECT max(seq) FROM audit_entries")).scalar_one()) + 1
        entry = encode_entry(seq, 0, EntryKind.ACCESS, canonical_json({"actor": {"id": "C9"}}))
        conn.execute(
            text(
                "INSERT INTO audit_entries (seq, ts_us, kind, entry, leaf_hash) VALUES (:s, 0, 'access', :e, :h)"
            ),
            {"s": seq, "e": entry, "h": leaf_hash(entry)},
        )
    try:
        r = _reveal(world, c1)
        assert r.status_code == 503 and r.json()["reason"] == "audit_unavailable", r.text
        assert RECIPIENT_PHONE not in r.text
        r = world.client.get(f"/v1/waybills/{W1}", headers=c1)
        assert r.status_code == 503 and r.json()["reason"] == "audit_unavailable"
    finally:  # the PostgreSQL database is the session's: leave it as found
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_entries WHERE seq = :s"), {"s": seq})
    r = _reveal(world, c1)
    assert r.status_code == 200, r.text
