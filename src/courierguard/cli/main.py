"""The `courierguard` command. Each command parses its options and calls one core service."""

from __future__ import annotations

import typer

from courierguard import __version__
from courierguard.app import open_core
from courierguard.cli import admin, audit, keys, policy, risk, serve, sim
from courierguard.cli._common import (
    DatabaseUrl,
    DataDir,
    KeyFile,
    Tenant,
    console,
    one_line_errors,
    settings_from,
)

app = typer.Typer(
    help="Courier Guard: the safety valve for customer personal data inside a courier company.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(policy.app, name="policy")
app.add_typer(audit.app, name="audit")
app.add_typer(admin.app, name="admin")
app.command()(serve.serve)
app.command()(serve.run)
app.command()(sim.simulate)
app.command()(sim.evaluate)
app.command()(sim.demo)
app.command()(risk.replay)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


@app.command()
def init(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """Create the key file (mode 0600) if missing and bring the database schema up to date.

    Example: courierguard init --data-dir var
    """
    with one_line_errors():
        settings = settings_from(database_url, data_dir, key_file, tenant)
        core = open_core(settings)
        console.print(
            f"database ready at {core.engine.url.render_as_string(hide_password=True)}"
            + (
                f", audit trail at {core.audit_engine.url.render_as_string(hide_password=True)}"
                if core.audit_engine is not core.engine
                else ""
            )
            + "; "
            f"key provider: {settings.key_provider}"
            + (f" ({settings.resolved_key_file})" if settings.key_provider == "file" else "")
        )
        core.close()
