"""Settings of the coroutine path: ``inline_database`` and ``audit_commit_delay_ms``, and their wiring."""

from __future__ import annotations

from pathlib import Path

import pytest

from courierguard.audit import SqlAuditLog
from courierguard.config import Settings
from courierguard.errors import ConfigError
from courierguard.gateway.wiring import open_deployment

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def test_inline_database_follows_the_database_url() -> None:
    assert Settings().inline_database is None
    assert Settings().resolved_inline_database is True  # the embedded SQLite default
    assert Settings(database_url="sqlite:///tmp/x.sqlite3").resolved_inline_database is True
    assert Settings(database_url=PG).resolved_inline_database is False
    assert Settings(database_url="postgresql://db.internal/cg").resolved_inline_database is False


def test_explicit_inline_database_wins() -> None:
    assert Settings(database_url=PG, inline_database=True).resolved_inline_database is True
    assert Settings(inline_database=False).resolved_inline_database is False


def test_inline_database_and_commit_delay_from_the_environment() -> None:
    env = {"COURIERGUARD_DATABASE_URL": PG, "COURIERGUARD_INLINE_DATABASE": "true"}
    assert Settings.from_env(env).resolved_inline_database is True
    assert Settings.from_env({"COURIERGUARD_INLINE_DATABASE": "false"}).resolved_inline_database is False
    assert Settings.from_env({"COURIERGUARD_DATABASE_URL": PG}).resolved_inline_database is False
    assert Settings().audit_commit_delay_ms == 3.0
    assert Settings.from_env({"COURIERGUARD_AUDIT_COMMIT_DELAY_MS": "0"}).audit_commit_delay_ms == 0.0
    assert Settings.from_env({"COURIERGUARD_AUDIT_COMMIT_DELAY_MS": "12.5"}).audit_commit_delay_ms == 12.5


@pytest.mark.parametrize("bad", ["-1", "100.5", "soon"])
def test_commit_delay_out_of_bounds_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="AUDIT_COMMIT_DELAY_MS"):
        Settings.from_env({"COURIERGUARD_AUDIT_COMMIT_DELAY_MS": bad})


@pytest.mark.parametrize(("inline", "expected"), [(None, True), (False, False)])
def test_deployment_wires_both_settings(tmp_path: Path, inline: bool | None, expected: bool) -> None:
    settings = Settings(data_dir=tmp_path, audit_commit_delay_ms=7, inline_database=inline)
    deployment = open_deployment(settings)
    try:
        assert deployment.guard.inline_database is expected
        audit = deployment.guard.audit
        assert isinstance(audit, SqlAuditLog)
        assert audit._delay == pytest.approx(0.007)
    finally:
        deployment.close()
