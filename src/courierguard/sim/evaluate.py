"""Scores a risk engine's decisions against the simulator's ground truth.

Definitions (also in ``docs/simulator.md``):

- An event is *served* when the source system allowed it (``outcome.decision`` absent or ``allow``)
  and the engine did not ``deny`` or ``lock`` it. ``step_up`` and ``throttle`` do not stop an event
  here: a renter working with the owner can pass a step-up, and a throttle only slows a script.
- A scenario actor (account) is *contained* at the first ``deny`` or ``lock`` decision on one of the
  scenario's own events, or at the first ``lock`` on any event of that account at or after the
  scenario's start (a lock revokes every session of the account; a deny refuses one event only).
- *Records without engine*: distinct waybills the scenario's events would have served had no engine
  run (source-system outcome only): the size of the attack.
- *Records exposed before containment*: distinct waybills (and, separately, distinct
  (waybill, field) pairs) whose clear-text fields were served by the scenario's events of an account
  before that account was contained. Exports count every id in ``query.result_ids``.
- *Masked rows exposed*: the same for masked data (no ``fields``): distinct waybills named by a served
  view's ``resource`` or a served list's or search's ``query.result_ids``. *Phone searches answered*:
  served ``waybill.search`` events by phone (hits and misses: each tells whether a number is a
  customer), before containment.
- *Times* are seconds from the scenario's first event to the event that drew the decision.
- *Normal staff* are all employee events outside any scenario, except the events of scenario
  accounts from the scenario's start on (an owner whose account was rightly locked is no false alarm),
  and of the accounts a scenario took out of use (``notes.victims``, scenario 16's held officers)
  from its start on: refused because they are held, which is the attack's doing.
  Rates count employee-days: an employee-day with one or more step-ups counts once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from courierguard.errors import InvalidInput

_CONTAIN = frozenset(("deny", "lock"))
_RANK = {"allow": 0, "step_up": 1, "throttle": 2, "deny": 3, "lock": 4}


@dataclass(slots=True)
class ScenarioResult:
    """How the engine did on one attack scenario."""

    scenario: int
    name: str
    actors: list[str]
    events: int
    start: str | None
    detected: bool = False
    contained: bool = False
    first_flag_s: float | None = None
    first_step_up_s: float | None = None
    first_contain_s: float | None = None
    all_contained_s: float | None = None
    records_exposed: int = 0
    fields_exposed: int = 0
    records_without_engine: int = 0
    masked_exposed: int = 0
    masked_without_engine: int = 0
    phone_searches_answered: int = 0
    phone_searches_without_engine: int = 0
    skipped: str | None = None


@dataclass(slots=True)
class NormalResult:
    """False alarms on normal staff."""

    employee_days: int = 0
    events: int = 0
    step_up_decisions: int = 0
    throttle_decisions: int = 0
    block_decisions: int = 0
    step_up_days: int = 0
    block_days: int = 0

    @property
    def step_ups_per_1000(self) -> float:
        """Employee-days with a step-up, per 1,000 employee-days."""
        return 1000 * self.step_up_days / self.employee_days if self.employee_days else 0.0

    @property
    def blocks_per_1000(self) -> float:
        """Employee-days with a false deny or lock, per 1,000 employee-days."""
        return 1000 * self.block_days / self.employee_days if self.employee_days else 0.0

    @property
    def blocks_per_10000(self) -> float:
        """Employee-days with a false deny or lock, per 10,000 employee-days."""
        return 10 * self.blocks_per_1000


@dataclass(slots=True)
class EvaluationResult:
    """Everything ``courierguard evaluate`` reports."""

    scenarios: list[ScenarioResult]
    normal: NormalResult
    events: int = 0
    decisions: int = 0
    unmatched_decisions: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``courierguard evaluate --json``)."""
        normal = asdict(self.normal)
        normal["step_ups_per_1000_employee_days"] = self.normal.step_ups_per_1000
        normal["false_blocks_per_1000_employee_days"] = self.normal.blocks_per_1000
        normal["false_blocks_per_10000_employee_days"] = self.normal.blocks_per_10000
        return {
            "events": self.events,
            "decisions": self.decisions,
            "unmatched_decisions": self.unmatched_decisions,
            "scenarios": [asdict(s) for s in self.scenarios],
            "normal": normal,
        }


