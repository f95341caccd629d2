"""Tables of the audit trail, declared on the shared metadata (migration ``0002_audit``).

``entry`` holds the exact leaf input (see :func:`courierguard.audit.models.encode_entry`); it becomes
NULL once the entry is archived, while ``leaf_hash`` stays so that the tree and every signed tree head
can still be checked. ``actor``, ``ts_us`` and ``audit_waybills`` are unhashed search indexes copied
out of the entry; verification never trusts them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table

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
    Index(None, "ts_us"),
    Index(None, "actor", "seq"),
    # No index on tenant: every search also names an actor, waybills or a time range, whose index
    # finds the rows; one B-tree less per entry is worth more to group commit (migration 0004).
)

audit_waybills = Table(
    "audit_waybills",
    metadata,
    Column("waybill", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    # On SQLite the primary key is the table: no rowid B-tree beside it.
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
