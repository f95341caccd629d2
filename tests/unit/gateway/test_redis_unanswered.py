"""A risk-state Redis that accepts connections and never answers: requests are refused, quickly.

The service used the client library's default timeout (5 s in redis-py 8, none in some versions
its range allows): each request, and every request queued behind it, hung that long or for ever."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from courierguard.config import Settings
from courierguard.domain import Employee, OrgUnit, OrgUnitKind
from courierguard.events import Role
from courierguard.gateway.http import create_app
from courierguard.gateway.wiring import open_deployment
from courierguard.risk.state import REDIS_TIMEOUT_S


@pytest.fixture
def silent_redis() -> Iterator[int]:
    """A port that accepts connections and reads what is sent, answering nothing."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_redis_that_never_answers_refuses_requests_within_the_timeout(
    tmp_path: Path, silent_redis: int
) -> None:
    settings = Settings(
        data_dir=tmp_path, tenant="t1", risk_state="redis", redis_url=f"redis://127.0.0.1:{silent_redis}/0"
    )
    deployment = open_deployment(settings)
    try:
        company = deployment.guard.company
        company.put_org_unit(OrgUnit("OUT-1", OrgUnitKind.OUTLET, "OUT-1"))
        company.put_employee(Employee("C1", Role.COURIER, "OUT-1"), deployment.guard.clock.now())
        assert deployment.dev_issuer is not None
        token, _ = deployment.dev_issuer.issue("C1", now=deployment.guard.clock.now())
        client = TestClient(create_app(deployment), raise_server_exceptions=False)
        started = time.monotonic()
        r = client.post(
            "/v1/auth/login", json={}, headers={"Authorization": f"Bearer {token}", "X-Device-Id": "dev-1"}
        )
        waited = time.monotonic() - started
        assert r.status_code == 403 and r.json()["reason"] == "risk_denied", r.text
        # One connect and one read at most (the login's assessment), each bounded by the timeout.
        assert waited < 4 * REDIS_TIMEOUT_S + 1.0, waited
        client.close()
    finally:
        deployment.close()
