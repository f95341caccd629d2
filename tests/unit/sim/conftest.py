"""A small simulated company, written once per test session (60 employees, 10 days, all attacks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from courierguard.sim import SimConfig, SimSummary, write_files

SMALL = SimConfig(employees=60, days=10, seed=11, attack_after_days=7)


@dataclass
class Run:
    config: SimConfig
    events_path: Path
    truth_path: Path
    summary: SimSummary
    events: list[dict[str, Any]]
    truth: list[dict[str, Any]]

    def scenario(self, sid: int) -> dict[str, Any]:
        return next(t for t in self.truth if t.get("scenario") == sid)

    def labels(self) -> dict[str, int]:
        return {eid: t["scenario"] for t in self.truth if t["type"] == "scenario" for eid in t["event_ids"]}


def make_run(config: SimConfig, folder: Path) -> Run:
    events_path = folder / "events.jsonl"
    truth_path = folder / "truth.jsonl"
    summary = write_files(config, events_path, truth_path)
    events = [orjson.loads(line) for line in events_path.read_bytes().splitlines()]
    truth = [orjson.loads(line) for line in truth_path.read_bytes().splitlines()]
    return Run(config, events_path, truth_path, summary, events, truth)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return make_run(SMALL, tmp_path_factory.mktemp("sim-small"))
