"""A scratch PostgreSQL database for the benchmarks that measure the production database.

``COURIERGUARD_BENCH_PG`` names a database to connect to (default: ``test`` on 127.0.0.1, as CI
and the development machine have); each benchmark creates a database of its own beside it and
drops it afterwards. When no server answers, the PostgreSQL figures are left out of the report.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import psycopg

PG_ADMIN_URL = os.environ.get("COURIERGUARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def postgres_database() -> Iterator[str | None]:
    """URL of a fresh PostgreSQL database, dropped afterwards; None when no server answers."""
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        yield None
        return
    name = f"cg_bench_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
