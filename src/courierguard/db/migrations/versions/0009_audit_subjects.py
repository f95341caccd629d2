"""audit: a subject index, so that investigators find what was done *to* an account, not only by it

``audit_subjects (subject, seq)`` files an entry under the employee whose account someone else acted
on: suspended, reinstated, sessions ended, devices reset, role or unit changed (the ``admin.change``
purposes of docs/events.md, and the ``employee`` an ``admin`` or ``system`` entry names). Until now
such entries were found only under the officer or admin who made them.

The index has a mark of its own, ``audit_index_mark`` row 2. Upgrading files every stored entry
below the actors' mark from its body, in chunks, and moves row 2 behind them; nothing in
``audit_entries`` is written (the trail is append-only and each row carries its hash and MAC).
Writers of the version before may go on appending and indexing meanwhile: they move row 1 only, and
the new writers file whatever lies between the two marks in their indexing turns
(``courierguard.audit.search_index.backfill_subjects``). Until then, searches by subject read the
entries between the marks from their bodies, so no search misses anything. Archived entries (their
body purged) cannot be filed: their subject is in the Parquet archive.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_audit_subjects"
down_revision = "0008_audit_row_mac"
branch_labels = None
depends_on = None

# Entries read and filed per statement pair while back-filling (memory stays bounded).
CHUNK = 50_000


def upgrade() -> None:
    from courierguard.audit.search_index import ACTORS_MARK, backfill_subjects

    op.create_table(
        "audit_subjects",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("subject", "seq", name=op.f("pk_audit_subjects")),
        sqlite_with_rowid=False,
    )
    bind = op.get_bind()
    mark = bind.execute(
        sa.text("SELECT upto FROM audit_index_mark WHERE id = :id"), {"id": ACTORS_MARK}
    ).scalar()
    # Entries are immutable once stored, so no writers' lock is needed: only the new rows and row 2
    # are written, and row 2 never claims more than what was filed.
    for start in range(0, int(mark or 0), CHUNK):
        backfill_subjects(bind, start, min(start + CHUNK, int(mark or 0)))


def downgrade() -> None:
    op.execute("DELETE FROM audit_index_mark WHERE id = 2")
    op.drop_table("audit_subjects")
