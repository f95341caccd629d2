"""Retention: archive old entries to Parquet, then purge their bodies while keeping their leaf hashes.

The law asks for at least 180 days of logs (Cybersecurity Law Art. 21), so a shorter window is refused.
An entry's leaf hash stays in the database after its body is purged, so the tree, every signed tree
head and every inclusion proof still verify; the archived body can be checked against that hash later
with :func:`verify_archive`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, func, select, update

from courierguard.audit._internal.core import actor_of
from courierguard.audit.merkle import LEAF_PREFIX, VerificationError
from courierguard.audit.models import MIN_RETENTION_DAYS, decode_entry, entry_ts_us, stored_bytes, to_micros
from courierguard.audit.tables import audit_entries
from courierguard.clock import Clock, SystemClock
from courierguard.errors import InvalidInput
from courierguard.files import fsync_path

_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("ts_us", pa.int64()),
        ("kind", pa.string()),
        ("actor", pa.string()),
        ("entry", pa.binary()),
        ("leaf_hash", pa.binary(32)),
    ]
)


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """What one archive run did. ``path`` is ``None`` when nothing was old enough."""

    archived: int
    first_index: int | None
    last_index: int | None
    path: Path | None


def archive(
    engine: Engine,
    out_dir: Path,
    *,
    before_days: int | None = None,
    retention_days: int = MIN_RETENTION_DAYS,
    clock: Clock | None = None,
    before_purge: Callable[[ArchiveResult], None] | None = None,
) -> ArchiveResult:
    """Write entries older than ``before_days`` (default: ``retention_days``) to one Parquet file in
    ``out_dir``, then purge their bodies.

    ``before_purge`` is called with what was archived once the file is durable and checked, and
    before the purge: the CLI records the archive on the trail there, so a purge never happens
    without its entry (a failure there stops the purge; the next run archives the bodies again).

    ``retention_days`` is the deployment's retention period (``COURIERGUARD_AUDIT_RETENTION_DAYS``):
    nothing younger is archived, since ``verify`` holds bodies purged inside it for tampering, and a
    purge cannot be undone. The file is fsync'd and read back, and every row checked against its leaf
    hash, before anything is purged; a crash in between leaves bodies in place (the next run archives
    them again).
    """
    if retention_days < MIN_RETENTION_DAYS:
        raise InvalidInput("retention_days", f"must be at least {MIN_RETENTION_DAYS} (legal minimum)")
    if before_days is None:
        before_days = retention_days
    if before_days < retention_days:
        floor = "the legal minimum" if retention_days == MIN_RETENTION_DAYS else "the retention period set"
        raise InvalidInput(
            "before_days",
            f"must be at least {retention_days} ({floor}; COURIERGUARD_AUDIT_RETENTION_DAYS): bodies archived "
            "sooner are reported by verify as purged too early",
        )
    cutoff = to_micros((clock or SystemClock()).now() - timedelta(days=before_days))
    e = audit_entries.c
    with engine.connect() as conn:
        first_kept = conn.execute(select(func.min(e.seq)).where(e.entry.is_not(None))).scalar()
        candidates = conn.execute(
            select(e.seq, e.ts_us, e.kind, e.actor, e.entry, e.leaf_hash)
            .where(e.ts_us < cutoff, e.entry.is_not(None))
            .order_by(e.seq)
        ).all()
    rows = _old_prefix(candidates, cutoff, first_kept)
    if not rows:
        return ArchiveResult(0, None, None, None)
    table = pa.table(
        {
            "seq": [r.seq for r in rows],
            "ts_us": [r.ts_us for r in rows],
            "kind": [r.kind for r in rows],
            "actor": [r.actor for r in rows],
            "entry": [bytes(r.entry) for r in rows],
            "leaf_hash": [bytes(r.leaf_hash) for r in rows],
        },
        schema=_SCHEMA,
    )
    first, last = rows[0].seq, rows[-1].seq
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"audit-{first:012d}-{last:012d}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.chmod(tmp, 0o600)  # the bodies of who-read-what: owner-only, like the database
    fsync_path(tmp)
    os.replace(tmp, path)
    # The rename itself is durable only once the folder is: a crash after the purge below must not
    # leave the bodies neither in the database nor in a file.
    fsync_path(out_dir)
    verify_archive(path)
    result = ArchiveResult(len(rows), first, last, path)
    if before_purge is not None:
        before_purge(result)
    seqs = [r.seq for r in rows]
    with engine.begin() as conn:
        for i in range(0, len(seqs), 5000):
            conn.execute(update(audit_entries).where(e.seq.in_(seqs[i : i + 5000])).values(entry=None))
    return result


def _old_prefix(rows: Sequence[Any], cutoff: int, first_kept: int | None) -> list[Any]:
    """The rows that may be archived: consecutive from the first entry still holding its body,
    each older than ``cutoff`` by the time inside its hashed bytes, not only by the ``ts_us``
    column (which nothing signs: an edited column must not purge a young entry).

    Archived entries are thus always a prefix of the log, which ``verify`` relies on to tell an
    archived body from a deleted one."""
    kept: list[Any] = []
    for row in rows:
        if row.seq != (kept[-1].seq + 1 if kept else first_kept):
            break
        hashed_ts = entry_ts_us(bytes(row.entry))
        # A malformed body, or a column that disagrees with it, is for verify to name, not to purge.
        if hashed_ts is None or hashed_ts >= cutoff or hashed_ts != row.ts_us:
            break
        kept.append(row)
    return kept


_NAME = re.compile(r"audit-(\d{12})-(\d{12})\.parquet")


def verify_archive(path: Path, engine: Engine | None = None) -> int:
    """Check one archive file; returns the number of rows; raises
    :class:`~courierguard.audit.merkle.VerificationError` naming the first bad index.

    * every index of the range its name gives (else of its first to its last row) is there exactly
      once and in order, and each row's ``seq`` is the index hashed into its entry (a dropped,
      repeated or relabelled row would otherwise pass);
    * every body matches its leaf hash, and the unhashed copies beside it (``ts_us``, ``kind``,
      ``actor``, what a query of the file reads) match the body;
    * given ``engine``, every leaf hash matches the one the database still holds.
    """
    named = _NAME.fullmatch(path.name)
    try:
        table = pq.read_table(path, columns=["seq", "ts_us", "kind", "actor", "entry", "leaf_hash"])
    except (pa.ArrowException, OSError, KeyError) as exc:  # a damaged or foreign file is a failed check
        raise VerificationError(
            f"archive {path.name} is not a readable archive file ({exc.__class__.__name__})",
            index=int(named.group(1)) if named else 0,
        ) from None
    seqs = table.column("seq").to_pylist()
    first, last = (
        (int(named.group(1)), int(named.group(2))) if named else (seqs[0], seqs[-1]) if seqs else (0, -1)
    )
    if not seqs or last < first:
        raise VerificationError(f"archive {path.name} holds no entries", index=first)
    for expected, seq in enumerate(seqs, first):
        if seq != expected:
            raise VerificationError(
                f"archive {path.name} lacks index {expected} or repeats one (found {seq})", index=expected
            )
    if seqs[-1] != last:
        raise VerificationError(
            f"archive {path.name} ends at {seqs[-1]}, its name says {last}", index=seqs[-1] + 1
        )
    stored: dict[int, bytes] = {}
    if engine is not None:
        e = audit_entries.c
        with engine.connect() as conn:
            for i in range(0, len(seqs), 5000):
                chunk = seqs[i : i + 5000]
                stored.update(
                    (s, stored_bytes(h))
                    for s, h in conn.execute(select(e.seq, e.leaf_hash).where(e.seq.in_(chunk)))
                )
    columns = [table.column(name).to_pylist() for name in ("ts_us", "kind", "actor", "entry", "leaf_hash")]
    for seq, ts_us, kind, actor, entry, leaf in zip(seqs, *columns, strict=True):
        calculated = hashlib.sha256(LEAF_PREFIX + entry).digest()
        if calculated != leaf:
            raise VerificationError(
                "archived entry does not match its leaf hash", index=seq, expected=leaf, calculated=calculated
            )
        decoded = decode_entry(entry)
        if decoded.index != seq:
            raise VerificationError(f"archived row {seq} holds entry {decoded.index}", index=seq)
        if (ts_us, kind, actor) != (decoded.ts_us, decoded.kind, actor_of(decoded.body)):
            raise VerificationError(
                f"archived row {seq}: its time, kind or actor column differs from its body", index=seq
            )
        if engine is not None and stored.get(seq) != leaf:
            raise VerificationError(
                "archived leaf hash differs from the database",
                index=seq,
                expected=stored.get(seq, b""),
                calculated=leaf,
            )
    return len(seqs)


def verify_archives(directory: Path, engine: Engine) -> tuple[int, int]:
    """Check every archive file in ``directory`` (:func:`verify_archive`) and that together they hold
    exactly the entries whose bodies the database no longer has: from index 0, no gap, no overlap.
    Returns (entries, files); raises :class:`~courierguard.audit.merkle.VerificationError`."""
    files = sorted(directory.glob("audit-*.parquet"))
    ranges: list[tuple[int, int]] = []
    total = 0
    for path in files:
        named = _NAME.fullmatch(path.name)
        if named is None:
            raise VerificationError(
                f"{path.name}: not an archive file name (audit-FIRST-LAST.parquet)", index=0
            )
        total += verify_archive(path, engine)
        ranges.append((int(named.group(1)), int(named.group(2))))
    e = audit_entries.c
    with engine.connect() as conn:
        first_kept = conn.execute(select(func.min(e.seq)).where(e.entry.is_not(None))).scalar()
        if first_kept is None:
            first_kept = int(conn.execute(select(func.count()).select_from(audit_entries)).scalar() or 0)
    covered = 0
    for first, last in sorted(ranges):
        if first != covered:
            raise VerificationError(
                f"archived entries {covered}..{first - 1} are in no archive file"
                if first > covered
                else f"archive files overlap at {first}",
                index=min(first, covered),
            )
        covered = last + 1
    if covered != first_kept:
        raise VerificationError(
            f"the archives hold entries up to {covered - 1}, the database's archived prefix ends at {first_kept - 1}",
            index=min(covered, int(first_kept)),
        )
    return total, len(files)
