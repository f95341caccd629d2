"""Helpers for the risk engine tests: hand-made event streams fed through the engine."""

from __future__ import annotations

import io
import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import orjson

from courierguard.events import AccessEvent
from courierguard.risk.alerts import MemorySink
from courierguard.risk.engine import ACTION_NAMES, RiskEngine
from courierguard.risk.record import from_dict
from courierguard.risk.replay import replay
from courierguard.risk.streams import START, courier_day, event, iter_lines

PHONE = ["recipient.phone"]
ALL3 = ["recipient.name", "recipient.phone", "recipient.address"]


class Feed:
    """An engine with a memory sink and a counter for unique event ids."""

    def __init__(self, engine: RiskEngine | None = None) -> None:
        self.sink = MemorySink()
        self.engine = engine or RiskEngine(sink=self.sink)
        if engine is not None:
            engine.sink = self.sink
        self.n = 0
        self.rng = random.Random(7)

    def one(
        self, ts: datetime, actor: str = "E1", action: str = "waybill.view", **kw: Any
    ) -> tuple[str, float, list[tuple[str, str | None]]]:
        self.n += 1
        sev, score, reasons = self.engine.decide(from_dict(event(f"t{self.n}", ts, actor, action, **kw)))
        return ACTION_NAMES[sev], score, reasons

    def many(self, events: Iterable[dict[str, Any]]) -> list[str]:
        return [ACTION_NAMES[self.engine.decide(from_dict(e))[0]] for e in events]

    def warm(
        self,
        actor: str = "E1",
        days: int = 4,
        device: str = "PDA-1",
        org: str = "OUT-BJ-001",
        parcels: int = 40,
    ) -> None:
        """``days`` normal working days for ``actor`` (days 0 .. days-1)."""
        for d in range(days):
            out = self.many(
                courier_day(self.rng, actor, d, device=device, org=org, parcels=parcels, unexplained=1)
            )
            assert set(out) == {"allow"}, out


def at(day: int, hour: float, minute: float = 0.0, second: float = 0.0) -> datetime:
    return START + timedelta(days=day, hours=hour, minutes=minute, seconds=second)


def codes(reasons: list[tuple[str, str | None]]) -> set[str]:
    return {c for c, _ in reasons}


def wb(i: int) -> str:
    return f"YT{4_000_000_000_000 + i * 7919:013d}"


def live_decisions(engine: RiskEngine, events: list[dict[str, Any]]) -> dict[str, str]:
    """Event id → action of every event ``engine`` does not allow, judged one by one as the gateway does."""
    out = {}
    for e in events:
        decision = engine.assess(AccessEvent.model_validate(e))
        if decision.action.value != "allow":
            out[e["id"]] = decision.action.value
    return out


def replayed_decisions(engine: RiskEngine, events: list[dict[str, Any]]) -> dict[str, str]:
    """The same from ``courierguard replay`` of the events as JSON Lines."""
    buf = io.BytesIO()
    replay(iter_lines(events), buf, engine)
    return {d["event_id"]: d["action"] for d in map(orjson.loads, buf.getvalue().splitlines())}
