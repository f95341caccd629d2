"""Migrations and declared tables agree, on both backends; migrating twice is harmless."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from courierguard.db import migrate
from courierguard.db.schema import metadata


def test_migrated_schema_matches_the_declared_tables(engine: Engine) -> None:
    migrate(engine)  # second run: a no-op
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