@dataclass(slots=True)
class _Track:
    result: ScenarioResult
    actors: set[str]
    start: datetime | None
    contained_at: dict[str, datetime] = field(default_factory=dict)
    exposed: set[str] = field(default_factory=set)
    exposed_fields: set[tuple[str, str]] = field(default_factory=set)
    total: set[str] = field(default_factory=set)
    masked: set[str] = field(default_factory=set)
    masked_total: set[str] = field(default_factory=set)


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield line


def load_truth(path: Path) -> list[dict[str, Any]]:
    """The truth file's lines."""
    return [orjson.loads(line) for line in _lines(path)]


def load_decisions(lines: Iterable[bytes]) -> dict[str, str]:
    """Risk Decision v1 lines to {event_id: strongest action}."""
    out: dict[str, str] = {}
    for line in lines:
        decision = orjson.loads(line)
        eid = decision["event_id"]
        action = decision["action"]
        if _RANK.get(action, 0) >= _RANK.get(out.get(eid, "allow"), 0):
            out[eid] = action
    return out


_NOT_THE_FILE = (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError)
"""What reading a file of the wrong kind raises (another JSON shape, not JSON at all)."""


def evaluate(events: Path, truth: Path, decisions: Path) -> EvaluationResult:
    """Score the decisions file against the events and truth files (all JSON Lines).

    A file of the wrong kind (the arguments swapped, a truncated line) is an InvalidInput naming
    it, not a traceback."""
    try:
        truth_lines = load_truth(truth)
    except _NOT_THE_FILE:
        raise InvalidInput("truth", f"{truth} is not a truth file written by simulate") from None
    try:
        decided = load_decisions(_lines(decisions))
    except _NOT_THE_FILE:
        raise InvalidInput("decisions", f"{decisions} is not Risk Decision v1 lines (from replay)") from None
    try:
        return evaluate_lines(_lines(events), truth_lines, decided)
    except _NOT_THE_FILE:
        raise InvalidInput("events", f"{events} is not Access Event v1 lines written by simulate") from None


def evaluate_lines(
    events: Iterable[bytes], truth: list[dict[str, Any]], decisions: Iterable[bytes] | dict[str, str]
) -> EvaluationResult:
    """:func:`evaluate` over already-open inputs (lines of events and decisions, or the decisions
    already read by :func:`load_decisions`, and the parsed truth)."""
    decided = decisions if isinstance(decisions, dict) else load_decisions(decisions)
    tracks: dict[int, _Track] = {}
    labels: dict[str, int] = {}
    actor_start: dict[str, list[tuple[int, datetime]]] = {}
    victim_start: dict[str, datetime] = {}
    for line in truth:
        if line.get("type") != "scenario":
            continue
        sid = int(line["scenario"])
        start = datetime.fromisoformat(line["start"]) if line.get("start") else None
        result = ScenarioResult(
            scenario=sid,
            name=line.get("name", str(sid)),
            actors=list(line.get("actors", [])),
            events=len(line.get("event_ids", [])),
            start=line.get("start"),
            skipped=(line.get("notes") or {}).get("skipped"),
        )
        tracks[sid] = _Track(result, set(result.actors), start)
        for eid in line.get("event_ids", []):
            labels[eid] = sid
        if start is not None:
            for actor in result.actors:
                actor_start.setdefault(actor, []).append((sid, start))
            for victim in (line.get("notes") or {}).get("victims", ()):
                victim_start[victim] = min(start, victim_start.get(victim, start))

    normal = NormalResult()
    days: set[tuple[str, str]] = set()
    step_days: set[tuple[str, str]] = set()
    block_days: set[tuple[str, str]] = set()
    seen = 0
    matched = 0
    loads = orjson.loads
    for raw in events:
        seen += 1
        event = loads(raw)
        eid = event["id"]
        action = decided.get(eid)
        if action is not None:
            matched += 1
        actor = event["actor"]["id"]
        label = labels.get(eid)
        if label is not None:
            _score_attack_event(tracks[label], event, actor, action)
            continue
        starts = actor_start.get(actor)
        if starts:
            ts = datetime.fromisoformat(event["ts"])
            owned = False
            for other, start in starts:
                if ts >= start:
                    owned = True
                    if action == "lock":
                        track = tracks[other]
                        track.contained_at.setdefault(actor, ts)
                        _note_contain(track, actor, ts)
            if owned:
                continue
        held = victim_start.get(actor)
        if held is not None and datetime.fromisoformat(event["ts"]) >= held:
            continue
        if event["actor"].get("kind", "employee") != "employee":
            continue
        normal.events += 1
        day = (actor, event["ts"][:10])
        days.add(day)
        if action is None or action == "allow":
            continue
        if action == "step_up":
            normal.step_up_decisions += 1
            step_days.add(day)
        elif action == "throttle":
            normal.throttle_decisions += 1
        else:
            normal.block_decisions += 1
            block_days.add(day)
    normal.employee_days = len(days)
    normal.step_up_days = len(step_days)
    normal.block_days = len(block_days)
    for track in tracks.values():
        r = track.result
        r.records_exposed = len(track.exposed)
        r.fields_exposed = len(track.exposed_fields)
        r.records_without_engine = len(track.total)
        r.masked_exposed = len(track.masked)
        r.masked_without_engine = len(track.masked_total)
        r.contained = bool(track.actors) and r.events > 0 and set(track.contained_at) >= track.actors
    return EvaluationResult(
        scenarios=[tracks[k].result for k in sorted(tracks)],
        normal=normal,
        events=seen,
        decisions=len(decided),
        unmatched_decisions=len(decided) - matched,
    )


