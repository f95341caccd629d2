"""Drive simulated people's intents through the whole product in-process, as `demo` drives the server."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fastapi.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from courierguard.clock import FixedClock
from courierguard.config import Settings
from courierguard.gateway.http import create_app
from courierguard.gateway.wiring import Deployment, open_deployment
from courierguard.sim.demo import DEMO_ADMIN, DEMO_OFFICER, bootstrap
from courierguard.sim.engine import Simulation
from courierguard.sim.intents import Intent
from courierguard.sim.live import IntentResult, LiveDriver, LiveOptions, LiveReport, plan_waybills


def drive(
    tmp_path: Path, sim: Simulation, intents: list[Intent]
) -> tuple[Deployment, LiveReport, list[IntentResult]]:
    """A fresh deployment (real risk engine, default configuration) on a clock the intents move, the
    simulated company set up in it, then ``intents`` played over HTTP: (the deployment, still open
    for the caller to inspect and close; the driver's report; every intent's result)."""
    clock = FixedClock(datetime.fromisoformat(intents[0].at))
    deployment = open_deployment(Settings(data_dir=tmp_path, tenant="e2e"), clock=clock)
    key = bootstrap(deployment, clock.now())
    app = ProxyHeadersMiddleware(create_app(deployment), trusted_hosts="*")
    results: list[IntentResult] = []
    driver = LiveDriver(
        lambda: TestClient(app, raise_server_exceptions=False),
        LiveOptions(api_key=key, admin=DEMO_ADMIN, officer=DEMO_OFFICER, speed=0, workers=1),
        seed=2,
        sync=clock.set,
        totp_now=clock.now,
        on_result=results.append,
    )
    try:
        driver.setup_world(sim.world, plan_waybills(intents))
        report = driver.run(intents)
    finally:
        driver.close()
    return deployment, report, results
