"""`courierguard serve`: the HTTP API on uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from courierguard.cli._common import (
    DatabaseUrl,
    DataDir,
    KeyFile,
    Tenant,
    console,
    one_line_errors,
    settings_from,
)
from courierguard.logging import configure_logging


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8700).")] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """Run the HTTP API (one worker; run several behind a proxy with RISK_STATE=redis and PostgreSQL).

    Example: courierguard serve --port 8700
    """
    import uvicorn

    from courierguard.gateway.http import create_app
    from courierguard.gateway.wiring import open_deployment

    with one_line_errors():
        settings = settings_from(database_url, data_dir, key_file, tenant, host=host, port=port)
        configure_logging(settings.log_level)
        deployment = open_deployment(settings)
        app = create_app(deployment)
        console.print(f"Courier Guard API on http://{settings.host}:{settings.port}/v1/docs")
        try:
            uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
        finally:
            deployment.close()


def run(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8700).")] = None,
    data_dir: DataDir = None,
    employees: Annotated[int, typer.Option(help="Size of the seeded demo company.", min=20, max=5000)] = 80,
) -> None:
    """Start the embedded default: SQLite, local key file, a seeded demo company (first run only).

    Example: courierguard run
    """
    import uvicorn

    from courierguard.gateway.http import create_app
    from courierguard.gateway.wiring import open_deployment
    from courierguard.sim.seed import seed_company

    with one_line_errors():
        settings = settings_from(data_dir=data_dir, host=host, port=port)
        configure_logging(settings.log_level)
        deployment = open_deployment(settings)
        guard = deployment.guard
        if guard.company.count_waybills() == 0:
            with console.status("seeding a synthetic demo company (first run only)..."):
                seeded = seed_company(guard.company, guard.vault, now=guard.clock.now(), employees=employees)
                _, key = guard.api_keys.create("demo-order-system", guard.clock.now())
            (settings.data_dir / "demo-api-key.txt").write_text(key + "\n", encoding="utf-8")
            (settings.data_dir / "demo-api-key.txt").chmod(0o600)
            console.print(
                f"seeded {len(seeded.world.staff)} employees, {len(seeded.waybills)} waybills; "
                f"order-system API key in {settings.data_dir / 'demo-api-key.txt'}"
            )
        base = f"http://{settings.host}:{settings.port}"
        console.print(f"[bold]Courier Guard[/bold] is running: console and API at {base}/v1/docs")
        console.print(
            f"  sign in as any demo employee: POST {base}/v1/dev/token {{'employee_id': 'E000001'}}"
        )
        console.print("  stop with Ctrl-C; data stays in " + str(settings.data_dir))
        try:
            uvicorn.run(create_app(deployment), host=settings.host, port=settings.port, log_level="warning")
        finally:
            deployment.close()
