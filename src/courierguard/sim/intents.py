"""Intents: the simulated events as things to *do*, for a driver that replays them against the live API.

A file run writes what the legacy system saw; a live run (``--live URL``, not built here) sends the
same intents to the gateway and lets the real policy and risk engine decide. Each intent carries the
original event too, so a driver can fall back to posting it as monitor-mode input.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from courierguard.sim.config import SimConfig
from courierguard.sim.engine import Simulation


@dataclass(frozen=True, slots=True)
class Intent:
    """One attempt by an employee, or by someone using their account."""

    at: str
    scenario: int  # 0 for normal work; a live driver must not send it
    action: str
    actor: str
    role: str | None
    org_unit: str | None
    session: str | None
    device: str | None
    ip: str | None
    auth: str | None
    waybill: str | None
    fields: tuple[str, ...]
    purpose: str | None
    ticket: str | None
    query_kind: str | None
    result_ids: tuple[str, ...]
    event: dict[str, Any]


def to_intent(event: dict[str, Any], scenario: int = 0) -> Intent:
    """The intent behind one Access Event v1 dict."""
    actor = event["actor"]
    session = event.get("session") or {}
    resource = event.get("resource") or {}
    query = event.get("query") or {}
    return Intent(
        at=event["ts"],
        scenario=scenario,
        action=event["action"],
        actor=actor["id"],
        role=actor.get("role"),
        org_unit=actor.get("org_unit"),
        session=session.get("id"),
        device=session.get("device_id"),
        ip=session.get("ip"),
        auth=session.get("auth"),
        waybill=resource.get("id"),
        fields=tuple(event.get("fields") or ()),
        purpose=event.get("purpose"),
        ticket=resource.get("ticket"),
        query_kind=query.get("kind"),
        result_ids=tuple(query.get("result_ids") or ()),
        event=event,
    )


def intents(config: SimConfig) -> Iterator[Intent]:
    """Every intent of a run, in time order."""
    for event, scenario in Simulation(config).labelled():
        yield to_intent(event, scenario)
