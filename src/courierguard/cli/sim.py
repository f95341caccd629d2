"""``courierguard simulate`` and ``courierguard evaluate``: thin typer commands over ``courierguard.sim``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from courierguard.sim.config import ALL_SCENARIOS, SCENARIOS, SimConfig
from courierguard.sim.evaluate import EvaluationResult
from courierguard.sim.evaluate import evaluate as run_evaluation
from courierguard.sim.writer import write_files

app = typer.Typer(help="Simulate a courier company with hidden attacks, and score a risk engine on it.")


def _parse_scenarios(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "all"):
        return ALL_SCENARIOS
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError as exc:
        raise typer.BadParameter("a comma-separated list of scenario numbers, e.g. 1,2,7") from exc


@app.command()
def simulate(
    out: Annotated[
        Path, typer.Option("--out", help="events file to write (Access Event v1, JSON Lines)")
    ] = Path("events.jsonl"),
    truth: Annotated[Path, typer.Option("--truth", help="ground-truth file to write (JSON Lines)")] = Path(
        "truth.jsonl"
    ),
    employees: Annotated[int, typer.Option(min=20, help="staff in the company")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="days to simulate")] = 28,
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 1,
    scenarios: Annotated[str, typer.Option(help="attack scenarios: all, none, or e.g. 1,2,7")] = "all",
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD (Asia/Shanghai)")] = "2026-11-02",
    attack_after_days: Annotated[int, typer.Option(min=0, help="no attack before this many days")] = 7,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Write a simulated company's access events and the ground truth of its attacks.

    Example: courierguard simulate --employees 2000 --days 28 --seed 7 --out ev.jsonl --truth truth.jsonl
    """
    try:
        config = SimConfig(
            employees=employees,
            days=days,
            seed=seed,
            start=date.fromisoformat(start),
            scenarios=_parse_scenarios(scenarios),
            attack_after_days=attack_after_days,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("days · {task.fields[events]:,} events"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    ) as bar:
        task = bar.add_task("days", total=config.days, events=0)

        def tick(done: int, total: int, events: int) -> None:
            bar.update(task, completed=done, events=events)

        summary = write_files(config, out, truth, tick)
    console.print(
        f"{summary.events:,} events ({summary.bytes_written / 1e6:,.0f} MB) in {summary.seconds:,.1f} s "
        f"({summary.events_per_second:,.0f}/s) → {out}; truth → {truth}"
    )
    for sid, count in sorted(summary.scenario_events.items()):
        console.print(f"  scenario {sid:>2} {SCENARIOS[sid]}: {count:,} events")


def _secs(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 120:
        return f"{value:,.0f} s"
    if value < 2 * 3600:
        return f"{value / 60:,.1f} min"
    if value < 2 * 86400:
        return f"{value / 3600:,.1f} h"
    return f"{value / 86400:,.1f} d"


def render(result: EvaluationResult, console: Console) -> None:
    """The per-scenario table and the normal-staff figures."""
    table = Table(title="Attack scenarios")
    for column in (
        "#",
        "scenario",
        "events",
        "detected",
        "step-up after",
        "deny/lock after",
        "all contained after",
        "records exposed",
        "fields exposed",
        "without engine",
    ):
        if column == "scenario":
            table.add_column(column, no_wrap=True, min_width=27)
        else:
            table.add_column(column, justify="left" if column == "detected" else "right")
    for s in result.scenarios:
        if s.skipped:
            table.add_row(str(s.scenario), s.name, "0", f"skipped: {s.skipped}", "", "", "", "", "", "")
            continue
        table.add_row(
            str(s.scenario),
            s.name,
            f"{s.events:,}",
            "[green]yes[/]" if s.detected else "[red]no[/]",
            _secs(s.first_step_up_s),
            _secs(s.first_contain_s),
            _secs(s.all_contained_s) if s.contained else "[red]not contained[/]",
            f"{s.records_exposed:,}",
            f"{s.fields_exposed:,}",
            f"{s.records_without_engine:,}",
        )
    console.print(table)
    n = result.normal
    console.print(
        f"Normal staff: {n.employee_days:,} employee-days, {n.events:,} events; "
        f"step-ups on {n.step_ups_per_1000:.2f} per 1,000 employee-days ({n.step_up_decisions:,} decisions); "
        f"false deny/lock on {n.blocks_per_10000:.2f} per 10,000 employee-days ({n.block_decisions:,} decisions); "
        f"{n.throttle_decisions:,} throttles."
    )
    if result.unmatched_decisions:
        console.print(f"[yellow]{result.unmatched_decisions:,} decisions name no event of the events file[/]")


@app.command()
def evaluate(
    events: Annotated[
        Path, typer.Argument(help="events file written by simulate", exists=True, dir_okay=False)
    ],
    truth: Annotated[
        Path, typer.Argument(help="truth file written by simulate", exists=True, dir_okay=False)
    ],
    decisions: Annotated[
        Path, typer.Argument(help="Risk Decision v1 lines (from replay)", exists=True, dir_okay=False)
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="print machine-readable JSON instead of tables")
    ] = False,
) -> None:
    """Score risk decisions against the simulator's ground truth.

    Example: courierguard evaluate ev.jsonl truth.jsonl decisions.jsonl --json
    """
    result = run_evaluation(events, truth, decisions)
    if as_json:
        typer.echo(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    render(result, Console(width=max(console.width, 150)) if not console.is_terminal else console)
