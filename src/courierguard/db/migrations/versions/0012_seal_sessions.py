"""row seals on sessions: a revocation a DBA clears, or a step-up a DBA writes, is refused

A DBA could clear ``revoked_at`` on a session an officer ended (the renter's token works again) or
set ``step_up_at`` (enrolling a further device takes a recent step-up: the renter's phone would
become the account's second factor). Sessions now carry the MAC of 0010 (``courierguard.db.rowseal``)
over every column that decides anything; ``last_seen`` is not one.

As in 0010 and 0011 nothing is back-filled (a migration has no key): ``courierguard keys
seal-tables`` seals the open sessions once, or the workers are started and everyone signs in again
(``docs/deployment.md``).
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_seal_sessions"
down_revision = "0011_seal_keys_and_units"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("mac", sa.LargeBinary(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("mac")
