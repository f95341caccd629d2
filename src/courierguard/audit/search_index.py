"""The actor and waybill search indexes, written in sorted bulk behind the log.

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
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import Connection, select

from courierguard.audit._internal.core import waybills_of
from courierguard.audit.models import decode_entry
from courierguard.audit.tables import audit_entries, audit_index_mark

# What the search index needs of one entry: its index, its actor, the waybills it concerns.
Indexable = tuple[int, str | None, Collection[str]]

_INSERT_ACTOR = {
    "qmark": "INSERT INTO audit_actors (actor, seq) VALUES (?, ?)",
    "format": "INSERT INTO audit_actors (actor, seq) VALUES (%s, %s)",
}
_INSERT_WAYBILL = {
    "qmark": "INSERT INTO audit_waybills (waybill, seq) VALUES (?, ?)",
    "format": "INSERT INTO audit_waybills (waybill, seq) VALUES (%s, %s)",
}
_UPDATE_MARK = {
    "qmark": "UPDATE audit_index_mark SET upto = ? WHERE id = 1",
    "format": "UPDATE audit_index_mark SET upto = %s WHERE id = 1",
}
_INSERT_MARK = {
    "qmark": "INSERT INTO audit_index_mark (id, upto) VALUES (1, ?)",
    "format": "INSERT INTO audit_index_mark (id, upto) VALUES (1, %s)",
}


def indexed_upto(conn: Connection) -> int:
    """Every entry below this index is in the search indexes (0 when nothing is indexed yet)."""
    upto = conn.execute(select(audit_index_mark.c.upto).where(audit_index_mark.c.id == 1)).scalar()
    return 0 if upto is None else int(upto)


def stored_indexables(conn: Connection, start: int, stop: int) -> list[Indexable]:
    """What the index needs of the stored entries ``start..stop``, read back from their bodies.

    The path after a restart and for entries that other writers committed. An archived entry has
    no body left: it keeps its actor, but can no longer be found by waybill.
    """
    e = audit_entries.c
    rows = conn.execute(
        select(e.seq, e.actor, e.entry).where(e.seq >= start, e.seq < stop).order_by(e.seq)
    ).all()
    return [
        (seq, actor, waybills_of(decode_entry(bytes(entry)).body) if entry is not None else ())
        for seq, actor, entry in rows
    ]


def write_index(conn: Connection, new_upto: int, entries: Sequence[Indexable]) -> None:
    """Add ``entries`` (every entry from the mark up to ``new_upto``) and move the mark there.

    Runs in ``conn``'s transaction; the caller holds the writers' exclusion (SQLite's write lock,
    PostgreSQL's advisory lock), so the mark it read is still the mark.
    """
    style = "qmark" if conn.dialect.paramstyle == "qmark" else "format"
    actors = sorted((actor, seq) for seq, actor, _ in entries if actor is not None)
    waybills = sorted((waybill, seq) for seq, _, found in entries for waybill in found)
    if actors:
        conn.exec_driver_sql(_INSERT_ACTOR[style], actors)
    if waybills:
        conn.exec_driver_sql(_INSERT_WAYBILL[style], waybills)
    if conn.exec_driver_sql(_UPDATE_MARK[style], (new_upto,)).rowcount == 0:
        conn.exec_driver_sql(_INSERT_MARK[style], (new_upto,))
