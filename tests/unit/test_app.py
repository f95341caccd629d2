"""Where the audit trail lives (``open_core``): its own SQLite file by default, never moved away from
a database that already holds one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from typer.testing import CliRunner

from courierguard.app import audit_database_url, open_core
from courierguard.audit import EntryKind, open_audit_log, verify
from courierguard.audit.tables import audit_entries
from courierguard.cli.main import app as cli
from courierguard.config import Settings
from courierguard.db import create_db_engine, migrate
from courierguard.errors import ConfigError
from courierguard.gateway.wiring import open_deployment
from courierguard.policy import default_policy_dir, load_cases
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


def _folder_with(tmp_path: Path, extra_rule: str = "", *, cases: bool = True) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(default_policy_dir(), folder)
    if extra_rule:
        with (folder / "policies.cedar").open("a", encoding="utf-8") as rules:
            rules.write(extra_rule)
    if not cases:
        (folder / "cases.yaml").unlink()
    return folder


def test_a_policy_set_its_own_cases_refute_does_not_start(tmp_path: Path) -> None:
    # Valid Cedar that hands every role every parcel: validation cannot tell, the cases can.
    folder = _folder_with(tmp_path, '\n@id("oops")\npermit (principal, action, resource);\n')
    with pytest.raises(ConfigError, match=r"cases\.yaml: \d+ of \d+ cases fail with these policies"):
        open_deployment(Settings(data_dir=tmp_path / "data", policy_dir=folder))
    run = CliRunner().invoke(
        cli, ["serve", "--data-dir", str(tmp_path / "data")], env={"COURIERGUARD_POLICY_DIR": str(folder)}
    )
    assert run.exit_code == 1 and "cases fail with these policies" in run.output
    assert "Traceback" not in run.output


def test_the_cases_that_passed_at_start_are_on_the_trail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shipped = len(load_cases(default_policy_dir() / "cases.yaml"))
    for name, folder, expected in (
        ("shipped", None, shipped),
        ("edited", _folder_with(tmp_path / "edited", '\n@id("extra")\nforbid (principal, action, resource) when { false };\n'), shipped),
        ("untested", _folder_with(tmp_path / "untested", cases=False), None),
    ):  # fmt: skip
        deployment = open_deployment(Settings(data_dir=tmp_path / name, tenant="acme", policy_dir=folder))
        try:
            page = deployment.guard.audit_queries.search(tenant="acme", kinds=[EntryKind.POLICY])
            assert page.records[0].body["cases_passed"] == expected, name
        finally:
            deployment.close()
    assert "has no cases.yaml" in caplog.text
