"""End to end: a gang probes phone numbers through a rented agent's account, over the live HTTP API.

The agent works two ordinary days and their shift of the third through the API (searches by phone,
each opened in its ticket); after the shift someone at the agent's desk searches a list of numbers
(simulator scenario 12). The real RiskEngine sits on the request path; the renter answers step-ups
(the desk's authenticator), so the ladder has to end in a lock by itself.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from courierguard.audit import verify
from courierguard.sim import SimConfig
from courierguard.sim.engine import Simulation
from courierguard.sim.intents import to_intent

from ._live import drive

PROBING = 12


@pytest.mark.slow
def test_probing_agent_account_is_throttled_then_locked_while_the_agent_works_undisturbed(
    tmp_path: Path,
) -> None:
    sim = Simulation(SimConfig(employees=20, days=3, seed=2, scenarios=(PROBING,), attack_after_days=2))
    labelled = list(sim.labelled())
    truth = next(t for t in sim.truth() if t.get("scenario") == PROBING)
    owner = truth["actors"][0]
    attack_start = datetime.fromisoformat(truth["start"])
    intents = [to_intent(e, s) for e, s in labelled if e["actor"]["id"] == owner]
    assert {it.scenario for it in intents} == {0, PROBING}

    deployment, report, results = drive(tmp_path, sim, intents)

    own = [
        r
        for r in results
        if r.scenario == 0 and datetime.fromisoformat(r.at) < attack_start and r.action != "auth.login_failed"
    ]
    assert sum(1 for r in own if r.action == "waybill.search") >= 40, "the agent needs days of searches"
    assert {r.outcome for r in own} <= {"ok", "unsupported"}, {r.outcome for r in own}

    probes = [r for r in results if r.scenario == PROBING and r.action == "waybill.search"]
    outcomes = [(r.status, r.outcome) for r in probes]
    throttled = outcomes.index((429, "throttled"))
    locked = outcomes.index((403, "risk_locked"))
    assert throttled <= 16 < locked <= 60, outcomes[: locked + 1]
    assert any(r.step_up == "passed" for r in probes[:locked])  # the desk answers the step-up ...
    assert sum(1 for s in outcomes[:locked] if s == (200, "ok")) <= 20  # ... and is slowed down
    assert report.tally(PROBING).contained_actors == {owner}
    assert deployment.risk.is_locked(owner)  # type: ignore[attr-defined]
    alerts = deployment.alerts.fetch(owner)
    assert [a["action"] for a in alerts if "phone_probing" in {x["code"] for x in a["reasons"]}][-1] == "lock"

    core = deployment.core
    assert verify(core.audit_engine, core.keys.signer().public_key).ok
    deployment.close()
