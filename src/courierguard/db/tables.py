"""Tables of the foundation (company, waybills, vault) and the gateway (sessions, keys, exports).

Other capabilities declare their tables on the same :data:`metadata` in their own package
(``audit``, ``risk``) and import them here at the bottom, so Alembic sees one schema.
Personal data appears only as ciphertext, masked form or keyed blind index: no column here holds
a clear-text name, phone or address.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_NO_OFFSET = timedelta(0)


class UtcDateTime(TypeDecorator[datetime]):
    """An instant, bound in UTC. SQLite stores an aware value's wall clock and drops its offset, and
    every reader takes a stored naive time for UTC (:func:`courierguard.timeutil.utc`): a time given
    at +08:00 (a PDA's event, the demo's clock) was read back eight hours late, and compared as its
    wall clock in a ``WHERE``. PostgreSQL's ``timestamptz`` stores the instant either way."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None and value.utcoffset() != _NO_OFFSET:
            return value.astimezone(UTC)
        return value


TS = UtcDateTime()


class Bytes(LargeBinary):
    """Binary column whose values go to the driver untouched.

    Both sqlite3 and psycopg take ``bytes`` as they are; skipping SQLAlchemy's per-value bind
    processing matters when ingest writes six ciphertexts and two indexes per waybill.
    """

    cache_ok = True

    def bind_processor(self, dialect: Any) -> None:
        return None


tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", TS, nullable=False),
)

org_units = Table(
    "org_units",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("parent", String(64)),
    Column("city", String(64)),
    Column("lat", Float),
    Column("lon", Float),
    # Row seal (``courierguard.db.rowseal``): kind and parent, under a key the database does not hold.
    Column("mac", Bytes(16)),
)

employees = Table(
    "employees",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("role", String(32), nullable=False),
    Column("org_unit", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_reason", String(64)),
    Column("shifts", Text, nullable=False, default="[]"),
    Column("name", String(100)),
    Column("updated_at", TS, nullable=False),
    # Row seal (``courierguard.db.rowseal``): a MAC under a key the database does not hold.
    Column("mac", Bytes(16)),
)

waybills = Table(
    "waybills",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("number", String(32), primary_key=True),
    Column("origin_outlet", String(64), nullable=False),
    Column("dest_outlet", String(64), nullable=False),
    Column("routing_code", String(32), nullable=False),
    Column("status", String(24), nullable=False),
    Column("status_ts", TS, nullable=False),
    Column("assignee", String(64)),
    Column("task", String(16)),
    Column("created_at", TS, nullable=False),
    Column("delivered_at", TS),
    Column("key_month", String(7), nullable=False),
    # Row seal (``courierguard.db.rowseal``): a MAC under a key the database does not hold.
    Column("mac", Bytes(16)),
    Index(None, "tenant", "dest_outlet", "status"),
    Index(None, "tenant", "origin_outlet"),
    Index(None, "tenant", "assignee"),
    Index(None, "tenant", "key_month"),
)

waybill_history = Table(
    "waybill_history",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("number", String(32), nullable=False),
    Column("status", String(24), nullable=False),
    Column("ts", TS, nullable=False),
    Column("assignee", String(64)),
    Column("task", String(16)),
    Index(None, "tenant", "number"),
)

# One row per party of a waybill. The three clear-text attributes are AES-256-GCM ciphertexts
# bound (associated data) to tenant, waybill and field; masks and blind indexes sit beside them so
# masked reads and phone lookups never decrypt.
parties = Table(
    "parties",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("waybill", String(32), primary_key=True),
    Column("role", String(16), primary_key=True),
    Column("key_month", String(7), nullable=False),
    Column("name_ct", Bytes),
    Column("phone_ct", Bytes),
    Column("address_ct", Bytes),
    Column("name_masked", String(64)),
    Column("phone_masked", String(32)),
    Column("address_masked", String(200)),
    Column("phone_bidx", Bytes(16)),
    Column("name_bidx", Bytes(16)),
    Index(None, "tenant", "phone_bidx"),
    Index(None, "tenant", "name_bidx"),
    Index(None, "tenant", "key_month"),
)

# Envelope encryption: one data key per tenant and month, stored only wrapped by a key-encryption
# key that never enters the database. Deleting a row crypto-shreds that month.
data_keys = Table(
    "data_keys",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("kek_id", String(64), nullable=False),
    Column("wrapped", Bytes, nullable=False),
    Column("created_at", TS, nullable=False),
)

cases = Table(
    "cases",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("waybill", String(32), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("opened_at", TS, nullable=False),
    Column("closed_at", TS),
    # Row seal (``courierguard.db.rowseal``): a MAC under a key the database does not hold.
    Column("mac", Bytes(16)),
    Index(None, "tenant", "waybill"),
    Index(None, "tenant", "owner", "state"),
)

# --- gateway -------------------------------------------------------------------------------------

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("employee", String(64), nullable=False),
    Column("device_id", String(128)),
    Column("auth", String(16)),
    Column("created_at", TS, nullable=False),
    Column("last_seen", TS, nullable=False),
    Column("step_up_at", TS),
    Column("revoked_at", TS),
    Column("revoked_reason", String(64)),
    Column("mac", Bytes(16)),  # row seal (courierguard.db.rowseal); last_seen is not sealed
    Index(None, "tenant", "employee"),
)

devices = Table(
    "devices",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("employee", String(64), primary_key=True),
    Column("device_id", String(128), primary_key=True),
    Column("bound_at", TS, nullable=False),
    # TOTP seed, encrypted by the vault like any other secret-at-rest; never stored in clear.
    Column("totp_ct", Bytes),
    # The last TOTP time step accepted: a code (or an older one) is not accepted twice.
    Column("last_step", BigInteger),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("name", String(100), nullable=False),
    Column("key_hash", Bytes(32), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("revoked_at", TS),
    # Row seal (``courierguard.db.rowseal``): a key row a DBA writes is no service account.
    Column("mac", Bytes(16)),
)

# Four-eyes approvals: a bulk export, or a security officer's reveal, waits here until a different
# officer approves it; an approved request is usable until ``expires_at``.
approvals = Table(
    "approvals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("requested_by", String(64), nullable=False),
    Column("justification", String(500), nullable=False),
    Column("scope", Text, nullable=False),
    Column("fields", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("decided_by", String(64)),
    Column("decided_at", TS),
    Column("expires_at", TS),
    Column("used_at", TS),
    # Row seal (``courierguard.db.rowseal``): a MAC under a key the database does not hold.
    Column("mac", Bytes(16)),
    Index(None, "tenant", "status"),
)
