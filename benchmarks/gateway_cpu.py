"""Where a guarded reveal's CPU goes: an A/B tool for work on the gateway's request path (issue 3).

``python -m benchmarks.gateway_cpu [--rounds N] [--seconds S] [--postgres] MODE [MODE ...]`` serves each MODE of
:mod:`benchmarks._gateway_server` in turn (``guarded``, ``allow-all``, ``plain``, ``plain-sync``, each
optionally ``+h11``), ROUNDS times, with the same load as ``make bench``: one uvicorn worker pinned
to one CPU, the load generator on the other, reveals of one field. Every server starts from a fresh
copy of one seeded data folder, so the audit log does not grow from run to run.

Per round it prints the 2xx rate and the server's CPU per 2xx response, split into the event loop's
thread and the rest (the audit writer, mostly), read from /proc. CPU per response moves less than
the rate does, yet the machine's speed drifts between rounds (the guarded figure moved between 450
and 600 µs in one session): compare modes within a round, over several rounds, as the ratios
against the last MODE do. Prints only; ``make bench`` writes BENCHMARKS.md. Linux only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks import gateway
from benchmarks.gateway import Work
from benchmarks.postgres import PG_ADMIN_URL, postgres_database

_PLACEHOLDER_TOKEN = "x" * 300
"""For a plain mode measured before any guarded one: the unguarded app never reads the token."""


def _measure(
    data: Path, cpus: tuple[int, int], mode: str, work: Work, tokens: dict[str, str], database_url: str | None
) -> tuple[float, float, float, dict[str, str]]:
    """(2xx/s, loop µs per 2xx, other threads' µs per 2xx, tokens) of one server of ``mode``."""
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    got, tokens = gateway._measure_http(
        data, cpus, mode, work, ["reveal"], tokens if mode.startswith("plain") else None, database_url
    )
    reveal = got["reveal"]
    return reveal.rate, reveal.loop_us, reveal.cpu_us - reveal.loop_us, tokens


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gateway_cpu", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "modes", nargs="+", help="modes of benchmarks._gateway_server; the last is the baseline"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--seconds", type=float, default=gateway.HTTP_SECONDS, help="measured window per server"
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="records and audit trail in a fresh PostgreSQL database (COURIERGUARD_BENCH_PG) instead of SQLite",
    )
    args = parser.parse_args(argv)
    if len(set(args.modes)) != len(args.modes):
        parser.error("name each mode once")
    gateway.HTTP_SECONDS = args.seconds
    with postgres_database() if args.postgres else contextlib.nullcontext() as database_url:
        if args.postgres and database_url is None:
            parser.error(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
        _compare(args.modes, args.rounds, database_url)
    return 0


def _compare(modes: list[str], rounds: int, database_url: str | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cg-gateway-cpu-"))
    pristine, data = tmp / "seeded", tmp / "data"
    pinned = os.sched_getaffinity(0)
    try:
        pristine.mkdir()
        dep, work = gateway.seeded(pristine, database_url)
        dep.close()
        cpus = gateway._cpus()
        tokens = {c: _PLACEHOLDER_TOKEN for c, _ in work}
        rates: dict[str, list[float]] = {m: [] for m in modes}
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        for round_no in range(rounds):
            for mode in modes:
                # A fresh copy of the seeded folder each time (on PostgreSQL it holds only the keys).
                shutil.rmtree(data, ignore_errors=True)
                shutil.copytree(pristine, data)
                rate, loop_us, other_us, tokens = _measure(data, cpus, mode, work, tokens, database_url)
                rates[mode].append(rate)
                cpu[mode].append(loop_us + other_us)
                print(f"round {round_no}  {mode:18} {rate:7,.0f} 2xx/s  {loop_us + other_us:4.0f} µs CPU per 2xx "
                      f"(event loop {loop_us:4.0f}, other threads {other_us:3.0f})", flush=True)  # fmt: skip
        base = modes[-1]
        for mode in modes:
            ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(rates[mode], rates[base], strict=True))
            print(f"{mode:18} median {statistics.median(rates[mode]):7,.0f} 2xx/s, "
                  f"{statistics.median(cpu[mode]):4.0f} µs CPU per 2xx; rate / {base}: {ratios}")  # fmt: skip
    finally:
        os.sched_setaffinity(0, pinned)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
