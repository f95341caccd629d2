"""The service container: builds the core services once from settings.

The HTTP gateway, the CLI and the demo all start here, so there is exactly one place where the
engines, key provider and vault are opened (the gateway adds the policy engine, audit log and risk
hook in ``gateway.wiring``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine.url import make_url

from courierguard.clock import Clock, SystemClock
from courierguard.config import Settings
from courierguard.db import create_db_engine, migrate
from courierguard.vault import Vault
from courierguard.vault.keys import KeyProvider, key_provider_from_settings


@dataclass
class Core:
    """The framework-free core of one Courier Guard deployment (one tenant)."""

    settings: Settings
    engine: Engine
    keys: KeyProvider
    vault: Vault
    clock: Clock
    audit_engine: Engine
    """Where the audit trail lives: ``engine`` itself, or a database of its own (see
    :func:`audit_database_url`)."""
    extras: dict[str, Any] = field(default_factory=dict)

    def check_databases(self) -> None:
        """Raise the driver's error unless the data's and the audit trail's databases both answer."""
        for engine in (
            (self.engine, self.audit_engine) if self.audit_engine is not self.engine else (self.engine,)
        ):
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()
        if self.audit_engine is not self.engine:
            self.audit_engine.dispose()


def open_core(
    settings: Settings,
    *,
    clock: Clock | None = None,
    migrate_schema: bool = True,
    keys: KeyProvider | None = None,
) -> Core:
    """Engines (migrated), key provider and vault for ``settings``; ``keys`` overrides the provider
    the settings name (a library user's own KMS provider)."""
    clock = clock or SystemClock()
    engine = create_db_engine(settings.resolved_database_url)
    if migrate_schema:
        migrate(engine)
    audit_engine = open_audit_engine(settings, engine, migrate_schema=migrate_schema)
    keys = keys or key_provider_from_settings(
        settings.key_provider, settings.resolved_key_file, factory=settings.key_provider_factory
    )
    vault = Vault(engine, keys, tenant=settings.tenant, clock=clock)
    return Core(
        settings=settings, engine=engine, keys=keys, vault=vault, clock=clock, audit_engine=audit_engine
    )


def open_audit_engine(settings: Settings, engine: Engine, *, migrate_schema: bool = True) -> Engine:
    """The engine of the audit trail: ``engine`` when the trail shares the main database, else a new one.

    A separate database is migrated with the whole schema (one chain of migrations for both); only
    its audit tables are used.
    """
    url = audit_database_url(settings, engine)
    if url == settings.resolved_database_url:
        return engine
    audit_engine = create_db_engine(url)
    if migrate_schema:
        migrate(audit_engine)
    return audit_engine


def audit_database_url(settings: Settings, engine: Engine) -> str:
    """Where the audit trail of ``settings`` lives (``engine`` is the main database's).

    SQLite allows one writer per file, and a commit there makes every other connection drop its
    page cache before its next read. The audit writer commits a batch every few milliseconds under
    load, so sharing the file made each request's reads (session, task facts, vault) start cold and
    made ingest wait for the write lock. So an SQLite main database gets a sibling file for the
    trail, unless it already holds a trail: that one is never abandoned by an upgrade.
    """
    if settings.audit_database_url:
        return settings.audit_database_url
    main = make_url(settings.resolved_database_url)
    database = main.database
    if (
        main.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or _holds_audit_trail(engine)
    ):
        return settings.resolved_database_url
    path = Path(database)
    sibling = path.with_name(f"{path.stem}-audit{path.suffix}")
    return main.set(database=str(sibling)).render_as_string(hide_password=False)


def _holds_audit_trail(engine: Engine) -> bool:
    if not inspect(engine).has_table("audit_entries"):
        return False
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM audit_entries LIMIT 1")).first() is not None
