"""`courierguard policy validate|test`: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from courierguard.cli.policy import app
from courierguard.policy import PolicyEngine, default_policy_dir

DEFAULT = default_policy_dir()
runner = CliRunner()


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    shutil.copy(DEFAULT / "schema.cedarschema", tmp_path)
    text = (
        (DEFAULT / "policies.cedar")
        .read_text(encoding="utf-8")
        .replace("principal.org_unit", "principal.orgunit")
    )
    (tmp_path / "policies.cedar").write_text(text, encoding="utf-8")
    return tmp_path


def test_validate_default_set() -> None:
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")


def test_validate_broken_set_fails_in_one_line(broken: Path) -> None:
    result = runner.invoke(app, ["validate", "--policy-dir", str(broken)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ") and "orgunit" in lines[0]
    assert "Traceback" not in result.output


def test_default_cases_pass() -> None:
    result = runner.invoke(app, ["test", str(DEFAULT / "cases.yaml")])
    assert result.exit_code == 0, result.output
    assert " 0 failed" in result.output


def test_failing_case_exits_1(tmp_path: Path) -> None:
    text = (DEFAULT / "cases.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "name: courier reads another courier's delivery, principal: C-200, action: reveal, waybill: delivering, fields: [recipient.phone], purpose: delivery_contact, expect: deny",
        "name: courier reads another courier's delivery, principal: C-200, action: reveal, waybill: delivering, fields: [recipient.phone], purpose: delivery_contact, expect: allow",
    )
    text = text.replace("expect: allow, reason: no_task", "expect: allow")
    cases = tmp_path / "cases.yaml"
    cases.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["test", str(cases)])
    assert result.exit_code == 1
    assert " 1 failed" in result.output


def test_cases_against_broken_policies_fail_in_one_line(broken: Path) -> None:
    result = runner.invoke(app, ["test", str(DEFAULT / "cases.yaml"), "--policy-dir", str(broken)])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("cases: [", "not valid YAML"),
        ("now: 2026-11-11T12:00:00+08:00\nprincipals: {}\ncases: []\n", "cases"),
        (
            "now: 2026-11-11T12:00:00+08:00\nprincipals: {}\n"
            "cases: [{name: x, principal: nobody, action: view, expect: deny}]\n",
            "unknown principal",
        ),
        (
            "now: 2026-11-11T12:00:00+08:00\nprincipals: {E: {role: pilot, org_unit: X}}\n"
            "cases: [{name: x, principal: E, action: view, expect: deny}]\n",
            "role",
        ),
        # The engine denies a time without an offset (its zone would be a guess): every allow case
        # would fail as "no permit matched" and send the officer hunting in the wrong rule.
        (
            "now: '2026-11-11T12:00:00'\nprincipals: {E: {role: courier, org_unit: X}}\n"
            "cases: [{name: x, principal: E, action: view, expect: deny}]\n",
            "now: ",
        ),
        (
            "now: 2026-11-11T12:00:00+08:00\nprincipals: {E: {role: courier, org_unit: X}}\n"
            "cases: [{name: x, principal: E, action: view, now: '2026-11-11T12:00:00', expect: deny}]\n",
            "cases.0.now",
        ),
        (
            "now: 2026-11-11T12:00:00+08:00\nprincipals: {E: {role: courier, org_unit: X}}\n"
            "waybills: {w: {number: YT1, origin_outlet: X, dest_outlet: Y, status: delivered,\n"
            "  status_ts: '2026-11-11T08:00:00+08:00', delivered_at: '2026-11-11T08:00:00'}}\n"
            "cases: [{name: x, principal: E, action: view, waybill: w, expect: deny}]\n",
            "waybills.w.delivered_at",
        ),
    ],
)
def test_bad_cases_file_fails_in_one_line(tmp_path: Path, content: str, message: str) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["test", str(cases)])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert message in result.output


def test_missing_cases_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["test", str(tmp_path / "nope.yaml")])
    assert result.exit_code != 0
    assert "Traceback" not in result.output


def test_commands_check_the_policy_folder_the_server_loads(broken: Path) -> None:
    """cli.md: every command reads the same settings as the server. With COURIERGUARD_POLICY_DIR set,
    the server loads that folder, so `policy validate` must not answer "ok" about the shipped set."""
    env = {"COURIERGUARD_POLICY_DIR": str(broken)}
    result = runner.invoke(app, ["validate"], env=env)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and "orgunit" in result.output
    result = runner.invoke(app, ["test", str(DEFAULT / "cases.yaml")], env=env)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    result = runner.invoke(app, ["validate", "--policy-dir", str(DEFAULT)], env=env)
    assert result.exit_code == 0 and result.output.startswith("ok: "), result.output


def test_cases_are_decided_with_the_grace_period_the_server_uses(tmp_path: Path) -> None:
    """The server hands the policies COURIERGUARD_REVEAL_GRACE_HOURS; `policy test` must too, or a
    case passes that the running server decides the other way (23 h after sign-off, with 2 h)."""
    env = {"COURIERGUARD_REVEAL_GRACE_HOURS": "2"}
    text = (DEFAULT / "cases.yaml").read_text(encoding="utf-8")
    assert "\ngrace_hours: 24\n" in text
    unstated = tmp_path / "cases.yaml"
    unstated.write_text(text.replace("\ngrace_hours: 24\n", "\n"), encoding="utf-8")
    result = runner.invoke(app, ["test", str(unstated)], env=env)
    assert result.exit_code == 1, result.output
    assert " 1 failed" in result.output


def test_cases_written_for_a_stated_grace_are_decided_with_it() -> None:
    """The shipped cases state the 24 hours they were written for: a server configured for a shorter
    or longer window (the documented COURIERGUARD_REVEAL_GRACE_HOURS) still starts on the shipped
    folder. It used to refuse to: 'courier reveals 23 hours after sign-off' failed with 2 h."""
    for hours in ("2", "25"):
        env = {"COURIERGUARD_REVEAL_GRACE_HOURS": hours}
        result = runner.invoke(app, ["validate"], env=env)
        assert result.exit_code == 0 and f"grace {hours} h" in result.output, result.output
        result = runner.invoke(app, ["test", str(DEFAULT / "cases.yaml")], env=env)
        assert result.exit_code == 0 and "234 passed, 0 failed" in result.output, result.output


def test_a_stated_grace_decides_the_sign_off_window_of_its_cases(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        'now: "2026-11-11T12:00:00+08:00"\n'
        "grace_hours: 2\n"
        "principals:\n"
        "  C-100: {role: courier, org_unit: OUT-SH-01}\n"
        "waybills:\n"
        "  delivered:\n"
        "    {number: YT4512000000017, origin_outlet: OUT-BJ-01, dest_outlet: OUT-SH-01, status: delivered,\n"
        '     status_ts: "2026-11-11T09:00:00+08:00", assignee: C-100, task: delivery,\n'
        '     delivered_at: "2026-11-11T09:00:00+08:00"}\n'
        "cases:\n"
        "  - {name: within 2 h, principal: C-100, action: reveal, waybill: delivered, fields: [recipient.phone],\n"
        '     purpose: complaint, now: "2026-11-11T10:59:00+08:00", expect: allow}\n'
        "  - {name: after 2 h, principal: C-100, action: reveal, waybill: delivered, fields: [recipient.phone],\n"
        '     purpose: complaint, now: "2026-11-11T11:01:00+08:00", expect: deny, reason: no_task}\n',
        encoding="utf-8",
    )
    result = runner.invoke(app, ["test", str(cases)], env={"COURIERGUARD_REVEAL_GRACE_HOURS": "24"})
    assert result.exit_code == 0, result.output
    engine = PolicyEngine.default(grace_hours=24)
    assert engine.with_grace(24) is engine and engine.with_grace(2) is engine.with_grace(2)


_CASES_HEAD = (
    'now: "2026-11-11T12:00:00+08:00"\n'
    "principals:\n"
    "  C-100: {role: courier, org_unit: OUT-SH-01}\n"
    "cases:\n"
    "  - {name: lists own outlet, principal: C-100, action: list, org_unit: OUT-SH-01, expect: allow}\n"
)


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        # An officer's usual slips, each named by file and line: a misspelt key, an unknown action,
        # a missing name, a principal nobody declared.
        (
            "  - {name: x, principal: C-100, action: list, org_unit: OUT-SH-01, expect: allow, polcy: x}\n",
            r"cases\.yaml:6: cases\.1\.polcy: Extra inputs are not permitted",
        ),
        (
            "  - {name: x, principal: C-100, action: lists, expect: deny}\n",
            r"cases\.yaml:6: cases\.1\.action: ",
        ),
        (
            "  - {principal: C-100, action: list, expect: deny}\n",
            r"cases\.yaml:6: cases\.1\.name: Field required",
        ),
        (
            "  - {name: x, principal: C-999, action: list, expect: deny}\n",
            r"cases\.yaml:6: cases\.1 \(x\): unknown principal 'C-999'",
        ),
    ],
)
def test_cases_file_errors_name_the_line(tmp_path: Path, tail: str, message: str) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(_CASES_HEAD + tail, encoding="utf-8")
    result = runner.invoke(app, ["test", str(cases)])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert re.search(message, result.output), result.output


@pytest.mark.parametrize("content", ["", "- a list\n", "just text\n"])
def test_a_cases_file_that_is_no_mapping_says_what_it_should_be(tmp_path: Path, content: str) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["test", str(cases)])
    assert result.exit_code == 1
    assert "_FileSpec" not in result.output
    assert "a mapping" in result.output and "principals" in result.output, result.output


def test_cases_file_not_utf8_names_the_line_and_a_byte_order_mark_is_fine(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_bytes(_CASES_HEAD.encode() + b"# caf\xe9\n")
    result = runner.invoke(app, ["test", str(cases)])
    assert result.exit_code == 1 and re.search(r"cases\.yaml:6: not UTF-8", result.output), result.output
    cases.write_bytes(b"\xef\xbb\xbf" + _CASES_HEAD.encode())
    result = runner.invoke(app, ["test", str(cases)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", ["validate", "test"])
def test_an_empty_or_file_policy_dir_is_one_line(tmp_path: Path, command: str) -> None:
    """`--policy-dir ""` (an empty ${POLICY_DIR}) validated the shell's current folder: a Path option
    reads "" as "."; a file gave click's usage box. Both are one line, exit 1, like every error here."""
    cases = [str(DEFAULT / "cases.yaml")] if command == "test" else []
    afile = tmp_path / "policies.cedar"
    afile.write_text("", encoding="utf-8")
    for value, message in (("", "--policy-dir: empty"), ("  ", "--policy-dir: empty"),
                           (str(afile), "--policy-dir: names a file")):  # fmt: skip
        result = runner.invoke(app, [command, *cases, "--policy-dir", value])
        assert result.exit_code == 1, result.output
        assert result.output.startswith("error: ") and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and "Usage" not in result.output
    assert runner.invoke(app, [command, *cases, "--policy-dir", str(DEFAULT)]).exit_code == 0
