"""What every command shares: settings from options and environment, one-line errors."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import psycopg
import sqlalchemy.exc
import typer
from rich.console import Console

from courierguard.app import Core
from courierguard.audit import EntryKind, open_audit_log
from courierguard.config import Settings
from courierguard.errors import CourierGuardError

console = Console()
err_console = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL (default: COURIERGUARD_DATABASE_URL or SQLite)."),
]
DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Folder for SQLite and the key file (default: var).")
]
KeyFile = Annotated[
    Path | None, typer.Option("--key-file", help="Local key file (default: DATA_DIR/keys.json).")
]
Tenant = Annotated[
    str | None, typer.Option("--tenant", help="Tenant id (default: COURIERGUARD_TENANT or demo).")
]


def settings_from(
    database_url: str | None = None,
    data_dir: Path | None = None,
    key_file: Path | None = None,
    tenant: str | None = None,
    **extra: Any,
) -> Settings:
    return Settings.from_env(
        database_url=database_url, data_dir=data_dir, key_file=key_file, tenant=tenant, **extra
    )


DATABASE_UNREACHABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
"""What a database that cannot be reached raises, wrapped by SQLAlchemy or straight from the driver."""


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a CourierGuardError into one line on stderr and exit code 1; no traceback."""
    try:
        yield
    except CourierGuardError as exc:
        err_console.print(f"[red]error:[/red] {exc.diagnostics()}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except DATABASE_UNREACHABLE as exc:
        # Not the driver's message: it can name the host, the user and the database.
        err_console.print(
            f"[red]error:[/red] cannot reach the database ({exc.__class__.__name__}); "
            "check COURIERGUARD_DATABASE_URL and that the server is up",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    except OSError as exc:  # a path that is missing, a folder, or not writable: the path, the reason
        where = f": {exc.filename}" if exc.filename else ""
        err_console.print(
            f"[red]error:[/red] {exc.strerror or exc.__class__.__name__}{where}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


def run_guarded(fn: Callable[[], None]) -> None:
    with one_line_errors():
        fn()


def record(core: Core, kind: EntryKind, body: dict[str, object]) -> None:
    """An operator's action as an audit entry, durable before the command goes on: the body with
    the time, the tenant and the actor ``operator:<login>`` (who ran the command on the host)."""
    # The witness file too: every signed tree head goes there, an operator's as well as a worker's.
    audit = open_audit_log(
        core.audit_engine, core.keys, clock=core.clock, witness_file=core.settings.audit_witness_file
    )
    try:
        audit.append(
            kind,
            {"ts": core.clock.now().isoformat(), "actor": f"operator:{_login()}",
             "tenant": core.settings.tenant, **body},
        )  # fmt: skip
        audit.checkpoint()
    finally:
        audit.close()


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return "unknown"
