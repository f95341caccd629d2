"""The courier-company simulator: a synthetic company at work, with labelled attacks hidden inside.

Public API: :class:`PartyGenerator` (synthetic parties), :class:`SimConfig` and :func:`simulate`
(Access Event v1 dicts), :func:`write_files` (events and truth files) and :func:`evaluate`
(scores risk decisions against the truth). See ``docs/simulator.md``.
"""

from courierguard.sim.config import ALL_SCENARIOS, SCENARIOS, SimConfig
from courierguard.sim.engine import Simulation, iter_events
from courierguard.sim.evaluate import EvaluationResult, NormalResult, ScenarioResult, evaluate
from courierguard.sim.intents import Intent, intents
from courierguard.sim.synthetic import MOBILE_PREFIXES, PartyGenerator
from courierguard.sim.writer import SimSummary, write_files

simulate = iter_events
"""``simulate(config)``: every Access Event v1 of a run as a dict, in time order."""

__all__ = [
    "ALL_SCENARIOS",
    "MOBILE_PREFIXES",
    "SCENARIOS",
    "EvaluationResult",
    "Intent",
    "NormalResult",
    "PartyGenerator",
    "ScenarioResult",
    "SimConfig",
    "SimSummary",
    "Simulation",
    "evaluate",
    "intents",
    "iter_events",
    "simulate",
    "write_files",
]
