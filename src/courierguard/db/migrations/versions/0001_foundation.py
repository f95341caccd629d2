"""foundation: company, waybills, vault, gateway sessions"""

import sqlalchemy as sa
from alembic import op

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_table(
        "cases",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("waybill", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "id", name=op.f("pk_cases")),
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cases_tenant_owner_state"), ["tenant", "owner", "state"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_cases_tenant_waybill"), ["tenant", "waybill"], unique=False)

    op.create_table(
        "data_keys",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("kek_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "month", name=op.f("pk_data_keys")),
    )
    op.create_table(
        "devices",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("employee", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("totp_ct", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "employee", "device_id", name=op.f("pk_devices")),
    )
    op.create_table(
        "employees",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("org_unit", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=64), nullable=True),
        sa.Column("shifts", sa.Text(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "id", name=op.f("pk_employees")),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("justification", sa.String(length=500), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approvals_tenant_status"), ["tenant", "status"], unique=False)
    op.create_table(
        "org_units",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("parent", sa.String(length=64), nullable=True),
        sa.Column("city", sa.String(length=64), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "id", name=op.f("pk_org_units")),
    )
    op.create_table(
        "parties",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("waybill", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("key_month", sa.String(length=7), nullable=False),
        sa.Column("name_ct", sa.LargeBinary(), nullable=True),
        sa.Column("phone_ct", sa.LargeBinary(), nullable=True),
        sa.Column("address_ct", sa.LargeBinary(), nullable=True),
        sa.Column("name_masked", sa.String(length=64), nullable=True),
        sa.Column("phone_masked", sa.String(length=32), nullable=True),
        sa.Column("address_masked", sa.String(length=200), nullable=True),
        sa.Column("phone_bidx", sa.LargeBinary(length=16), nullable=True),
        sa.Column("name_bidx", sa.LargeBinary(length=16), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "waybill", "role", name=op.f("pk_parties")),
    )
    with op.batch_alter_table("parties", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_parties_tenant_key_month"), ["tenant", "key_month"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_parties_tenant_name_bidx"), ["tenant", "name_bidx"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_parties_tenant_phone_bidx"), ["tenant", "phone_bidx"], unique=False
        )

    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("employee", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=True),
        sa.Column("auth", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_tenant_employee"), ["tenant", "employee"], unique=False)

    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )
    op.create_table(
        "waybill_history",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assignee", sa.String(length=64), nullable=True),
        sa.Column("task", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_waybill_history")),
    )
    with op.batch_alter_table("waybill_history", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_waybill_history_tenant_number"), ["tenant", "number"], unique=False
        )

    op.create_table(
        "waybills",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("origin_outlet", sa.String(length=64), nullable=False),
        sa.Column("dest_outlet", sa.String(length=64), nullable=False),
        sa.Column("routing_code", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("status_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assignee", sa.String(length=64), nullable=True),
        sa.Column("task", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("key_month", sa.String(length=7), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "number", name=op.f("pk_waybills")),
    )
    with op.batch_alter_table("waybills", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_waybills_tenant_assignee"), ["tenant", "assignee"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_waybills_tenant_dest_outlet_status"),
            ["tenant", "dest_outlet", "status"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_waybills_tenant_key_month"), ["tenant", "key_month"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_waybills_tenant_origin_outlet"), ["tenant", "origin_outlet"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("waybills", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_waybills_tenant_origin_outlet"))
        batch_op.drop_index(batch_op.f("ix_waybills_tenant_key_month"))
        batch_op.drop_index(batch_op.f("ix_waybills_tenant_dest_outlet_status"))
        batch_op.drop_index(batch_op.f("ix_waybills_tenant_assignee"))

    op.drop_table("waybills")
    with op.batch_alter_table("waybill_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_waybill_history_tenant_number"))

    op.drop_table("waybill_history")
    op.drop_table("tenants")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_tenant_employee"))

    op.drop_table("sessions")
    with op.batch_alter_table("parties", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_parties_tenant_phone_bidx"))
        batch_op.drop_index(batch_op.f("ix_parties_tenant_name_bidx"))
        batch_op.drop_index(batch_op.f("ix_parties_tenant_key_month"))

    op.drop_table("parties")
    op.drop_table("org_units")
    op.drop_table("approvals")
    op.drop_table("employees")
    op.drop_table("devices")
    op.drop_table("data_keys")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cases_tenant_waybill"))
        batch_op.drop_index(batch_op.f("ix_cases_tenant_owner_state"))

    op.drop_table("cases")
    op.drop_table("api_keys")
