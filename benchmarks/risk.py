"""Risk engine benchmarks: containment on the simulated company, replay throughput, inline latency.

The containment figures come from the simulator at 2,000 employees x 28 days (attacks after the first
week), evaluated by the simulator's own evaluator. Events are cached under ``var/bench-risk``.
Set ``COURIERGUARD_BENCH_RISK_WORLD=300x14`` for a quick run while developing.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from pathlib import Path

import orjson

from benchmarks.report import Report, latencies_us
from courierguard.events import AccessEvent
from courierguard.risk.engine import RiskEngine
from courierguard.risk.interfaces import AllowAll
from courierguard.risk.replay import replay
from courierguard.risk.simrun import evaluate, generate
from courierguard.risk.streams import rented_stream

SECTION = "Risk engine"
RENTED = {"rented_night_fast", "rented_paced_same_city", "owner_and_renter_concurrent", "gang_shared_devices",
          "waybill_enumeration", "former_employee_account", "stolen_phone_after_reset"}  # fmt: skip
SLOW = {"insider_slow_reveals", "cs_snooping_without_ticket"}


def _containment(report: Report) -> Path:
    world = os.environ.get("COURIERGUARD_BENCH_RISK_WORLD", "2000x28")
    employees, days = (int(x) for x in world.split("x"))
    folder = Path(os.environ.get("COURIERGUARD_BENCH_RISK_DIR", "var/bench-risk"))
    events, truth = generate(employees, days, 1, folder)
    decisions = folder / f"decisions-{employees}x{days}-s1.jsonl"
    with events.open("rb") as src, decisions.open("wb") as dst:
        summary = replay(src, dst, RiskEngine())
    result = evaluate(events, truth, decisions)
    rows = [
        f"Simulated company: {employees:,} employees x {days} days, seed 1, attacks after day 7; "
        f"{summary.events:,} events replayed in {summary.seconds:,.0f} s.",
        "",
        "| # | scenario | detected | contained | records exposed before deny/lock | records without engine "
        "| masked rows exposed (without engine) | first step-up (s) | first deny/lock (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rented_exposed = []
    slow_ok = True
    for s in result["scenarios"]:
        if s.get("skipped"):
            rows.append(f"| {s['scenario']} | {s['name']} | skipped: {s['skipped']} | | | | | | |")
            continue
        if s["name"] in RENTED:
            rented_exposed.append(s["records_exposed"] if s["contained"] else 10**9)
        if s["name"] in SLOW:
            # two working days: contained, and the first deny within 48 h of the first attack event
            slow_ok &= bool(s["contained"]) and (s["first_contain_s"] or 0) <= 2 * 86_400

        def fmt(v: float | None) -> str:
            return "–" if v is None else f"{v:,.0f}"

        rows.append(
            f"| {s['scenario']} | {s['name']} | {'yes' if s['detected'] else 'no'} | "
            f"{'yes' if s['contained'] else '**no**'} | {s['records_exposed']:,} | {s['records_without_engine']:,} | "
            f"{s.get('masked_exposed', 0):,} ({s.get('masked_without_engine', 0):,}) | "
            f"{fmt(s['first_step_up_s'])} | {fmt(s['first_contain_s'])} |"
        )
    normal = result["normal"]
    rows += [
        "",
        f"Normal staff: {normal['employee_days']:,} employee-days; employee-days with a false deny/lock "
        f"{normal['block_days']:,} ({normal['false_blocks_per_10000_employee_days']:.2f} per 10,000); with a "
        f"step-up {normal['step_up_days']:,} ({normal['step_ups_per_1000_employee_days']:.2f} per 1,000).",
    ]
    report.add_table(SECTION, "\n".join(rows))
    if rented_exposed:
        med = statistics.median(rented_exposed)
        report.add(SECTION, "rented-account scenarios: median records exposed", med, "records",
                   target="<= 25, none over 200", met=med <= 25 and max(rented_exposed) <= 200)  # fmt: skip
    report.add(SECTION, "insider and snooping contained within two working days", float(slow_ok), "yes=1",
               target="1", met=slow_ok)  # fmt: skip
    report.add(SECTION, "false deny/lock per 10,000 employee-days", normal["false_blocks_per_10000_employee_days"],
               "per 10k", target="<= 1", met=normal["false_blocks_per_10000_employee_days"] <= 1)  # fmt: skip
    report.add(SECTION, "step-ups per 1,000 employee-days", normal["step_ups_per_1000_employee_days"], "per 1k",
               target="<= 5", met=normal["step_ups_per_1000_employee_days"] <= 5)  # fmt: skip
    return events


def _throughput(report: Report, events: Path) -> None:
    # The first 1 M lines of the simulated file: the same bytes for engine and baseline.
    lines: list[bytes] = []
    with events.open("rb") as fh:
        for i, line in enumerate(fh):
            if i >= 1_000_000:
                break
            lines.append(line)
    loads = orjson.loads
    t0 = time.perf_counter()
    for line in lines:
        loads(line)
    base = len(lines) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    replay(lines, io.BytesIO(), RiskEngine())
    rate = len(lines) / (time.perf_counter() - t0)
    report.add(SECTION, "replay throughput (parse, validate, decide, write)", rate, "events/s",
               baseline_name="orjson parse only", baseline_value=base, target=">= 50,000", met=rate >= 50_000)  # fmt: skip


def _latency(report: Report) -> None:
    events, _ = rented_stream(seed=9, couriers=40, days=6)
    parsed = [AccessEvent.model_validate(e) for e in events]
    engine = RiskEngine()
    allow = AllowAll()
    it = iter(parsed)
    lat = latencies_us(lambda: engine.assess(next(it)), len(parsed))
    it2 = iter(parsed)
    base = latencies_us(lambda: allow.assess(next(it2)), len(parsed))
    report.add(SECTION, "inline decision latency p99 (RiskEngine.assess, memory state)", lat["p99"], "µs",
               baseline_name="AllowAll.assess p99", baseline_value=base["p99"], target="<= 300 µs",
               met=lat["p99"] <= 300, note=f"p50 {lat['p50']:.0f} µs")  # fmt: skip


def run(report: Report) -> None:
    """Add the risk engine's figures and per-scenario table to ``report``."""
    _latency(report)
    events = _containment(report)
    _throughput(report, events)
