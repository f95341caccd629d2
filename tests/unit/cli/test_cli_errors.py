"""Operator mistakes (a wrong path, files swapped) are one line and exit 1, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from courierguard.cli.main import app
from courierguard.config import Settings
from courierguard.errors import ConfigError

runner = CliRunner()


def _simulated(tmp_path: Path) -> tuple[Path, Path]:
    events, truth = tmp_path / "ev.jsonl", tmp_path / "truth.jsonl"
    args = [
        "simulate",
        "--employees",
        "20",
        "--days",
        "1",
        "--quiet",
        "--out",
        str(events),
        "--truth",
        str(truth),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return events, truth


def _one_line(result: object, needle: str) -> None:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 1, output  # type: ignore[attr-defined]
    assert needle in output and "Traceback" not in output and output.count("\n") == 1, output


def test_swapped_or_wrong_files_name_the_file(tmp_path: Path) -> None:
    events, truth = _simulated(tmp_path)
    _one_line(
        runner.invoke(app, ["evaluate", str(events), str(truth), str(events)]), "is not Risk Decision v1"
    )
    decisions = tmp_path / "d.jsonl"
    decisions.write_text('{"event_id": "x", "action": "deny"}\n')
    _one_line(
        runner.invoke(app, ["evaluate", str(truth), str(events), str(decisions)]), "is not Access Event v1"
    )
    decisions.write_text("{bad\n")
    _one_line(runner.invoke(app, ["evaluate", str(events), str(truth), str(decisions)]), "decisions")


def test_unwritable_outputs_name_the_path(tmp_path: Path) -> None:
    events, _ = _simulated(tmp_path)
    missing = tmp_path / "no" / "such" / "dir" / "out.jsonl"
    _one_line(runner.invoke(app, ["replay", str(events), "-o", str(missing), "--no-progress"]), str(missing))
    _one_line(
        runner.invoke(app, ["replay", str(events), "-o", str(tmp_path), "--no-progress"]), str(tmp_path)
    )
    args = ["simulate", "--employees", "20", "--days", "1", "--quiet", "--out", str(missing)]
    _one_line(runner.invoke(app, [*args, "--truth", str(tmp_path / "t.jsonl")]), str(missing))
    same = runner.invoke(app, ["simulate", "--employees", "20", "--days", "1", "--quiet",
                               "--out", str(events), "--truth", str(events)])  # fmt: skip
    assert same.exit_code == 2 and "same file" in same.output


def test_audit_export_to_a_missing_folder_names_the_path(tmp_path: Path) -> None:
    assert runner.invoke(app, ["init", "--data-dir", str(tmp_path)]).exit_code == 0
    missing = tmp_path / "no" / "e.jsonl"
    url = f"sqlite:///{tmp_path / 'courierguard.sqlite3'}"
    result = runner.invoke(app, ["audit", "export", "--out", str(missing), "--database-url", url])
    assert result.exit_code == 2 and str(missing) in result.output and "Traceback" not in result.output


def test_an_audit_export_is_owner_only(tmp_path: Path) -> None:
    assert runner.invoke(app, ["init", "--data-dir", str(tmp_path)]).exit_code == 0
    out = tmp_path / "e.jsonl"
    url = f"sqlite:///{tmp_path / 'courierguard.sqlite3'}"
    assert runner.invoke(app, ["audit", "export", "--out", str(out), "--database-url", url]).exit_code == 0
    assert out.stat().st_mode & 0o777 == 0o600


def test_a_database_that_cannot_be_reached_is_one_line_without_its_address(tmp_path: Path) -> None:
    url = "postgresql://cg_user:s3cret@127.0.0.1:1/nowhere"
    result = runner.invoke(app, ["init", "--data-dir", str(tmp_path), "--database-url", url])
    assert result.exit_code == 1
    assert "cannot reach the database" in result.output and "Traceback" not in result.output
    assert "s3cret" not in result.output and "cg_user" not in result.output


@pytest.mark.parametrize(
    "url",
    ["not-a-url-s3cret", "mysql://cg_user:s3cret@127.0.0.1/x", "postgresql+asyncpg://cg_user:s3cret@h/x"],
)
@pytest.mark.parametrize("command", [["admin", "api-key", "list"], ["audit", "head"]])
def test_a_malformed_database_url_is_one_line_without_its_secrets(
    tmp_path: Path, url: str, command: list[str]
) -> None:
    # A typo'd or unsupported URL printed SQLAlchemy's traceback (ArgumentError, MySQLdb not found)
    # from every command but the audit ones, which said only "Error: ArgumentError".
    result = runner.invoke(
        app, [*command, "--database-url", url], env={"COURIERGUARD_DATA_DIR": str(tmp_path)}
    )
    # Settings refuses what is no PostgreSQL or SQLite URL; the engine, a driver not installed.
    assert result.exit_code in (1, 2) and "Configuration error:" in result.output
    assert "DATABASE_URL: must be" in result.output or "which is not installed" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "s3cret" not in result.output and "cg_user" not in result.output and result.output.count("\n") == 1


def test_operator_commands_sign_their_tree_heads_into_the_witness_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    witness = tmp_path / "witness.jsonl"
    monkeypatch.setenv("COURIERGUARD_AUDIT_WITNESS_FILE", str(witness))
    assert runner.invoke(app, ["init", "--data-dir", str(tmp_path)]).exit_code == 0
    result = runner.invoke(app, ["admin", "api-key", "create", "order-system", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    heads = [json.loads(line) for line in witness.read_text().splitlines()]
    assert heads and max(h["size"] for h in heads) >= 1


def test_audit_verify_without_the_key_file_does_not_make_one(tmp_path: Path) -> None:
    # A restored database verified on a host without keys.json: a new key had been made on the spot,
    # and every signed head reported forged (the docs review's D12).
    assert runner.invoke(app, ["init", "--data-dir", str(tmp_path)]).exit_code == 0
    (tmp_path / "keys.json").rename(tmp_path / "elsewhere.json")
    url = f"sqlite:///{tmp_path / 'courierguard.sqlite3'}"
    result = runner.invoke(
        app, ["audit", "verify", "--database-url", url, "--key-file", str(tmp_path / "keys.json")]
    )
    assert result.exit_code == 2 and "does not exist" in result.output and "forged" not in result.output
    assert not (tmp_path / "keys.json").exists()


@pytest.mark.parametrize("variable", ["COURIERGUARD_DATABASE_URL", "COURIERGUARD_AUDIT_DATABASE_URL"])
def test_run_refuses_a_configured_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # `run` had seeded its demo company, an administrator and an API key included, into the
    # production database the environment named (the docs review's D11).
    target = tmp_path / "production.sqlite3"
    monkeypatch.setenv(variable, f"sqlite:///{target}")
    result = runner.invoke(app, ["run", "--data-dir", str(tmp_path / "demo")])
    assert result.exit_code == 1 and "courierguard serve" in result.output and variable[13:] in result.output
    assert not target.exists() and not (tmp_path / "demo").exists()


@pytest.mark.parametrize("variable", ["COURIERGUARD_DATABASE_URL", "COURIERGUARD_AUDIT_DATABASE_URL"])
@pytest.mark.parametrize("url", ["bogus", "nosuchdb://cg_user:s3cret@db/cg", "mysql://cg_user:s3cret@db/cg"])
@pytest.mark.parametrize(
    "command", [["admin", "api-key", "list"], ["audit", "verify"], ["init"]], ids=" ".join
)
def test_a_database_url_that_is_not_one_names_the_variable(
    tmp_path: Path, variable: str, url: str, command: list[str]
) -> None:
    """configuration.md: a bad value stops the process with a one-line error naming the variable
    (not a traceback, nor a bare exception class); the URL, which may hold a password, is not
    repeated."""
    result = runner.invoke(app, command, env={variable: url, "COURIERGUARD_DATA_DIR": str(tmp_path)})
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert variable in result.output and result.output.count("\n") == 1, result.output
    assert "s3cret" not in result.output and "cg_user" not in result.output


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:6379", "redis://cg:s3cret@127.0.0.1:notaport/0", "redis://cg:s3cret@127.0.0.1:6379/abc"],
)
def test_a_malformed_redis_url_is_a_config_error_without_its_secrets(url: str) -> None:
    # One whose database is not a number was taken as database 0, another application's.
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"COURIERGUARD_REDIS_URL": url})
    message = str(refused.value)
    assert message.startswith("COURIERGUARD_REDIS_URL: must be") and "s3cret" not in message


def test_a_redis_url_without_its_scheme_stops_serve_with_one_line(tmp_path: Path) -> None:
    # It stopped `serve` with redis-py's traceback, once the database was open.
    env = {"COURIERGUARD_DATA_DIR": str(tmp_path), "COURIERGUARD_RISK_STATE": "redis",
           "COURIERGUARD_REDIS_URL": "127.0.0.1:6379"}  # fmt: skip
    result = runner.invoke(app, ["serve", "--port", "1"], env=env)
    assert result.exit_code in (1, 2) and "COURIERGUARD_REDIS_URL: must be" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/11", "redis://:pw@h", "rediss://h:6380/1", "unix:///r.sock"]
)
def test_redis_urls_that_name_a_database_or_none_are_accepted(url: str) -> None:
    assert Settings.from_env({"COURIERGUARD_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_policy_dir_is_refused_not_read_as_the_shipped_set(tmp_path: Path, value: str) -> None:
    # `Environment=COURIERGUARD_POLICY_DIR=${POLICY_DIR}` with the variable missing: the server ran the
    # shipped rules, not the officer's, and said nothing.
    with pytest.raises(ConfigError, match=r"^COURIERGUARD_POLICY_DIR: set but empty"):
        Settings.from_env({"COURIERGUARD_POLICY_DIR": value})
    env = {"COURIERGUARD_DATA_DIR": str(tmp_path), "COURIERGUARD_POLICY_DIR": value}
    for command in (["serve", "--port", "1"], ["policy", "validate"]):
        result = runner.invoke(app, command, env=env)
        assert result.exit_code == 1, (command, result.output)
        assert "COURIERGUARD_POLICY_DIR: set but empty" in result.output, (command, result.output)
        assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "courierguard.sqlite3").exists()  # refused before anything was opened
    # Unset still means the shipped set; other settings keep "empty is unset".
    assert Settings.from_env({}).policy_dir is None
    assert Settings.from_env({"COURIERGUARD_TENANT": ""}).tenant == "demo"


def test_an_empty_jwks_url_is_refused_not_read_as_the_development_issuer(tmp_path: Path) -> None:
    # Unset, the gateway mounts /v1/dev/token (a token for any employee): a templating slip must not.
    with pytest.raises(
        ConfigError, match=r"^COURIERGUARD_JWKS_URL: set but empty; unset it for the development"
    ):
        Settings.from_env({"COURIERGUARD_JWKS_URL": ""})
    env = {"COURIERGUARD_DATA_DIR": str(tmp_path), "COURIERGUARD_JWKS_URL": ""}
    result = runner.invoke(app, ["serve", "--port", "1"], env=env)
    assert result.exit_code == 1 and "COURIERGUARD_JWKS_URL: set but empty" in result.output, result.output
    assert not (tmp_path / "courierguard.sqlite3").exists()
    assert Settings.from_env({}).jwks_url is None


@pytest.mark.parametrize(
    "name", ["DATABASE_URL", "AUDIT_DATABASE_URL", "KEY_FILE", "AUDIT_WITNESS_FILE", "ALERT_WEBHOOK"]
)
def test_other_empty_paths_and_urls_are_refused_not_read_as_their_defaults(tmp_path: Path, name: str) -> None:
    # Each default is a quiet surprise in production: an empty embedded database in place of yours, a
    # new key file (data unreadable, a new signing key), no witness copy of the heads, no alerts.
    with pytest.raises(ConfigError, match=rf"^COURIERGUARD_{name}: set but empty; unset it"):
        Settings.from_env({f"COURIERGUARD_{name}": " "})
    env = {"COURIERGUARD_DATA_DIR": str(tmp_path), f"COURIERGUARD_{name}": ""}
    result = runner.invoke(app, ["serve", "--port", "1"], env=env)
    assert result.exit_code == 1 and f"COURIERGUARD_{name}: set but empty" in result.output, result.output
    assert not (tmp_path / "courierguard.sqlite3").exists() and not (tmp_path / "keys.json").exists()
