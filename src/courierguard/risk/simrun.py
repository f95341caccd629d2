"""Run the risk engine against the company simulator: generate, replay, evaluate.

``python -m courierguard.risk.simrun --employees 300 --days 14`` prints per-scenario containment and
false-positive rates. Used while tuning and by ``benchmarks/risk.py``. Evaluation uses the
simulator's own evaluator when it is installed and falls back to a small one here otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from courierguard.risk.config import RiskConfig
from courierguard.risk.engine import RiskEngine
from courierguard.risk.record import BadEvent, from_dict
from courierguard.risk.replay import ReplaySummary, replay


def generate(employees: int, days: int, seed: int, folder: Path) -> tuple[Path, Path]:
    """Simulate a company into ``folder`` (reused when already there); returns (events, truth)."""
    from courierguard.sim.config import SimConfig
    from courierguard.sim.engine import Simulation

    folder.mkdir(parents=True, exist_ok=True)
    events = folder / f"events-{employees}x{days}-s{seed}.jsonl"
    truth = folder / f"truth-{employees}x{days}-s{seed}.jsonl"
    if events.exists() and truth.exists():
        return events, truth
    sim = Simulation(SimConfig(employees=employees, days=days, seed=seed))
    tmp = events.with_suffix(".part")
    with tmp.open("wb") as out:
        for batch in sim.batches():
            out.writelines(batch)
    with truth.open("wb") as out:
        for line in sim.truth():
            out.write(orjson.dumps(line) + b"\n")
    tmp.rename(events)
    return events, truth


def run(events: Path, decisions: Path, config: RiskConfig | None = None) -> ReplaySummary:
    """Replay ``events`` through a fresh engine into ``decisions``."""
    engine = RiskEngine(config)
    with events.open("rb") as src, decisions.open("wb") as dst:
        return replay(src, dst, engine)


def evaluate(events: Path, truth: Path, decisions: Path) -> dict[str, Any]:
    """Per-scenario containment and normal-staff rates (the simulator's evaluator when available)."""
    try:
        from courierguard.sim.evaluate import evaluate as sim_evaluate
    except ImportError:
        return own_evaluate(events, truth, decisions)
    result: dict[str, Any] = sim_evaluate(events, truth, decisions).to_dict()
    return result


def own_evaluate(events: Path, truth: Path, decisions: Path) -> dict[str, Any]:
    """A plain evaluator: clear-text records each attack got before its first deny/lock."""
    scen: dict[str, dict[str, Any]] = {}
    label: dict[str, str] = {}
    actors: set[str] = set()
    for line in truth.read_bytes().splitlines():
        t = orjson.loads(line)
        if t.get("type") == "scenario":
            scen[t["name"]] = t
            actors.update(t["actors"])
            for eid in t["event_ids"]:
                label[eid] = t["name"]
    dec: dict[str, str] = {}
    for line in decisions.read_bytes().splitlines():
        d = orjson.loads(line)
        dec[d["event_id"]] = d["action"]
    exposed: dict[str, int] = defaultdict(int)
    contained: dict[str, str | None] = dict.fromkeys(scen)
    first_step: dict[str, str | None] = dict.fromkeys(scen)
    normal_days: set[tuple[str, str]] = set()
    fp_days: set[tuple[str, str]] = set()
    step_days: set[tuple[str, str]] = set()
    fp_events = step_events = 0
    with events.open("rb") as fh:
        for raw in fh:
            try:
                r = from_dict(orjson.loads(raw))
            except (BadEvent, orjson.JSONDecodeError):
                continue
            action = dec.get(r.event_id, "allow")
            name = label.get(r.event_id)
            if name is not None:
                if action == "step_up" and first_step[name] is None:
                    first_step[name] = r.ts_text
                if action in ("deny", "lock") and contained[name] is None:
                    contained[name] = r.ts_text
                if contained[name] is None:
                    exposed[name] += r.exposed
            elif r.actor not in actors and r.kind != "service":
                key = (r.actor, r.ts_text[:10])
                normal_days.add(key)
                if action in ("deny", "lock"):
                    fp_days.add(key)
                    fp_events += 1
                elif action == "step_up":
                    step_days.add(key)
                    step_events += 1
    emp_days = max(1, len(normal_days))
    rows = []
    for name, t in scen.items():
        rows.append(
            {
                "scenario": t["scenario"],
                "name": name,
                "events": t["event_count"],
                "detected": contained[name] is not None or first_step[name] is not None,
                "start": t["start"],
                "first_step_up": first_step[name],
                "first_deny_or_lock": contained[name],
                "records_exposed": exposed[name],
                "skipped": t.get("notes", {}).get("skipped"),
            }
        )
    return {
        "scenarios": sorted(rows, key=lambda x: x["scenario"]),
        "normal": {
            "employee_days": emp_days,
            "false_deny_lock_days": len(fp_days),
            "false_deny_lock_events": fp_events,
            "false_deny_lock_per_10k_days": 10_000 * len(fp_days) / emp_days,
            "step_up_days": len(step_days),
            "step_up_events": step_events,
            "step_up_per_1k_days": 1000 * len(step_days) / emp_days,
        },
    }


def main() -> None:
    """CLI for tuning: generate (cached), replay, evaluate, print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--employees", type=int, default=300)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=Path("var/bench-risk"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    events, truth = generate(args.employees, args.days, args.seed, args.dir)
    t1 = time.perf_counter()
    decisions = args.dir / f"decisions-{args.employees}x{args.days}-s{args.seed}.jsonl"
    summary = run(events, decisions)
    t2 = time.perf_counter()
    result = own_evaluate(events, truth, decisions)
    print(f"generate {t1 - t0:.1f}s replay {t2 - t1:.1f}s ({summary.rate:,.0f}/s) {dict(summary.actions)}")
    for row in result["scenarios"]:
        print(row)
    print(result["normal"])
    exp = [r["records_exposed"] for r in result["scenarios"] if not r["skipped"]]
    if exp:
        print("median exposed", statistics.median(exp), "max", max(exp))


if __name__ == "__main__":
    main()
