"""`courierguard audit ...`: verify the trail, print proofs and heads, query, export, archive.

Each command parses its options, calls one library function and prints the result; errors are one
line on stderr with exit code 1 (a failed check) or 2 (bad input or configuration).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import Engine

from courierguard.app import open_audit_engine, open_core
from courierguard.audit import (
    ArchiveResult,
    AuditQueries,
    EntryKind,
    Page,
    archive,
    export_jsonl,
    export_ocsf,
    row_mac_key,
    verify,
)
from courierguard.audit.merkle import VerificationError, verify_consistency, verify_inclusion
from courierguard.audit.retention import verify_archives
from courierguard.cli._common import DATABASE_UNREACHABLE, record
from courierguard.config import Settings
from courierguard.db import create_db_engine
from courierguard.errors import CourierGuardError, InvalidInput
from courierguard.files import written_whole
from courierguard.vault.keys import key_provider_from_settings
from courierguard.vault.normalize import InvalidPhone, normalize_phone

app = typer.Typer(help="Tamper-evident audit trail: verify, proofs, tree heads, queries, export, retention.")
proof_app = typer.Typer(help="RFC 6962 inclusion and consistency proofs.")
app.add_typer(proof_app, name="proof")

T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL of the main database; the trail is in COURIERGUARD_AUDIT_DATABASE_URL or beside "
        "it (default: from COURIERGUARD_* settings).",
    ),
]
KeyFile = Annotated[Path | None, typer.Option("--key-file", help="Key file (default: from settings).")]
PinnedKey = Annotated[
    str | None,
    typer.Option(
        help="Pinned Ed25519 public key (hex) the heads must be signed with (default: the key provider's). "
        "Alone, as an auditor without the key provider: row MACs are not checked; with --key-file, they are."
    ),
]


def _settings(database_url: str | None, key_file: Path | None) -> Settings:
    return Settings.from_env(database_url=database_url, key_file=key_file)


@contextmanager
def _engine(database_url: str | None) -> Iterator[Engine]:
    """The audit trail's engine: the main database's, or the database of its own beside it."""
    settings = _settings(database_url, None)
    main = create_db_engine(settings.resolved_database_url)
    try:
        audit = open_audit_engine(settings, main, migrate_schema=False)
        try:
            yield audit
        finally:
            if audit is not main:
                audit.dispose()
    finally:
        main.dispose()


def _pinned(public_key: str) -> bytes:
    try:
        raw = bytes.fromhex(public_key)
    except ValueError:
        raise InvalidInput("public_key", "not hex") from None
    if len(raw) != 32:
        raise InvalidInput("public_key", "an Ed25519 public key is 32 bytes")
    return raw


def _verify_keys(
    public_key: str | None, database_url: str | None, key_file: Path | None
) -> tuple[bytes, bytes | None]:
    """(The public key heads must be signed with, the row MAC key or None.)

    Without ``--public-key``, both from the key provider. With it alone, as an external auditor
    holding only the public key: row MACs cannot be checked. With ``--key-file`` as well, the MACs
    are checked with the key file's row key, once its public key is the pinned one (a key file of
    another deployment would fail every row and say nothing useful)."""
    pinned = _pinned(public_key) if public_key else None
    if pinned is not None and key_file is None:
        return pinned, None
    settings = _settings(database_url, key_file)
    # Never a new key file: verified against a key made on the spot, every signed head looks forged.
    provider = key_provider_from_settings(
        settings.key_provider, settings.resolved_key_file, factory=settings.key_provider_factory, create=False
    )
    own = provider.signer().public_key
    if pinned is not None and pinned != own:
        raise InvalidInput("key_file", "its audit key is not the pinned public key")
    return own, row_mac_key(provider)


def _run(fn: Callable[[], T]) -> T:
    """Call ``fn``; a Courier Guard error becomes one line on stderr and exit code 2, never a traceback."""
    try:
        return fn()
    except CourierGuardError as exc:
        typer.echo(exc.diagnostics(), err=True)
        raise typer.Exit(2) from None
    except OSError as exc:  # a path the operator typed: say which, and why
        where = f": {exc.filename}" if exc.filename else ""
        typer.echo(f"Error: {exc.strerror or exc.__class__.__name__}{where}", err=True)
        raise typer.Exit(2) from None
    except DATABASE_UNREACHABLE as exc:  # not the driver's text: it names host, user, database
        typer.echo(
            f"Error: cannot reach the database ({exc.__class__.__name__}); check the database URL and that "
            "the server is up",
            err=True,
        )
        raise typer.Exit(2) from None
    except Exception as exc:  # a database error: name its kind only, values may hold PII
        typer.echo(f"Error: {exc.__class__.__name__}", err=True)
        raise typer.Exit(2) from None


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(name, "not an ISO 8601 timestamp") from None
    if when.tzinfo is None:
        raise InvalidInput(name, "needs a UTC offset, e.g. 2025-11-11T00:00:00+08:00")
    try:
        when.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(name, "is out of range") from None
    return when


@app.command("verify")
def verify_command(
    database_url: DatabaseUrl = None,
    key_file: KeyFile = None,
    public_key: PinnedKey = None,
    witness: Annotated[
        Path | None, typer.Option(help="Witness file of tree heads kept outside the database.")
    ] = None,
    search_copies: Annotated[
        bool,
        typer.Option(
            help="Also check the searchable copies (actor, time, kind, tenant, search indexes) against the "
            "hashed bodies; --no-search-copies checks the Merkle log alone, several times faster."
        ),
    ] = True,
) -> None:
    """Recompute the whole log, check every signed tree head and, with the key provider, every row's
    MAC; exit 1 naming the first bad entry. With --public-key alone (an auditor without the key
    provider) row MACs are not checked, and the output says so.

    Example: ``courierguard audit verify --witness /mnt/worm/heads.jsonl``
    """

    def go() -> bool:
        key, row_key = _verify_keys(public_key, database_url, key_file)
        with _engine(database_url) as engine:
            report = verify(
                engine, key, witness_file=witness, search_copies=search_copies, row_key=row_key,
                retention_days=_settings(database_url, None).audit_retention_days,
            )  # fmt: skip
        typer.echo(report.summary())
        for problem in sorted(report.problems, key=lambda p: p.index)[:20]:
            typer.echo(f"  {problem.kind} at {problem.index}: {problem.detail}")
        if not report.ok:
            typer.echo(f"  ({report.mac_summary()})")
        return report.ok

    if not _run(go):
        raise typer.Exit(1)


@app.command("head")
def head_command(
    database_url: DatabaseUrl = None,
    key_file: KeyFile = None,
    public_key: PinnedKey = None,
) -> None:
    """Print the latest signed tree head as JSON, once its signature checks out; exit 1 if it does not.

    The public key printed is the key provider's (or the pinned one), never the copy stored with the
    head: a head forged in the database carries a key of its own, and this is the key auditors pin.

    Example: ``courierguard audit head``
    """

    def go() -> tuple[bool, dict[str, Any]]:
        with _engine(database_url) as engine:
            head = AuditQueries(engine).tree_head()
        key, _ = _verify_keys(public_key, database_url, key_file)
        return head.verify_signature(key), {**head.to_dict(), "public_key": key.hex()}

    ok, head = _run(go)
    if not ok:
        typer.echo(
            f"FAILED: the latest tree head (size {head['size']}) is not signed by this audit key; "
            "run `courierguard audit verify`",
            err=True,
        )
        raise typer.Exit(1)
    _print(head)


@proof_app.command("inclusion")
def inclusion_command(
    index: int,
    size: Annotated[int | None, typer.Option("--size", help="Tree size (default: latest head).")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print the inclusion proof of entry INDEX.

    Example: ``courierguard audit proof inclusion 42 --size 1000``
    """

    def go() -> dict[str, Any]:
        with _engine(database_url) as engine:
            queries = AuditQueries(engine)
            leaf, path, tree_size = queries.inclusion_proof(index, size)
            root, signed = queries.checked_root(tree_size)
            verify_inclusion(index, tree_size, leaf, path, root)
            _unsigned_warning(tree_size, signed)
            return {
                "index": index,
                "tree_size": tree_size,
                "leaf_hash": leaf.hex(),
                "root": root.hex(),
                "root_signed": signed,
                "proof": [h.hex() for h in path],
            }

    _print(_run(go))


