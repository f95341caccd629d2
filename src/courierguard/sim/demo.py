"""``courierguard demo``: a compressed working day of a synthetic courier company, with a rented account.

The service runs in-process on the embedded default (SQLite in a temporary or given folder) on a
free loopback port, with an accelerated clock (:class:`courierguard.clock.ScaledClock`). A demo
company is seeded; the risk engine learns two ordinary days in monitor mode (the simulator's events
replayed into it, as a company adopting Courier Guard would); then the live driver plays the third
day through the real HTTP API: staff at work, and at night a renter using a courier's account from a
new device in another province to scrape the outlet (scenario 1). Nothing here prints a name, phone
or address: counts, waybill numbers and reason codes only.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from courierguard.clock import ScaledClock
from courierguard.config import Settings
from courierguard.domain import Employee, OrgUnit, OrgUnitKind
from courierguard.events import Role
from courierguard.gateway.wiring import Deployment, open_deployment
from courierguard.risk.engine import RiskEngine
from courierguard.risk.record import from_dict
from courierguard.sim.config import SimConfig
from courierguard.sim.engine import Simulation
from courierguard.sim.intents import Intent, to_intent
from courierguard.sim.live import IntentResult, LiveDriver, LiveOptions, LiveReport, plan_waybills
from courierguard.sim.seed import seed_company

DEMO_ADMIN = "E990900"
"""The bootstrap admin the demo creates (the live driver signs in as it to build the directory)."""
DEMO_OFFICER = "E990901"
"""The bootstrap security officer the demo creates: approves the privileged roles of the simulated
staff (an admin alone may not give them)."""

ATTACK = 1  # rented account, fast scraping at night from a new device and network


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """One demo run. ``quick`` shrinks it to a few seconds (for tests)."""

    employees: int = 40
    seed: int = 2
    day_seconds: float = 60.0
    """Real seconds the working day (05:00 to the end of the attack) takes, quiet hours skipped."""
    view_share: float = 0.5
    """Share of routine masked views sent (all logins, reveals and attack steps are always sent)."""
    data_dir: Path | None = None

    @classmethod
    def quick_config(cls, data_dir: Path | None = None) -> DemoConfig:
        return cls(employees=20, day_seconds=6.0, view_share=0.1, data_dir=data_dir)


@dataclass
class DemoEvent:
    """Something the demo shows: an attempt of the renter, or an alert."""

    at: str
    text: str


@dataclass
class DemoResult:
    """What happened, for the terminal summary and for tests."""

    report: LiveReport
    renter: str
    renter_device: str | None
    attempts: int
    records_obtained: int
    records_without_guard: int
    first_step_up: str | None
    contained_at: str | None
    alerts: list[dict[str, Any]]
    audit_entries: int
    audit_ok: bool
    staff_records: int
    warmup_events: int
    seconds: float
    timeline: list[DemoEvent] = field(default_factory=list)

    def summary(self) -> str:
        """The one-line verdict the demo ends with."""
        contained = f"locked at {_hhmm(self.contained_at)}" if self.contained_at else "NOT contained"
        return (
            f"Summary: renter on account {self.renter} made {self.attempts} attempts and obtained "
            f"{self.records_obtained} clear-text records before containment (without the guard: "
            f"{self.records_without_guard}); step-up demanded at {_hhmm(self.first_step_up)}, {contained}; "
            f"staff were served {self.staff_records} records for their tasks; {len(self.alerts)} alerts; "
            f"audit trail {'verified' if self.audit_ok else 'FAILED verification'} "
            f"({self.audit_entries} entries)."
        )


def _hhmm(ts: str | None) -> str:
    return "–" if ts is None else datetime.fromisoformat(ts).strftime("%H:%M:%S")


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """The HTTP API of ``deployment`` on uvicorn in a background thread, on loopback.

    The driver is trusted as a proxy (``X-Forwarded-For``), so the simulated networks reach the risk
    engine as they would behind the company's gateway.
    """

    def __init__(self, deployment: Deployment, port: int | None = None) -> None:
        import uvicorn

        from courierguard.gateway.http import create_app

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(deployment), host="127.0.0.1", port=self.port, log_level="error",
            access_log=False, proxy_headers=True, forwarded_allow_ips="127.0.0.1", lifespan="off",
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="courierguard-demo-api", daemon=True)

    def __enter__(self) -> LocalServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the demo API did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def bootstrap(deployment: Deployment, now: datetime, *, admin: str = DEMO_ADMIN) -> str:
    """Make the target drivable: the tenant, a bootstrap admin and security officer (what
    ``courierguard admin bootstrap --officer`` makes) and an API key; returns the key."""
    company = deployment.guard.company
    company.ensure_tenant("Demo Express (synthetic)", now)
    company.put_org_unit(OrgUnit("HQ", OrgUnitKind.HQ, "Headquarters"))
    company.put_org_unit(OrgUnit("HQ-IT", OrgUnitKind.DEPARTMENT, "IT", "HQ"))
    company.put_employee(Employee(admin, Role.ADMIN, "HQ-IT"), now)
    company.put_employee(Employee(DEMO_OFFICER, Role.SECURITY_OFFICER, "HQ-IT"), now)
    _, key = deployment.guard.api_keys.create("live-driver", now)
    return key


def thin(
    intents: list[Intent], view_share: float, *, keep: Callable[[Intent], bool] | None = None
) -> list[Intent]:
    """Every login, reveal and attack step, but only ``view_share`` of routine masked views."""
    if view_share >= 1.0:
        return intents
    step = max(1, round(1 / max(view_share, 1e-6)))
    out, n = [], 0
    for it in intents:
        if (
            it.scenario == 0
            and it.action in ("waybill.view", "waybill.print", "number.call")
            and not (keep and keep(it))
        ):
            n += 1
            if n % step:
                continue
        out.append(it)
    return out


def run_demo(
    config: DemoConfig,
    *,
    on_start: Callable[[str, Path], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    on_result: Callable[[IntentResult], None] | None = None,
    on_event: Callable[[DemoEvent], None] | None = None,
    clock_ready: Callable[[ScaledClock, datetime, datetime], None] | None = None,
) -> DemoResult:
    """Run the whole demo and return what happened; the callbacks feed a terminal UI."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="courierguard-demo-") as tmp:
        data_dir = config.data_dir or Path(tmp)
        return _run(config, data_dir, started, on_start, on_phase, on_result, on_event, clock_ready)


