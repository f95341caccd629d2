"""Administration and four-eyes: separation of duties, and every refusal on the trail.

An insider who probes other people's approvals, or an admin who tries to make themselves an
officer, must leave a trace for the auditors and the risk engine, not only a 403 in their browser.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from courierguard.domain import Employee
from courierguard.errors import InvalidInput, NotFound
from courierguard.events import Role
from courierguard.gateway.http import SMALL_BODY_BYTES

from .conftest import World, approved_export, record

W1, W2 = "YT0000000000001", "YT0000000000002"


def refusals(world: World, actor: str) -> list[dict[str, Any]]:
    return [
        e for e in world.access_events() if e["actor"]["id"] == actor and e["outcome"]["decision"] == "deny"
    ]


def officer_reveal_approval(world: World, waybill: str = W1) -> tuple[str, dict[str, str], dict[str, str]]:
    x1, x2 = world.login("X1"), world.login("X2")
    body = {"kind": "reveal", "justification": "police request 2026-117 about this parcel",
            "fields": ["recipient.phone"], "waybill": waybill}  # fmt: skip
    r = world.client.post("/v1/approvals", json=body, headers=x1)
    assert r.status_code == 201, r.text
    return r.json()["id"], x1, x2


def use(world: World, headers: dict[str, str], approval: str, waybill: str = W1) -> Any:
    return world.client.post(
        f"/v1/waybills/{waybill}/reveal",
        json={"fields": ["recipient.phone"], "purpose": "investigation", "approval": approval},
        headers=headers,
    )


def test_using_a_pending_approval_is_refused_and_recorded(world: World) -> None:
    ap, x1, _ = officer_reveal_approval(world)
    r = use(world, x1, ap)
    assert r.status_code == 403 and r.json()["reason"] == "four_eyes_required"
    [refused] = refusals(world, "X1")
    assert refused["action"] == "waybill.reveal" and refused["purpose"] == f"approval.use:{ap}"
    assert refused["outcome"]["reason"] == "guard:four_eyes_required"
    assert refused["resource"]["id"] == W1 and "fields" not in refused


def test_someone_elses_approval_is_refused_and_recorded(world: World) -> None:
    ap, _, x2 = officer_reveal_approval(world)
    world.client.post(f"/v1/approvals/{ap}/approve", headers=x2)
    assert use(world, x2, ap).status_code == 403
    assert [e["purpose"] for e in refusals(world, "X2")] == [f"approval.use:{ap}"]


def test_an_approval_for_another_waybill_is_refused_and_recorded(world: World) -> None:
    ap, x1, x2 = officer_reveal_approval(world)
    world.client.post(f"/v1/approvals/{ap}/approve", headers=x2)
    assert use(world, x1, ap, waybill=W2).status_code == 403
    [refused] = refusals(world, "X1")
    assert refused["resource"]["id"] == W2


def test_an_unknown_approval_is_a_404_and_recorded(world: World) -> None:
    x1 = world.login("X1")
    assert use(world, x1, "ap_0000000000000000").status_code == 404
    assert [e["outcome"]["reason"] for e in refusals(world, "X1")] == ["guard:not_found"]


def test_a_second_download_is_a_409_and_recorded(world: World) -> None:
    m1, x1 = world.login("M1"), world.login("X1")
    body = {"kind": "export", "justification": "quarterly claims reconciliation", "fields": ["recipient.name"],
            "org_unit": "OUT-BJ-01"}  # fmt: skip
    ap = world.client.post("/v1/approvals", json=body, headers=m1).json()["id"]
    world.client.post(f"/v1/approvals/{ap}/approve", headers=x1)
    assert world.client.get(f"/v1/exports/{ap}/download", headers=m1).status_code == 200
    assert world.client.get(f"/v1/exports/{ap}/download", headers=m1).status_code == 409
    [refused] = refusals(world, "M1")
    assert refused["action"] == "waybill.export" and refused["outcome"]["reason"] == "guard:conflict"


def test_a_clerk_asking_for_an_officers_reveal_is_recorded(world: World) -> None:
    k1 = world.login("K1")
    body = {"kind": "reveal", "justification": "customer says the parcel is lost", "fields": ["recipient.phone"],
            "waybill": W1}  # fmt: skip
    assert world.client.post("/v1/approvals", json=body, headers=k1).status_code == 403
    assert [e["purpose"] for e in refusals(world, "K1")] == ["approval.request"]


@pytest.mark.parametrize(
    "body", [{"role": "security_officer", "org_unit": "HQ"}, {"role": "admin", "org_unit": "OUT-BJ-01"}]
)
def test_nobody_changes_their_own_account(world: World, body: dict[str, str]) -> None:
    a1 = world.login("A1")
    r = world.client.put("/v1/admin/employees/A1", json=body, headers=a1)
    assert r.status_code == 403, r.text
    assert (
        world.client.post("/v1/admin/employees/A1/status", json={"status": "left"}, headers=a1).status_code
        == 403
    )
    assert world.deployment.guard.company.employee("A1").role is Role.ADMIN
    assert len(refusals(world, "A1")) == 2


def test_the_service_role_is_for_api_keys_not_people(world: World) -> None:
    a1 = world.login("A1")
    r = world.client.put(
        "/v1/admin/employees/E777", json={"role": "service", "org_unit": "OUT-BJ-01"}, headers=a1
    )
    assert r.status_code == 422 and r.json()["field"] == "role"
    assert refusals(world, "A1")[0]["purpose"] == "employee.put:E777"
    # An account that has the role anyway (an older database, a direct write) never gets a session.
    world.deployment.guard.company.put_employee(
        Employee("E778", Role.SERVICE, "OUT-BJ-01"), world.clock.now()
    )
    assert world.deployment.dev_issuer is not None
    token, _ = world.deployment.dev_issuer.issue("E778", now=world.clock.now())
    headers = {"Authorization": f"Bearer {token}", "X-Device-Id": "dev-1"}
    world.client.post("/v1/auth/login", json={}, headers=headers)
    case = {"id": "TK-9", "kind": "ticket", "waybill": W1, "owner": "S1"}
    assert world.client.post("/v1/cases", json=case, headers=headers).status_code in (401, 403)


@pytest.mark.parametrize("employee", ["X1:decoy", "svc:order-system"])
def test_an_employee_id_holds_no_colon(world: World, employee: str) -> None:
    # A security test: ``X1:decoy`` set to left was read by risk control as X1's departure, and
    # ``svc:order-system`` shared the order system's trail and escaped a risk lock's suspension.
    a1 = world.login("A1")
    body = {"role": "courier", "org_unit": "OUT-BJ-01"}
    r = world.client.put(f"/v1/admin/employees/{employee}", json=body, headers=a1)
    assert r.status_code == 422 and r.json()["field"] == "id" and "no ':'" in r.json()["detail"]
    assert refusals(world, "A1")[-1]["purpose"] == f"employee.put:{employee}"
    with pytest.raises(NotFound):
        world.deployment.guard.company.employee(employee)
    x1 = world.login("X1")
    ask = {"kind": "role", "employee": employee, "role": "auditor", "org_unit": "OUT-BJ-01",
           "justification": "new auditor for the north region"}  # fmt: skip
    r = world.client.post("/v1/approvals", json=ask, headers=x1)
    assert r.status_code == 422 and r.json()["field"] == "employee"
    with pytest.raises(InvalidInput):  # nor through the store, as the CLI's bootstrap writes
        world.deployment.guard.company.put_employee(
            Employee(employee, Role.COURIER, "OUT-BJ-01"), world.clock.now()
        )


def test_staff_and_units_name_what_exists(world: World) -> None:
    a1 = world.login("A1")
    put = world.client.put
    r = put("/v1/admin/employees/E9", json={"role": "courier", "org_unit": "NO-SUCH-UNIT"}, headers=a1)
    assert r.status_code == 422 and r.json()["field"] == "org_unit"
    assert (
        put(
            "/v1/admin/employees/E9", json={"role": "courier", "org_unit": "OUT-BJ-01"}, headers=a1
        ).status_code
        == 200
    )
    r = put("/v1/admin/org-units/OUT-X", json={"kind": "outlet", "name": "X", "parent": "NOPE"}, headers=a1)
    assert r.status_code == 422 and r.json()["field"] == "parent"
    r = put("/v1/admin/org-units/OUT-X", json={"kind": "outlet", "name": "X", "parent": "OUT-X"}, headers=a1)
    assert r.status_code == 422 and "cycle" in r.json()["detail"]
    assert (
        put("/v1/admin/org-units/R1", json={"kind": "region", "name": "North"}, headers=a1).status_code == 200
    )
    assert (
        put(
            "/v1/admin/org-units/R2", json={"kind": "region", "name": "Sub", "parent": "R1"}, headers=a1
        ).status_code
        == 200
    )
    r = put("/v1/admin/org-units/R1", json={"kind": "region", "name": "North", "parent": "R2"}, headers=a1)
    assert r.status_code == 422 and "cycle" in r.json()["detail"]
    r = put("/v1/admin/org-units/R3", json={"kind": "region", "name": "   "}, headers=a1)
    assert r.status_code == 422 and r.json()["field"] == "name"


def test_audit_search_bounds_its_cursor_and_times(world: World) -> None:
    x1 = world.login("X1")
    r = world.client.post("/v1/audit/search", json={"cursor": 2**63}, headers=x1)
    assert r.status_code == 422 and r.json()["field"] == "cursor"
    r = world.client.post("/v1/audit/search", json={"since": "9999-12-31T23:59:59-23:59"}, headers=x1)
    assert r.status_code == 422 and r.json()["field"] == "since"
    assert world.client.post("/v1/audit/search", json={"cursor": 2**63 - 1}, headers=x1).status_code == 200


def test_an_oversized_body_is_a_413_before_authentication(world: World) -> None:
    limit = world.deployment.core.settings.max_body_bytes
    r = world.client.post(
        "/v1/waybills/search",
        content=b"{" + b" " * limit + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == "payload_too_large"


def test_an_oversized_body_without_a_length_is_cut_off(world: World) -> None:
    limit = world.deployment.core.settings.max_body_bytes

    def chunks() -> Any:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    r = world.client.post(
        "/v1/waybills/search", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["reason"] == "payload_too_large"


def test_only_the_ingest_takes_a_large_body(world: World) -> None:
    # Bodies are parsed before authentication: a search, an audit search or a login is a few
    # kilobytes, and an anonymous 8 MB JSON object there cost the event loop a second.
    big = b'{"records": [' + b",".join([b"{}"] * 100_000) + b"]}"  # 300 KB
    for path in ("/v1/waybills/search", "/v1/audit/search", "/v1/auth/login", "/v1/cases"):
        r = world.client.post(path, content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["reason"] == "payload_too_large", path
        assert str(SMALL_BODY_BYTES) in r.json()["detail"]
    chunked = world.client.post(
        "/v1/waybills/search", content=iter([big]), headers={"Content-Type": "application/json"}
    )
    assert chunked.status_code == 413
    # The ingest takes up to MAX_BODY_BYTES (5,000 waybills are about 3 MB): this one is read, then 401.
    r = world.client.post("/v1/waybills", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 401


def test_the_ingest_authenticates_before_it_parses_its_body(world: World) -> None:
    """Up to MAX_BODY_BYTES reach the ingest, and FastAPI parses a body before it authenticates: an
    anonymous 8 MB object held the event loop for seconds before its 401. A body that would be a 422
    if parsed (not JSON) shows which came first."""
    bad = {"Content-Type": "application/json"}
    for authorization in (None, "ApiKey cgk_nosuch_secret", "Bearer not.a.token", "Basic x"):
        headers = bad if authorization is None else {**bad, "Authorization": authorization}
        r = world.client.post("/v1/waybills", content=b'{"records": [{]', headers=headers)
        assert r.status_code == 401, (authorization, r.text)
    # A caller who is who they claim gets their body read: the 422 names what is wrong with it.
    r = world.client.post("/v1/waybills", content=b'{"records": [{]', headers={**bad, **world.svc})
    assert r.status_code == 422, r.text
    r = world.client.post("/v1/waybills", json={"records": [record(900)]}, headers=world.svc)
    assert r.status_code == 200 and r.json()["stored"] == ["YT0000000000900"], r.text
    # An employee's token holds: read, then refused by the policies (and recorded) as before.
    r = world.client.post("/v1/waybills", json={"records": [record(901)]}, headers=world.login("A1"))
    assert r.status_code == 403, r.text


def test_unlock_ends_a_risk_lock_and_nothing_else(world: World) -> None:
    x1, a1 = world.login("X1"), world.login("A1")
    assert (
        world.client.post("/v1/admin/employees/K1/status", json={"status": "left"}, headers=a1).status_code
        == 200
    )
    r = world.client.post("/v1/admin/employees/K1/unlock", json={"ticket": "INC-7"}, headers=x1)
    assert r.status_code == 409 and "not locked by risk control" in r.json()["detail"]
    assert world.deployment.guard.company.employee("K1").status.value == "left"
    assert (
        world.client.post("/v1/admin/employees/X1/unlock", json={"ticket": "INC-7"}, headers=x1).status_code
        == 403
    )  # own account
    from courierguard.domain import EmployeeStatus
    from courierguard.gateway.service import RISK_LOCK_REASON

    company = world.deployment.guard.company
    company.set_employee_status("C2", EmployeeStatus.SUSPENDED, world.clock.now(), reason=RISK_LOCK_REASON)
    assert (
        world.client.post("/v1/admin/employees/C2/unlock", json={"ticket": "INC-7"}, headers=x1).json()[
            "status"
        ]
        == "active"
    )


def test_a_unit_name_of_zero_width_spaces_is_refused(world: World) -> None:
    a1 = world.login("A1")
    r = world.client.put(
        "/v1/admin/org-units/R9", json={"kind": "region", "name": "\u200b\u200b"}, headers=a1
    )
    assert r.status_code == 422 and r.json()["field"] == "name"


def test_concurrent_moves_cannot_close_a_cycle(world: World) -> None:
    import threading

    from courierguard.domain import OrgUnit, OrgUnitKind

    company = world.deployment.guard.company
    for attempt in range(8):
        a, b = f"RA{attempt}", f"RB{attempt}"
        company.put_org_unit(OrgUnit(a, OrgUnitKind.REGION, a))
        company.put_org_unit(OrgUnit(b, OrgUnitKind.REGION, b))
        start = threading.Barrier(2)
        outcomes: list[str] = []

        def move(unit: str, parent: str, start: threading.Barrier, outcomes: list[str]) -> None:
            start.wait()
            try:
                company.put_org_unit_checked(OrgUnit(unit, OrgUnitKind.REGION, unit, parent=parent))
                outcomes.append("moved")
            except Exception as exc:  # the loser sees the winner's move: a cycle, refused
                outcomes.append(type(exc).__name__)

        threads = [
            threading.Thread(target=move, args=(a, b, start, outcomes)),
            threading.Thread(target=move, args=(b, a, start, outcomes)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["InvalidInput", "moved"], outcomes


def test_a_decision_on_a_decided_approval_is_a_409_and_recorded(world: World) -> None:
    m1, x1, x2 = world.login("M1"), world.login("X1"), world.login("X2")
    body = {"kind": "export", "justification": "quarterly claims reconciliation", "fields": ["recipient.name"],
            "org_unit": "OUT-BJ-01"}  # fmt: skip
    ap = world.client.post("/v1/approvals", json=body, headers=m1).json()["id"]
    assert world.client.post(f"/v1/approvals/{ap}/approve", headers=x1).status_code == 200
    assert world.client.post(f"/v1/approvals/{ap}/reject", headers=x2).status_code == 409
    [refused] = refusals(world, "X2")
    assert (
        refused["purpose"] == f"approval.rejected:{ap}" and refused["outcome"]["reason"] == "guard:conflict"
    )


def test_a_decision_that_loses_a_race_is_recorded_as_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    m1, x1, x2 = world.login("M1"), world.login("X1"), world.login("X2")
    body = {"kind": "export", "justification": "quarterly claims reconciliation", "fields": ["recipient.name"],
            "org_unit": "OUT-BJ-01"}  # fmt: skip
    ap = world.client.post("/v1/approvals", json=body, headers=m1).json()["id"]
    guard = world.deployment.guard
    pending = guard._approval(ap)
    assert world.client.post(f"/v1/approvals/{ap}/approve", headers=x1).status_code == 200
    monkeypatch.setattr(guard, "_approval", lambda approval_id: pending)  # X2 read it before X1 wrote
    assert world.client.post(f"/v1/approvals/{ap}/reject", headers=x2).status_code == 409
    decisions = [
        (e["outcome"]["decision"], e.get("purpose"))
        for e in world.access_events()
        if e["actor"]["id"] == "X2"
    ]
    assert decisions[-2:] == [("allow", f"approval.rejected:{ap}"), ("deny", f"approval.rejected:{ap}")]


def test_a_refused_admin_change_is_one_deny_entry_never_an_allow(world: World) -> None:
    a1 = world.login("A1")
    attempts = [
        ("put", "/v1/admin/employees/E9", {"role": "courier", "org_unit": "NO-SUCH-UNIT"}, 422),
        ("post", "/v1/admin/employees/E404/status", {"status": "left"}, 404),
        ("put", "/v1/admin/org-units/OUT-X", {"kind": "outlet", "name": "X", "parent": "NOPE"}, 422),
        ("put", "/v1/admin/employees/A1", {"role": "courier", "org_unit": "OUT-BJ-01"}, 403),
    ]
    for method, path, body, status in attempts:
        assert getattr(world.client, method)(path, json=body, headers=a1).status_code == status
    changes = [e for e in world.access_events() if e["action"] == "admin.change" and e["actor"]["id"] == "A1"]
    assert [(e["purpose"], e["outcome"]["decision"]) for e in changes] == [
        ("employee.put:E9", "deny"),
        ("employee.status:E404:left", "deny"),
        ("org_unit.put:OUT-X", "deny"),
        ("employee.put:A1", "deny"),
    ]
    # A change that is made is one allow entry.
    r = world.client.put(
        "/v1/admin/employees/E9", json={"role": "courier", "org_unit": "OUT-BJ-01"}, headers=a1
    )
    assert r.status_code == 200
    last = [e for e in world.access_events() if e["action"] == "admin.change"][-1]
    assert (last["purpose"], last["outcome"]["decision"]) == ("employee.put:E9", "allow")


def test_a_probe_of_the_audit_trail_or_a_colleagues_record_is_refused_and_recorded(world: World) -> None:
    """A courier who tries the officers' audit search (by a phone, say), the tree head, a proof or a
    colleague's employee record gets a 403 and leaves a deny on the trail naming what was tried,
    never the phone."""
    c1 = world.login("C1")
    tried = [
        ("post", "/v1/audit/search", {"json": {"phone": "18687654321"}}, "audit.search"),
        ("get", "/v1/audit/head", {}, "audit.head"),
        ("get", "/v1/audit/proofs/inclusion?index=0&size=1", {}, "audit.proof.inclusion"),
        ("get", "/v1/audit/proofs/consistency?old=0&new=1", {}, "audit.proof.consistency"),
        ("get", "/v1/admin/employees/C2", {}, "employee.read:C2"),
    ]
    for method, path, kwargs, _ in tried:
        r = getattr(world.client, method)(path, headers=c1, **kwargs)
        assert r.status_code == 403 and r.json()["reason"] == "policy_denied", (path, r.text)
    refused = refusals(world, "C1")
    assert [e["purpose"] for e in refused] == [what for *_, what in tried]
    assert {e["action"] for e in refused} == {"admin.change"}
    assert {e["outcome"]["reason"] for e in refused} == {"guard:policy_denied"}
    assert "18687654321" not in str(refused)
    # One's own record is no probe, and officers read the trail as before, without refusals.
    assert world.client.get("/v1/admin/employees/C1", headers=c1).status_code == 200
    x1 = world.login("X1")
    assert world.client.get("/v1/audit/head", headers=x1).status_code == 200
    assert world.client.get("/v1/admin/employees/C2", headers=x1).status_code == 200
    assert len(refusals(world, "C1")) == len(tried) and refusals(world, "X1") == []


@pytest.mark.parametrize("phone", ["", "not a phone", "12345"])
def test_an_audit_search_by_something_that_is_not_a_phone_is_refused(world: World, phone: str) -> None:
    """Answering "no records" would tell a data subject that nobody accessed their data."""
    x1 = world.login("X1")
    before = len(world.access_events())
    r = world.client.post("/v1/audit/search", json={"phone": phone}, headers=x1)
    assert r.status_code == 422 and r.json()["field"] == "phone", r.text
    assert len(world.access_events()) == before  # nothing searched, nothing recorded


def test_who_may_decide_is_checked_before_the_approvals_state_is_told(world: World) -> None:
    """A customer-service agent deciding an approval already decided got 409 "already approved":
    the state of an approval GET would not show them. They get the policy's 403, recorded."""
    ap, _, x2 = officer_reveal_approval(world)
    assert world.client.post(f"/v1/approvals/{ap}/approve", headers=x2).status_code == 200
    s1 = world.login("S1")
    for verb in ("approve", "reject"):
        r = world.client.post(f"/v1/approvals/{ap}/{verb}", headers=s1)
        assert r.status_code == 403 and "approved" not in r.json()["detail"], r.text
    assert [e["purpose"] for e in refusals(world, "S1")] == [
        f"approval.approved:{ap}",
        f"approval.rejected:{ap}",
    ]
    assert (
        world.client.post(f"/v1/approvals/{ap}/reject", headers=x2).status_code == 409
    )  # an officer: as before


