"""The live driver against an in-process Courier Guard (FastAPI TestClient, no sockets)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from courierguard.audit import AuditQueries, verify
from courierguard.clock import FixedClock
from courierguard.config import Settings
from courierguard.gateway.http import create_app
from courierguard.gateway.wiring import Deployment, open_deployment
from courierguard.sim import SimConfig
from courierguard.sim.demo import DEMO_ADMIN, DEMO_OFFICER, bootstrap, thin
from courierguard.sim.engine import Simulation
from courierguard.sim.intents import Intent, to_intent
from courierguard.sim.live import LiveDriver, LiveOptions, LiveSetupError, plan_waybills


class Target:
    def __init__(self, tmp_path: Path, start: datetime) -> None:
        self.clock = FixedClock(start)
        self.deployment: Deployment = open_deployment(
            Settings(data_dir=tmp_path, tenant="live"), clock=self.clock
        )
        self.key = bootstrap(self.deployment, start)
        self.app = ProxyHeadersMiddleware(create_app(self.deployment), trusted_hosts="*")

    def driver(
        self,
        *,
        seed: int,
        admin: str = DEMO_ADMIN,
        key: str | None = None,
        officer: str | None = DEMO_OFFICER,
    ) -> LiveDriver:
        return LiveDriver(
            lambda: TestClient(self.app, raise_server_exceptions=False),
            LiveOptions(api_key=key or self.key, admin=admin, officer=officer, speed=0, workers=1),
            seed=seed,
            sync=self.clock.set,
            totp_now=self.clock.now,
        )

    def access_events(self) -> list[dict[str, Any]]:
        queries, out, cursor = AuditQueries(self.deployment.core.audit_engine), [], None
        while True:
            page = queries.search(limit=1000, cursor=cursor)
            out += [r.body for r in page.records if r.kind == "access"]
            if page.next_cursor is None:
                return out
            cursor = page.next_cursor


def _first_day(seed: int) -> tuple[Simulation, list[Intent]]:
    sim = Simulation(SimConfig(employees=20, days=1, seed=seed, scenarios=()))
    intents = [to_intent(e, s) for e, s in sim.labelled()]
    outlet = sim.world.outlets[0].id
    # One outlet's couriers and clerks plus a customer-service agent: small, every kind of request.
    cs = sim.world.by_role("customer_service")[0].id
    keep = {p.id for p in sim.world.staff if p.unit.id == outlet} | {cs}
    return sim, thin([it for it in intents if it.actor in keep], 0.05)[:400]


@pytest.fixture
def small() -> tuple[Simulation, list[Intent]]:
    return _first_day(5)


@pytest.fixture
def target(tmp_path: Path, small: tuple[Simulation, list[Intent]]) -> Iterator[Target]:
    t = Target(tmp_path, datetime.fromisoformat(small[1][0].at))
    yield t
    t.deployment.close()


def test_driver_plays_a_small_world_and_the_audit_log_holds_it(
    target: Target, small: tuple[Simulation, list[Intent]]
) -> None:
    sim, intents = small
    driver = target.driver(seed=5)
    try:
        driver.setup_world(sim.world, plan_waybills(intents))
        report = driver.run(intents)
    finally:
        driver.close()
    assert report.setup["waybills failed"] == 0 and report.setup["waybills stored"] > 50
    # As the PDA system, the driver reports only flows the lifecycle allows, each step taken.
    assert set(report.steps) == {"ok"} and report.steps["ok"] > 50, report.steps
    normal = report.tally(0)
    assert normal.intents == len(intents)
    outcomes = Counter({k: n for k, n in normal.outcomes.items()})
    # Everyone signs in, reads masked data and reveals for their tasks; nothing is refused by risk.
    assert outcomes["auth.login ok"] >= 2
    assert outcomes["waybill.view ok"] > 50
    assert outcomes["waybill.reveal ok"] > 5, outcomes
    assert not any(k.endswith(("risk_locked", "risk_denied", "error")) for k in outcomes)
    sent = sum(n for k, n in outcomes.items() if not k.endswith(("unsupported", "skipped")))
    assert report.requests >= sent

    events = target.access_events()
    by_action = Counter(e["action"] for e in events)
    logins = {it.actor for it in intents if it.action == "auth.login"}
    assert {e["actor"]["id"] for e in events if e["action"] == "auth.login"} >= logins
    assert by_action["auth.device_bound"] == len(logins)  # first login binds the device
    served = [e for e in events if e["action"] == "waybill.reveal" and e["outcome"]["decision"] == "allow"]
    assert len(served) == outcomes["waybill.reveal ok"]
    assert {e["resource"]["id"] for e in served} == normal.records
    # The simulated networks reach the engine through X-Forwarded-For; devices through X-Device-Id.
    # (A refused token names no role: a session that went idle between deliveries is such a try.)
    pdas = {e["session"]["device_id"] for e in events if e["actor"].get("role") == "courier"}
    assert pdas <= {p.device for p in sim.world.staff}
    assert not any(
        e["session"].get("ip") in (None, "testclient") for e in events if e["actor"]["id"] in logins
    )
    core = target.deployment.core
    assert verify(core.audit_engine, core.keys.signer().public_key).ok


def test_setup_refuses_an_unknown_admin(target: Target, small: tuple[Simulation, list[Intent]]) -> None:
    driver = target.driver(seed=5, admin="E404404")
    with pytest.raises(LiveSetupError, match="E404404"):
        driver.setup_world(small[0].world, {})
    driver.close()


def test_setup_refuses_a_bad_api_key(target: Target, small: tuple[Simulation, list[Intent]]) -> None:
    driver = target.driver(seed=5, key="cgk_nope_nope")
    with pytest.raises(LiveSetupError, match="api-key"):
        driver.setup_world(small[0].world, plan_waybills(small[1][:20]))
    driver.close()
