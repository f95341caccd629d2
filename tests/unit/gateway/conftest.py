"""A small company behind the real HTTP app, on SQLite, with a clock the tests move."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from courierguard.clock import FixedClock
from courierguard.config import Settings
from courierguard.domain import Employee, OrgUnit, OrgUnitKind, lifecycle_path
from courierguard.events import AccessEvent, RiskAction, RiskDecision, RiskReason, Role, WaybillStatus
from courierguard.gateway.http import create_app
from courierguard.gateway.identity import SessionStore
from courierguard.gateway.wiring import Deployment, open_deployment
from courierguard.risk.interfaces import AllowAll

START = datetime(2026, 11, 11, 9, 0, tzinfo=UTC)

SENDER_PHONE = "13912345678"
RECIPIENT_PHONE = "18687654321"
RECIPIENT_NAME = "欧阳娜娜"
SENDER_NAME = "张三丰"

STAFF = {
    "C1": (Role.COURIER, "OUT-BJ-01"),
    "C2": (Role.COURIER, "OUT-BJ-01"),
    "K1": (Role.OUTLET_CLERK, "OUT-BJ-01"),
    "M1": (Role.OUTLET_MANAGER, "OUT-BJ-01"),
    "S1": (Role.CUSTOMER_SERVICE, "CS-01"),
    "H1": (Role.HUB_OPERATOR, "HUB-01"),
    "X1": (Role.SECURITY_OFFICER, "SEC"),
    "X2": (Role.SECURITY_OFFICER, "SEC"),
    "A1": (Role.ADMIN, "HQ"),
}


class ScriptedRisk:
    """A risk hook the test scripts: answers ``next_action`` for one actor, allow otherwise."""

    def __init__(self) -> None:
        self.seen: list[AccessEvent] = []
        self.script: dict[str, RiskAction] = {}
        self.codes: dict[str, str] = {}
        """The reason code scripted for an actor (``scripted`` unless set)."""
        self._allow = AllowAll()

    def assess(self, event: AccessEvent) -> RiskDecision:
        self.seen.append(event)
        action = self.script.get(event.actor.id)
        if action is None:
            return self._allow.assess(event)
        return RiskDecision(
            event_id=event.id, ts=event.ts, actor_id=event.actor.id, action=action, score=90.0,
            reasons=(RiskReason(code=self.codes.get(event.actor.id, "scripted")),),
        )  # fmt: skip


def record(n: int, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "number": f"YT{n:013d}",
        "origin_outlet": "OUT-SZ-09",
        "dest_outlet": "OUT-BJ-01",
        "routing_code": "755-010-A1",
        "created_at": (START - timedelta(days=1)).isoformat(),
        "sender": {
            "name": SENDER_NAME,
            "phone": SENDER_PHONE,
            "address": {
                "province": "广东省",
                "city": "深圳市",
                "district": "南山区",
                "detail": "科技园1栋301",
            },
        },
        "recipient": {
            "name": RECIPIENT_NAME,
            "phone": RECIPIENT_PHONE,
            "address": {
                "province": "北京市",
                "city": "北京市",
                "district": "海淀区",
                "detail": "中关村5号楼502",
            },
        },
    }
    base.update(over)
    return base


@dataclass
class World:
    client: TestClient
    deployment: Deployment
    clock: FixedClock
    risk: ScriptedRisk
    service_key: str
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def tenant(self) -> str:
        return self.deployment.core.settings.tenant

    def login(self, employee: str, device: str = "dev-1", location: str | None = None) -> dict[str, str]:
        assert self.deployment.dev_issuer is not None
        token, _ = self.deployment.dev_issuer.issue(employee, now=self.clock.now())
        headers = {"Authorization": f"Bearer {token}", "X-Device-Id": device}
        if location:
            headers["X-Device-Location"] = location
        r = self.client.post("/v1/auth/login", json={}, headers=headers)
        assert r.status_code == 200, r.text
        return headers

    @property
    def svc(self) -> dict[str, str]:
        return {"Authorization": f"ApiKey {self.service_key}"}

    def step(self, number: str, status: str, assignee: str | None = None) -> None:
        """Bring the waybill to ``status`` now, as the PDA system reports it: through the steps the
        parcel passes on the way there first (picked up, in transit, ...), as the lifecycle asks."""
        current = self.deployment.guard.company.waybill(number).status
        path = lifecycle_path(current, WaybillStatus(status)) or [WaybillStatus(status)]
        for each in path:
            body: dict[str, Any] = {"status": each.value, "ts": self.clock.now().isoformat()}
            if assignee and each.value == status:
                body["assignee"] = assignee
            r = self.client.post(f"/v1/waybills/{number}/events", json=body, headers=self.svc)
            assert r.status_code == 200, r.text

    def access_events(self) -> list[dict[str, Any]]:
        return self.entries("access")

    def entries(self, kind: str) -> list[dict[str, Any]]:
        """The bodies of this tenant's audit entries of ``kind`` (access, admin, system, ...), in order."""
        from courierguard.audit import AuditQueries

        return [
            r.body
            for r in AuditQueries(self.deployment.core.audit_engine).each()
            if r.kind == kind and r.body is not None and r.body.get("tenant") == self.tenant
        ]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from _world(request, tmp_path, ScriptedRisk())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """The same company with the real RiskEngine (default configuration, in-memory state) on the
    request path instead of a scripted hook (``World.risk`` is then unused)."""
    yield from _world(request, tmp_path, None)


