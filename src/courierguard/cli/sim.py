"""``courierguard simulate`` and ``courierguard evaluate``: thin typer commands over ``courierguard.sim``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from courierguard.cli._common import one_line_errors
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
    live: Annotated[
        str | None,
        typer.Option("--live", metavar="URL", help="drive a running Courier Guard instead of writing files"),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="--live: service API key for ingest")
    ] = None,
    admin: Annotated[
        str | None, typer.Option("--admin", help="--live: id of an existing admin who builds the directory")
    ] = None,
    officer: Annotated[
        str | None,
        typer.Option(
            "--officer", help="--live: id of an existing security officer who approves privileged roles"
        ),
    ] = None,
    speed: Annotated[
        float, typer.Option(min=0, help="--live: simulated seconds per real second (0: as fast as possible)")
    ] = 600.0,
    workers: Annotated[int, typer.Option(min=1, max=64, help="--live: parallel HTTP clients")] = 4,
    setup: Annotated[
        bool, typer.Option("--setup/--no-setup", help="--live: create org units, staff and waybills first")
    ] = True,
) -> None:
    """Write a simulated company's access events and the ground truth of its attacks.

    With --live URL the same intents are sent to a running service through its API (see the
    "Live mode" section of docs/simulator.md).

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
    if live is not None:
        _live(config, live, api_key, admin, officer, speed, workers, setup, console, quiet)
        return
    if out.resolve() == truth.resolve():
        raise typer.BadParameter("--out and --truth name the same file; the truth would overwrite the events")
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

        with one_line_errors():
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
        "masked exposed",
        "masked without engine",
        "phone searches answered",
    ):
        if column == "scenario":
            table.add_column(column, no_wrap=True, min_width=27)
        else:
            table.add_column(column, justify="left" if column == "detected" else "right")
    for s in result.scenarios:
        if s.skipped:
            table.add_row(str(s.scenario), s.name, "0", f"skipped: {s.skipped}", *[""] * 9)
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
            f"{s.masked_exposed:,}",
            f"{s.masked_without_engine:,}",
            f"{s.phone_searches_answered:,} of {s.phone_searches_without_engine:,}",
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
    with one_line_errors():
        result = run_evaluation(events, truth, decisions)
    if as_json:
        typer.echo(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    render(result, Console(width=max(console.width, 200)) if not console.is_terminal else console)


def _live(
    config: SimConfig, url: str, api_key: str | None, admin: str | None, officer: str | None, speed: float,
    workers: int, setup: bool, console: Console, quiet: bool,
) -> None:  # fmt: skip
    from courierguard.sim.engine import Simulation
    from courierguard.sim.intents import to_intent
    from courierguard.sim.live import IntentResult, LiveOptions, LiveSetupError, drive

    if not api_key or not admin:
        raise typer.BadParameter("--live needs --api-key (ingest) and --admin (an admin employee id)")
    sim = Simulation(config)
    intents = [to_intent(e, s) for e, s in sim.labelled()]
    options = LiveOptions(
        api_key=api_key, admin=admin, officer=officer, speed=speed, workers=workers, setup=setup
    )
    with Progress(
        TextColumn("[bold]live"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("intents · {task.fields[at]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    ) as bar:
        task = bar.add_task("intents", total=len(intents), at="")

        def tick(result: IntentResult) -> None:
            bar.update(task, advance=1, at=result.at[:16])

        try:
            report = drive(url, intents, sim.world, options, seed=config.seed, on_result=tick)
        except LiveSetupError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
    table = Table(title=f"Live run against {url}: {report.requests:,} requests in {report.seconds:,.1f} s")
    for column in ("#", "scenario", "intents", "first step-up", "contained at", "records served", "outcomes"):
        table.add_column(column, overflow="fold")
    for sid in sorted(report.scenarios):
        t = report.scenarios[sid]
        top = ", ".join(f"{k} {n:,}" for k, n in t.outcomes.most_common(6))
        table.add_row(
            str(sid), SCENARIOS.get(sid, "normal work"), f"{t.intents:,}", t.first_step_up or "–",
            t.first_contained or "–", f"{len(t.records):,}", top,
        )  # fmt: skip
    console.print(table)


def demo(
    quick: Annotated[bool, typer.Option("--quick", help="a few seconds instead of about a minute")] = False,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="keep the demo's database and keys here")
    ] = None,
    employees: Annotated[int, typer.Option(min=20, max=400, help="staff in the demo company")] = 40,
    seed: Annotated[int, typer.Option(help="seed of the synthetic company")] = 2,
) -> None:
    """Run a compressed working day with a rented-account attack against the live API, and watch it.

    Starts Courier Guard in-process (embedded default, accelerated clock) on a free loopback port,
    seeds a synthetic company and plays its day through the HTTP API.

    Example: courierguard demo --quick
    """
    from courierguard.logging import configure_logging
    from courierguard.sim.demo import DemoConfig, run_demo

    configure_logging("error")  # per-request log lines would drown the story
    config = DemoConfig.quick_config(data_dir) if quick else DemoConfig(employees=employees, seed=seed,
                                                                       data_dir=data_dir)  # fmt: skip
    _run_demo(config, Console(), run_demo)


def _run_demo(config: Any, console: Console, run: Any) -> None:
    from datetime import datetime

    from courierguard.sim.demo import DemoEvent
    from courierguard.sim.live import IntentResult

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[clock]}"),
        TextColumn("· {task.fields[requests]:,} requests · {task.fields[served]:,} reveals served to staff"),
        TextColumn("· renter {task.fields[renter]:,} attempts"),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("preparing", total=1.0, clock="", requests=0, served=0, renter=0)
    state: dict[str, Any] = {"last": None, "repeat": 0, "renter": 0, "served": 0, "requests": 0}
    lock = __import__("threading").Lock()

    def phase(text: str) -> None:
        progress.update(task, description=text)

    def started(url: str, folder: Path) -> None:
        console.print(f"Courier Guard listening on {url} (data in {folder}); all data is synthetic.")

    span: dict[str, Any] = {}

    def clock_ready(clock: Any, first: datetime, end: datetime) -> None:
        span.update(clock=clock, first=first, end=end)

    def flush_repeat() -> None:
        if state["repeat"]:
            progress.console.print(f"           … {state['repeat']} more the same")
            state["repeat"] = 0

    def on_result(result: IntentResult) -> None:
        with lock:
            state["requests"] += 1
            if result.scenario == 0 and result.records:
                state["served"] += 1
            if "clock" in span:
                now = span["clock"].now()
                total = (span["end"] - span["first"]).total_seconds()
                done = min(1.0, max(0.0, (now - span["first"]).total_seconds() / total))
                progress.update(task, completed=done, clock=now.strftime("%H:%M"))
            if result.scenario != 0 and result.outcome in ("skipped", "unsupported"):
                state["skipped"] = state.get("skipped", 0) + 1
            elif result.scenario != 0:
                state["renter"] += 1
                key = (result.action, result.status, result.outcome, result.step_up)
                if key == state["last"]:
                    state["repeat"] += 1
                else:
                    flush_repeat()
                    state["last"] = key
                    status = "—" if result.status == 0 else str(result.status)
                    what = f"{result.action} {result.waybill or ''}".strip()
                    step = f" (step-up with a guessed code: {result.step_up})" if result.step_up else ""
                    colour = "green" if result.outcome == "ok" else "red"
                    progress.console.print(
                        f"[dim]{result.at[11:19]}[/] renter on {result.actor} from device {result.device}: "
                        f"{what} → [{colour}]{status} {result.outcome}[/]{step}"
                    )
            progress.update(task, requests=state["requests"], served=state["served"], renter=state["renter"])

    def on_event(event: DemoEvent) -> None:
        console.print(f"[dim]{event.at[11:19]}[/] [yellow]{event.text}[/]")

    with progress:
        result = run(config, on_start=started, on_phase=phase, on_result=on_result, on_event=None,
                     clock_ready=clock_ready)  # fmt: skip
        with lock:
            flush_repeat()
            if state.get("skipped"):
                progress.console.print(
                    f"           the script's {state['skipped']:,} further requests were never answered: "
                    "the account is locked and its sessions revoked"
                )
        progress.update(task, description="done", completed=1.0)
    table = Table(title="Alerts raised for the rented account")
    for column in ("time", "action", "score", "reasons"):
        table.add_column(column)
    for alert in result.alerts:
        table.add_row(
            str(alert["ts"])[11:19], str(alert["action"]), f"{alert['score']:.0f}",
            ", ".join(r["code"] for r in alert["reasons"]),
        )  # fmt: skip
    console.print(table)
    del on_event
    console.print(
        f"Baselines learned from {result.warmup_events:,} events in monitor mode; "
        f"{result.report.requests:,} live requests in {result.seconds:,.1f} s."
    )
    console.print(f"[bold]{result.summary()}[/]", soft_wrap=True)