@proof_app.command("consistency")
def consistency_command(old: int, new: int, database_url: DatabaseUrl = None) -> None:
    """Print the consistency proof between tree sizes OLD and NEW.

    Example: ``courierguard audit proof consistency 1000 2000``
    """

    def go() -> dict[str, Any]:
        with _engine(database_url) as engine:
            queries = AuditQueries(engine)
            path = queries.consistency_proof(old, new)
            (old_root, old_signed), (new_root, new_signed) = (
                queries.checked_root(old),
                queries.checked_root(new),
            )
            verify_consistency(old, new, path, old_root, new_root)
            for size, signed in ((old, old_signed), (new, new_signed)):
                _unsigned_warning(size, signed)
            return {
                "old_size": old,
                "new_size": new,
                "old_root": old_root.hex(),
                "new_root": new_root.hex(),
                "old_root_signed": old_signed,
                "new_root_signed": new_signed,
                "proof": [h.hex() for h in path],
            }

    _print(_run(go))


def _unsigned_warning(size: int, signed: bool) -> None:
    if not signed:
        typer.echo(
            f"warning: no stored tree head signs size {size}; check this root against a head you hold",
            err=True,
        )


@app.command("query")
def query_command(
    actor: Annotated[str | None, typer.Option(help="Who acted: an employee or service id.")] = None,
    subject: Annotated[
        str | None,
        typer.Option(
            help="The employee acted on by someone else (suspended, reinstated, sessions revoked, devices "
            "reset, role or status changed); with --actor, what that actor did to them."
        ),
    ] = None,
    employee: Annotated[
        str | None,
        typer.Option(
            help="Everything by or about this employee (--actor or --subject): the account's timeline."
        ),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(
            help="Only this session's entries and the alerts it drew (an alert's session_id); with "
            "--actor or --employee."
        ),
    ] = None,
    waybill: Annotated[list[str] | None, typer.Option(help="Waybill number; repeat for several.")] = None,
    since: Annotated[str | None, typer.Option(help="From this ISO 8601 time (inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this ISO 8601 time (exclusive).")] = None,
    kind: Annotated[
        list[EntryKind] | None,
        typer.Option(help="Only entries of this kind (access, alert, admin, ...); repeat for several."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Entries per page.", min=1, max=1000)] = 100,
    cursor: Annotated[
        int | None, typer.Option(help="next_cursor of the previous page.", min=0, max=2**63 - 1)
    ] = None,
    proofs: Annotated[
        bool, typer.Option(help='Attach inclusion proofs in the latest head, and that head ("head").')
    ] = False,
    head_size: Annotated[
        int | None,
        typer.Option(
            "--head-size",
            help="With --proofs: prove in the stored signed head of this many entries (the head already "
            "handed over, a witness line's) instead of the latest.",
            min=1,
        ),
    ] = None,
    by_phone: Annotated[
        bool,
        typer.Option(
            "--by-phone",
            help="Who accessed a data subject's records: the phone is read from a hidden prompt or stdin "
            "(never an argument, so it stays out of shell history) and matched through the blind index.",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
    key_file: Annotated[
        Path | None, typer.Option(help="Key file, for the blind index of --by-phone.")
    ] = None,
) -> None:
    """Entries by actor, subject or employee, waybill, phone and time, one page as JSON.

    Example: ``courierguard audit query --employee E000123 --since 2025-11-01T00:00:00+08:00``
    """
    phone = None
    if by_phone:
        phone = (
            sys.stdin.readline().strip() if not sys.stdin.isatty() else typer.prompt("phone", hide_input=True)
        )

    def go() -> dict[str, Any]:
        if employee is not None and (actor is not None or subject is not None):
            # Before a phone search is recorded: a query that cannot run leaves no trace.
            raise InvalidInput(
                "employee", "is the actor or the subject: give it alone, not with --actor or --subject"
            )
        if session is not None and actor is None and employee is None:
            raise InvalidInput("session", "is one account's: give it with --actor or --employee")
        if head_size is not None and not proofs:
            raise InvalidInput("head-size", "names the head of the proofs: give it with --proofs")
        numbers = list(waybill or [])
        tenant = None
        if phone is not None:
            try:
                normalize_phone(phone)
            except InvalidPhone:  # empty stdin (an unset $PHONE) read as "nobody accessed" the data
                raise InvalidInput(
                    "phone", "the line read is not a phone number (was it empty?); nothing was searched"
                ) from None
            settings = _settings(database_url, key_file)
            tenant = settings.tenant  # the phone was matched in this tenant's vault
            core = open_core(settings, migrate_schema=False)
            try:
                found = core.vault.waybills_by_phone(phone)
                # As over HTTP, the search is on the trail (never the phone), filed under the
                # parcels it found: from a phone to someone's parcels is exactly what the trail
                # must show, to the data subject's next request as well.
                record(
                    core, EntryKind.SYSTEM,
                    {"what": "audit.search", "by": "phone", "matched": len(found), "waybills": found},
                )  # fmt: skip
            finally:
                core.close()
            if not found:
                if not proofs or head_size is not None:
                    return {"records": [], "next_cursor": None}
                # "Appears nowhere" is evidence too: under the head it was searched in.
                with _engine(database_url) as engine:
                    return Page([], None, AuditQueries(engine).tree_head()).to_dict()
            numbers += found
        with _engine(database_url) as engine:
            page = AuditQueries(engine).search(
                actor=actor,
                subject=subject,
                employee=employee,
                session=session,
                tenant=tenant,
                waybills=numbers or None,
                since=_parse_time(since, "since"),
                until=_parse_time(until, "until"),
                kinds=kind or None,
                limit=limit,
                cursor=cursor,
                with_proofs=proofs,
                head_size=head_size,
            )
        return page.to_dict()

    _print(_run(go))


@app.command("export")
def export_command(
    out: Annotated[Path, typer.Option("--out", help="Output file (JSON Lines).")],
    format: Annotated[str, typer.Option("--format", help="jsonl (Access Event v1) or ocsf.")] = "jsonl",
    since: Annotated[str | None, typer.Option(help="From this ISO 8601 time (inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this ISO 8601 time (exclusive).")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Export access entries for a SIEM.

    Example: ``courierguard audit export --format ocsf --out audit.ocsf.jsonl``
    """

    def go() -> int:
        if format not in ("jsonl", "ocsf"):
            raise InvalidInput("format", "jsonl or ocsf")
        writer = export_jsonl if format == "jsonl" else export_ocsf
        window = {"since": _parse_time(since, "since"), "until": _parse_time(until, "until")}
        # Owner-only: an export names who read which waybill. Whole or not at all: an export
        # stopped by an entry that does not verify leaves no partial file a SIEM could pick up.
        with _engine(database_url) as engine, written_whole(out, mode=0o600) as handle:
            return writer(engine, handle, **window)

    typer.echo(f"wrote {_run(go)} events to {out}")


@app.command("archive")
def archive_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for the Parquet archive.")],
    before_days: Annotated[
        int | None,
        typer.Option(
            "--before-days",
            help="Archive entries older than this many days; default and floor: "
            "COURIERGUARD_AUDIT_RETENTION_DAYS (at least 180).",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Archive old entries to Parquet, then purge their bodies (leaf hashes stay, so verify still works).

    Example: ``courierguard audit archive --out /srv/audit-archive``
    """

    def go() -> str:
        settings = _settings(database_url, None)
        retention = settings.audit_retention_days

        def on_trail(done: ArchiveResult) -> None:
            # Before the purge: which bodies left the database, for where, with the file's digest.
            assert done.path is not None
            core = open_core(settings, migrate_schema=False)
            try:
                record(
                    core, EntryKind.SYSTEM,
                    {"what": "audit.archive", "first": done.first_index, "last": done.last_index,
                     "entries": done.archived, "file": done.path.name,
                     "sha256": hashlib.sha256(done.path.read_bytes()).hexdigest()},
                )  # fmt: skip
            finally:
                core.close()

        with _engine(database_url) as engine:
            result = archive(
                engine, out, before_days=before_days, retention_days=retention, before_purge=on_trail
            )
        if result.path is None:
            return "nothing older than the retention window"
        return (
            f"archived {result.archived} entries ({result.first_index}..{result.last_index}) to {result.path}"
        )

    typer.echo(_run(go))


@app.command("verify-archive")
def verify_archive_command(
    folder: Annotated[Path, typer.Argument(help="The folder `audit archive --out` wrote to.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Check every archive file against its leaf hashes and the database, and that together they hold
    exactly the entries whose bodies were purged (no gap, no overlap); exit 1 naming the first bad index.

    Example: ``courierguard audit verify-archive /srv/audit-archive``
    """

    def go() -> tuple[bool, str]:
        if not folder.is_dir():
            raise InvalidInput("folder", f"{folder} is not a folder")
        with _engine(database_url) as engine:
            try:
                entries, files = verify_archives(folder, engine)
            except VerificationError as exc:  # what was found wrong: exit 1, as verify does
                return False, f"FAILED at {exc.index}: {exc}"
        return True, f"OK: {entries} archived entries in {files} files, from index 0 with no gap"

    ok, message = _run(go)
    typer.echo(message)
    if not ok:
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
