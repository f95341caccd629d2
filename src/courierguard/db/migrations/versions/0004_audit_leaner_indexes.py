"""audit: one B-tree less per entry twice over (group-commit throughput)

* ``ix_audit_entries_tenant_seq`` goes: every investigator's search also names an actor, waybills or
  a time range, whose own index finds the rows; the tenant is checked on those rows.
* On SQLite, ``audit_waybills`` becomes a ``WITHOUT ROWID`` table: its primary key *is* the table,
  instead of a rowid table plus a separate primary-key index. PostgreSQL is unchanged.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_audit_leaner_indexes"
down_revision = "0002_audit"
branch_labels = None
depends_on = None


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _rebuild_waybills(*, with_rowid: bool) -> None:
    op.create_table(
        "audit_waybills_new",
        sa.Column("waybill", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("waybill", "seq", name="pk_audit_waybills_new"),
        sqlite_with_rowid=with_rowid,
    )
    op.execute("INSERT INTO audit_waybills_new (waybill, seq) SELECT waybill, seq FROM audit_waybills")
    op.drop_table("audit_waybills")
    op.rename_table("audit_waybills_new", "audit_waybills")


def upgrade() -> None:
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entries_tenant_seq"))
    if _sqlite():
        _rebuild_waybills(with_rowid=False)


def downgrade() -> None:
    if _sqlite():
        _rebuild_waybills(with_rowid=True)
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_entries_tenant_seq"), ["tenant", "seq"], unique=False)
