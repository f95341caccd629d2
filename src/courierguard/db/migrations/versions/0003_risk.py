"""risk: alerts with evidence"""

import sqlalchemy as sa
from alembic import op

revision = "0003_risk"
down_revision = "0001_foundation"
branch_labels = ("risk",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_alerts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=True),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_alerts")),
    )
    with op.batch_alter_table("risk_alerts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_risk_alerts_tenant_actor_id_ts"), ["tenant", "actor_id", "ts"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_risk_alerts_tenant_state_ts"), ["tenant", "state", "ts"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("risk_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_risk_alerts_tenant_state_ts"))
        batch_op.drop_index(batch_op.f("ix_risk_alerts_tenant_actor_id_ts"))
    op.drop_table("risk_alerts")
