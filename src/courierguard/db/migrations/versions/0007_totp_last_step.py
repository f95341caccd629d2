"""devices: the last TOTP time step accepted, so that a code works once

A code stays valid for its 30-second step and the steps either side; without a record of the
last step used, one code could lift the step-up of several sessions (an attacker who sees a code
typed could use it again within that minute and a half).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_totp_last_step"
down_revision = "0006_audit_tiles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("last_step", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("last_step")
