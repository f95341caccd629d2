"""audit: a MAC on every entry row, so that a writer adopts only rows a writer holding the key wrote

Writers of several processes take each other's rows into the tree before appending, and sign heads
over them; a row INSERTed by someone with write access to the database but not to the key provider
was signed too (the audit review's D5). The writer now stores a MAC over each row's index and leaf
hash, under a key derived from the audit signing key, and checks it on the rows it adopts.

The column is nullable and nothing is back-filled: the rows already stored are vouched for by the
signed heads that cover them (``docs/audit.md``, "Row MACs"). Adding a nullable column without a
default changes only the catalogue on both backends: no table rewrite, and writers of the previous
version keep appending meanwhile (their rows get no MAC; see the upgrade note in the docs).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_audit_row_mac"
down_revision = "0007_totp_last_step"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_entries", sa.Column("mac", sa.LargeBinary(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:
        batch.drop_column("mac")
