"""Tables of the audit trail, declared on the shared metadata (migration ``0002_audit``).

``entry`` holds the exact leaf input (see :func:`courierguard.audit.models.encode_entry`); it becomes
NULL once the entry is archived, while ``leaf_hash`` stays so that the tree and every signed tree head
can still be checked. ``actor``, ``ts_us``, ``audit_actors`` and ``audit_waybills`` are unhashed search
indexes copied out of the entry; verification never trusts them.

``audit_actors`` and ``audit_waybills`` are written behind the log, not in each commit: every entry
of a batch would land on its own B-tree page of each (a random actor, a random waybill), and writing
those pages was most of a commit's cost. The writer indexes the entries from
``audit_index_mark.upto`` on in sorted bulk every few thousand entries, and searches read the
entries at or above the mark directly (:mod:`courierguard.audit.queries`), so a search is complete
whether or not the latest entries are indexed yet.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, SmallInteger, String, Table

from courierguard.db.tables import metadata

audit_entries = Table(
    "audit_entries",
    metadata,
    # INTEGER on SQLite makes ``seq`` the rowid itself: one B-tree less to write per entry.
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("actor", String(64)),
    # Which tenant's entry (one log may serve several): investigators' searches are scoped by it.
    Column("tenant", String(64)),
    Column("entry", LargeBinary),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    # The writer's MAC over index and leaf hash, under a key derived from the audit signing key
    # (``courierguard.audit._internal.rowmac``): a row INSERTed without the key has none that fits.
    # NULL in rows written before migration 0008, which only signed heads vouch for.
    Column("mac", LargeBinary(16)),
    # Time grows with ``seq``, so this index is appended to at its right edge: cheap per commit.
    Index(None, "ts_us"),
    # No index on tenant: every search also names an actor, waybills or a time range, whose index
    # finds the rows; one B-tree less per entry is worth more to group commit (migration 0004).
    # No index on actor either: ``audit_actors`` is that index, written in bulk (migration 0005).
)

audit_actors = Table(
    "audit_actors",
    metadata,
    Column("actor", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    sqlite_with_rowid=False,
)

audit_waybills = Table(
    "audit_waybills",
    metadata,
    Column("waybill", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    # On SQLite the primary key is the table: no rowid B-tree beside it.
    sqlite_with_rowid=False,
)

audit_subjects = Table(
    "audit_subjects",
    metadata,
    # The employee an entry is about when someone else acted on their account (a suspension, a
    # device reset, a role change: ``courierguard.audit._internal.core.subject_of``), so that an
    # investigator finds what was done *to* an account as well as what it did (migration 0009).
    # Written in bulk behind the log with the other two, below ``audit_index_mark`` row 2.
    Column("subject", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    sqlite_with_rowid=False,
)

audit_tree_heads = Table(
    "audit_tree_heads",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("public_key", LargeBinary(32), nullable=False),
)

audit_tiles = Table(
    "audit_tiles",
    metadata,
    # The hash of each complete tile: the subtree of leaves idx * 2**height .. (idx + 1) * 2**height - 1.
    # Written in the transaction of the entry that completes the tile, so the log opens by reading
    # one row per 256 entries instead of every leaf (``courierguard.audit.merkle.TiledTree``).
    # Derived data like the leaf hashes: the writer checks the tree they give against the latest
    # signed head on opening, and ``verify`` recomputes everything from the entries.
    Column("height", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
    sqlite_with_rowid=False,
)

audit_index_mark = Table(
    "audit_index_mark",
    metadata,
    # Row 1: every entry below ``upto`` is in ``audit_actors`` and ``audit_waybills``. Row 2: every
    # entry below ``upto`` is in ``audit_subjects`` (a mark of its own: writers of the version before
    # move row 1 without writing subjects, and the subjects of a log written before migration 0009
    # are filled in behind it). No row means nothing is indexed yet.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("upto", BigInteger, nullable=False),
)

# Every table of the audit trail, for creating them without the other capabilities' tables.
AUDIT_TABLES = (
    audit_entries, audit_actors, audit_waybills, audit_subjects, audit_index_mark, audit_tiles, audit_tree_heads,
)  # fmt: skip
