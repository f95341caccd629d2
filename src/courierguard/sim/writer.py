"""Writes a run to disk: the events file (JSON Lines) and the truth file (JSON Lines)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from courierguard.files import written_whole
from courierguard.sim.config import SimConfig
from courierguard.sim.engine import Simulation

_BUFFER = 8 * 1024 * 1024

Progress = Callable[[int, int, int], None]
"""Called after each simulated day with (days done, days in total, events written so far)."""


@dataclass(frozen=True, slots=True)
class SimSummary:
    """What a run wrote."""

    events: int
    days: int
    employee_days: int
    seconds: float
    bytes_written: int
    scenario_events: dict[int, int] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        """Generation and writing rate."""
        return self.events / self.seconds if self.seconds else 0.0


def write_truth(truth: list[dict[str, Any]], path: Path) -> None:
    """One JSON object a line: the ``meta`` line, then one ``scenario`` line per scenario."""
    with written_whole(path) as handle:
        for line in truth:
            handle.write(orjson.dumps(line) + b"\n")


def write_files(config: SimConfig, events: Path, truth: Path, progress: Progress | None = None) -> SimSummary:
    """Run the simulation and write ``events`` and ``truth``; byte-identical for the same config."""
    start = time.perf_counter()
    sim = Simulation(config)
    written = 0
    count = 0
    with written_whole(events, buffering=_BUFFER) as handle:
        for day, lines in enumerate(sim.batches(), start=1):
            handle.writelines(lines)
            written += sum(map(len, lines))
            count += len(lines)
            if progress is not None:
                progress(day, config.days, count)
    lines_out = sim.truth()
    write_truth(lines_out, truth)
    return SimSummary(
        events=count,
        days=config.days,
        employee_days=sim.employee_days,
        seconds=time.perf_counter() - start,
        bytes_written=written,
        scenario_events={t.scenario: len(t.event_ids) for t in sim.truths.values()},
    )
