"""The live driver: plays the simulator's intents against a running Courier Guard over HTTP.

A file run writes what a legacy system saw; a live run lets the real policy and risk engine decide.
The driver plays three parts:

* **the directory**: org units and employees of the simulated world, through the admin API, signed
  in as a bootstrap admin that must already exist in the target;
* **the order and PDA systems**: every waybill the intents touch is ingested with synthetic parties
  (``Authorization: ApiKey``), and its status and assignee are moved, just before each intent, to
  what the simulated event says (``POST /v1/waybills/{number}/events``); tickets and return cases
  are opened the first time an intent names one;
* **the staff**: each simulated session becomes a development token plus ``POST /v1/auth/login``
  on the intent's device. The first login of an account binds its device; the TOTP seed stays in the
  driver's memory, so legitimate staff pass a step-up. A renter's new device has no authenticator:
  when the guard demands a step-up of it, the renter tries a guessed code and fails, as in reality.

Every response is recorded per intent (status and problem ``reason``) and summed per scenario in a
:class:`LiveReport`. Intents are sent in time order, paced by simulated time (``speed`` simulated
seconds per real second, or a shared clock), on a few worker threads; one account's intents always go
to the same worker, so they keep their order. Clear-text values returned by reveals are counted,
never kept or logged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any

import httpx
import pyotp

from courierguard.domain import Party, lifecycle_path
from courierguard.events import WaybillStatus
from courierguard.sim.intents import Intent
from courierguard.sim.synthetic import PartyGenerator
from courierguard.sim.world import Staff, World

log = logging.getLogger(__name__)

OK = "ok"
SKIPPED = "skipped"
UNSUPPORTED = "unsupported"
ERROR = "error"
"""Outcome labels besides the problem ``reason`` codes of the API (``step_up_required``, ...)."""

_UNIT_KIND = {"outlet": "outlet", "hub": "hub", "department": "department"}
_CASE_KIND = {"TK": "ticket", "RC": "return", "CL": "claim"}
_TASK_STATUSES = ("awaiting_pickup", "out_for_delivery")
_ADMIN_DEVICE = "CG-LIVE-ADMIN"
_OFFICER_DEVICE = "CG-LIVE-OFFICER"
# The simulated sign-in method as the RFC 8176 references an identity provider's token would carry.
_AMR = {"password": ["pwd"], "totp": ["pwd", "otp"], "webauthn": ["hwk"], "face": ["face"]}
_GUESSED_CODE = "000000"


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """How to reach and drive the target."""

    api_key: str
    """``cgk_…`` key of a service account: ingest of waybills, lifecycle steps and cases."""
    admin: str
    """Employee id of an admin that exists in the target: creates org units and employees."""
    officer: str | None = None
    """Employee id of a security officer that exists in the target: approves the privileged roles
    (admin, security officer, auditor) of simulated staff, which an admin alone may not give."""
    speed: float = 600.0
    """Simulated seconds per real second; 0 sends as fast as the target answers."""
    max_gap: float | None = None
    """Longest real pause between two intents; longer quiet spells are skipped (None: never)."""
    workers: int = 4
    setup: bool = True
    """Create the world (directory, waybills) before driving; off when it already exists."""
    forwarded_for: bool = True
    """Send the intent's IP in ``X-Forwarded-For`` (honoured when the target trusts the driver)."""
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class IntentResult:
    """What the target answered to one intent."""

    at: str
    scenario: int
    action: str
    actor: str
    device: str | None
    waybill: str | None
    status: int
    outcome: str
    """``ok``, a problem reason (``step_up_required``, ``risk_locked``, ``no_task``, ...), ``skipped``
    (the session was dead and could not sign in again), ``unsupported`` (no API for it) or ``error``."""
    records: int = 0
    """Clear-text records served by this intent (1 for a served reveal)."""
    step_up: str | None = None
    """``passed`` or ``failed`` when the intent met a step-up and the actor answered it."""


