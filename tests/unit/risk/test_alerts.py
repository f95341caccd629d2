"""Alerts: evidence without PII, the memory, SQL and webhook sinks, config loading."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import orjson
import pytest

from courierguard.db.engine import create_db_engine, migrate
from courierguard.errors import ConfigError
from courierguard.risk.alerts import (
    SIGNATURE_HEADER,
    Alert,
    FanoutSink,
    MemorySink,
    SqlSink,
    WebhookSink,
    verify_alert,
)
from courierguard.risk.config import RiskConfig
from courierguard.risk.engine import RiskEngine
from courierguard.risk.record import from_dict
from courierguard.risk.streams import rented_stream

from ..contracts import validator


def _alerts() -> list[Alert]:
    sink = MemorySink()
    engine = RiskEngine(sink=sink)
    events, _ = rented_stream(seed=8, couriers=3, days=5, attack_events=20)
    for e in events:
        engine.decide(from_dict(e))
    return sink.alerts


def test_alerts_carry_evidence_but_no_pii() -> None:
    alerts = _alerts()
    assert any(a.action == "lock" for a in alerts)
    blob = orjson.dumps([a.to_dict() for a in alerts]).decode()
    for forbidden in ("58.20.1.2", "23.1", "113.3"):  # the renter's address and position
        assert forbidden not in blob
    lock = next(a for a in alerts if a.action == "lock")
    assert lock.evidence["device_id"] == "PHONE-X" and lock.evidence["session_unexplained"] >= 1


def test_every_alert_is_a_risk_decision_v1() -> None:
    # What the webhook posts: a SIEM reads it with the parser of replay's decisions.
    alerts = _alerts()
    schema = validator("risk-decision.v1")
    for alert in [*alerts, Alert("E1", "ev_1", alerts[0].ts, "lock", 95.0, (("account_locked", None),), {})]:
        body = orjson.loads(orjson.dumps(alert.to_dict()))
        assert not list(schema.iter_errors(body)), body
        assert (
            body["v"] == 1
            and body["id"] == alert.id
            and ("session_id" in body) == (alert.session_id is not None)
        )


def test_sql_sink_stores_alerts(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(engine)
    sink = SqlSink(engine)
    for a in _alerts():
        sink.emit(a)
    rows = sink.fetch("E000000")
    assert rows and rows[-1]["action"] == "lock" and rows[-1]["evidence"]["device_id"] == "PHONE-X"
    assert {r["code"] for r in rows[-1]["reasons"]} >= {"new_device", "unexplained_reveals"}
    engine.dispose()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes], threading.Event]]:
    got: list[bytes] = []
    slow = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if slow.is_set():
                time.sleep(1.5)
            got.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", got, slow
    server.shutdown()
    server.server_close()


@pytest.mark.http
def test_webhook_sink_posts_in_background_and_never_blocks(
    receiver: tuple[str, list[bytes], threading.Event],
) -> None:
    url, got, slow = receiver
    slow.set()
    sink = WebhookSink(url, timeout_s=0.5)
    alerts = _alerts()
    start = time.perf_counter()
    for a in alerts:
        sink.emit(a)
    assert time.perf_counter() - start < 0.05, "emit must not wait for the receiver"
    slow.clear()
    assert sink.flush(10)
    sink.close()
    assert sink.failed + len(got) == len(alerts)
    if got:
        assert orjson.loads(got[-1])["actor_id"]


def test_webhook_sink_drops_when_the_queue_is_full() -> None:
    sink = WebhookSink("http://127.0.0.1:9/never", timeout_s=0.2, max_queue=1)
    for a in _alerts() * 3:
        sink.emit(a)
    assert sink.dropped > 0
    sink.close()


def test_fanout_survives_a_broken_sink() -> None:
    class Broken:
        def emit(self, alert: Alert) -> None:
            raise RuntimeError("down")

    good = MemorySink()
    fan = FanoutSink(Broken(), good)
    for a in _alerts():
        fan.emit(a)
    assert good.alerts


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_config_files(tmp_path: Path, suffix: str) -> None:
    body = {
        ".yaml": "peer_ratio: 5\nbudgets:\n  courier:\n    unexplained_reveals_per_day: 3\n",
        ".toml": "peer_ratio = 5\n[budgets.courier]\nunexplained_reveals_per_day = 3\n",
        ".json": '{"peer_ratio": 5, "budgets": {"courier": {"unexplained_reveals_per_day": 3}}}',
    }[suffix]
    path = tmp_path / f"risk{suffix}"
    path.write_text(body)
    cfg = RiskConfig.load(path)
    assert cfg.peer_ratio == 5 and cfg.budget("courier").unexplained_reveals_per_day == 3
    assert cfg.budget("outlet_clerk") == RiskConfig().budget("outlet_clerk")


def test_config_rejects_typos(tmp_path: Path) -> None:
    path = tmp_path / "risk.yaml"
    path.write_text("peer_ratoi: 5\n")
    with pytest.raises(ConfigError):
        RiskConfig.load(path)


@pytest.mark.http
def test_webhook_flush_waits_on_a_monotonic_clock(
    receiver: tuple[str, list[bytes], threading.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wall clock steps an hour forward while the sink flushes (NTP after a VM resumed): the
    # flush used to give up at once, leaving the queued alerts unsent at shutdown.
    from courierguard.risk import alerts as alerts_module

    class Stepping(datetime):
        calls = 0

        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Stepping:
            cls.calls += 1
            return cls(2026, 11, 11, tzinfo=UTC) + timedelta(hours=cls.calls)  # type: ignore[return-value]

    url, got, slow = receiver
    slow.set()  # each POST takes 1.5 s
    sink = WebhookSink(url, timeout_s=5)
    monkeypatch.setattr(alerts_module, "datetime", Stepping)
    sink.emit(_alerts()[0])
    assert sink.flush(10)
    assert len(got) == 1
    sink.close()


@pytest.fixture
def signed_receiver() -> Iterator[tuple[str, list[tuple[bytes, str | None]]]]:
    got: list[tuple[bytes, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append((body, self.headers.get(SIGNATURE_HEADER)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", got
    server.shutdown()
    server.server_close()


@pytest.mark.http
def test_webhook_alerts_are_signed_so_the_siem_can_tell_them_from_forgeries(
    signed_receiver: tuple[str, list[tuple[bytes, str | None]]], tmp_path: Path
) -> None:
    """SOC review: the webhook was unsigned, so whoever found its URL could post a forged 'all
    clear' or a flood of false alarms. Deployed, each alert carries an Ed25519 signature under the
    audit key that `audit head` publishes; a receiver checks it with the public key alone."""
    from courierguard.audit.models import signed_tree_head_bytes
    from courierguard.config import Settings
    from courierguard.gateway.wiring import open_deployment

    url, got = signed_receiver
    deployment = open_deployment(Settings(data_dir=tmp_path, alert_webhook=url))
    try:
        webhooks = [c for c in deployment.closables if isinstance(c, WebhookSink)]
        assert len(webhooks) == 1
        alerts = _alerts()
        for a in alerts:
            webhooks[0].emit(a)
        assert webhooks[0].flush(10)
        signer = deployment.core.keys.signer()
    finally:
        deployment.close()
    assert len(got) == len(alerts) >= 2
    for body, signature in got:
        assert signature is not None and verify_alert(signer.public_key, body, signature)
        forged = body.replace(b'"lock"', b'"allow"').replace(b'"step_up"', b'"allow"')
        assert forged == body or not verify_alert(signer.public_key, forged, signature)
    assert not verify_alert(signer.public_key, got[0][0], got[1][1] or "")  # another alert's
    assert not verify_alert(signer.public_key, got[0][0], "not base64!")
    # A tree head's signature is no alert's: the alert's context prefix keeps the two apart.
    sth = signed_tree_head_bytes(5, 1_700_000_000_000, b"\x00" * 32)
    assert not verify_alert(signer.public_key, sth, base64.b64encode(signer.sign(sth)).decode())