def test_the_second_officer_finds_the_requests_waiting_for_them(world: World) -> None:
    """Four-eyes needs the second person to find the request: GET /v1/approvals lists the pending
    requests the caller may decide, with the justification to weigh, never their own."""
    ap, x1, x2 = officer_reveal_approval(world)
    listed = world.client.get("/v1/approvals", headers=x2)
    assert listed.status_code == 200, listed.text
    [waiting] = listed.json()["approvals"]
    assert waiting["id"] == ap and waiting["requested_by"] == "X1" and waiting["status"] == "pending"
    assert waiting["justification"] == "police request 2026-117 about this parcel"
    assert world.client.get("/v1/approvals", headers=x1).json() == {"approvals": []}  # one's own: no
    for other in ("C1", "S1", "K1"):  # roles that decide nothing see nothing
        assert world.client.get("/v1/approvals", headers=world.login(other)).json() == {"approvals": []}
    assert world.client.get("/v1/approvals?limit=0", headers=x2).status_code == 422
    assert world.client.post(f"/v1/approvals/{ap}/approve", headers=x2).status_code == 200
    assert world.client.get("/v1/approvals", headers=x2).json() == {"approvals": []}  # decided: gone
    ap2, *_ = officer_reveal_approval(world, W2)
    assert [a["id"] for a in world.client.get("/v1/approvals", headers=x2).json()["approvals"]] == [ap2]
    world.clock.advance(timedelta(hours=world.deployment.core.settings.approval_pending_hours, seconds=1))
    assert world.client.get("/v1/approvals", headers=world.login("X2")).json() == {"approvals": []}  # expired
    looks = [e for e in world.access_events() if str(e.get("purpose", "")).startswith("approval.list:")]
    assert [(e["actor"]["id"], e["purpose"]) for e in looks][:3] == [
        ("X2", "approval.list:1"),
        ("X1", "approval.list:0"),
        ("C1", "approval.list:0"),
    ]


