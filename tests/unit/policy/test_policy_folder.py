"""What a policy folder holds besides its rules: editor files, hidden files, what is recorded."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import cedarpy
import pytest
from typer.testing import CliRunner

from courierguard.audit import EntryKind
from courierguard.cli.policy import app
from courierguard.config import Settings
from courierguard.errors import ConfigError
from courierguard.gateway.wiring import open_deployment
from courierguard.policy import PolicyEngine, default_policy_dir
from courierguard.policy._internal import loading

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


def _loaded_entry(folder: Path, data_dir: Path) -> dict[str, object]:
    deployment = open_deployment(Settings(data_dir=data_dir, tenant="acme", policy_dir=folder))
    try:
        page = deployment.guard.audit_queries.search(tenant="acme", kinds=[EntryKind.POLICY])
        return dict(page.records[0].body)
    finally:
        deployment.close()


def test_the_recorded_digest_is_of_the_bytes_in_force_even_if_a_file_is_swapped_meanwhile(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy that rewrites the folder while a worker starts: the digest on the trail must be of
    the rules that worker enforces (and its cases of the cases it ran), not of what came after."""
    clean = tmp_path / "clean"
    shutil.copytree(folder, clean)
    expected = _loaded_entry(clean, tmp_path / "d1")
    rules = (folder / "policies.cedar").read_text(encoding="utf-8")
    cases = (folder / "cases.yaml").read_text(encoding="utf-8")
    validate = cedarpy.validate_policies
    swaps = []

    def swap_then_validate(source: str, schema: cedarpy.Schema) -> cedarpy.ValidationResult:
        # After the rules were read and before anything else looks at the folder again.
        (folder / "policies.cedar").write_text(
            rules + '\n@id("swapped")\nforbid (principal, action, resource) when { false };\n',
            encoding="utf-8",
        )
        (folder / "cases.yaml").write_text(cases + "# edited\n", encoding="utf-8")
        swaps.append(1)
        return validate(source, schema)

    monkeypatch.setattr(cedarpy, "validate_policies", swap_then_validate)
    entry = _loaded_entry(folder, tmp_path / "d2")
    assert swaps, "the swap hook never ran"
    assert "swapped" not in entry["policies"]  # the rules in force are the ones first read ...
    assert entry["digest"] == expected["digest"]  # ... and the digest is theirs
    assert entry["cases_passed"] == expected["cases_passed"]
    monkeypatch.undo()
    assert _loaded_entry(folder, tmp_path / "d3")["digest"] != expected["digest"]  # the swap mattered


@pytest.mark.parametrize("kind", ["folder", "dangling symlink"])
def test_a_cases_file_that_cannot_be_read_stops_the_start(folder: Path, tmp_path: Path, kind: str) -> None:
    # It was taken for "no cases.yaml": a warning, and the rules served untested.
    (folder / "cases.yaml").unlink()
    if kind == "folder":
        (folder / "cases.yaml").mkdir()
    else:
        os.symlink("cases-v2.yaml", folder / "cases.yaml")
    with pytest.raises(ConfigError, match=r"cases\.yaml: (not a regular file|cannot read)"):
        open_deployment(Settings(data_dir=tmp_path / "data", policy_dir=folder))
    result = CliRunner().invoke(app, ["validate", "--policy-dir", str(folder)])
    assert result.exit_code == 1 and "cases.yaml" in result.output, result.output


