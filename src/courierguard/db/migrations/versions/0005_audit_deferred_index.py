"""audit: actor and waybill search indexes written in bulk behind the log

* ``audit_actors (actor, seq)`` replaces the ``(actor, seq)`` index of ``audit_entries``, so that
  the writer can fill it in sorted bulk instead of one random B-tree page per entry per commit.
* ``audit_index_mark.upto``: entries below it are in ``audit_actors`` and ``audit_waybills``;
  searches read the entries at or above it directly.

Upgrading indexes every existing entry (the waybill index was complete until now). Downgrading first
indexes the unindexed tail into ``audit_waybills``, which the older code expects to be complete.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_audit_deferred_index"
down_revision = "0004_audit_leaner_indexes"
branch_labels = None
depends_on = None

# The PostgreSQL advisory lock that serialises audit writers (``courierguard.audit.sql._PG_LOCK_KEY``).
AUDIT_WRITERS_LOCK = 0x6367_6175_6469_74


def upgrade() -> None:
    op.create_table(
        "audit_actors",
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("actor", "seq", name=op.f("pk_audit_actors")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "audit_index_mark",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("upto", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_index_mark")),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Workers of the previous version may still be appending: hold their lock until this
        # migration commits, so no entry lands between reading the end of the log and the mark.
        bind.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_WRITERS_LOCK})
    top = bind.execute(sa.text("SELECT max(seq) FROM audit_entries")).scalar()
    mark = 0 if top is None else int(top) + 1
    bind.execute(
        sa.text(
            "INSERT INTO audit_actors (actor, seq) SELECT actor, seq FROM audit_entries "
            "WHERE actor IS NOT NULL AND seq < :mark ORDER BY actor, seq"
        ),
        {"mark": mark},
    )
    bind.execute(sa.text("INSERT INTO audit_index_mark (id, upto) VALUES (1, :mark)"), {"mark": mark})
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entries_actor_seq"))


def downgrade() -> None:
    from courierguard.audit._internal.core import waybills_of
    from courierguard.audit.models import decode_entry

    bind = op.get_bind()
    upto = bind.execute(sa.text("SELECT upto FROM audit_index_mark WHERE id = 1")).scalar() or 0
    tail = bind.execute(
        sa.text("SELECT seq, entry FROM audit_entries WHERE seq >= :upto AND entry IS NOT NULL"),
        {"upto": upto},
    ).all()
    rows = [
        {"waybill": waybill, "seq": seq}
        for seq, entry in tail
        for waybill in sorted(waybills_of(decode_entry(bytes(entry)).body))
    ]
    if rows:
        bind.execute(sa.text("INSERT INTO audit_waybills (waybill, seq) VALUES (:waybill, :seq)"), rows)
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_entries_actor_seq"), ["actor", "seq"], unique=False)
    op.drop_table("audit_index_mark")
    op.drop_table("audit_actors")