def test_the_alert_queue_is_an_audit_search_by_kind(world: World) -> None:
    """Officers read risk control's alerts over HTTP from the tamper-evident trail: {"kinds": ["alert"]}."""
    from courierguard.gateway.wiring import AuditAlertSink
    from courierguard.risk.alerts import Alert

    AuditAlertSink(world.deployment.guard.audit).emit(
        Alert(actor_id="C1", event_id="ev_1", ts=world.clock.now(), action="lock", score=90.0,
              reasons=(("device_new", None),), evidence={"device": "dev-9"}, tenant=world.tenant)
    )  # fmt: skip
    x1 = world.login("X1")
    r = world.client.post("/v1/audit/search", json={"kinds": ["alert"]}, headers=x1)
    assert r.status_code == 200, r.text
    [alert] = r.json()["records"]
    assert (
        alert["kind"] == "alert" and alert["body"]["actor_id"] == "C1" and alert["body"]["action"] == "lock"
    )
    accesses = world.client.post("/v1/audit/search", json={"kinds": ["access"]}, headers=x1).json()["records"]
    assert accesses and {e["kind"] for e in accesses} == {"access"}
    assert world.client.post("/v1/audit/search", json={"kinds": ["nope"]}, headers=x1).status_code == 422
    searches = [
        e["purpose"] for e in world.access_events() if str(e.get("purpose", "")).startswith("audit.search")
    ]
    assert searches[0].endswith(":kinds=alert") and searches[1].endswith(":kinds=access")