def _world(request: pytest.FixtureRequest, tmp_path: Path, risk: ScriptedRisk | None) -> Iterator[World]:
    clock = FixedClock(START)
    database_url, key_file = None, None
    if request.param == "postgres":
        # One database and, as in a real deployment, one key document for the whole session; a
        # tenant per test keeps their data apart.
        database_url = request.getfixturevalue("pg_database")
        key_file = request.getfixturevalue("tmp_path_factory").getbasetemp() / "pg-gateway-keys.json"
    settings = Settings(
        data_dir=tmp_path, tenant="t" + secrets.token_hex(4), database_url=database_url, key_file=key_file
    )
    deployment = open_deployment(settings, clock=clock, risk=risk)
    company = deployment.guard.company
    company.ensure_tenant("Test Express", clock.now())
    for unit, kind in [
        ("OUT-BJ-01", OrgUnitKind.OUTLET),
        ("OUT-SZ-09", OrgUnitKind.OUTLET),
        ("HUB-01", OrgUnitKind.HUB),
    ]:
        company.put_org_unit(OrgUnit(unit, kind, unit))
    for emp, (role, unit) in STAFF.items():
        company.put_employee(Employee(emp, role, unit), clock.now())
    _, key = deployment.guard.api_keys.create("order-system", clock.now())
    client = TestClient(create_app(deployment), raise_server_exceptions=False)
    w = World(client, deployment, clock, risk or ScriptedRisk(), key)
    r = client.post("/v1/waybills", json={"records": [record(n) for n in range(1, 6)]}, headers=w.svc)
    assert r.status_code == 200 and len(r.json()["stored"]) == 5, r.text
    yield w
    client.close()
    deployment.close()


def refuse_purposes(world: World, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    """Make risk control deny every event whose purpose starts with ``prefix`` (``employee.put:``),
    and answer as scripted otherwise: a refusal in the middle of one request's several judgements."""
    assess = world.risk.assess

    def refusing(event: AccessEvent) -> RiskDecision:
        if (event.purpose or "").startswith(prefix):
            return RiskDecision(
                event_id=event.id, ts=event.ts, actor_id=event.actor.id, action=RiskAction.DENY, score=90.0,
                reasons=(RiskReason(code="scripted"),),
            )  # fmt: skip
        return assess(event)

    monkeypatch.setattr(world.risk, "assess", refusing)


@contextmanager
def session_store(tmp_path: Path, **settings: Any) -> Iterator[SessionStore]:
    """The session store of a deployment in ``tmp_path`` opened with ``settings`` (closed after)."""
    deployment = open_deployment(Settings(data_dir=tmp_path, **settings))
    try:
        yield deployment.guard.sessions
    finally:
        deployment.close()


@contextmanager
def serving(body: bytes, path: str = "/jwks") -> Iterator[str]:
    """A local HTTP server answering every GET with ``body`` as JSON (a stand-in identity provider's
    JWKS endpoint); yields its URL, stops when the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()


def approved_export(world: World, fields: list[str]) -> tuple[str, dict[str, str]]:
    """An export of OUT-BJ-01 requested by M1 and approved by X1: its id and M1's headers."""
    m1, x1 = world.login("M1"), world.login("X1")
    body = {"kind": "export", "justification": "quarterly claims reconciliation", "fields": fields,
            "org_unit": "OUT-BJ-01"}  # fmt: skip
    asked = world.client.post("/v1/approvals", json=body, headers=m1)
    assert asked.status_code == 201, asked.text
    approval = asked.json()["id"]
    assert world.client.post(f"/v1/approvals/{approval}/approve", headers=x1).json()["status"] == "approved"
    return approval, m1
