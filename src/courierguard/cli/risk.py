"""``courierguard replay``: monitor mode over a file of Access Event v1 lines."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from courierguard.cli._common import one_line_errors
from courierguard.errors import ConfigError
from courierguard.files import written_whole
from courierguard.risk.config import RiskConfig
from courierguard.risk.engine import RiskEngine
from courierguard.risk.replay import replay as run_replay

app = typer.Typer(help="Risk engine: monitor mode over access events.")


@app.command()
def replay(
    events: Annotated[
        Path,
        typer.Argument(
            help="Access Event v1 JSON Lines, in time order.", exists=True, dir_okay=False, readable=True
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where Risk Decision v1 lines are written.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="Risk config (.yaml, .toml or .json); defaults otherwise.")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Run the live risk engine over EVENTS and write a decision for every event not allowed.

    Bad lines are reported on stderr by line number and skipped; a summary ends the run.
    """
    err = Console(stderr=True, highlight=False)
    try:
        cfg = RiskConfig.load(config) if config else RiskConfig()
    except ConfigError as exc:
        err.print(exc.diagnostics())
        raise typer.Exit(2) from None
    engine = RiskEngine(cfg)

    def on_bad(lineno: int, message: str) -> None:
        sys.stderr.write(f"{events.name}:{lineno}: bad event: {message}\n")

    disorder_shown = [0]

    def on_disorder(lineno: int, message: str) -> None:
        disorder_shown[0] += 1
        if disorder_shown[0] <= 20:  # the first ones point at the cause; the summary counts them all
            sys.stderr.write(f"{events.name}:{lineno}: out of time order: {message}\n")

    total = events.stat().st_size
    # Whole or not at all: a replay stopped half-way would leave decisions that evaluate scores as complete.
    with one_line_errors(), events.open("rb") as src, written_whole(out) as dst:
        if progress and total:
            with Progress(
                TextColumn("replay"), BarColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                console=err, transient=True,
            ) as bar:  # fmt: skip
                task = bar.add_task("replay", total=total)
                summary = run_replay(
                    src, dst, engine, on_bad=on_bad, on_disorder=on_disorder,
                    on_progress=lambda done: bar.update(task, completed=done),
                )  # fmt: skip
        else:
            summary = run_replay(src, dst, engine, on_bad=on_bad, on_disorder=on_disorder)
    acts = summary.actions
    err.print(
        f"replayed {summary.events:,} events in {summary.seconds:,.1f} s ({summary.rate:,.0f}/s); "
        f"bad lines {summary.bad_lines:,}; out of time order {summary.out_of_order:,}; "
        f"decisions {summary.decisions:,}: "
        + ", ".join(f"{a} {acts[a]:,}" for a in ("step_up", "throttle", "deny", "lock"))
        + f"; accounts locked {len(summary.locked_accounts):,}"
    )


def main() -> None:  # pragma: no cover - `python -m courierguard.cli.risk`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
