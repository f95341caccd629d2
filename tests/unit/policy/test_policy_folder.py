"""What a policy folder holds besides its rules: editor files, hidden files, what is recorded."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from courierguard.audit import EntryKind
from courierguard.cli.policy import app
from courierguard.config import Settings
from courierguard.gateway.wiring import open_deployment
from courierguard.policy import PolicyEngine, default_policy_dir

DEFAULT = default_policy_dir()
PERMIT_ALL = '@id("hidden-permit")\npermit (principal, action, resource);\n'


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(DEFAULT, folder)
    return folder


def _editor_leftovers(folder: Path) -> None:
    # emacs: a lock (a dangling symlink named .#file) and a backup; vim: a swap file; macOS: an
    # AppleDouble file (binary, not UTF-8) copied with the folder; someone's hidden extra rule.
    os.symlink("officer@host.4242:1765000000", folder / ".#policies.cedar")
    (folder / "policies.cedar~").write_text(PERMIT_ALL, encoding="utf-8")
    (folder / ".policies.cedar.swp").write_bytes(b"b0VIM 9.0\0\0\xff")
    (folder / "._policies.cedar").write_bytes(b"\0\5\26\7\0\2\0\0Mac OS X        \xff\xfe")
    (folder / ".extra.cedar").write_text(PERMIT_ALL, encoding="utf-8")


def test_hidden_and_backup_files_are_never_loaded_and_never_stop_the_start(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _editor_leftovers(folder)
    engine = PolicyEngine.from_folder(folder)
    assert engine.policy_ids == PolicyEngine.default().policy_ids  # no hidden permit in force
    assert engine.ignored == (".#policies.cedar", "._policies.cedar", ".extra.cedar")
    caplog.set_level(logging.WARNING)
    deployment = open_deployment(Settings(data_dir=tmp_path / "data", tenant="acme", policy_dir=folder))
    try:
        page = deployment.guard.audit_queries.search(tenant="acme", kinds=[EntryKind.POLICY])
        body = page.records[0].body
        assert body["ignored"] == [".#policies.cedar", "._policies.cedar", ".extra.cedar"]
        assert "hidden-permit" not in body["policies"]
    finally:
        deployment.close()
    assert "ignored" in caplog.text and ".extra.cedar" in caplog.text
    result = CliRunner().invoke(app, ["validate", "--policy-dir", str(folder)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("ok: ") and len(lines) == 2, result.output
    assert lines[1].startswith(
        "ignored (hidden, never loaded): .#policies.cedar, ._policies.cedar, .extra.cedar"
    )


def test_a_folder_without_hidden_files_ignores_nothing(folder: Path) -> None:
    engine = PolicyEngine.from_folder(folder)
    assert engine.ignored == ()
    result = CliRunner().invoke(app, ["validate", "--policy-dir", str(folder)])
    assert result.exit_code == 0 and len(result.output.splitlines()) == 1, result.output
