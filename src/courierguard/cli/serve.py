"""`courierguard serve`: the HTTP API on uvicorn."""

from __future__ import annotations

import json
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
from courierguard.errors import ConfigError
from courierguard.logging import configure_logging
from courierguard.sim.seed import SeededCompany


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
    from courierguard.gateway.http import create_app
    from courierguard.gateway.server import serve as serve_app
    from courierguard.gateway.wiring import open_deployment

    with one_line_errors():
        settings = settings_from(database_url, data_dir, key_file, tenant, host=host, port=port)
        configure_logging(settings.log_level)
        deployment = open_deployment(settings)
        app = create_app(deployment)
        console.print(f"Courier Guard API on http://{settings.host}:{settings.port}/v1/docs")
        try:
            serve_app(app, settings)
        finally:
            deployment.close()


def demo_accounts(seeded: SeededCompany) -> dict[str, dict[str, str]]:
    """A few accounts with something to do, for the README's tour."""
    courier, parcels = next((c, n) for c, n in sorted(seeded.deliveries.items()) if n)
    person = next(p for p in seeded.world.staff if p.id == courier)
    clerk = next(p for p in seeded.world.by_role("outlet_clerk") if p.unit.id == person.unit.id)
    agent, tickets = sorted(seeded.tickets.items())[0]
    return {
        "courier": {"employee_id": courier, "org_unit": person.unit.id, "waybill": parcels[0],
                    "note": f"out for delivery: {parcels[0]} ({person.unit.id})"},
        "outlet_clerk": {"employee_id": clerk.id, "org_unit": clerk.unit.id, "note": f"clerk at {clerk.unit.id}"},
        "customer_service": {"employee_id": agent, "waybill": tickets[0][1],
                             "note": f"open ticket {tickets[0][0]} on {tickets[0][1]}"},
        "security_officer": {"employee_id": seeded.officers[0], "note": "reveals only with a second officer"},
        "security_officer_2": {"employee_id": seeded.officers[1], "note": "the second officer"},
    }  # fmt: skip


def run(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8700).")] = None,
    data_dir: DataDir = None,
    employees: Annotated[int, typer.Option(help="Size of the seeded demo company.", min=20, max=5000)] = 80,
) -> None:
    """Start the embedded default: SQLite, local key file, a seeded demo company (first run only).

    Example: courierguard run
    """
    from courierguard.gateway.http import create_app
    from courierguard.gateway.server import serve as serve_app
    from courierguard.gateway.wiring import open_deployment
    from courierguard.sim.seed import seed_company

    with one_line_errors():
        settings = settings_from(data_dir=data_dir, host=host, port=port)
        configured = [n for n, url in (("DATABASE_URL", settings.database_url),
                                       ("AUDIT_DATABASE_URL", settings.audit_database_url)) if url]  # fmt: skip
        if configured:
            # The demo seeds 80 synthetic employees, an administrator among them, and an API key: into a
            # production database they would be accounts nobody asked for.
            raise ConfigError(
                f"`run` is the embedded demo on SQLite under DATA_DIR, yet COURIERGUARD_{configured[0]} is set; "
                "use `courierguard serve` for a configured database (it seeds nothing)"
            )
        configure_logging(settings.log_level)
        deployment = open_deployment(settings)
        guard = deployment.guard
        if guard.company.count_waybills() == 0:
            with console.status("seeding a synthetic demo company (first run only)..."):
                seeded = seed_company(guard.company, guard.vault, now=guard.clock.now(), employees=employees)
                _, key = guard.api_keys.create("demo-order-system", guard.clock.now())
            (settings.data_dir / "demo-api-key.txt").write_text(key + "\n", encoding="utf-8")
            (settings.data_dir / "demo-api-key.txt").chmod(0o600)
            (settings.data_dir / "demo-accounts.json").write_text(
                json.dumps(demo_accounts(seeded), indent=2), encoding="utf-8"
            )
            console.print(
                f"seeded {len(seeded.world.staff)} employees, {len(seeded.waybills)} waybills; "
                f"order-system API key in {settings.data_dir / 'demo-api-key.txt'}"
            )
        accounts_file = settings.data_dir / "demo-accounts.json"
        if accounts_file.exists():
            accounts = json.loads(accounts_file.read_text(encoding="utf-8"))
            console.print("demo accounts (" + str(accounts_file) + "):")
            for role, info in accounts.items():
                console.print(f"  {role:<18} {info['employee_id']:<9} {info['note']}", highlight=False)
        base = f"http://{settings.host}:{settings.port}"
        console.print(
            f"[bold]Courier Guard[/bold] is running at {base} (interactive API docs: {base}/v1/docs)"
        )
        console.print(
            f"  sign in as a demo employee: see the README's tour (POST {base}/v1/dev/token)", highlight=False
        )
        console.print("  stop with Ctrl-C; data stays in " + str(settings.data_dir))
        try:
            serve_app(create_app(deployment), settings)
        finally:
            deployment.close()