@dataclass
class ScenarioTally:
    """Live results of one scenario (0 = normal work)."""

    scenario: int
    intents: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    records: set[str] = field(default_factory=set)
    records_before_containment: set[str] = field(default_factory=set)
    first_step_up: str | None = None
    first_contained: str | None = None
    contained_actors: set[str] = field(default_factory=set)
    step_ups_passed: int = 0
    step_ups_failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "intents": self.intents,
            "outcomes": dict(sorted(self.outcomes.items())),
            "records_served": len(self.records),
            "records_before_containment": len(self.records_before_containment),
            "first_step_up": self.first_step_up,
            "first_contained": self.first_contained,
            "contained_actors": sorted(self.contained_actors),
            "step_ups_passed": self.step_ups_passed,
            "step_ups_failed": self.step_ups_failed,
        }


_CONTAINING = ("risk_locked", "risk_denied", "account_inactive")


@dataclass
class LiveReport:
    """Every response of a live run, summed per scenario."""

    scenarios: dict[int, ScenarioTally] = field(default_factory=dict)
    requests: int = 0
    setup: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    steps: Counter[str] = field(default_factory=Counter)
    """Lifecycle steps the driver sent as the PDA system, by answer (``ok`` or the problem reason):
    the simulated flows are ones the lifecycle allows, so anything but ``ok`` is the driver's fault."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, result: IntentResult, requests: int) -> None:
        with self._lock:
            self.requests += requests
            tally = self.scenarios.get(result.scenario)
            if tally is None:
                tally = self.scenarios[result.scenario] = ScenarioTally(result.scenario)
            tally.intents += 1
            tally.outcomes[f"{result.action} {result.outcome}"] += 1
            if result.step_up == "passed":
                tally.step_ups_passed += 1
            elif result.step_up == "failed":
                tally.step_ups_failed += 1
            if result.outcome == "step_up_required" and tally.first_step_up is None:
                tally.first_step_up = result.at
            if result.outcome in _CONTAINING and result.actor not in tally.contained_actors:
                tally.contained_actors.add(result.actor)
                tally.first_contained = tally.first_contained or result.at
            if result.records and result.waybill is not None:
                tally.records.add(result.waybill)
                if result.actor not in tally.contained_actors:
                    tally.records_before_containment.add(result.waybill)

    def count_step(self, outcome: str) -> None:
        with self._lock:
            self.steps[outcome] += 1

    def tally(self, scenario: int) -> ScenarioTally:
        """The tally of ``scenario`` (empty if it sent nothing)."""
        return self.scenarios.get(scenario) or ScenarioTally(scenario)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "setup": dict(self.setup),
            "lifecycle_steps": dict(sorted(self.steps.items())),
            "scenarios": [self.scenarios[k].to_dict() for k in sorted(self.scenarios)],
        }


@dataclass
class _Session:
    token: str
    headers: dict[str, str]
    dead: bool = False
    gone: bool = False
    step_up_tried: bool = False


@dataclass
class _Waybill:
    number: str
    org_unit: str
    status: str = "created"
    assignee: str | None = None
    since: datetime | None = None
    """The earliest time the intents show of it (a step's ``status_ts``, an intent's time): it was
    created before that, or the target refuses that step as dated before the waybill."""


def _problem(response: httpx.Response) -> str:
    if response.is_success:
        return OK
    try:
        body = response.json()
    except ValueError:
        return str(response.status_code)
    reason = body.get("reason") if isinstance(body, dict) else None
    return str(reason) if reason else str(response.status_code)


def _party(party: Party) -> dict[str, Any]:
    a = party.address
    address = {"province": a.province, "city": a.city, "district": a.district, "detail": a.detail}
    return {"name": party.name, "phone": party.phone, "address": address}


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("detail", "")) if isinstance(body, dict) else ""


def _shifts(person: Staff) -> list[dict[str, Any]]:
    start = dtime(person.shift_start // 60 % 24, person.shift_start % 60)
    end_minute = person.shift_end % 1440
    end = dtime(end_minute // 60, end_minute % 60)
    return [
        {"weekday": day, "start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}
        for day in sorted(person.workdays)
    ]


def plan_waybills(intents: Iterable[Intent]) -> dict[str, _Waybill]:
    """Every waybill the intents touch, with the org unit it belongs to."""
    plan: dict[str, _Waybill] = {}
    guessed: set[str] = set()  # known only from a list or search: the reader's unit, until a view says
    for it in intents:
        resource = it.event.get("resource") or {}
        number = it.waybill
        if (
            number
            and resource.get("type", "waybill") == "waybill"
            and (number not in plan or number in guessed)
        ):
            # An agent's search names a parcel before the view does: the parcel belongs to its
            # outlet, not to the customer-service centre that searched for it.
            plan[number] = _Waybill(number, resource.get("org_unit") or it.org_unit or "HQ")
            guessed.discard(number)
        for listed in it.result_ids:
            if listed not in plan:
                plan[listed] = _Waybill(listed, it.org_unit or "HQ")
                guessed.add(listed)
        if number and number in plan:
            wb = plan[number]
            for seen in (resource.get("status_ts"), it.at):
                moment = datetime.fromisoformat(seen) if isinstance(seen, str) else None
                if moment is not None and (wb.since is None or moment < wb.since):
                    wb.since = moment
    return plan


class LiveDriver:
    """Drives a running Courier Guard with simulated intents; see the module docstring.

    ``client_factory`` makes one ``httpx.Client`` per worker (keep-alive; pass a FastAPI
    ``TestClient`` factory to drive an in-process app). ``sync`` is called with each intent's time
    before it is sent, after pacing: an in-process target's clock follows the intents with it (tests
    set a ``FixedClock``, the demo re-anchors its ``ScaledClock``); the run is then sequential, so the
    target never sees time run ahead of the driver. ``totp_now`` is the time the target checks TOTP codes against
    (default: the wall clock). ``on_result`` sees every result, from the worker threads.
    """

    def __init__(
        self,
        client_factory: Callable[[], httpx.Client],
        options: LiveOptions,
        *,
        seed: int = 1,
        sync: Callable[[datetime], None] | None = None,
        totp_now: Callable[[], datetime] | None = None,
        on_result: Callable[[IntentResult], None] | None = None,
    ) -> None:
        self._factory = client_factory
        self.options = options
        self._seed = seed
        self._sync = sync
        self._totp_now = totp_now or (lambda: datetime.now(UTC))
        self._on_result = on_result
        self.report = LiveReport()
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._seeds: dict[str, dict[str, str]] = {}  # employee → device → TOTP seed (memory only)
        self._waybills: dict[str, _Waybill] = {}
        self._cases: set[str] = set()
        self._roles: dict[str, Staff] = {}
        self._officer: dict[str, str] | None = None  # the officer's headers, once signed in
        self._phones: dict[str, str] = {}  # waybill → recipient phone, to search like an agent would
        self._strangers: PartyGenerator | None = None  # numbers of no customer, for searches that miss
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    # --- the world ---------------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory()
            with self._lock:
                self._clients.append(client)
        return client

    @property
    def _svc(self) -> dict[str, str]:
        return {"Authorization": f"ApiKey {self.options.api_key}"}

    def setup_world(
        self, world: World, waybills: dict[str, _Waybill], *, now: datetime | None = None
    ) -> None:
        """Create ``world``'s org units and staff (admin API) and ingest ``waybills`` (ingest API)."""
        client = self._client()
        for person in world.staff:
            self._roles[person.id] = person
        admin = self._admin_headers(client)
        counts = Counter[str]()

        def put(path: str, body: dict[str, Any]) -> None:
            r = client.put(path, json=body, headers=admin)
            if r.status_code == 403 and _problem(r) == "four_eyes_required" and "role" in body:
                # A privileged role: the admin asks, a security officer approves, then the rest of
                # the record (shifts) goes in as a plain edit.
                self._grant_role(client, admin, path.rsplit("/", 1)[1], body)
                counts["roles approved"] += 1
                r = client.put(path, json=body, headers=admin)
            counts["admin " + _problem(r)] += 1
            if r.status_code == 403 and _problem(r) != OK:
                raise LiveSetupError(f"PUT {path} refused ({_problem(r)}): is {self.options.admin} an admin?")

        put("/v1/admin/org-units/HQ", {"kind": "hq", "name": "Headquarters"})
        for unit in world.units:
            put(
                f"/v1/admin/org-units/{unit.id}",
                {"kind": _UNIT_KIND[unit.kind], "name": f"{unit.city.name} {unit.id}", "parent": "HQ",
                 "city": unit.city.name, "lat": unit.lat, "lon": unit.lon},
            )  # fmt: skip
        for person in world.staff:
            put(
                f"/v1/admin/employees/{person.id}",
                {"role": person.role, "org_unit": person.unit.id, "shifts": _shifts(person)},
            )
        parties = PartyGenerator(self._seed)
        units = {u.id: u for u in world.units}
        batch: list[dict[str, Any]] = []
        # Created before anything the intents show of any of them (no later: the target refuses a
        # creation time ahead of its clock, which is at the first intent at most).
        created = min([wb.since - timedelta(hours=1) for wb in waybills.values() if wb.since], default=now)
        if created is not None and now is not None:
            created = min(created, now)
        for wb in waybills.values():
            home = units.get(wb.org_unit)
            sender, recipient = parties.party(), parties.party(home.city if home else None)
            batch.append(
                {"number": wb.number, "origin_outlet": wb.org_unit, "dest_outlet": wb.org_unit,
                 "routing_code": f"{(home.city.code if home else 'XX')}-{wb.number[-3:]}",
                 "sender": _party(sender), "recipient": _party(recipient),
                 **({"created_at": created.isoformat()} if created else {})}
            )  # fmt: skip
            self._waybills[wb.number] = wb
            self._phones[wb.number] = recipient.phone
        for start in range(0, len(batch), 1000):
            r = client.post("/v1/waybills", json={"records": batch[start : start + 1000]}, headers=self._svc)
            if not r.is_success:
                raise LiveSetupError(f"ingest refused ({_problem(r)}): check --api-key")
            body = r.json()
            counts["waybills stored"] += len(body["stored"])
            counts["waybills failed"] += len(body["failed"])
        self.report.setup = dict(counts)

    def _admin_headers(self, client: httpx.Client) -> dict[str, str]:
        return self._signed_in(client, self.options.admin, "admin", _ADMIN_DEVICE)

    def _signed_in(self, client: httpx.Client, employee: str, what: str, device: str) -> dict[str, str]:
        r = client.post("/v1/dev/token", json={"employee_id": employee})
        if not r.is_success:
            raise LiveSetupError(
                f"no development token for {what} {employee} ({_problem(r)}); "
                f"the target must run the development issuer and know this {what}"
            )
        headers = {"Authorization": f"Bearer {r.json()['token']}", "X-Device-Id": device}
        r = client.post("/v1/auth/login", json={}, headers=headers)
        if not r.is_success:
            raise LiveSetupError(f"{what} {employee} could not sign in ({_problem(r)})")
        return headers

    def _grant_role(
        self, client: httpx.Client, admin: dict[str, str], employee: str, body: dict[str, Any]
    ) -> None:
        """Give a simulated employee a privileged role through four-eyes: the admin asks, the
        ``officer`` approves (the change is made on approval)."""
        if self.options.officer is None:
            raise LiveSetupError(
                f"employee {employee} has the privileged role {body['role']}, which needs a security officer's "
                "approval: pass --officer with a security officer of the target"
            )
        if self._officer is None:
            self._officer = self._signed_in(client, self.options.officer, "security officer", _OFFICER_DEVICE)
        ask = {"kind": "role", "justification": "simulated company directory (live driver)", "employee": employee,
               "role": body["role"], "org_unit": body["org_unit"]}  # fmt: skip
        r = client.post("/v1/approvals", json=ask, headers=admin)
        if r.is_success:
            r = client.post(f"/v1/approvals/{r.json()['id']}/approve", headers=self._officer)
        if not r.is_success:
            raise LiveSetupError(f"role {body['role']} for {employee} not approved ({_problem(r)})")

    # --- the run -----------------------------------------------------------------------------------

    def run(self, intents: Iterable[Intent]) -> LiveReport:
        """Send ``intents`` (in time order) and return the report."""
        started = time.perf_counter()
        try:
            if self._sync is not None or self.options.workers <= 1:
                for it in self._paced(intents):
                    self._handle(it)
            else:
                self._run_threaded(intents)
        finally:
            self.report.seconds = time.perf_counter() - started
        return self.report

    def close(self) -> None:
        """Close the HTTP clients of all workers."""
        for client in self._clients:
            client.close()
        self._clients = []

    def _paced(self, intents: Iterable[Intent]) -> Iterator[Intent]:
        speed, max_gap = self.options.speed, self.options.max_gap
        anchor: tuple[float, datetime] | None = None
        for it in intents:
            at = datetime.fromisoformat(it.at)
            if speed > 0:
                if anchor is None:
                    anchor = (time.monotonic(), at)
                delay = anchor[0] + (at - anchor[1]).total_seconds() / speed - time.monotonic()
                if max_gap is not None and delay > max_gap:  # a quiet spell: skip most of it
                    anchor = (anchor[0] - (delay - max_gap), anchor[1])
                    delay = max_gap
                if delay > 0:
                    time.sleep(delay)
            if self._sync is not None:
                self._sync(at)
            yield it

    def _run_threaded(self, intents: Iterable[Intent]) -> None:
        n = self.options.workers
        queues: list[queue.Queue[Intent | None]] = [queue.Queue() for _ in range(n)]
        failures: list[BaseException] = []

        def work(q: queue.Queue[Intent | None]) -> None:
            while (it := q.get()) is not None:
                try:
                    self._handle(it)
                except Exception as exc:  # one broken intent must not stop the run
                    failures.append(exc)
                    log.error("live intent failed: %s", exc.__class__.__name__)

        threads = [threading.Thread(target=work, args=(q,), daemon=True) for q in queues]
        for t in threads:
            t.start()
        try:
            for it in self._paced(intents):
                queues[zlib.crc32(it.actor.encode()) % n].put(it)
        finally:
            for q in queues:
                q.put(None)
            for t in threads:
                t.join()

    def _handle(self, it: Intent) -> None:
        counter = [0]
        client = _Counting(self._client(), counter)
        try:
            result = self._perform(client, it)
        except httpx.HTTPError as exc:
            result = self._result(it, 0, f"{ERROR}:{exc.__class__.__name__}")
        self.report.add(result, counter[0])
        if self._on_result is not None:
            self._on_result(result)

    # --- one intent --------------------------------------------------------------------------------

    def _result(self, it: Intent, status: int, outcome: str, **extra: Any) -> IntentResult:
        return IntentResult(it.at, it.scenario, it.action, it.actor, it.device, it.waybill, status, outcome,
                            **extra)  # fmt: skip

    def _perform(self, client: _Counting, it: Intent) -> IntentResult:
        action = it.action
        if action in ("number.call", "auth.step_up", "auth.step_up_failed"):
            return self._result(it, 0, UNSUPPORTED)
        if action == "auth.login_failed":
            r = client.post("/v1/auth/login", json={}, headers={"Authorization": "Bearer not-a-token",
                                                                  "X-Device-Id": it.device or "-"})  # fmt: skip
            return self._result(it, r.status_code, _problem(r))
        key = (it.actor, it.session or it.device or "-")
        fresh = action == "auth.login" and key not in self._sessions
        session, login = self._session(client, it, key)
        if session is None:
            return login or self._result(it, 0, SKIPPED)
        if action == "auth.login":
            assert login is not None
            return login if fresh else self._login_again(client, it, key)
        if action == "auth.logout":
            r = client.post("/v1/auth/logout", headers=session.headers)
            self._sessions.pop(key, None)
            return self._result(it, r.status_code, _problem(r))
        if action == "auth.device_bound":
            return self._bind(client, it, session, required=True)
        if action == "admin.change":
            return self._admin_change(client, it, session)
        if it.waybill:
            self._sync_waybill(client, it)
        return self._request(client, it, session, key)

    def _request(
        self, client: _Counting, it: Intent, session: _Session, key: tuple[str, str]
    ) -> IntentResult:
        send = self._sender(it)
        if send is None:
            return self._result(it, 0, UNSUPPORTED)
        r = send(client, session.headers)
        step_up = None
        if _problem(r) == "step_up_required":
            step_up = self._step_up(client, it, session)
            if step_up == "passed":
                r = send(client, session.headers)
        if r.status_code == 401 and ("Expired" in _detail(r) or "session expired" in _detail(r)):
            # The token or the session ran out during a long shift: the app signs in again and retries.
            session.dead = True
            renewed, _ = self._session(client, it, key)
            if renewed is not None:
                r = send(client, renewed.headers)
        outcome = _problem(r)
        if r.status_code == 401:
            session.dead = True
        records = 1 if it.action == "waybill.reveal" and r.is_success else 0
        return self._result(it, r.status_code, outcome, records=records, step_up=step_up)

    def _sender(self, it: Intent) -> Callable[[_Counting, dict[str, str]], httpx.Response] | None:
        number = it.waybill
        if it.action in ("waybill.view", "waybill.print") and number:
            return lambda c, h: c.get(f"/v1/waybills/{number}", headers=h)
        if it.action == "waybill.reveal" and number:
            body = {
                "fields": list(it.fields) or ["recipient.phone"],
                "purpose": it.purpose or "delivery_contact",
            }
            return lambda c, h: c.post(f"/v1/waybills/{number}/reveal", json=body, headers=h)
        if it.action == "waybill.list":
            # The page the simulated person saw: masked volume is counted in rows.
            params = {"org_unit": it.org_unit or "", "page_size": str(len(it.result_ids) or 50)}
            return lambda c, h: c.get("/v1/waybills", params=params, headers=h)
        if it.action == "waybill.search":
            first = it.result_ids[0] if it.result_ids else None
            phone = self._phones.get(first) if first else None
            if phone is None and first is None and it.query_kind == "by_phone":
                phone = self._stranger()  # a search that finds nothing: a number of no customer
            search: dict[str, Any] = {"phone": phone} if phone else {"number_prefix": (first or "YT")[:8]}
            return lambda c, h: c.post("/v1/waybills/search", json=search, headers=h)
        if it.action == "waybill.export":
            export = {"kind": "export", "justification": "simulated bulk export request",
                      "fields": list(it.fields) or ["recipient.name"], "org_unit": it.org_unit}  # fmt: skip
            return lambda c, h: c.post("/v1/approvals", json=export, headers=h)
        return None

    def _stranger(self) -> str:
        with self._lock:
            if self._strangers is None:
                self._strangers = PartyGenerator(self._seed + 7919)
            return self._strangers.mobile()

    # --- sessions and second factors ---------------------------------------------------------------

    def _headers(self, it: Intent, token: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "X-Device-Id": it.device or "unknown-device"}
        ua = (it.event.get("session") or {}).get("user_agent")
        if ua:
            headers["User-Agent"] = ua
        loc = (it.event.get("session") or {}).get("location")
        if loc:
            headers["X-Device-Location"] = f"{loc['lat']:.5f},{loc['lon']:.5f}"
        if it.ip and self.options.forwarded_for:
            headers["X-Forwarded-For"] = it.ip
        return headers

    def _session(
        self, client: _Counting, it: Intent, key: tuple[str, str]
    ) -> tuple[_Session | None, IntentResult | None]:
        session = self._sessions.get(key)
        if session is not None and session.gone:
            return None, None
        if session is not None and not session.dead:
            return session, None
        # New session, or one revoked under us: sign in (again). A second failure gives up on it.
        r = client.post("/v1/dev/token", json={"employee_id": it.actor, "amr": _AMR.get(it.auth or "", [])})
        if not r.is_success:
            self._sessions[key] = _Session("", {}, dead=True, gone=True)
            return None, self._result(it, r.status_code, _problem(r))
        token = r.json()["token"]
        new = _Session(token, self._headers(it, token))
        r = client.post("/v1/auth/login", json=self._login_body(it), headers=new.headers)
        outcome = _problem(r)
        step_up = None
        if outcome == "step_up_required":
            step_up = self._step_up(client, it, new)
        elif r.status_code == 429:  # throttled: try to sign in again with the next intent
            return None, self._result(it, r.status_code, outcome)
        elif not r.is_success:
            # Cannot sign in (locked, left, revoked): a script gives up on this session.
            new.dead = new.gone = True
            self._sessions[key] = new
            return None, self._result(it, r.status_code, outcome)
        self._sessions[key] = new
        login = self._result(it, r.status_code, outcome, step_up=step_up)
        if it.scenario == 0 and it.actor not in self._seeds and (r.is_success or step_up == "passed"):
            self._bind(client, it, new, required=False)
        return new, login

    @staticmethod
    def _login_body(it: Intent) -> dict[str, str]:
        # The target takes the method from the token (amr, above); the body's is for older targets.
        auth = it.auth if it.auth in ("password", "sso", "totp", "webauthn", "face") else None
        return {"auth": auth} if auth else {}

    def _login_again(self, client: _Counting, it: Intent, key: tuple[str, str]) -> IntentResult:
        self._sessions.pop(key, None)
        _, login = self._session(client, it, key)
        return login or self._result(it, 0, SKIPPED)

    def _bind(self, client: _Counting, it: Intent, session: _Session, *, required: bool) -> IntentResult:
        r = client.post("/v1/auth/devices", headers=session.headers)
        step_up = None
        if _problem(r) == "step_up_required":
            step_up = self._step_up(client, it, session)
            if step_up == "passed":
                r = client.post("/v1/auth/devices", headers=session.headers)
        if r.is_success:
            with self._lock:
                self._seeds.setdefault(it.actor, {})[it.device or ""] = r.json()["totp_seed"]
        return self._result(it, r.status_code, _problem(r), step_up=step_up)

    def _step_up(self, client: _Counting, it: Intent, session: _Session) -> str | None:
        """Answer a step-up the way the person holding the device would; None if not tried."""
        seeds = self._seeds.get(it.actor, {})
        # Staff use the authenticator of any of their bound devices; someone else using the account
        # holds only what is on their own device, which was never bound.
        seed = next(iter(seeds.values()), None) if it.scenario == 0 else seeds.get(it.device or "")
        if seed is None:
            if session.step_up_tried:
                return None
            session.step_up_tried = True
            code = _GUESSED_CODE
        else:
            code = pyotp.TOTP(seed).at(self._totp_now())
        r = client.post("/v1/auth/step-up", json={"code": code}, headers=session.headers)
        return "passed" if r.is_success else "failed"

    # --- the company's other systems ---------------------------------------------------------------

    def _admin_change(self, client: _Counting, it: Intent, session: _Session) -> IntentResult:
        kind, _, rest = (it.purpose or "").partition(":")
        target, _, unit = rest.partition(":")
        if kind == "employee.left" and target:
            r = client.post(f"/v1/admin/employees/{target}/status", json={"status": "left"},
                            headers=session.headers)  # fmt: skip
        elif kind == "employee.moved" and target and unit and target in self._roles:
            person = self._roles[target]
            r = client.put(f"/v1/admin/employees/{target}", headers=session.headers,
                           json={"role": person.role, "org_unit": unit, "shifts": _shifts(person)})  # fmt: skip
        else:
            return self._result(it, 0, UNSUPPORTED)
        return self._result(it, r.status_code, _problem(r))

    def _sync_waybill(self, client: _Counting, it: Intent) -> None:
        """Make the target's waybill look like the simulated event's resource (status, assignee, case)."""
        resource = it.event.get("resource") or {}
        number = it.waybill
        assert number is not None
        status, assignee = resource.get("status"), resource.get("assignee")
        with self._lock:
            wb = self._waybills.get(number)
            change = (
                wb is not None
                and status is not None
                and (wb.status, wb.assignee if status in _TASK_STATUSES else None)
                != (status, assignee if status in _TASK_STATUSES else None)
                and (status not in _TASK_STATUSES or assignee is not None)
            )
            before = wb.status if wb is not None else "created"
            if change and wb is not None:
                wb.status, wb.assignee = str(status), assignee
        if change:
            # As the PDA system would report it: the steps the parcel passed on its way first (the
            # simulated event shows where it is, not how it got there); the lifecycle refuses jumps.
            ts = resource.get("status_ts") or it.at
            target = WaybillStatus(str(status))
            path = lifecycle_path(WaybillStatus(before), target) or [target]
            for step in path:
                body: dict[str, Any] = {"status": step.value, "ts": ts}
                if step.value in _TASK_STATUSES:
                    body["assignee"] = assignee
                r = client.post(f"/v1/waybills/{number}/events", json=body, headers=self._svc)
                self.report.count_step(_problem(r))
        ticket = it.ticket
        if ticket and ticket[:2] in _CASE_KIND and ticket not in self._cases:
            self._cases.add(ticket)
            client.post("/v1/cases", headers=self._svc,
                        json={"id": ticket, "kind": _CASE_KIND[ticket[:2]], "waybill": number, "owner": it.actor})  # fmt: skip


