"""`make bench`: runs every benchmark module on one core and writes BENCHMARKS.md.

Usage: ``python -m benchmarks.run [module ...]`` (default: all). Each module exposes
``run(report)``. Benchmarks pin themselves to one CPU where the OS allows, as the issues ask for
figures "on one core".
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.report import Figure, Report, machine, speed_probe

MODULES = ["vault", "policy", "gateway", "audit", "sim", "risk"]


def _pin_one_core() -> str:
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        return "pinned to one core (sched_setaffinity)"
    except (AttributeError, OSError):
        return "not pinned"


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def render(
    report: Report,
    started: datetime,
    seconds: float,
    pinning: str,
    modules: list[str],
    speed: tuple[float, float] | None = None,
) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC in {seconds:,.0f} s by `make bench` "
        f"(`python -m benchmarks.run {' '.join(modules)}`).",
        f"Machine: {machine()}; {pinning}.",
        *(
            [
                f"Machine speed (a fixed pure-Python loop, `benchmarks.report.speed_probe`): "
                f"{speed[0]:.1f} M iterations/s at the start of the run, {speed[1]:.1f} at the end. "
                "This VM's speed drifts by up to 2x between hours: compare absolute figures across "
                "runs only at a similar speed; the ratios, measured in turns, drift much less."
            ]
            if speed
            else []
        ),
        "",
        "Every figure stands beside a baseline measured in the same run; the ratio is figure / baseline.",
        "",
    ]
    sections: dict[str, list[Figure]] = {}
    for fig in report.figures:
        sections.setdefault(fig.section, []).append(fig)
    for section, figs in sections.items():
        lines += [
            f"## {section}",
            "",
            "| figure | value | baseline | ratio | target | met |",
            "|---|---|---|---|---|---|",
        ]
        for f in figs:
            base = (
                f"{_fmt(f.baseline_value)} {f.unit} ({f.baseline_name})"
                if f.baseline_value is not None
                else "–"
            )
            ratio = f"{f.ratio:.2f}" if f.ratio is not None else "–"
            met = "–" if f.met is None else ("yes" if f.met else "**no**")
            name = f.name + (f" ({f.note})" if f.note else "")
            lines.append(
                f"| {name} | {_fmt(f.value)} {f.unit} | {base} | {ratio} | {f.target or '–'} | {met} |"
            )
        lines.append("")
        for tsection, table in report.tables:
            if tsection == section:
                lines += [table, ""]
    for tsection, table in report.tables:
        if tsection not in sections:
            lines += [f"## {tsection}", "", table, ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    modules = argv or MODULES
    pinning = _pin_one_core()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    report = Report()
    speed_at_start = speed_probe()
    for name in modules:
        print(f"== {name}")
        module = importlib.import_module(f"benchmarks.{name}")
        module.run(report)
    speed = (speed_at_start, speed_probe())
    text = render(report, started, time.perf_counter() - t0, pinning, modules, speed)
    Path("BENCHMARKS.md").write_text(text, encoding="utf-8")
    print("wrote BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
