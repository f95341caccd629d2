"""row seals: a MAC on the rows that decide who may see what (approvals, employees, waybills, cases)

A DBA could grant tasks, roles and four-eyes approvals by writing these tables (the security test's
F2). Each row now carries a MAC under a key derived from the audit signing key
(``courierguard.db.rowseal``); the gateway refuses a row without a valid one.

The columns are nullable and nothing is back-filled here: a migration has no key. After upgrading,
an operator seals the existing rows once with ``courierguard keys seal-tables`` (recorded in the
audit trail) before starting the service; until then those rows are refused (``docs/deployment.md``).
Adding a nullable column without a default changes only the catalogue on both backends.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_row_seals"
down_revision = "0009_audit_subjects"
branch_labels = None
depends_on = None

_TABLES = ("approvals", "employees", "waybills", "cases")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("mac", sa.LargeBinary(length=16), nullable=True))


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("mac")
