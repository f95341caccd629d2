"""The architecture, enforced: a framework-free core, and one crypto boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "courierguard"
CORE = ["vault", "policy", "audit", "risk", "company", "events.py", "domain.py", "errors.py", "clock.py"]
FRAMEWORKS = ("fastapi", "starlette", "uvicorn", "typer", "click", "rich")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(part: str) -> list[Path]:
    target = SRC / part
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


@pytest.mark.parametrize("part", CORE)
def test_core_is_framework_free(part: str) -> None:
    for path in _files(part):
        bad = {n for n in _imports(path) if n.split(".")[0] in FRAMEWORKS}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_only_the_vault_touches_cryptographic_primitives() -> None:
    for path in sorted(SRC.rglob("*.py")):
        if path.is_relative_to(SRC / "vault"):
            continue
        bad = {n for n in _imports(path) if n.startswith("cryptography")}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}: go through courierguard.vault"


def test_core_does_not_depend_on_the_edges() -> None:
    for part in CORE:
        for path in _files(part):
            bad = {n for n in _imports(path) if n.startswith(("courierguard.gateway", "courierguard.cli"))}
            assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"
