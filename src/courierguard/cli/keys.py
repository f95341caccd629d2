"""`courierguard keys ...`: rotation of key-encryption keys and crypto-shredding."""

from __future__ import annotations

from typing import Annotated

import typer

from courierguard.app import Core, open_core
from courierguard.audit import EntryKind
from courierguard.cli._common import (
    DatabaseUrl,
    DataDir,
    KeyFile,
    Tenant,
    console,
    one_line_errors,
    record,
    settings_from,
)
from courierguard.errors import NotFound


def _record(core: Core, body: dict[str, object]) -> None:
    """Key operations are audit entries like any access (kind ``key``)."""
    record(core, EntryKind.KEY, body)


app = typer.Typer(help="Manage encryption keys: rotate the key-encryption key, crypto-shred a month.")


@app.command()
def rotate(database_url: DatabaseUrl = None, data_dir: DataDir = None, key_file: KeyFile = None) -> None:
    """Create a new key-encryption key and re-wrap every data key under it (data is not re-encrypted).

    Example: courierguard keys rotate
    """
    with one_line_errors():
        settings = settings_from(database_url, data_dir, key_file)
        if settings.key_provider == "file" and not settings.resolved_key_file.exists():
            # Opening would create a fresh key file: a mistyped path must not leave a new keyring.
            raise NotFound(
                f"key file {settings.resolved_key_file} does not exist: rotate re-wraps the current keys"
            )
        core = open_core(settings)
        report = core.vault.rotate_keys()
        _record(core, {"op": "kek.rotate", "new_kek": report.new_kek, "retired": list(report.retired),
                       "rewrapped": report.rewrapped, "skipped": report.skipped})  # fmt: skip
        console.print(
            f"new key-encryption key {report.new_kek}; {report.rewrapped} data keys re-wrapped; "
            f"retired: {', '.join(report.retired) or 'none'}"
        )
        if report.skipped:
            console.print(
                f"[yellow]warning:[/yellow] {report.skipped} data keys use a KEK this key file lacks"
            )
        core.close()


@app.command()
def shred(
    month: Annotated[str, typer.Option("--month", help="The month to destroy, YYYY-MM.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """Crypto-shred one month: its data key is deleted and its personal data becomes unrecoverable.

    Example: courierguard keys shred --month 2026-04 --yes
    """
    with one_line_errors():
        settings = settings_from(database_url, data_dir, key_file, tenant)
        if not yes:
            typer.confirm(
                f"Irreversibly destroy all personal data of {month} for tenant {settings.tenant}?", abort=True
            )
        core = open_core(settings)
        # Checked first: a mistyped month must not leave a "shred started" entry, nor report success.
        if not core.vault.has_month(month):
            core.close()
            raise NotFound(f"no data key for {month} in tenant {settings.tenant}: nothing to shred")
        # Recorded before it happens: if the audit trail cannot take the entry, nothing is destroyed.
        _record(core, {"op": "month.shred.start", "tenant": settings.tenant, "month": month})
        report = core.vault.shred_month(month)
        _record(
            core,
            {"op": "month.shred.done", "tenant": settings.tenant, "month": month, "parties": report.parties},
        )
        console.print(f"shredded {report.month}: {report.parties} parties are now unrecoverable")
        core.close()
