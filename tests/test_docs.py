"""Docs as tests: every setting, command, route, action and reason code is documented."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from courierguard.errors import DenyReason
from courierguard.events import Action

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_generated_references_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gendocs.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_http_route_is_documented() -> None:
    import inspect

    from courierguard.gateway.http import create_app

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    source = inspect.getsource(create_app)
    routes = re.findall(r'@app\.(get|post|put|delete)\(\s*"([^"]+)"', source)
    assert len(routes) >= 25
    for method, path in routes:
        assert f"{method.upper()} {path}" in text, f"{method.upper()} {path} is not in docs/api.md"


@pytest.mark.parametrize("action", list(Action))
def test_every_action_is_documented(action: Action) -> None:
    assert f"`{action.value}`" in (DOCS / "events.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("reason", list(DenyReason))
def test_every_deny_reason_is_documented(reason: DenyReason) -> None:
    assert f"`{reason.value}`" in (DOCS / "api.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text(encoding="utf-8").split("## ")[0]
    assert "make run" in head and "make test" in head


def test_shipped_schemas_equal_the_shared_contracts() -> None:
    shared = ROOT.parent / "shared" / "schemas"
    if not shared.exists():
        pytest.skip("no ../shared/schemas beside this checkout")
    shipped = ROOT / "src" / "courierguard" / "schemas"
    for path in shared.glob("*.json"):
        assert json.loads((shipped / path.name).read_text()) == json.loads(path.read_text()), path.name


def test_the_cases_file_example_in_policies_md_passes(tmp_path: Path) -> None:
    # Officers copy this block to start their own cases file: it must load and pass as written.
    from courierguard.policy import PolicyEngine, load_cases, run_cases

    text = (DOCS / "policies.md").read_text(encoding="utf-8")
    block = text.split("## The cases file", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    cases_file = tmp_path / "cases.yaml"
    cases_file.write_text(block, encoding="utf-8")
    results = run_cases(PolicyEngine.default(), load_cases(cases_file))
    assert results and all(r.passed for r in results), [r.problem for r in results if not r.passed]


def test_an_outsider_checks_evidence_with_the_documented_script(tmp_path: Path) -> None:
    """audit.md's check_evidence.py, run as a regulator would: a head and records with proofs from
    the CLI's JSON, the pinned public key, nothing of Courier Guard imported."""
    from courierguard.audit import AuditQueries, EntryKind, open_audit_log
    from courierguard.db import create_db_engine
    from courierguard.db.engine import migrate
    from courierguard.vault import LocalKeyFile

    script = (DOCS / "audit.md").read_text().split("```python\n# check_evidence.py", 1)[1].split("```", 1)[0]
    (tmp_path / "check_evidence.py").write_text("# check_evidence.py" + script)
    engine = create_db_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    migrate(engine)
    keys = LocalKeyFile(tmp_path / "keys.json")
    log = open_audit_log(engine, keys)
    for i in range(37):  # sizes that are not powers of two, bodies with non-ASCII text
        log.append(EntryKind.ACCESS, {"actor": {"id": f"E{i % 3}"}, "purpose": "派送", "n": i, "tenant": "t"})
    head = log.checkpoint()
    log.close()
    (tmp_path / "head.json").write_text(json.dumps(head.to_dict()))
    records = AuditQueries(engine).search(actor="E1", limit=100, with_proofs=True).records
    (tmp_path / "records.json").write_text(
        json.dumps({"records": [r.to_dict() for r in records]}, ensure_ascii=False), encoding="utf-8"
    )
    # As an outsider runs it: isolated, and with courierguard blocked even where the virtualenv holds
    # it (an editable install), so that the script can lean on nothing of the service.
    outsider = (
        "import runpy, sys; sys.modules['courierguard'] = None; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    run = [
        sys.executable,
        "-I",
        "-c",
        outsider,
        "check_evidence.py",
        head.public_key.hex(),
        "head.json",
        "records.json",
    ]
    ok = subprocess.run(run, check=False, cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith(f"OK: {len(records)} entries"), ok.stderr
    (tmp_path / "records.json").write_text((tmp_path / "records.json").read_text().replace("派送", "调查"))
    assert subprocess.run(run, check=False, cwd=tmp_path, capture_output=True).returncode == 1  # edited
    engine.dispose()


def test_every_command_the_docs_name_exists() -> None:
    # An operator follows these to the letter: the seal-tables help named `courierguard db upgrade`,
    # a command that never existed (`init` migrates, and so does seal-tables itself).
    import typer

    from courierguard.cli.main import app

    commands: dict[str, Any] = getattr(typer.main.get_command(app), "commands")  # noqa: B009 (a group)
    texts = [*DOCS.glob("*.md"), ROOT / "README.md", *(ROOT / "src" / "courierguard" / "cli").glob("*.py")]
    unknown = []
    for path in texts:
        for m in re.finditer(r"(?<!from )courierguard ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", path.read_text()):
            command = commands.get(m.group(1))
            subcommands = getattr(command, "commands", None)  # a group's (typer vendors its click)
            if command is None or (subcommands is not None and m.group(2) and m.group(2) not in subcommands):
                unknown.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
    assert unknown == []
