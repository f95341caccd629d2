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


def test_audit_waybill_index_survives_the_0004_rebuild(tmp_path: object) -> None:
    """From 0002 to 0004 and back on SQLite: rows kept, WITHOUT ROWID on the way up, rowid on the way down."""
    from pathlib import Path

    from alembic import command
    from sqlalchemy import text

    from courierguard.db import create_db_engine
    from courierguard.db.engine import alembic_config

    assert isinstance(tmp_path, Path)
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    engine = create_db_engine(url)
    config = alembic_config(engine)
    command.upgrade(config, "0002_audit")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_waybills (waybill, seq) VALUES ('YT0000000000001', 7)"))
    command.upgrade(config, "heads")

    def table_sql() -> str:
        with engine.connect() as conn:
            return str(
                conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'audit_waybills'")).scalar_one()
            )

    def indexes() -> set[str]:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_entries'")
            )
            return {r[0] for r in rows}

    assert "WITHOUT ROWID" in table_sql().upper()
    assert "ix_audit_entries_tenant_seq" not in indexes()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT waybill, seq FROM audit_waybills")).all() == [("YT0000000000001", 7)]
    command.downgrade(config, "0002_audit")
    assert "WITHOUT ROWID" not in table_sql().upper()
    assert "ix_audit_entries_tenant_seq" in indexes()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT waybill, seq FROM audit_waybills")).all() == [("YT0000000000001", 7)]
    engine.dispose()
