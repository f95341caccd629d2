"""row seals on api_keys and org_units: a service key or a unit's place in the hierarchy a DBA writes is refused

A DBA could insert an ``api_keys`` row holding the SHA-256 of a secret of their choosing and get a
service account (which ingests waybills and lifecycle events: assigns couriers, opens tickets, what
opens a reveal), or clear ``revoked_at`` on a revoked key; and move an org unit in the hierarchy.
Both tables now carry the same MAC as the tables of 0010 (``courierguard.db.rowseal``).

As in 0010, the columns are nullable and nothing is back-filled here: a migration has no key. After
upgrading, an operator seals the existing rows once with ``courierguard keys seal-tables`` (which
seals the tables no earlier run covered) before starting the service; until then those rows are
refused (``docs/deployment.md``). Adding a nullable column without a default changes only the
catalogue on both backends.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_seal_keys_and_units"
down_revision = "0010_row_seals"
branch_labels = None
depends_on = None

_TABLES = ("api_keys", "org_units")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("mac", sa.LargeBinary(length=16), nullable=True))


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("mac")
