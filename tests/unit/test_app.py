"""Where the audit trail lives (``open_core``): its own SQLite file by default, never moved away from
a database that already holds one."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, func, select

from courierguard.app import audit_database_url, open_core
from courierguard.audit import EntryKind, open_audit_log, verify
from courierguard.audit.tables import audit_entries
from courierguard.config import Settings
from courierguard.db import create_db_engine, migrate
from courierguard.gateway.wiring import open_deployment
from courierguard.vault.keys import LocalKeyFile


def _entries(url: str) -> int:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_entries)).scalar_one())
    finally:
        engine.dispose()


def test_sqlite_trail_gets_a_file_of_its_own(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    deployment = open_deployment(settings)
    try:
        core = deployment.core
        assert core.audit_engine is not core.engine
        assert core.audit_engine.url.database == str(tmp_path / "courierguard-audit.sqlite3")
        deployment.guard.audit.append(EntryKind.SYSTEM, {"what": "test", "ts": "2026-12-04T00:00:00+00:00"})
        public_key = core.keys.signer().public_key
        assert verify(core.audit_engine, public_key).entries == 2  # policy.loaded, then ours
    finally:
        deployment.close()
    # The main database holds the schema's (empty) audit tables, no entries.
    assert _entries(settings.resolved_database_url) == 0
    assert _entries(f"sqlite:///{tmp_path / 'courierguard-audit.sqlite3'}") == 2
    # Reopened, the deployment finds the same trail and goes on from it.
    again = open_deployment(settings)
    try:
        assert again.guard.audit.size == 3
    finally:
        again.close()


def test_a_database_that_already_holds_a_trail_keeps_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'courierguard.sqlite3'}"
    engine = create_db_engine(url)
    migrate(engine)
    log = open_audit_log(engine, LocalKeyFile(tmp_path / "keys.json"))
    log.append(EntryKind.SYSTEM, {"what": "before the split", "ts": "2026-12-01T00:00:00+00:00"})
    log.close()
    engine.dispose()
    core = open_core(Settings(data_dir=tmp_path))
    try:
        assert core.audit_engine is core.engine
        assert verify(core.audit_engine, core.keys.signer().public_key).entries == 1
    finally:
        core.close()
    assert not (tmp_path / "courierguard-audit.sqlite3").exists()


def test_audit_database_url_rules(tmp_path: Path) -> None:
    unused = create_engine("sqlite://")  # only consulted for an SQLite file
    pg = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    assert audit_database_url(Settings(database_url=pg), unused) == pg
    assert audit_database_url(Settings(database_url="sqlite://"), unused) == "sqlite://"
    explicit = f"sqlite:///{tmp_path / 'trail.db'}"
    assert audit_database_url(Settings(database_url=pg, audit_database_url=explicit), unused) == explicit
    assert audit_database_url(Settings(database_url=f"sqlite:///{tmp_path / 'cg.db'}"), unused) == (
        f"sqlite:///{tmp_path / 'cg-audit.db'}"
    )
    env = Settings.from_env({"COURIERGUARD_AUDIT_DATABASE_URL": explicit})
    assert env.audit_database_url == explicit


def test_the_policy_set_loaded_is_found_by_the_tenants_audit_search(tmp_path: Path) -> None:
    """An investigator asks the trail which rules were in force (`POST /v1/audit/search` with
    kinds ["policy"]); that search is confined to the tenant, so the entry must name it."""
    deployment = open_deployment(Settings(data_dir=tmp_path, tenant="acme"))
    try:
        page = deployment.guard.audit_queries.search(tenant="acme", kinds=[EntryKind.POLICY])
        assert [r.body["what"] for r in page.records] == ["policy.loaded"]
        assert page.records[0].body["tenant"] == "acme"
    finally:
        deployment.close()
