"""End to end: a simulated renter is stepped up, then locked, through the live HTTP API.

The account owner (a courier) works two ordinary days and most of a third through the API; that
night someone else uses the account from a new phone on a broadband line in another province and
scrapes the outlet (simulator scenario 1). The real RiskEngine sits on the request path.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from courierguard.audit import verify
from courierguard.risk.engine import RiskEngine
from courierguard.sim import SimConfig
from courierguard.sim.demo import thin
from courierguard.sim.engine import Simulation
from courierguard.sim.intents import to_intent

from ._live import drive

RENTED = 1


@pytest.mark.slow
def test_renter_is_stepped_up_then_locked_while_the_owner_works_undisturbed(tmp_path: Path) -> None:
    sim = Simulation(SimConfig(employees=20, days=3, seed=2, scenarios=(RENTED,), attack_after_days=2))
    labelled = list(sim.labelled())
    truth = next(t for t in sim.truth() if t.get("scenario") == RENTED)
    owner = truth["actors"][0]
    attack_start = datetime.fromisoformat(truth["start"])
    intents = thin([to_intent(e, s) for e, s in labelled if e["actor"]["id"] == owner], 0.25)
    assert {it.scenario for it in intents} == {0, RENTED}

    deployment, report, results = drive(tmp_path, sim, intents)
    assert isinstance(deployment.risk, RiskEngine)  # the real engine, default configuration

    # The owner's normal work before the attack was all allowed.
    own = [r for r in results if r.scenario == 0 and datetime.fromisoformat(r.at) < attack_start]
    assert len({r.at[:10] for r in own}) >= 2, "the owner needs history before the renter shows up"
    outcomes = [r.outcome for r in own]
    assert set(outcomes) <= {"ok", "unsupported", "no_task"}, set(outcomes)
    assert outcomes.count("no_task") <= 0.02 * len(own)  # the simulator's mis-scans, refused by policy
    assert sum(r.records for r in own) >= 10

    # The renter: first a step-up they cannot pass, then a lock, then the session is gone.
    renter = [r for r in results if r.scenario == RENTED and r.outcome != "skipped"]
    statuses = [(r.status, r.outcome) for r in renter]
    first_step_up = statuses.index((403, "step_up_required"))
    locked = statuses.index((403, "risk_locked"))
    revoked = statuses.index((401, "unauthenticated"))
    assert first_step_up < locked < revoked, statuses[: revoked + 1]
    assert renter[first_step_up].action == "auth.login"  # the very first request of the new device
    assert any(r.step_up == "failed" for r in renter[: locked + 1])  # no authenticator on their phone
    assert not any(r.outcome in ("ok",) and r.action == "waybill.reveal" for r in renter)
    assert report.tally(RENTED).records == set()  # no clear text reached the renter
    assert locked <= 40, f"locked only after {locked} attempts"
    assert report.tally(RENTED).contained_actors == {owner}

    alerts = deployment.alerts.fetch(owner)
    actions = [a["action"] for a in alerts]
    assert "step_up" in actions and "lock" in actions
    assert actions.index("step_up") < actions.index("lock")
    lock = next(a for a in alerts if a["action"] == "lock")
    assert {"new_device"} <= {r["code"] for r in lock["reasons"]}
    assert deployment.risk.is_locked(owner)

    core = deployment.core
    report_audit = verify(core.audit_engine, core.keys.signer().public_key)
    assert report_audit.ok, report_audit.problems
    deployment.close()


@pytest.mark.http
@pytest.mark.slow
def test_demo_quick_runs_and_ends_with_a_summary(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "from courierguard.cli.main import app; app()", "demo", "--quick",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, env={"COLUMNS": "200", "PATH": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = next(line for line in result.stdout.splitlines() if line.startswith("Summary:"))
    assert "obtained 0 clear-text records" in summary
    assert "locked at" in summary and "audit trail verified" in summary
    assert "step_up_required" in result.stdout and "risk_locked" in result.stdout
