"""Risk alerts and where they go: a list in memory, the ``risk_alerts`` table, a webhook.

An :class:`Alert` carries the decision, its reason codes and the evidence the engine used (counts,
waybill numbers, device ids); it never carries a customer's name, phone or address. Sinks are called
on the request path, so none of them may block it: the webhook sink hands alerts to a background
thread through a bounded queue and drops (and counts) alerts when the queue is full.
"""

from __future__ import annotations

import base64
import binascii
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx
import orjson
from sqlalchemy import Engine

from courierguard.risk.tables import risk_alerts
from courierguard.vault.signing import verify_signature

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Alert:
    """One risk alert: what was decided about which event of which account, and why."""

    actor_id: str
    event_id: str
    ts: datetime
    action: str
    score: float
    reasons: tuple[tuple[str, str | None], ...]
    evidence: dict[str, Any]
    session_id: str | None = None
    tenant: str = "demo"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the webhook receives, and the audit trail's ``alert`` entry): a Risk
        Decision v1 (``shared/schemas``), so a SIEM reads alerts and replay's decisions with one
        parser, plus the alert's ``id``, ``tenant`` and ``evidence``. ``session_id`` is left out
        when there is none, as the schema types it as a string."""
        out: dict[str, Any] = {
            "v": 1,
            "id": self.id,
            "tenant": self.tenant,
            "actor_id": self.actor_id,
            "event_id": self.event_id,
            "ts": self.ts.isoformat(),
            "action": self.action,
            "score": self.score,
            "reasons": [{"code": c, "detail": d} if d else {"code": c} for c, d in self.reasons],
            "evidence": self.evidence,
        }
        if self.session_id is not None:
            out["session_id"] = self.session_id
        return out


class AlertSink(Protocol):
    """Receives every alert the engine raises. ``emit`` must return quickly and never raise."""

    def emit(self, alert: Alert) -> None: ...


class MemorySink:
    """Keeps alerts in a list (tests, replay summaries, the embedded console)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)


class SqlSink:
    """Writes each alert as one row of ``risk_alerts`` (table created by migration ``0003_risk``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def emit(self, alert: Alert) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    risk_alerts.insert().values(
                        id=alert.id,
                        tenant=alert.tenant,
                        actor_id=alert.actor_id,
                        session_id=alert.session_id,
                        event_id=alert.event_id,
                        ts=alert.ts,
                        action=alert.action,
                        score=alert.score,
                        reasons=orjson.dumps(alert.to_dict()["reasons"]).decode(),
                        evidence=orjson.dumps(alert.evidence).decode(),
                        state="open",
                    )
                )
        except Exception as exc:  # a failing alert store must not fail the decision itself
            log.error("risk alert %s not stored: %s", alert.id, type(exc).__name__)

    def fetch(
        self, actor_id: str | None = None, *, tenant: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Stored alerts, oldest first (the newest ``limit`` of them), optionally of one account or tenant."""
        stmt = risk_alerts.select()
        if actor_id is not None:
            stmt = stmt.where(risk_alerts.c.actor_id == actor_id)
        if tenant is not None:
            stmt = stmt.where(risk_alerts.c.tenant == tenant)
        if limit is not None:
            newest = stmt.order_by(risk_alerts.c.ts.desc()).limit(limit).subquery()
            stmt = newest.select().order_by(newest.c.ts)
        else:
            stmt = stmt.order_by(risk_alerts.c.ts)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        for row in rows:
            row["reasons"] = orjson.loads(row["reasons"])
            row["evidence"] = orjson.loads(row["evidence"])
        return rows


ALERT_SIGNATURE_CONTEXT = b"courierguard-alert-v1\n"
"""Prefixed to an alert's body before it is signed: the key also signs audit tree heads (RFC 6962
``TreeHeadSignature`` bytes, which start 0x00 0x01), and a signature over one can never be passed off
as a signature over the other."""

SIGNATURE_HEADER = "X-CourierGuard-Signature"


def verify_alert(public_key: bytes, body: bytes, signature: str) -> bool:
    """For a receiver: True when ``signature`` (the header's base64) is the service's Ed25519
    signature of exactly ``body`` (the POST's bytes, as received), under ``public_key`` (the audit
    public key, pinned: ``courierguard audit head`` prints it)."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        return False
    return verify_signature(public_key, ALERT_SIGNATURE_CONTEXT + body, raw)


class WebhookSink:
    """POSTs each alert as JSON to ``url`` from a background thread.

    ``emit`` only enqueues (bounded by ``max_queue``), so a slow or dead receiver never delays a
    request; alerts that do not fit are counted in ``dropped``. Each POST has ``timeout_s``.

    With ``sign`` (the audit signer's), each POST carries :data:`SIGNATURE_HEADER`: the base64
    Ed25519 signature of :data:`ALERT_SIGNATURE_CONTEXT` + the body, so that the SIEM can tell the
    service's alerts from anyone's who found the webhook's URL (a renter's forged "all clear", or a
    flood of false alarms). Replays of a genuine alert repeat its ``id``: receivers keep each once.
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0, max_queue: int = 10_000,
                 client: httpx.Client | None = None,
                 sign: Callable[[bytes], bytes] | None = None) -> None:  # fmt: skip
        self.url = url
        self.timeout_s = timeout_s
        self._sign = sign
        self.dropped = 0
        self.failed = 0
        self.sent = 0
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=max_queue)
        self._client = client or httpx.Client(timeout=timeout_s)
        self._thread = threading.Thread(target=self._run, name="risk-alert-webhook", daemon=True)
        self._thread.start()

    def emit(self, alert: Alert) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            try:
                if alert is None:
                    return
                try:
                    body = orjson.dumps(alert.to_dict())
                    headers = {"content-type": "application/json"}
                    if self._sign is not None:
                        signature = self._sign(ALERT_SIGNATURE_CONTEXT + body)
                        headers[SIGNATURE_HEADER] = base64.b64encode(signature).decode("ascii")
                    resp = self._client.post(self.url, content=body, headers=headers, timeout=self.timeout_s)
                    resp.raise_for_status()
                    self.sent += 1
                except httpx.HTTPError as exc:
                    self.failed += 1
                    log.warning("risk alert %s not delivered: %s", alert.id, type(exc).__name__)
            finally:
                self._queue.task_done()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued alert was attempted (for shutdown and tests); True when done."""
        # A monotonic clock: the wall clock stepping during a shutdown must neither cut the wait
        # short (alerts left unsent) nor stretch it.
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            threading.Event().wait(0.01)
        return True

    def close(self) -> None:
        """Stop the background thread after the queued alerts are attempted."""
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=self.timeout_s + 1)
        self._client.close()


class FanoutSink:
    """Sends each alert to several sinks (e.g. the table, the audit log and the webhook)."""

    def __init__(self, *sinks: AlertSink) -> None:
        self.sinks = sinks

    def emit(self, alert: Alert) -> None:
        for sink in self.sinks:
            try:
                sink.emit(alert)
            except Exception as exc:  # one broken sink must not starve the others
                log.error("risk alert sink %s failed: %s", type(sink).__name__, type(exc).__name__)