def _run(
    config: DemoConfig,
    data_dir: Path,
    started: float,
    on_start: Callable[[str, Path], None] | None,
    on_phase: Callable[[str], None] | None,
    on_result: Callable[[IntentResult], None] | None,
    on_event: Callable[[DemoEvent], None] | None,
    clock_ready: Callable[[ScaledClock, datetime, datetime], None] | None,
) -> DemoResult:
    phase = on_phase or (lambda _text: None)
    sim_config = SimConfig(
        employees=config.employees, days=3, seed=config.seed, scenarios=(ATTACK,), attack_after_days=2
    )
    phase("simulating three days of the company")
    sim = Simulation(sim_config)
    labelled = list(sim.labelled())
    truth = next(t for t in sim.truth() if t.get("scenario") == ATTACK)
    if not truth.get("actors"):
        raise RuntimeError(f"the simulated world cannot host the attack: {truth.get('notes')}")
    renter = str(truth["actors"][0])
    renter_device = (truth.get("devices") or [None])[0]
    live_day = str(truth["start"])[:10]
    warm = [e for e, _ in labelled if e["ts"][:10] < live_day]
    attack_end = datetime.fromisoformat(str(truth["end"]))
    today = [
        to_intent(e, s)
        for e, s in labelled
        if e["ts"][:10] == live_day and datetime.fromisoformat(e["ts"]) <= attack_end
    ]
    today = thin(today, config.view_share, keep=lambda it: it.actor == renter)
    first = datetime.fromisoformat(today[0].at)
    clock = ScaledClock(first - timedelta(minutes=1), 1.0)
    settings = Settings(data_dir=data_dir, tenant="demo")
    deployment = open_deployment(settings, clock=clock)
    try:
        phase("seeding the demo company")
        seed_company(
            deployment.guard.company, deployment.guard.vault, now=clock.now(), employees=config.employees,
            waybills_per_outlet=20, seed=config.seed,
        )  # fmt: skip
        key = bootstrap(deployment, clock.now())
        phase(f"learning baselines: {len(warm):,} events of two ordinary days in monitor mode")
        risk = deployment.risk
        if isinstance(risk, RiskEngine):
            for event in warm:
                risk.decide(from_dict(event))
        with LocalServer(deployment) as server:
            if on_start is not None:
                on_start(server.url, data_dir)
            phase("building the directory and the day's waybills through the API")
            factor = (attack_end - first).total_seconds() / max(config.day_seconds, 0.5)
            driver = LiveDriver(
                lambda: httpx.Client(base_url=server.url, timeout=30.0),
                LiveOptions(
                    api_key=key, admin=DEMO_ADMIN, officer=DEMO_OFFICER, speed=factor, max_gap=0.5, workers=1
                ),
                seed=config.seed,
                sync=clock.restart,
                totp_now=clock.now,
                on_result=on_result,
            )
            try:
                driver.setup_world(sim.world, plan_waybills(today), now=first - timedelta(days=1))
                clock.factor = factor
                clock.restart(first - timedelta(seconds=30))
                if clock_ready is not None:
                    clock_ready(clock, first, attack_end)
                phase("the working day")
                report = driver.run(today)
            finally:
                driver.close()
        return _result(deployment, report, renter, renter_device, today, warm, started, on_event)
    finally:
        deployment.close()


def _result(
    deployment: Deployment,
    report: LiveReport,
    renter: str,
    renter_device: str | None,
    today: list[Intent],
    warm: list[dict[str, Any]],
    started: float,
    on_event: Callable[[DemoEvent], None] | None,
) -> DemoResult:
    from courierguard.audit import row_mac_key, verify

    attack = report.tally(ATTACK)
    alerts = [a for a in deployment.alerts.fetch() if a["actor_id"] == renter]
    timeline = [
        DemoEvent(
            str(a["ts"]),
            f"alert {a['action']}: {', '.join(r['code'] for r in a['reasons'])} (account {a['actor_id']})",
        )
        for a in alerts
    ]
    if on_event is not None:
        for event in timeline:
            on_event(event)
    core = deployment.core
    audit = verify(core.audit_engine, core.keys.signer().public_key, row_key=row_mac_key(core.keys))
    without = {it.waybill for it in today if it.scenario == ATTACK and it.action == "waybill.reveal"}
    return DemoResult(
        report=report,
        renter=renter,
        renter_device=renter_device,
        attempts=sum(n for k, n in attack.outcomes.items() if not k.endswith((" skipped", " unsupported"))),
        records_obtained=len(attack.records),
        records_without_guard=len(without),
        first_step_up=attack.first_step_up,
        contained_at=attack.first_contained,
        alerts=alerts,
        audit_entries=audit.entries,
        audit_ok=audit.ok,
        staff_records=len(report.tally(0).records),
        warmup_events=len(warm),
        seconds=time.perf_counter() - started,
        timeline=timeline,
    )


__all__ = [
    "DEMO_ADMIN",
    "DemoConfig",
    "DemoEvent",
    "DemoResult",
    "LocalServer",
    "bootstrap",
    "run_demo",
    "thin",
]