class LiveSetupError(Exception):
    """The target refused the bootstrap: wrong admin id, API key or no development token issuer."""


class _Counting:
    """An ``httpx.Client`` that counts the requests it sends."""

    def __init__(self, client: httpx.Client, counter: list[int]) -> None:
        self._client = client
        self._counter = counter

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        self._counter[0] += 1
        return self._client.get(url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        self._counter[0] += 1
        return self._client.post(url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        self._counter[0] += 1
        return self._client.put(url, **kwargs)


def http_client_factory(base_url: str, *, timeout: float = 30.0) -> Callable[[], httpx.Client]:
    """One keep-alive ``httpx.Client`` per worker, for a target at ``base_url``."""
    return lambda: httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)


def drive(
    base_url: str,
    intents: list[Intent],
    world: World,
    options: LiveOptions,
    *,
    seed: int = 1,
    on_result: Callable[[IntentResult], None] | None = None,
) -> LiveReport:
    """Set up ``world`` in the target at ``base_url`` and play ``intents`` against it."""
    driver = LiveDriver(
        http_client_factory(base_url, timeout=options.timeout), options, seed=seed, on_result=on_result
    )
    try:
        if options.setup:
            driver.setup_world(world, plan_waybills(intents))
        return driver.run(intents)
    finally:
        driver.close()


__all__ = [
    "IntentResult",
    "LiveDriver",
    "LiveOptions",
    "LiveReport",
    "LiveSetupError",
    "ScenarioTally",
    "drive",
    "http_client_factory",
    "plan_waybills",
]
