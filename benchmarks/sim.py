"""Simulator throughput: 10 million Access Events generated and written on one core.

The baseline is the pure serialization and I/O cost: orjson-dumping the same number of pre-built
constant event dicts, of the same shape and size, to the same kind of file in the same run. The
ratio therefore says how much the simulation itself (the world, the behaviour, the sorting) adds.

``COURIERGUARD_BENCH_SIM_EVENTS`` lowers the event count for a quick run; the time is then
extrapolated linearly to 10 million and the note says so.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks.report import Report
from courierguard.sim import SimConfig, write_files

TARGET_EVENTS = 10_000_000
TARGET_SECONDS = 180.0
# About 7,100 events per employee over 28 days with all scenarios (2000 x 28 gave 14.2M).
EVENTS_PER_EMPLOYEE_28D = 7_000

_SAMPLE = {
    "v": 1,
    "id": "ev000000001",
    "ts": "2026-11-02T08:15:03.120+08:00",
    "actor": {"id": "E000123", "kind": "employee", "role": "courier", "org_unit": "OUT-BJ-001"},
    "session": {
        "id": "S0001234a1b2c3",
        "device_id": "UR12345ABCDE",
        "ip": "111.160.23.45",
        "user_agent": "YTPDA/6.2.1 (Android 10; UROVO DT50)",
        "location": {"lat": 39.91234, "lon": 116.40123},
        "auth": "password",
    },
    "action": "waybill.view",
    "resource": {
        "type": "waybill",
        "id": "YT4512000012345",
        "org_unit": "OUT-BJ-001",
        "assignee": "E000123",
        "status": "out_for_delivery",
        "status_ts": "2026-11-02T08:15:03.120+08:00",
    },
    "outcome": {"decision": "allow"},
}


def _baseline(n: int, path: Path) -> float:
    """Seconds to orjson-dump ``n`` constant dicts to ``path`` in 1 MB-ish chunks."""
    dumps = orjson.dumps
    option = orjson.OPT_APPEND_NEWLINE
    start = time.perf_counter()
    with path.open("wb", buffering=8 * 1024 * 1024) as handle:
        done = 0
        while done < n:
            batch = min(100_000, n - done)
            handle.write(b"".join([dumps(_SAMPLE, option=option) for _ in range(batch)]))
            done += batch
    return time.perf_counter() - start


def run(report: Report) -> None:
    """Generate ~10M events (or the sample size from the environment) and time it."""
    wanted = int(os.environ.get("COURIERGUARD_BENCH_SIM_EVENTS", TARGET_EVENTS))
    employees = max(20, -(-wanted // EVENTS_PER_EMPLOYEE_28D))
    config = SimConfig(employees=employees, days=28, seed=1)
    with tempfile.TemporaryDirectory(prefix="cg-bench-sim-") as folder:
        events_path = Path(folder) / "events.jsonl"
        summary = write_files(config, events_path, Path(folder) / "truth.jsonl")
        size = events_path.stat().st_size
        events_path.unlink()  # free the disk before the baseline writes as much again
        base_seconds = _baseline(summary.events, Path(folder) / "baseline.jsonl")
    rate = summary.events / summary.seconds
    base_rate = summary.events / base_seconds
    scaled = summary.seconds * TARGET_EVENTS / summary.events
    extrapolated = summary.events < TARGET_EVENTS
    note = f"{summary.events:,} events, {employees:,} employees x 28 days, {size / 1e9:,.1f} GB" + (
        f"; 10M time extrapolated from {summary.events:,}" if extrapolated else ""
    )
    report.add(
        "Simulator",
        "events generated and written (simulate)",
        rate,
        "events/s",
        baseline_name="orjson dump of constant dicts to the same file",
        baseline_value=base_rate,
        note=note,
    )
    report.add(
        "Simulator",
        "time for 10M events",
        scaled,
        "s",
        target="10M events ≤ 180 s",
        met=scaled <= TARGET_SECONDS,
        note="extrapolated" if extrapolated else "measured",
    )