def _since(track: _Track, ts: datetime) -> float:
    return (ts - track.start).total_seconds() if track.start is not None else 0.0


def _note_contain(track: _Track, actor: str, ts: datetime) -> None:
    r = track.result
    if r.first_contain_s is None:
        r.first_contain_s = _since(track, ts)
    if set(track.contained_at) >= track.actors and r.all_contained_s is None:
        r.all_contained_s = _since(track, max(track.contained_at.values()))


def _score_attack_event(track: _Track, event: dict[str, Any], actor: str, action: str | None) -> None:
    r = track.result
    ts = datetime.fromisoformat(event["ts"])
    if track.start is None:
        track.start = ts
    ids = _served(event)
    fields = event.get("fields") or ()
    track.total.update(ids)
    masked = _served_masked(event)
    track.masked_total.update(masked)
    phone = _phone_search(event)
    r.phone_searches_without_engine += phone
    if action is not None and action != "allow":
        r.detected = True
        if r.first_flag_s is None:
            r.first_flag_s = _since(track, ts)
        if action == "step_up" and r.first_step_up_s is None:
            r.first_step_up_s = _since(track, ts)
        if action in _CONTAIN:
            if actor not in track.contained_at:
                track.contained_at[actor] = ts
                _note_contain(track, actor, ts)
            return
    if actor in track.contained_at:
        return
    track.masked.update(masked)
    r.phone_searches_answered += phone
    track.exposed.update(ids)
    track.exposed_fields.update((i, f) for i in ids for f in fields)


def _allowed(event: dict[str, Any]) -> bool:
    return bool((event.get("outcome") or {}).get("decision", "allow") == "allow")


def _served_masked(event: dict[str, Any]) -> list[str]:
    """Waybills the source system showed masked with this event (a view, list or search)."""
    if event.get("fields") or not _allowed(event):
        return []
    action = event["action"]
    if action == "waybill.view":
        resource = event.get("resource") or {}
        return [resource["id"]] if resource.get("id") else []
    if action in ("waybill.list", "waybill.search"):
        return list((event.get("query") or {}).get("result_ids") or [])
    return []


def _phone_search(event: dict[str, Any]) -> int:
    """1 for a served search by phone: found or not, it answered whether a number is a customer."""
    query = event.get("query") or {}
    return int(event["action"] == "waybill.search" and query.get("kind") == "by_phone" and _allowed(event))


def _served(event: dict[str, Any]) -> list[str]:
    """Waybills whose clear-text fields the source system served with this event."""
    if not event.get("fields"):
        return []
    if (event.get("outcome") or {}).get("decision", "allow") != "allow":
        return []
    resource = event.get("resource")
    if resource and resource.get("id"):
        return [resource["id"]]
    return list((event.get("query") or {}).get("result_ids") or [])
