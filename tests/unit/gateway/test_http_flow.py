"""The gateway end to end: need-to-know decisions, recording, four-eyes, sessions, risk responses."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy.exc
import structlog

from courierguard import logging as cg_logging
from courierguard.audit import verify
from courierguard.errors import AuditUnavailable
from courierguard.events import AccessEvent, RiskAction
from courierguard.gateway.http import RevealOut
from courierguard.logging import configure_logging

from .conftest import RECIPIENT_NAME, RECIPIENT_PHONE, SENDER_NAME, SENDER_PHONE, World

W1 = "YT0000000000001"
W2 = "YT0000000000002"


def reveal(world: World, headers: dict[str, str], number: str = W1, fields: list[str] | None = None,
           purpose: str = "delivery_contact") -> object:  # fmt: skip
    return world.client.post(
        f"/v1/waybills/{number}/reveal",
        json={"fields": fields or ["recipient.phone"], "purpose": purpose},
        headers=headers,
    )


def test_courier_reveals_only_the_waybill_assigned_to_them_for_delivery(world: World) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    c1, c2 = world.login("C1"), world.login("C2")
    r = reveal(world, c1)
    assert r.status_code == 200, r.text
    assert r.json()["fields"]["recipient.phone"] == "+86" + RECIPIENT_PHONE
    denied = reveal(world, c2)
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    assert denied.json()["reason"] == "no_task"
    assert reveal(world, c1, number=W2).status_code == 403  # not assigned to anyone
    assert reveal(world, c1, fields=["sender.phone"]).status_code == 403  # delivery task: recipient only
    events = [e for e in world.access_events() if e["action"] == "waybill.reveal"]
    served = [e for e in events if e["outcome"]["decision"] == "allow"]
    assert (
        len(served) == 1 and served[0]["fields"] == ["recipient.phone"] and served[0]["actor"]["id"] == "C1"
    )
    assert served[0]["resource"]["assignee"] == "C1" and served[0]["purpose"] == "delivery_contact"
    assert all("fields" not in e for e in events if e["outcome"]["decision"] == "deny")
    for e in events:
        AccessEvent.model_validate(e)
    # The served reveal names its durable record, once each.
    assert r.headers.get_list("x-audit-event") == [served[0]["id"]]
    assert len(r.headers.get_list("x-audit-entry")) == 1 and int(r.headers["x-audit-entry"]) >= 0


def test_reveal_answers_as_its_response_model_would(world: World) -> None:
    """The reveal's JSON is encoded by the route, not by FastAPI from ``RevealOut``: the same bytes
    (compact, clear UTF-8 names), the JSON media type, the receipt and the security headers."""
    world.step(W1, "out_for_delivery", assignee="C1")
    r = reveal(world, world.login("C1"), fields=["recipient.name", "recipient.phone"])
    assert r.status_code == 200, r.text
    expected = RevealOut(
        number=W1, fields={"recipient.name": RECIPIENT_NAME, "recipient.phone": "+86" + RECIPIENT_PHONE}
    )
    assert r.content == expected.model_dump_json().encode()
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == str(len(r.content))
    assert r.headers["cache-control"] == "no-store" and r.headers["x-frame-options"] == "DENY"
    assert len(r.headers.get_list("x-audit-event")) == 1 and len(r.headers.get_list("x-audit-entry")) == 1


def test_grace_period_after_sign_off_is_24_hours(world: World) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    world.step(W1, "delivered")
    c1 = world.login("C1")
    world.clock.advance(timedelta(hours=23))
    c1 = world.login("C1")  # the morning's token has expired by now
    assert reveal(world, c1).status_code == 200
    world.clock.advance(timedelta(hours=2))  # 25 hours after sign-off
    c1 = world.login("C1")  # two idle hours ended the session
    assert reveal(world, c1).json()["reason"] == "no_task"


def test_pickup_courier_reveals_sender_contact(world: World) -> None:
    world.step(W2, "awaiting_pickup", assignee="C2")
    c2 = world.login("C2")
    r = reveal(world, c2, number=W2, fields=["sender.phone", "sender.address"], purpose="pickup_contact")
    assert r.status_code == 200, r.text
    assert r.json()["fields"]["sender.address"].startswith("广东省深圳市南山区")
    world.step(W2, "picked_up")
    assert reveal(world, c2, number=W2, fields=["sender.phone"], purpose="pickup_contact").status_code == 403


def test_customer_service_reveals_only_inside_an_open_ticket_they_own(world: World) -> None:
    s1 = world.login("S1")
    assert reveal(world, s1, purpose="ticket").status_code == 403
    r = world.client.post(
        "/v1/cases", json={"id": "T-1", "kind": "ticket", "waybill": W1, "owner": "S1"}, headers=world.svc
    )
    assert r.status_code == 201, r.text
    assert reveal(world, s1, purpose="ticket").status_code == 200
    assert world.client.post("/v1/cases/T-1/close", headers=world.svc).status_code == 200
    assert reveal(world, s1, purpose="ticket").status_code == 403


def test_reveal_needs_a_purpose(world: World) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    c1 = world.login("C1")
    r = world.client.post(
        f"/v1/waybills/{W1}/reveal", json={"fields": ["recipient.phone"], "purpose": "  "}, headers=c1
    )
    assert r.status_code == 422 and r.json()["field"] == "purpose"


def test_masked_view_list_and_search(world: World) -> None:
    k1 = world.login("K1")
    view = world.client.get(f"/v1/waybills/{W1}", headers=k1).json()
    assert view["recipient"] == {"name": "欧阳**", "phone": "186******21", "address": "北京市海淀区****"}
    page = world.client.get(
        "/v1/waybills", params={"org_unit": "OUT-BJ-01", "page_size": 2}, headers=k1
    ).json()
    assert [i["number"] for i in page["items"]] == [W1, W2] and page["next_cursor"] == W2
    page2 = world.client.get(
        "/v1/waybills",
        params={"org_unit": "OUT-BJ-01", "page_size": 2, "cursor": page["next_cursor"]},
        headers=k1,
    ).json()
    assert [i["number"] for i in page2["items"]] == ["YT0000000000003", "YT0000000000004"]
    assert world.client.get("/v1/waybills", params={"org_unit": "OUT-SZ-09"}, headers=k1).status_code == 403
    assert world.client.get("/v1/waybills", params={"org_unit": "HUB-01"}, headers=k1).status_code == 403
    found = world.client.post("/v1/waybills/search", json={"phone": "+86 139-1234-5678"}, headers=k1)
    assert found.status_code == 200 and len(found.json()["items"]) == 5, found.text
    assert SENDER_PHONE not in found.text and SENDER_NAME not in found.text
    listed = next(e for e in world.access_events() if e["action"] == "waybill.list")
    assert listed["query"]["result_ids"] == [W1, W2] and "fields" not in listed


def test_hub_operator_gets_routing_data_only(world: World) -> None:
    h1 = world.login("H1")
    view = world.client.get(f"/v1/waybills/{W1}", headers=h1)
    assert view.status_code == 200
    assert view.json()["sender"] is None and view.json()["recipient"] is None
    assert view.json()["routing_code"] == "755-010-A1"
    assert reveal(world, h1).status_code == 403


def test_bulk_export_needs_a_second_officer_and_downloads_once(world: World) -> None:
    m1, x1, x2 = world.login("M1"), world.login("X1"), world.login("X2")
    body = {"kind": "export", "justification": "quarterly claims reconciliation", "fields": ["recipient.name"],
            "org_unit": "OUT-BJ-01"}  # fmt: skip
    r = world.client.post("/v1/approvals", json=body, headers=m1)
    assert r.status_code == 201, r.text
    ap = r.json()["id"]
    assert world.client.get(f"/v1/exports/{ap}/download", headers=m1).status_code == 403  # not approved yet
    assert world.client.post(f"/v1/approvals/{ap}/approve", headers=m1).status_code == 403  # own request
    assert world.client.post(f"/v1/approvals/{ap}/approve", headers=x1).json()["status"] == "approved"
    assert world.client.get(f"/v1/exports/{ap}/download", headers=x2).status_code == 403  # not the requester
    csv = world.client.get(f"/v1/exports/{ap}/download", headers=m1)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text.count(RECIPIENT_NAME) == 5
    assert world.client.get(f"/v1/exports/{ap}/download", headers=m1).status_code == 409
    export = [e for e in world.access_events() if e["action"] == "waybill.export" and e.get("fields")]
    assert export[0]["query"]["result_count"] == 5


def test_export_link_expires(world: World) -> None:
    m1, x1 = world.login("M1"), world.login("X1")
    body = {"kind": "export", "justification": "quarterly claims reconciliation", "fields": ["recipient.name"],
            "org_unit": "OUT-BJ-01"}  # fmt: skip
    ap = world.client.post("/v1/approvals", json=body, headers=m1).json()["id"]
    world.client.post(f"/v1/approvals/{ap}/approve", headers=x1)
    world.clock.advance(timedelta(minutes=31))
    m1 = world.login("M1")  # 31 idle minutes ended the session too
    assert world.client.get(f"/v1/exports/{ap}/download", headers=m1).json()["reason"] == "four_eyes_required"


def test_officer_reveals_only_through_four_eyes(world: World) -> None:
    x1, x2 = world.login("X1"), world.login("X2")
    assert reveal(world, x1, purpose="investigation").json()["reason"] == "four_eyes_required"
    body = {"kind": "reveal", "justification": "police request 2026-117 about this parcel", "fields": ["recipient.phone"],
            "waybill": W1}  # fmt: skip
    ap = world.client.post("/v1/approvals", json=body, headers=x1).json()["id"]
    world.client.post(f"/v1/approvals/{ap}/approve", headers=x2)
    r = world.client.post(
        f"/v1/waybills/{W1}/reveal",
        json={"fields": ["recipient.phone"], "purpose": "investigation", "approval": ap},
        headers=x1,
    )
    assert r.status_code == 200, r.text
    other = world.client.post(
        f"/v1/waybills/{W2}/reveal",
        json={"fields": ["recipient.phone"], "purpose": "investigation", "approval": ap},
        headers=x1,
    )
    assert other.status_code == 403


def test_logout_and_revocation_take_effect_on_the_next_request(world: World) -> None:
    k1 = world.login("K1")
    assert world.client.get(f"/v1/waybills/{W1}", headers=k1).status_code == 200
    assert world.client.post("/v1/auth/logout", headers=k1).status_code == 204
    assert world.client.get(f"/v1/waybills/{W1}", headers=k1).status_code == 401
    k1b = world.login("K1", device="dev-2")
    a1 = world.login("A1")
    r = world.client.post("/v1/admin/employees/K1/status", json={"status": "left"}, headers=a1)
    assert r.status_code == 200 and r.json()["status"] == "left"
    assert world.client.get(f"/v1/waybills/{W1}", headers=k1b).status_code == 401
    left = [e for e in world.access_events() if e.get("purpose") == "employee.left:K1"]
    assert left and left[0]["action"] == "admin.change"


def test_risk_step_up_then_totp_clears_it(world: World) -> None:
    import pyotp

    world.step(W1, "out_for_delivery", assignee="C1")
    c1 = world.login("C1")
    seed = world.client.post("/v1/auth/devices", headers=c1).json()["totp_seed"]
    world.risk.script["C1"] = RiskAction.STEP_UP
    r = reveal(world, c1)
    assert r.status_code == 403 and r.json()["reason"] == "step_up_required"
    assert RECIPIENT_PHONE not in r.text
    assert world.client.post("/v1/auth/step-up", json={"code": "000000"}, headers=c1).status_code == 401
    world.risk.script.pop("C1")
    code = pyotp.TOTP(seed).at(world.clock.now())
    assert world.client.post("/v1/auth/step-up", json={"code": code}, headers=c1).status_code == 204
    assert reveal(world, c1).status_code == 200
    actions = [e.action.value for e in world.risk.seen if e.actor.id == "C1"]
    assert "auth.step_up_failed" in actions and "auth.step_up" in actions
    challenged = [e for e in world.access_events() if e["outcome"]["decision"] == "challenge"]
    assert challenged and "fields" not in challenged[0]


def test_second_device_binding_needs_a_step_up(world: World) -> None:
    c1 = world.login("C1")
    assert world.client.post("/v1/auth/devices", headers=c1).status_code == 200
    other = world.login("C1", device="renter-phone")
    assert world.client.post("/v1/auth/devices", headers=other).json()["reason"] == "step_up_required"


def test_risk_lock_revokes_sessions_until_an_officer_unlocks(world: World) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    c1 = world.login("C1")
    world.risk.script["C1"] = RiskAction.LOCK
    r = reveal(world, c1)
    assert r.status_code == 403 and r.json()["reason"] == "risk_locked"
    world.risk.script.pop("C1")
    assert reveal(world, c1).status_code == 401  # sessions revoked
    assert world.client.post("/v1/auth/login", json={}, headers=c1).status_code in (401, 403)
    x1 = world.login("X1")
    assert (
        world.client.post("/v1/admin/employees/C1/unlock", json={"ticket": "INC-7"}, headers=x1).json()[
            "status"
        ]
        == "active"
    )
    assert reveal(world, world.login("C1")).status_code == 200


def test_throttle_answers_429_with_retry_after(world: World) -> None:
    k1 = world.login("K1")
    world.risk.script["K1"] = RiskAction.THROTTLE
    r = world.client.get(f"/v1/waybills/{W1}", headers=k1)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_fail_closed_when_the_audit_log_cannot_record(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    c1 = world.login("C1")

    def broken(event: AccessEvent) -> int:
        raise AuditUnavailable("disk full")

    async def broken_async(event: AccessEvent) -> int:
        raise AuditUnavailable("disk full")

    # Both ways of recording: blocking (thread-pool routes) and awaited (the read routes).
    monkeypatch.setattr(world.deployment.guard.audit, "append_event", broken)
    monkeypatch.setattr(world.deployment.guard.audit, "append_event_async", broken_async)
    r = reveal(world, c1)
    assert r.status_code == 503 and r.json()["reason"] == "audit_unavailable"
    assert RECIPIENT_PHONE not in r.text
    r = world.client.get(f"/v1/waybills/{W1}", headers=c1)
    assert r.status_code == 503 and r.json()["reason"] == "audit_unavailable"


def test_ingest_stores_nothing_when_the_audit_log_cannot_record(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .conftest import record

    def broken(*args: object, **kwargs: object) -> int:
        raise AuditUnavailable("disk full")

    monkeypatch.setattr(world.deployment.guard.audit, "append", broken)
    r = world.client.post("/v1/waybills", json={"records": [record(60)]}, headers=world.svc)
    assert r.status_code == 503 and r.json()["reason"] == "audit_unavailable"
    monkeypatch.undo()
    # Nothing was stored: the order system's retry is stored, and recorded, as new.
    r = world.client.post("/v1/waybills", json={"records": [record(60)]}, headers=world.svc)
    assert r.status_code == 200 and r.json()["stored"] == ["YT0000000000060"], r.text


def test_broken_risk_engine_fails_closed(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    c1 = world.login("C1")

    def broken(event: AccessEvent) -> object:
        raise RuntimeError("state store down")

    monkeypatch.setattr(world.risk, "assess", broken)
    r = reveal(world, c1)
    assert r.status_code == 403 and RECIPIENT_PHONE not in r.text
    # ... and the refused attempt is on the trail (with Redis down, nothing was recorded).
    last = world.access_events()[-1]
    assert (last["action"], last["outcome"]) == (
        "waybill.reveal",
        {"decision": "deny", "reason": "risk:unavailable"},
    )
    assert "fields" not in last


@pytest.mark.parametrize(
    "error",
    [
        sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("host db-7 user cg")),
        # The request path's fast reads use the DBAPI connection: the drivers' own errors (the
        # production re-test saw psycopg's AdminShutdown answer 500 with a traceback).
        psycopg.errors.AdminShutdown("terminating connection: host db-7"),
        psycopg.OperationalError(
            'connection to server at "db-7" failed: FATAL: database "cg" does not exist'
        ),
        sqlite3.OperationalError("database is locked (db-7)"),
    ],
    ids=["sqlalchemy", "admin-shutdown", "psycopg", "sqlite"],
)
def test_a_database_that_cannot_be_reached_is_a_503_and_healthz_says_so(
    world: World, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    c1 = world.login("C1")

    def down(*args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(world.deployment.guard.sessions, "caller_with_waybill", down)
    monkeypatch.setattr(world.deployment.core, "check_databases", down)
    r = world.client.get(f"/v1/waybills/{W1}", headers=c1)
    assert r.status_code == 503 and r.json()["reason"] == "database_unavailable", r.text
    assert "db-7" not in r.text and r.headers["retry-after"] == "5"
    r = world.client.get("/healthz")
    assert r.status_code == 503 and r.json()["reason"] == "database_unavailable"


def test_authentication_errors(world: World) -> None:
    assert world.client.get(f"/v1/waybills/{W1}").status_code == 401
    assert (
        world.client.get(
            f"/v1/waybills/{W1}", headers={"Authorization": "Bearer nope", "X-Device-Id": "d"}
        ).status_code
        == 401
    )
    assert (
        world.client.get(f"/v1/waybills/{W1}", headers={"Authorization": "ApiKey cgk_x_y"}).status_code == 401
    )
    # A service account ingests but never reads personal data.
    assert world.client.get(f"/v1/waybills/{W1}", headers=world.svc).status_code == 403
    # An employee cannot ingest.
    k1 = world.login("K1")
    assert world.client.post("/v1/waybills", json={"records": [{}]}, headers=k1).status_code == 403


def test_batch_ingest_reports_bad_records_without_echoing_values(world: World) -> None:
    from .conftest import record

    bad = record(50, recipient={"name": "李四", "phone": "999", "address": {"province": "x"}})
    r = world.client.post(
        "/v1/waybills", json={"records": [record(40), bad, {"number": "nope"}]}, headers=world.svc
    )
    body = r.json()
    assert r.status_code == 200 and body["stored"] == ["YT0000000000040"]
    assert [(f["index"], f["field"]) for f in body["failed"]] == [(1, "recipient.phone"), (2, "number")]
    assert "999" not in r.text and "李四" not in r.text


def test_a_record_that_is_not_an_object_fails_alone(world: World) -> None:
    # A null or a string in a batch of 5,000 (a serialiser's hiccup) must not refuse the other 4,999.
    from .conftest import record

    r = world.client.post(
        "/v1/waybills",
        json={"records": [record(41), None, "13812345678", [1], record(42)]},
        headers=world.svc,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stored"] == ["YT0000000000041", "YT0000000000042"]
    assert [(f["index"], f["field"], f["number"]) for f in body["failed"]] == [
        (1, "record", None), (2, "record", None), (3, "record", None),
    ]  # fmt: skip
    assert "13812345678" not in r.text


def test_validation_problems_do_not_echo_input(world: World) -> None:
    k1 = world.login("K1")
    r = world.client.post("/v1/waybills/search", json={"phone": "1" * 40}, headers=k1)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "1" * 40 not in r.text


@pytest.mark.parametrize(
    ("method", "path", "body", "detail"),
    [
        ("post", "/v1/dev/token", {"employee_id": "\x00"}, "employee_id: must be 1 to 64 letters"),
        (
            "post",
            "/v1/waybills/YT0000000000001/reveal",
            {"fields": ["recipient.phone"], "purpose": "a\x00b"},
            "purpose: must be a purpose code: lowercase letters and _, such as delivery_contact",
        ),
        ("post", "/v1/waybills/search", {"org_unit": "O1\x00"}, "org_unit: must be 1 to 64 letters"),
        (
            "put",
            "/v1/admin/employees/E9",
            {"role": "courier", "org_unit": "\x00"},
            "org_unit: must be 1 to 64",
        ),
    ],
)
def test_nul_characters_are_refused_as_invalid_input(
    world: World, method: str, path: str, body: Any, detail: str
) -> None:
    # PostgreSQL cannot store NUL: unchecked, it surfaced as a 500 (found by the OpenAPI fuzz test).
    headers = world.login("A1") if "admin" in path else world.login("K1")
    r = getattr(world.client, method)(path, json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    # The rule in words, not the regular expression.
    assert r.json()["detail"].startswith(detail), r.json()["detail"]
    assert "pattern" not in r.text


def test_audit_trail_of_a_session_verifies_and_proves(world: World) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    c1, x1 = world.login("C1"), world.login("X1")
    reveal(world, c1)
    head = world.client.get("/v1/audit/head", headers=x1).json()
    assert head["tree_size"] >= 3
    proof = world.client.get(
        "/v1/audit/proofs/inclusion", params={"index": 0, "size": head["tree_size"]}, headers=x1
    )
    assert proof.status_code == 200 and proof.json()["proof"]
    assert world.client.get("/v1/audit/head", headers=c1).status_code == 403
    witness = world.client.get("/v1/audit/witness").json()
    assert witness["public_key"] == world.deployment.core.keys.signer().public_key.hex()
    assert witness["tree_size"] >= head["tree_size"]
    world.deployment.guard.audit.checkpoint()
    report = verify(world.deployment.core.audit_engine, world.deployment.core.keys.signer().public_key)
    assert report.ok, report.summary()


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    """What `courierguard serve` writes to stderr, at its most verbose, from before the app exists."""
    stderr = io.BytesIO()
    # Held here: pytest swaps sys.stderr between phases, and a dropped wrapper closes its buffer.
    text = io.TextIOWrapper(stderr, encoding="utf-8", write_through=True)
    monkeypatch.setattr(sys, "stderr", text)
    monkeypatch.setattr(cg_logging._request_sink, "stream", None)  # restored afterwards
    configure_logging("debug")
    try:
        yield stderr
    finally:
        structlog.reset_defaults()


def test_no_personal_data_in_logs(
    json_logs: io.BytesIO, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.step(W1, "out_for_delivery", assignee="C1")
    c1, k1 = world.login("C1"), world.login("K1")
    served = reveal(world, c1, fields=["recipient.phone", "recipient.name", "recipient.address"])
    assert served.status_code == 200 and served.json()["fields"]["recipient.phone"].endswith(RECIPIENT_PHONE)
    found = world.client.post("/v1/waybills/search", json={"phone": SENDER_PHONE}, headers=k1)
    assert found.status_code == 200 and found.json()["items"]
    world.client.post("/v1/waybills/search", json={"name": SENDER_NAME}, headers=k1)
    assert reveal(world, k1).status_code == 403
    world.client.get(f"/v1/waybills/search?phone={SENDER_PHONE}", headers=k1)  # a URL that holds PII
    metrics = world.client.get("/metrics").text
    stderr = json_logs.getvalue().decode()
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert len(requests) >= 8, stderr[-2000:]  # a line per request, each naming its route
    assert {"/v1/waybills/{number}/reveal", "/v1/waybills/search"} <= {r["route"] for r in requests}
    assert "courierguard_http_requests" in metrics
    # The test client's own log (httpx) names the URLs it sent; everything else is the server's.
    server_log = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    text = server_log + stderr + metrics
    for secret in (SENDER_PHONE, RECIPIENT_PHONE, RECIPIENT_NAME, SENDER_NAME, "中关村", "科技园"):
        assert secret not in text


def test_vault_failures_look_alike_outside_and_the_cause_is_recorded(world: World) -> None:
    from courierguard.audit import AuditQueries, EntryKind

    world.step(W1, "out_for_delivery", assignee="C1")
    c1 = world.login("C1")
    world.deployment.guard.vault.shred_month("2026-11")
    r = reveal(world, c1)
    assert r.status_code == 409 and r.json()["reason"] == "record_unavailable"
    assert "shred" not in r.text
    system = (
        AuditQueries(world.deployment.core.audit_engine).search(kinds=[EntryKind.SYSTEM], limit=1000).records
    )
    failures = [
        e.body for e in system if e.body.get("what") == "vault.failure" and e.body.get("actor") == "C1"
    ]
    assert failures and failures[-1]["failure"] == "shredded"


def test_a_data_subject_asks_who_accessed_their_data(world: World) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    c1, x1, k1 = world.login("C1"), world.login("X1"), world.login("K1")
    assert reveal(world, c1).status_code == 200
    body = {"phone": "+86 186 8765 4321"}  # the recipient of every seeded parcel
    assert world.client.post("/v1/audit/search", json=body, headers=k1).status_code == 403
    r = world.client.post("/v1/audit/search", json=body, headers=x1)
    assert r.status_code == 200, r.text
    reveals = [e["body"] for e in r.json()["records"] if e["body"].get("action") == "waybill.reveal"]
    assert [(e["actor"]["id"], e["resource"]["id"], e["purpose"]) for e in reveals] == [
        ("C1", W1, "delivery_contact")
    ]
    assert RECIPIENT_PHONE not in r.text.replace("+86" + RECIPIENT_PHONE, "")
    nobody = world.client.post("/v1/audit/search", json={"phone": "13000000000"}, headers=x1).json()
    assert nobody["records"] == []
    searches = [e for e in world.access_events() if str(e.get("purpose", "")).startswith("audit.search")]
    assert [(e["actor"]["id"], e["outcome"]["decision"]) for e in searches] == [
        ("K1", "deny"),
        ("X1", "allow"),
        ("X1", "allow"),
    ]  # the clerk's attempt too: a probe of the trail is on it
    assert all(RECIPIENT_PHONE not in str(e) for e in searches)


def test_every_response_forbids_caching_sniffing_and_framing(world: World) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    c1 = world.login("C1")
    responses = {
        "reveal": reveal(world, c1),  # clear text
        "refused": reveal(world, world.login("C2")),  # a problem
        "unmatched": world.client.get("/nowhere"),
        "docs": world.client.get("/v1/docs"),  # where officers paste tokens
        "openapi": world.client.get("/v1/openapi.json"),
    }
    assert [r.status_code for r in responses.values()] == [200, 403, 404, 200, 200]
    for name, r in responses.items():
        assert r.headers.get_list("cache-control") == ["no-store"], name
        assert r.headers["x-content-type-options"] == "nosniff", name
        assert r.headers["x-frame-options"] == "DENY", name
        assert r.headers["content-security-policy"] == "frame-ancestors 'none'", name


def test_healthz_fails_while_the_audit_trail_takes_no_entries(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk or a read-only database: every request was a 503 audit_unavailable while /healthz
    # said 200, so the load balancer kept sending them and monitoring saw nothing (the crash review).
    world.step(W1, "out_for_delivery", assignee="C1")
    c1 = world.login("C1")
    audit = world.deployment.guard.audit
    assert world.client.get("/healthz").status_code == 200
    original = audit._write  # type: ignore[attr-defined]

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audit, "_write", full_disk)
    assert reveal(world, c1).status_code == 503
    health = world.client.get("/healthz")
    assert health.status_code == 503 and health.json()["reason"] == "audit_unavailable", health.text
    assert world.client.get("/healthz").status_code == 503  # still full: the probe's commit fails too
    monkeypatch.setattr(audit, "_write", original)  # space freed
    # A drained worker gets no requests: the health check's own commit finds the storage back.
    assert world.client.get("/healthz").status_code == 200
    assert reveal(world, c1).status_code == 200
    audit.close()  # a writer that stopped
    assert world.client.get("/healthz").status_code == 503
