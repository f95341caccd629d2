"""Collects benchmark figures and writes BENCHMARKS.md.

Every figure is recorded beside a baseline measured in the same run, so the ratio is meaningful on
whatever machine runs it. A benchmark module exposes ``run(report: Report) -> None``.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0):
            return None
        assert self.baseline_value is not None
        return self.value / self.baseline_value


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)

    def add(self, section: str, name: str, value: float, unit: str, **kwargs: object) -> Figure:
        fig = Figure(section, name, value, unit, **kwargs)  # type: ignore[arg-type]
        self.figures.append(fig)
        print(
            f"  {section} / {name}: {value:,.1f} {unit}" + (f" (ratio {fig.ratio:.2f})" if fig.ratio else "")
        )
        return fig

    def add_table(self, section: str, markdown: str) -> None:
        """A free-form markdown table (e.g. per-scenario detection results)."""
        self.tables.append((section, markdown))


def rate(fn: Callable[[], int], *, min_seconds: float = 1.0, repeat: int = 3) -> float:
    """Best-of-``repeat`` items per second of ``fn``, which returns how many items it processed."""
    best = 0.0
    for _ in range(repeat):
        done = 0
        start = time.perf_counter()
        while True:
            done += fn()
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = max(best, done / elapsed)
    return best


def paired_rates(
    fn: Callable[[], int], baseline: Callable[[], int], *, repeat: int = 3
) -> tuple[float, float]:
    """Best-of-``repeat`` items per second of ``fn`` and of ``baseline``, measured in turns (one of
    each, ``repeat`` times), so that a slow phase of the machine falls on both alike."""
    best = [0.0, 0.0]
    for _ in range(repeat):
        for i, f in enumerate((fn, baseline)):
            start = time.perf_counter()
            done = f()
            best[i] = max(best[i], done / (time.perf_counter() - start))
    return best[0], best[1]


def latencies_us(fn: Callable[[], object], n: int) -> dict[str, float]:
    """p50 / p99 / mean latency of ``n`` calls of ``fn``, in microseconds."""
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return {
        "p50": samples[len(samples) // 2],
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "mean": statistics.fmean(samples),
    }


def speed_probe(seconds: float = 2.0) -> float:
    """Millions of iterations per second of a fixed pure-Python loop (dict, str and int work).

    A yardstick, not a figure: this VM's speed drifts by up to 2x between hours, which moves every
    absolute figure (the ratios much less). Taken at the start and the end of a run, it tells a
    reader whether a missed absolute target was a slow hour or a slower product.
    """
    done = 0
    table: dict[str, int] = {}
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for i in range(10_000):
            key = f"k{i & 255}"
            table[key] = table.get(key, 0) + i * 3
        done += 10_000
    return done / elapsed / 1e6


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = "?"
    return (
        f"{cpu}; {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"{platform.system()} {platform.release()}; commit {commit or '?'}"
    )
