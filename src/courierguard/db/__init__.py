"""Storage: one SQLAlchemy Core ``MetaData``, an engine factory, and Alembic migrations.

SQLite (WAL) is the embedded default; PostgreSQL is the production backend. Each capability
declares its tables on :data:`courierguard.db.tables.metadata`; migrations live in
``db/migrations/versions`` and are the only way the schema changes.
"""

from courierguard.db.engine import create_db_engine, migrate

__all__ = ["create_db_engine", "migrate"]
