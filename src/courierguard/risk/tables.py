"""The risk engine's table: alerts with their evidence (migration ``0003_risk``)."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, String, Table, Text

from courierguard.db.tables import TS, metadata

risk_alerts = Table(
    "risk_alerts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("actor_id", String(64), nullable=False),
    Column("session_id", String(128)),
    Column("event_id", String(128), nullable=False),
    Column("ts", TS, nullable=False),
    Column("action", String(16), nullable=False),
    Column("score", Float, nullable=False),
    # JSON: the reason codes and the evidence (counts, waybill numbers, device ids; never PII values).
    Column("reasons", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("state", String(16), nullable=False, default="open"),
    Index(None, "tenant", "actor_id", "ts"),
    Index(None, "tenant", "state", "ts"),
)
