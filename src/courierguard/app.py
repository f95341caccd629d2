"""The service container: builds the core services once from settings.

The HTTP gateway, the CLI and the demo all start here, so there is exactly one place where the
engine, key provider, vault, policy engine, audit log and risk hook are wired together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

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
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.engine.dispose()


def open_core(settings: Settings, *, clock: Clock | None = None, migrate_schema: bool = True) -> Core:
    """Engine (migrated), key provider and vault for ``settings``."""
    clock = clock or SystemClock()
    engine = create_db_engine(settings.resolved_database_url)
    if migrate_schema:
        migrate(engine)
    keys = key_provider_from_settings(settings.key_provider, settings.resolved_key_file)
    vault = Vault(engine, keys, tenant=settings.tenant, clock=clock)
    return Core(settings=settings, engine=engine, keys=keys, vault=vault, clock=clock)
