"""`courierguard keys ...`: rotation of key-encryption keys, crypto-shredding and row seals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from courierguard.app import Core, open_core
from courierguard.audit import AuditQueries, EntryKind
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
from courierguard.config import Settings
from courierguard.db.rowseal import SEALED_COLUMNS, RowSeals, reseal_under, scan_tables, seal_unsealed
from courierguard.errors import Conflict, NotFound
from courierguard.vault.keys import LocalKeyFile
from courierguard.vault.service import RemaskReport


def _record(core: Core, body: dict[str, object]) -> None:
    """Key operations are audit entries like any access (kind ``key``)."""
    record(core, EntryKind.KEY, body)


app = typer.Typer(
    help="Manage encryption keys: rotate the key-encryption key, crypto-shred a month, re-derive masks."
)


@app.command()
def rotate(database_url: DatabaseUrl = None, data_dir: DataDir = None, key_file: KeyFile = None) -> None:
    """Make a new key-encryption key active and re-wrap every data key under it (data is not re-encrypted).

    The old KEKs are kept: a running worker picks up the new key file the next time it wraps or
    unwraps a key it has not seen, and may until then wrap a new month's key with an old KEK. Once
    every worker has the new file (restart them to be sure), `courierguard keys retire` removes
    the old ones. With COURIERGUARD_KEYS, first add the new KEK to the document, make it active and
    redeploy: this then re-wraps under it.

    Example: courierguard keys rotate
    """
    with one_line_errors():
        settings = settings_from(database_url, data_dir, key_file)
        report = _key_operation(
            settings, "kek.rotate", lambda core: core.vault.rotate_keys(),
            lambda r: {"new_kek": r.new_kek, "rewrapped": r.rewrapped, "skipped": r.skipped,
                       "retirable": list(r.retirable)},
        )  # fmt: skip
        console.print(
            f"active key-encryption key {report.new_kek}; {report.rewrapped} data keys re-wrapped under it"
        )
        if report.rewrapped == 0 and not report.retirable and settings.key_provider == "env":
            console.print(
                "nothing to re-wrap: to rotate, add a new KEK to COURIERGUARD_KEYS, make it active, redeploy, "
                "then run this again"
            )
        if report.retirable:
            console.print(
                f"old KEKs kept until every worker has the new keys: {', '.join(report.retirable)}; "
                "then run `courierguard keys retire`"
            )
        if report.skipped:
            console.print(
                f"[yellow]warning:[/yellow] {report.skipped} data keys use a KEK this provider lacks"
            )


@app.command()
def retire(database_url: DatabaseUrl = None, data_dir: DataDir = None, key_file: KeyFile = None) -> None:
    """Remove the key-encryption keys no data key uses, after re-wrapping any that still do.

    Run it after `keys rotate`, once every worker has the new key file. With COURIERGUARD_KEYS it
    names the KEKs to delete from the document (then redeploy).

    Example: courierguard keys retire
    """
    with one_line_errors():
        report = _key_operation(
            settings_from(database_url, data_dir, key_file), "kek.retire", lambda core: core.vault.retire_keys(),
            lambda r: {"active_kek": r.active_kek, "rewrapped": r.rewrapped, "skipped": r.skipped,
                       "unused": list(r.unused), "removed": r.removed},
        )  # fmt: skip
        if report.rewrapped:
            console.print(
                f"{report.rewrapped} data keys still under an old KEK re-wrapped under {report.active_kek}"
            )
        if not report.unused:
            console.print(f"no KEK to retire: every KEK held is in use or active ({report.active_kek})")
        elif report.removed:
            console.print(f"retired: {', '.join(report.unused)}")
        else:
            console.print(
                f"no data key uses {', '.join(report.unused)} any more: remove them from the key document "
                "(COURIERGUARD_KEYS) and redeploy"
            )
        if report.skipped:
            console.print(
                f"[yellow]warning:[/yellow] {report.skipped} data keys use a KEK this provider lacks"
            )


@app.command()
def remask(
    batch: Annotated[
        int, typer.Option("--batch", min=1, max=100_000, help="Parties per transaction.")
    ] = 1000,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """Derive every stored mask anew from the sealed data, after an upgrade that made masking stricter.

    Masks are written at ingest and served without decrypting, so parcels stored before a masking
    fix keep the old masks until this runs. It decrypts every sealed party in memory (nothing is
    printed or logged) and rewrites only the masks that differ; it can run while the service
    serves, and again at any time. Recorded as `vault.remask.start` and `.done` entries.

    Example: courierguard keys remask
    """
    with one_line_errors():
        settings = settings_from(database_url, data_dir, key_file, tenant)

        def run(core: Core) -> RemaskReport:
            with Progress(
                TextColumn("[bold]re-masking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True), disable=quiet,
            ) as bar:  # fmt: skip
                task = bar.add_task("parties", total=core.vault.sealed_parties())
                return core.vault.remask(batch=batch, progress=lambda n: bar.advance(task, n))

        report = _key_operation(
            settings, "vault.remask", run,
            lambda r: {"tenant": settings.tenant, "parties": r.parties, "changed": r.changed,
                       "unreadable": r.unreadable},
        )  # fmt: skip
        console.print(f"{report.parties} parties re-masked; {report.changed} masks changed")
        if report.unreadable:
            console.print(
                f"[yellow]warning:[/yellow] {report.unreadable} parties would not decrypt and keep their "
                "masks: run `courierguard audit verify` and check the records for tampering"
            )


R = TypeVar("R")


def _key_operation(
    settings: Settings, op: str, run: Callable[[Core], R], details: Callable[[R], dict[str, object]]
) -> R:
    """Run a key operation between two audit entries: ``<op>.start`` before it changes anything (no
    trail, no change, as for a shred), ``<op>.done`` with what it did."""
    core = _open_existing(settings)
    try:
        _record(core, {"op": f"{op}.start"})
        report = run(core)
        _record(core, {"op": f"{op}.done", **details(report)})
        return report
    finally:
        core.close()


def _open_existing(settings: Settings) -> Core:
    if settings.key_provider == "file" and not settings.resolved_key_file.exists():
        # Opening would create a fresh key file: a mistyped path must not leave a new keyring.
        raise NotFound(
            f"key file {settings.resolved_key_file} does not exist: rotation re-wraps the current keys"
        )
    return open_core(settings)


@app.command()
def shred(
    month: Annotated[
        str, typer.Option("--month", help="The month to destroy, YYYY-MM (UTC month of creation).")
    ],
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
            # A shred stopped after its commit left its start entry without a "done": the key is
            # gone, so it did complete, which is what this says.
            raise NotFound(
                f"no data key for {month} in tenant {settings.tenant}: nothing to shred (a shred of it that "
                "was interrupted after month.shred.start completed if the key is gone)"
            )
        # Recorded before it happens: if the audit trail cannot take the entry, nothing is destroyed.
        _record(core, {"op": "month.shred.start", "tenant": settings.tenant, "month": month})
        report = core.vault.shred_month(month)
        _record(
            core,
            {"op": "month.shred.done", "tenant": settings.tenant, "month": month, "parties": report.parties},
        )
        console.print(f"shredded {report.month}: {report.parties} parties are now unrecoverable")
        if report.wal_cleared is False:
            console.print(
                "warning: a reader kept the SQLite WAL, which still holds the pages from before the shred; "
                "stop the service (SQLite empties it when the last connection closes)"
            )
        core.close()


@app.command("verify-tables")
def verify_tables(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """Check the seal of every row that decides access (approvals, employees, waybills, cases,
    api_keys, org_units).

    A row whose seal is missing or wrong was written without the key (a DBA's INSERT or UPDATE) and
    is refused by the gateway. Names each table and the ids of the first refused rows, never personal
    data. Exit status 1 when any row is refused.

    Example: courierguard keys verify-tables
    """
    with one_line_errors():
        core = _open_existing(settings_from(database_url, data_dir, key_file, tenant))
        try:
            reports = scan_tables(core.engine, core.vault.seals)
        finally:
            core.close()
    for r in reports:
        state = "OK" if r.ok else "[red]REFUSED ROWS[/red]"
        console.print(
            f"{r.table:<10} {r.rows:>9} rows  unsealed {r.unsealed:>7}  bad seal {r.bad:>7}  {state}"
        )
        for what, keys in (("bad seal", r.bad_keys), ("unsealed", r.unsealed_keys)):
            if keys:
                console.print(f"  {what}: {', '.join(keys)}", highlight=False, soft_wrap=True)
    if not all(r.ok for r in reports):
        console.print(
            "rows above are refused: restore them from a trusted backup or through the admin API; "
            "after the upgrade only, `courierguard keys seal-tables` seals rows that have no seal yet"
        )
        raise typer.Exit(1)


@app.command("seal-tables")
def seal_tables(
    again: Annotated[
        bool, typer.Option("--again", help="Seal even though the audit trail records an earlier seal.")
    ] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """Seal, once, the rows stored before row seals existed (after the migration that added them).

    Rows with a wrong seal are left alone (and still refused). Run it with the service stopped,
    right after installing the new version (it migrates the database first, as `courierguard init`
    does), after checking the tables are as they should be: whatever rows have no seal now are
    vouched for from here on. Recorded in the audit trail, with the tables
    it sealed; a later run seals only tables no earlier run sealed (those a newer migration added
    seals to), and is refused when there are none, unless --again (a row a DBA inserted later must
    not be sealed by routine).

    Example: courierguard keys seal-tables
    """
    with one_line_errors():
        settings = settings_from(database_url, data_dir, key_file, tenant)
        core = _open_existing(settings)
        try:
            tables = list(SEALED_COLUMNS)
            if not again:
                done = _sealed_before(core)
                tables = [t for t in tables if t not in done]
                if not tables:
                    raise Conflict(
                        "the audit trail records an earlier seal-tables: rows without a seal now were "
                        "written without the key; check them (`courierguard keys verify-tables`), then "
                        "--again if need be"
                    )
            _record(core, {"op": "tables.seal.start", "again": again, "tables": tables})
            sealed = seal_unsealed(core.engine, core.vault.seals, tables)
            _record(core, {"op": "tables.seal.done", **sealed})
        finally:
            core.close()
    console.print("sealed " + ", ".join(f"{n} {table}" for table, n in sealed.items()))


@app.command("reseal-tables")
def reseal_tables(
    old_key_file: Annotated[
        Path,
        typer.Option(
            "--old-key-file",
            help="The key document that held the replaced audit signing key (read only).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """Move the row seals to the current audit signing key after the old one was replaced.

    The seal key derives from the audit signing key, so replacing that key leaves every sealed row
    refused (503 row_unsealed). This reseals, under the current key, each row whose seal the OLD
    key made, and only those: a row with no seal, or one neither key made, stays refused and is
    named. Run it with the service stopped. Recorded in the audit trail with the counts per table.

    Example: courierguard keys reseal-tables --old-key-file /secure/keys-2026-11.json
    """
    with one_line_errors():
        settings = settings_from(database_url, data_dir, key_file, tenant)
        old = RowSeals.from_keys(LocalKeyFile(old_key_file, create=False))
        core = _open_existing(settings)
        try:
            _record(core, {"op": "tables.reseal.start"})
            reports = reseal_under(core.engine, old, core.vault.seals)
            _record(core, {"op": "tables.reseal.done", **{r.table: r.resealed for r in reports},
                           "refused": sum(r.refused for r in reports)})  # fmt: skip
        finally:
            core.close()
    for r in reports:
        console.print(
            f"{r.table:<18} resealed {r.resealed:>7}  already current {r.current:>7}  refused {r.refused:>5}"
        )
        if r.refused_keys:
            console.print("  refused (no seal, or one neither key made): " + ", ".join(r.refused_keys))
    if any(r.refused for r in reports):
        console.print(
            "rows named above stay refused: restore them from a trusted backup or through the admin API"
        )


def _sealed_before(core: Core) -> set[str]:
    """The tables an earlier seal-tables sealed, as the trail records them (its counts name them)."""
    queries = AuditQueries(core.audit_engine)
    cursor: int | None = None
    done: set[str] = set()
    while True:
        page = queries.search(kinds=[EntryKind.KEY], cursor=cursor, limit=1000)
        for r in page.records:
            if (r.body or {}).get("op") == "tables.seal.done":
                done.update(t for t in (r.body or {}) if t in SEALED_COLUMNS)
        if page.next_cursor is None:
            return done
        cursor = page.next_cursor
