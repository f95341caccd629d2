"""Fixed statements run at the driver level, for the lookups on every request's path.

A Core ``select`` costs tens of microseconds to execute through SQLAlchemy's machinery; the same
statement handed to the DBAPI connection costs a few. Only the placeholder style differs between
sqlite3 (``?``) and psycopg (``%s``); values are always bound, never formatted into the SQL.
Timestamps come back as SQLAlchemy stores them: :func:`timestamp` reads either form.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from courierguard.timeutil import utc


class DriverQuery:
    """One fixed SQL statement with ``?`` placeholders, adapted to the engine's driver."""

    __slots__ = ("sql",)

    def __init__(self, engine: Engine, sql: str) -> None:
        self.sql = sql if engine.dialect.paramstyle == "qmark" else sql.replace("?", "%s")

    def fetch(self, engine: Engine, params: tuple[Any, ...]) -> list[Any]:
        """The rows, on a pooled connection taken for this statement alone.

        The pool's own connection, not a SQLAlchemy ``Connection`` around it: the wrapper costs
        more than the statement, and one statement needs none of its transaction handling (the
        pool still rolls back whatever the driver opened when the connection goes back).
        """
        pooled = engine.raw_connection()
        try:
            driver = pooled.driver_connection
            if driver is None:  # pragma: no cover - a closed connection
                raise RuntimeError("connection is closed")
            return list(driver.execute(self.sql, params).fetchall())
        finally:
            pooled.close()

    def all(self, conn: Connection, params: tuple[Any, ...]) -> list[Any]:
        driver = conn.connection.driver_connection
        if driver is None:  # pragma: no cover - a closed connection
            raise RuntimeError("connection is closed")
        return list(driver.execute(self.sql, params).fetchall())


def timestamp(value: Any) -> datetime | None:
    """A stored timestamp as aware UTC: SQLite hands back text, PostgreSQL a datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return utc(value)
