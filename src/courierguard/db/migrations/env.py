"""Alembic environment: runs against the engine handed over in ``config.attributes``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, text

from courierguard.db.schema import metadata

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - only reachable when misused from the alembic CLI
    raise RuntimeError("run migrations through courierguard.db.migrate(engine)")

# Any fixed 64-bit number: the advisory lock that serialises migrations on PostgreSQL.
_MIGRATION_LOCK = 0x436F757269657247  # "CourierG"

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Workers starting together on a fresh database all migrate at start: one does, the others
            # wait here, then find the version table up to date. Without it they raced to create the
            # same tables and all but one died (IntegrityError on pg_type). Released at commit.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        context.run_migrations()
    connection.commit()