def test_a_release_switched_under_a_symlinked_folder_is_not_mixed_into_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COURIERGUARD_POLICY_DIR=/etc/cg/current, a symlink a deploy moves (ln -sfn) to the next
    release: a worker starting meanwhile reads every file from the release it opened."""
    releases = tmp_path / "releases"
    shutil.copytree(DEFAULT, releases / "v1")
    shutil.copytree(DEFAULT, releases / "v2")
    with (releases / "v2" / "policies.cedar").open("a", encoding="utf-8") as rules:
        rules.write('\n@id("v2-only")\nforbid (principal, action, resource) when { false };\n')
    current = tmp_path / "current"
    current.symlink_to(releases / "v1")
    real = loading.read_file
    reads: list[str] = []

    def read_then_switch(name: str, **kwargs: object) -> bytes:
        data = real(name, **kwargs)  # type: ignore[arg-type]
        reads.append(name)
        if len(reads) == 1:  # the schema read: now the deploy switches the link
            (tmp_path / "next").symlink_to(releases / "v2")
            os.replace(tmp_path / "next", current)
        return data

    monkeypatch.setattr(loading, "read_file", read_then_switch)
    engine = PolicyEngine.from_folder(current)
    assert reads == ["schema.cedarschema", "policies.cedar", "cases.yaml"]  # each file read once
    assert "v2-only" not in engine.policy_ids
    monkeypatch.undo()
    assert "v2-only" in PolicyEngine.from_folder(current).policy_ids


def _server_verdict(folder: Path, data_dir: Path) -> str:
    try:
        open_deployment(Settings(data_dir=data_dir, policy_dir=folder)).close()
    except ConfigError as exc:
        return f"error: {exc.diagnostics()}"
    return "ok"


def _oddities(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name in ("refuted by its cases", "non-UTF-8 file name", "cases.yaml a folder", "only hidden rules"):
        made[name] = tmp_path / name.replace(" ", "-")
        shutil.copytree(DEFAULT, made[name])
    with (made["refuted by its cases"] / "policies.cedar").open("a", encoding="utf-8") as rules:
        rules.write('\n@id("oops")\npermit (principal, action, resource);\n')
    extra = os.fsdecode(b"r\xe8gles.cedar")  # a Latin-1 name from an old file server
    (made["non-UTF-8 file name"] / extra).write_text(
        '@id("extra")\nforbid (principal, action, resource) when { false };\n'
    )
    (made["cases.yaml a folder"] / "cases.yaml").unlink()
    (made["cases.yaml a folder"] / "cases.yaml").mkdir()
    (made["only hidden rules"] / "policies.cedar").rename(made["only hidden rules"] / ".policies.cedar")
    return made


def test_validate_and_the_server_agree_on_every_folder(tmp_path: Path) -> None:
    """`policy validate` answers "ok" exactly when the server starts on the folder, and otherwise
    prints the very line the server stops with."""
    for name, folder in _oddities(tmp_path).items():
        server = _server_verdict(folder, tmp_path / "data" / folder.name)
        result = CliRunner().invoke(app, ["validate", "--policy-dir", str(folder)])
        assert "Traceback" not in result.output, (name, result.output)
        if server == "ok":
            assert result.exit_code == 0 and result.output.startswith("ok: "), (name, result.output)
        else:
            assert result.exit_code == 1, (name, server, result.output)
            assert result.output.splitlines()[0] == server, (name, result.output)


@pytest.mark.parametrize("name", ["zz-huge.cedar", "cases.yaml", "schema.cedarschema"])
def test_a_file_too_large_for_a_policy_folder_is_refused_before_it_is_parsed(folder: Path, name: str) -> None:
    # 100 MB of comments loaded in 8.4 s holding 900 MB: a log copied in by mistake is not a rule.
    with (folder / name).open("a", encoding="utf-8") as out:
        out.write(("// " + "x" * 77 + "\n") * (4 * 1024 * 1024 // 80 + 1))
    with pytest.raises(ConfigError, match=rf"{re.escape(name)}: larger than 4,194,304 bytes"):
        PolicyEngine.from_folder(folder)


def test_a_folder_whose_only_rules_are_hidden_says_why_it_has_none(folder: Path) -> None:
    (folder / "policies.cedar").rename(folder / ".policies.cedar")
    with pytest.raises(
        ConfigError, match=r"no \*\.cedar policy files .*hidden, never loaded: \.policies\.cedar"
    ):
        PolicyEngine.from_folder(folder)
