"""Retention: archive old entries to Parquet, then purge their bodies while keeping their leaf hashes.

The law asks for at least 180 days of logs (Cybersecurity Law Art. 21), so a shorter window is refused.
An entry's leaf hash stays in the database after its body is purged, so the tree, every signed tree
head and every inclusion proof still verify; the archived body can be checked against that hash later
with :func:`verify_archive`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, func, select, update

from courierguard.audit.merkle import LEAF_PREFIX, VerificationError
from courierguard.audit.models import MIN_RETENTION_DAYS, entry_ts_us, to_micros
from courierguard.audit.tables import audit_entries
from courierguard.clock import Clock, SystemClock
from courierguard.errors import InvalidInput

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
    engine: Engine, out_dir: Path, *, before_days: int = MIN_RETENTION_DAYS, clock: Clock | None = None
) -> ArchiveResult:
    """Write entries older than ``before_days`` to one Parquet file in ``out_dir``, then purge their bodies.

    The file is fsync'd and read back, and every row checked against its leaf hash, before anything
    is purged; a crash in between leaves bodies in place (the next run archives them again).
    """
    if before_days < MIN_RETENTION_DAYS:
        raise InvalidInput("before_days", f"must be at least {MIN_RETENTION_DAYS} (legal minimum)")
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
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    verify_archive(path)
    seqs = [r.seq for r in rows]
    with engine.begin() as conn:
        for i in range(0, len(seqs), 5000):
            conn.execute(update(audit_entries).where(e.seq.in_(seqs[i : i + 5000])).values(entry=None))
    return ArchiveResult(len(rows), first, last, path)


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


def verify_archive(path: Path, engine: Engine | None = None) -> int:
    """Check every archived body against its leaf hash (and, given ``engine``, against the stored hash).

    Returns the number of rows checked; raises :class:`~courierguard.audit.merkle.VerificationError`
    naming the first bad index.
    """
    table = pq.read_table(path, columns=["seq", "entry", "leaf_hash"])
    seqs = table.column("seq").to_pylist()
    entries = table.column("entry").to_pylist()
    leaves = table.column("leaf_hash").to_pylist()
    stored: dict[int, bytes] = {}
    if engine is not None and seqs:
        e = audit_entries.c
        with engine.connect() as conn:
            for i in range(0, len(seqs), 5000):
                chunk = seqs[i : i + 5000]
                stored.update(
                    (s, bytes(h)) for s, h in conn.execute(select(e.seq, e.leaf_hash).where(e.seq.in_(chunk)))
                )
    for seq, entry, leaf in zip(seqs, entries, leaves, strict=True):
        calculated = hashlib.sha256(LEAF_PREFIX + entry).digest()
        if calculated != leaf:
            raise VerificationError(
                "archived entry does not match its leaf hash", index=seq, expected=leaf, calculated=calculated
            )
        if engine is not None and stored.get(seq) != leaf:
            raise VerificationError(
                "archived leaf hash differs from the database",
                index=seq,
                expected=stored.get(seq, b""),
                calculated=leaf,
            )
    return len(seqs)
