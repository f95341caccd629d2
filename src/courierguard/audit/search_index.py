"""The actor, waybill and subject search indexes, written in sorted bulk behind the log.

Writing an entry's ``(actor, seq)`` and ``(waybill, seq)`` rows in its own commit puts each entry
on its own B-tree page of each index (actors and waybills arrive in no order), and those page
writes were most of a group commit's cost. So the writer commits entries without them and, every
few thousand entries or once the oldest is a second old, indexes the tail in one transaction,
sorted, so that the rows of one actor or of neighbouring waybills share pages.

``audit_index_mark.upto`` says where the indexed part ends. It moves in the same transaction as the
rows it covers, so a crash leaves either both or neither; what is above the mark is simply indexed
again later, from the stored entries. Searches read the indexed part through the indexes and the
part at or above the mark from the entries themselves (:mod:`courierguard.audit.queries`), so no
search depends on the indexer having caught up.

The subject index (``audit_subjects``: the employee an entry is about, when someone else acted on
their account) has a mark of its own, row 2. A log written before it existed, or indexed meanwhile
by a writer of the version before (which moves row 1 only), has entries below row 1 that are not
in it: :func:`backfill_subjects` files them from their bodies, in the migration that added it and
in every writer's indexing turn until row 2 has caught up with row 1. Entries are never rewritten.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from sqlalchemy import Connection, select

from courierguard.audit._internal.core import subject_of, waybills_of
from courierguard.audit.models import decode_entry
from courierguard.audit.tables import audit_entries, audit_index_mark

# What the search index needs of one entry: its index, its actor, the waybills it concerns, the
# employee it is about.
Indexable = tuple[int, str | None, Collection[str], str | None]

ACTORS_MARK = 1
"""``audit_index_mark`` row below which entries are in ``audit_actors`` and ``audit_waybills``."""
SUBJECTS_MARK = 2
"""``audit_index_mark`` row below which entries are in ``audit_subjects``."""

# Idempotent: a row already there (written by an older version's writer at commit time, or by a
# writer that raced this one) is no reason to stop indexing. The mark only ever moves forward.
_INSERT_ACTOR = "INSERT INTO audit_actors (actor, seq) VALUES (?, ?) ON CONFLICT DO NOTHING"
_INSERT_WAYBILL = "INSERT INTO audit_waybills (waybill, seq) VALUES (?, ?) ON CONFLICT DO NOTHING"
_INSERT_SUBJECT = "INSERT INTO audit_subjects (subject, seq) VALUES (?, ?) ON CONFLICT DO NOTHING"
# PostgreSQL: each index's rows as one statement of column arrays. ``executemany`` sends a
# Bind/Execute per row; with the entries' own insert done the same way, that per-row work was a
# quarter of the CPU a worker spent per audit entry (85 against 61 µs, 32 callers appending).
# Binary arrays (``%b``), as the entries': 5 against 13 ms of CPU for 8,192 rows.
_INSERT_ACTORS_PG = "INSERT INTO audit_actors (actor, seq) SELECT * FROM unnest(%b::text[], %b::bigint[]) ON CONFLICT DO NOTHING"
_INSERT_WAYBILLS_PG = (
    "INSERT INTO audit_waybills (waybill, seq) SELECT * FROM unnest(%b::text[], %b::bigint[]) "
    "ON CONFLICT DO NOTHING"
)
_INSERT_SUBJECTS_PG = (
    "INSERT INTO audit_subjects (subject, seq) SELECT * FROM unnest(%b::text[], %b::bigint[]) "
    "ON CONFLICT DO NOTHING"
)
_MOVE_MARK = (
    "INSERT INTO audit_index_mark (id, upto) VALUES (?, ?) "
    "ON CONFLICT (id) DO UPDATE SET upto = excluded.upto WHERE audit_index_mark.upto < excluded.upto"
)


_LOWER_MARK = "UPDATE audit_index_mark SET upto = ? WHERE id = ? AND upto > ?"


def lower_mark(conn: Connection, upto: int, mark: int = ACTORS_MARK) -> None:
    """Move the mark back to ``upto``: it claimed entries that are not stored (a tampered mark, which
    hid every later entry from searches). Indexing again from there is idempotent."""
    conn.exec_driver_sql(_driver(conn, _LOWER_MARK), (upto, mark, upto))


def _driver(conn: Connection, statement: str) -> str:
    return statement if conn.dialect.paramstyle == "qmark" else statement.replace("?", "%s")


def indexed_upto(conn: Connection, mark: int = ACTORS_MARK) -> int:
    """Every entry below this index is in the actor and waybill indexes (with ``SUBJECTS_MARK``: in
    the subject index); 0 when nothing is indexed yet."""
    upto = conn.execute(select(audit_index_mark.c.upto).where(audit_index_mark.c.id == mark)).scalar()
    return 0 if upto is None else int(upto)


def marks(conn: Connection) -> tuple[int, int]:
    """(actors and waybills mark, subjects mark), read in one statement."""
    m = audit_index_mark.c
    found = dict(conn.execute(select(m.id, m.upto).where(m.id.in_((ACTORS_MARK, SUBJECTS_MARK)))).all())
    return int(found.get(ACTORS_MARK, 0)), int(found.get(SUBJECTS_MARK, 0))


def stored_indexables(
    conn: Connection, start: int, stop: int, known: Mapping[int, Indexable] | None = None
) -> list[Indexable]:
    """What the index needs of the stored entries ``start..stop``: ``known`` ones as given, the rest
    read back from their bodies (after a restart, and for entries other writers committed).

    An archived entry has no body left: it keeps its actor, but can no longer be found by waybill
    or subject.
    """
    known = known or {}
    e = audit_entries.c
    rows = conn.execute(
        select(e.seq, e.actor, e.entry).where(e.seq >= start, e.seq < stop).order_by(e.seq)
    ).all()
    out: list[Indexable] = []
    for seq, actor, entry in rows:
        mine = known.get(seq)
        if mine is not None:
            out.append(mine)
        else:
            body = decode_entry(bytes(entry)).body if entry is not None else None
            out.append((seq, actor, waybills_of(body) if body else (), subject_of(body) if body else None))
    return out


def backfill_subjects(conn: Connection, start: int, stop: int) -> int:
    """File the stored entries ``start..stop`` under the employee each is about and move the subject
    mark to ``stop``; returns how many were filed. Idempotent, and it only adds index rows: the
    entries, their hashes and MACs are read, never written. The caller holds the writers' exclusion
    or knows the mark cannot move meanwhile (a migration); rows a racing writer added are kept."""
    e = audit_entries.c
    rows = conn.execute(
        select(e.seq, e.entry).where(e.seq >= start, e.seq < stop, e.entry.is_not(None)).order_by(e.seq)
    ).all()
    found = []
    for seq, entry in rows:
        subject = subject_of(decode_entry(bytes(entry)).body)
        if subject is not None:
            found.append((subject, seq))
    _insert_subjects(conn, sorted(found))
    conn.exec_driver_sql(_driver(conn, _MOVE_MARK), (SUBJECTS_MARK, stop))
    return len(found)


def _insert_subjects(conn: Connection, rows: list[tuple[str, int]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        keys, seqs = zip(*rows, strict=True)
        conn.exec_driver_sql(_INSERT_SUBJECTS_PG, (list(keys), list(seqs)))
    else:
        conn.exec_driver_sql(_INSERT_SUBJECT, rows)


def write_index(
    conn: Connection, new_upto: int, entries: Sequence[Indexable], *, subjects: bool = True
) -> None:
    """Add ``entries`` (every entry from the mark up to ``new_upto``) and move the mark there; with
    ``subjects`` (the subject mark is at the actors' mark, so nothing below is missing) their
    subjects too, moving the subject mark with it.

    Runs in ``conn``'s transaction, which the caller opened with the writers' exclusion (SQLite's
    write lock, PostgreSQL's advisory lock). Rows already present are kept, and a mark already
    past ``new_upto`` stays where it is, so a repeated or raced run changes nothing.
    """
    actors = sorted((actor, seq) for seq, actor, _, _ in entries if actor is not None)
    waybills = sorted((waybill, seq) for seq, _, found, _ in entries for waybill in found)
    if conn.dialect.name == "postgresql":
        for statement, rows in ((_INSERT_ACTORS_PG, actors), (_INSERT_WAYBILLS_PG, waybills)):
            if rows:
                keys, seqs = zip(*rows, strict=True)
                conn.exec_driver_sql(statement, (list(keys), list(seqs)))
    else:
        if actors:
            conn.exec_driver_sql(_INSERT_ACTOR, actors)
        if waybills:
            conn.exec_driver_sql(_INSERT_WAYBILL, waybills)
    conn.exec_driver_sql(_driver(conn, _MOVE_MARK), (ACTORS_MARK, new_upto))
    if subjects:
        _insert_subjects(
            conn, sorted((subject, seq) for seq, _, _, subject in entries if subject is not None)
        )
        conn.exec_driver_sql(_driver(conn, _MOVE_MARK), (SUBJECTS_MARK, new_upto))
