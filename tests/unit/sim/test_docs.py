"""docs/simulator.md documents every option, scenario and evaluate figure."""

from __future__ import annotations

import inspect
from pathlib import Path

from courierguard.cli import sim as cli
from courierguard.sim.config import SCENARIOS
from courierguard.sim.evaluate import NormalResult, ScenarioResult

DOC = (Path(__file__).resolve().parents[3] / "docs" / "simulator.md").read_text(encoding="utf-8")


def test_every_simulate_option_is_documented() -> None:
    for name in inspect.signature(cli.simulate).parameters:
        assert f"--{name.replace('_', '-')}" in DOC, name


def test_every_scenario_is_documented() -> None:
    for name in SCENARIOS.values():
        assert f"`{name}`" in DOC, name


def test_evaluate_figures_are_documented() -> None:
    for cls in (ScenarioResult, NormalResult):
        assert cls.__name__ in DOC
    for phrase in ("Records exposed before containment", "contained", "employee-days", "--json"):
        assert phrase in DOC
