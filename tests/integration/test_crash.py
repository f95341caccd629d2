"""SIGKILL the server during a load of reveals: the trail still verifies, and every reveal a client
received has its durable entry (fail-closed recording, end to end)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from courierguard.audit import AuditQueries, row_mac_key, verify
from courierguard.config import Settings
from courierguard.gateway.wiring import open_deployment
from courierguard.sim.seed import seed_company

pytestmark = [pytest.mark.http, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "COURIERGUARD_DATA_DIR": str(data_dir), "COURIERGUARD_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from courierguard.cli.main import app; app()", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start")


def test_sigkill_during_reveals_loses_no_received_reveal(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    deployment = open_deployment(settings)
    guard = deployment.guard
    seeded = seed_company(
        guard.company, guard.vault, now=guard.clock.now(), employees=40, waybills_per_outlet=30
    )
    public_key = deployment.core.keys.signer().public_key
    deployment.close()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start(tmp_path, port)
    received: list[tuple[int, str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def courier_load(courier: str, numbers: list[str]) -> None:
        with httpx.Client(base_url=base, timeout=5) as client:
            token = client.post("/v1/dev/token", json={"employee_id": courier}).json()["token"]
            headers = {"Authorization": f"Bearer {token}", "X-Device-Id": f"PDA-{courier}"}
            client.post("/v1/auth/login", json={}, headers=headers)
            i = 0
            while not stop.is_set():
                number = numbers[i % len(numbers)]
                i += 1
                try:
                    r = client.post(
                        f"/v1/waybills/{number}/reveal",
                        json={"fields": ["recipient.phone"], "purpose": "delivery_contact"},
                        headers=headers,
                    )
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        received.append((int(r.headers["X-Audit-Entry"]), r.headers["X-Audit-Event"], number))

    couriers = [(c, n) for c, n in seeded.deliveries.items() if n][:8]
    threads = [threading.Thread(target=courier_load, args=pair) for pair in couriers]
    try:
        for t in threads:
            t.start()
        time.sleep(2.0)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        if server.poll() is None:
            server.kill()

    assert len(received) >= 20, f"only {len(received)} reveals were served before the kill"
    deployment = open_deployment(settings)
    try:
        report = verify(deployment.core.audit_engine, public_key, row_key=row_mac_key(deployment.core.keys))
        assert report.ok and report.macs_checked, report.summary()
        queries = AuditQueries(deployment.core.audit_engine)
        for index, event_id, number in received:
            entry = queries.entry(index)
            assert entry.body["id"] == event_id
            assert entry.body["action"] == "waybill.reveal" and entry.body["resource"]["id"] == number
            assert entry.body["fields"] == ["recipient.phone"]
    finally:
        deployment.close()

    restarted = _start(tmp_path, port)
    try:
        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
    finally:
        restarted.terminate()
        restarted.wait(timeout=10)