def test_someone_elses_approval_read_by_a_non_officer_is_a_recorded_404(world: World) -> None:
    ap, x1, _ = officer_reveal_approval(world)
    s1 = world.login("S1")
    r = world.client.get(f"/v1/approvals/{ap}", headers=s1)
    assert r.status_code == 404 and r.json()["reason"] == "not_found", r.text
    assert [e["purpose"] for e in refusals(world, "S1")] == [f"approval.read:{ap}"]
    assert world.client.get(f"/v1/approvals/{ap}", headers=x1).status_code == 200  # the requester
    assert world.client.get(f"/v1/approvals/{ap}", headers=world.login("X2")).status_code == 200  # an officer


def test_a_download_that_lost_the_race_says_so_on_the_trail(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two downloads at once: both record export.download before spending the approval, one wins.
    # The loser served nothing, and the trail says so (the race review: 3 entries for 1 download).
    ap, m1 = approved_export(world, ["recipient.name"])
    guard = world.deployment.guard
    monkeypatch.setattr(guard, "_update_approval", lambda *a, **k: False)  # the other one spent it
    assert world.client.get(f"/v1/exports/{ap}/download", headers=m1).status_code == 409
    spent = [e for e in world.entries("system") if e["what"].startswith("export.download")]
    assert [e["what"] for e in spent] == ["export.download", "export.download.rejected"]
    assert spent[1]["approval"] == ap
