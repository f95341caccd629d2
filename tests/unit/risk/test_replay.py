"""Replay (monitor mode): schema semantics of the fast parser, robustness, the CLI, the output contract."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from courierguard.cli.risk import app
from courierguard.events import AccessEvent
from courierguard.risk.engine import RiskEngine
from courierguard.risk.record import BadEvent, from_dict, from_event
from courierguard.risk.replay import replay
from courierguard.risk.streams import iter_lines, rented_stream

from ..contracts import validator

SCHEMAS = Path("/work/shared/schemas") if Path("/work/shared/schemas").exists() else Path("shared/schemas")

FULL: dict[str, Any] = {
    "v": 1, "id": "e1", "ts": "2026-11-11T09:15:03.120+08:00", "tenant": "t",
    "actor": {"id": "E1", "kind": "employee", "role": "courier", "org_unit": "OUT-1"},
    "session": {"id": "S1", "device_id": "D1", "ip": "1.2.3.4", "user_agent": "ua",
                "location": {"lat": 39.9, "lon": 116.4}, "auth": "password"},
    "action": "waybill.reveal",
    "resource": {"type": "waybill", "id": "YT7000000000001", "org_unit": "OUT-1", "assignee": "E1",
                 "status": "out_for_delivery", "status_ts": "2026-11-11T08:00:00+08:00", "ticket": "TK1"},
    "query": {"kind": "by_phone", "result_count": 1, "result_ids": ["YT7000000000001"]},
    "fields": ["recipient.phone"], "purpose": "delivery_contact",
    "outcome": {"decision": "allow", "reason": "ok"},
}  # fmt: skip


def _mutate(path: str, value: Any) -> dict[str, Any]:
    e = copy.deepcopy(FULL)
    *parents, last = path.split(".")
    target = e
    for p in parents:
        target = target[p]
    if value is _DROP:
        del target[last]
    else:
        target[last] = value
    return e


_DROP = object()
BAD = [
    ("id", _DROP), ("id", ""), ("id", 5), ("ts", _DROP), ("ts", "2026-11-11T09:15:03"), ("ts", "yesterday"),
    ("actor", _DROP), ("actor.id", _DROP), ("actor.id", "x" * 65), ("actor.role", "pirate"),
    ("action", "waybill.steal"), ("action", _DROP), ("session.location.lat", 91), ("session.location", {"lat": 1}),
    ("session.auth", "sms"), ("resource.status", "lost"), ("resource.type", "parcel"),
    ("resource.status_ts", "noon"), ("query.result_count", -1), ("query.result_count", 1.5),
    ("query.result_ids", [1]), ("fields", ["recipient.phone", "recipient.phone"]), ("fields", ["customer.ssn"]),
    ("outcome.decision", "maybe"), ("v", 2), ("purpose", "p" * 129),
    # ISO 8601 forms that are not RFC 3339 date-times (the schema's "date-time"): replay copies an
    # event's ts into its Risk Decision, which would then break the contract downstream.
    ("ts", "2026-11-11T09:15:03+0800"), ("ts", "20261111T091503+08:00"), ("ts", "2026-11-11T09:15+08:00"),
    ("ts", "2026-11-11T09+08:00"), ("ts", "2026-W46-3T09:15:03+08:00"), ("ts", "2026-11-11T09:15:03,5+08:00"),
    ("ts", "2026-11-11T09:15:03+08"), ("ts", "2026-11-11T09:15:03+08:00:30"), ("ts", 1762823703),
    ("resource.status_ts", "2026-11-11T08:00+08:00"), ("resource.status_ts", 1762819200),
]  # fmt: skip
GOOD = [
    ("tenant", _DROP), ("session", _DROP), ("resource", _DROP), ("query", _DROP), ("fields", _DROP),
    ("outcome", _DROP), ("v", _DROP), ("actor.role", _DROP), ("session.location", _DROP),
    ("unknown_top", {"x": 1}), ("actor.unknown", 1), ("resource.extra", [1, 2]),
    ("ts", "2026-11-11T01:15:03Z"), ("ts", "2026-11-11t01:15:03z"), ("ts", "2026-11-11T09:15:03.1234567+08:00"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value"), BAD, ids=[p for p, _ in BAD])
def test_fast_parser_rejects_what_the_model_rejects(path: str, value: Any) -> None:
    e = _mutate(path, value)
    with pytest.raises(ValidationError):
        AccessEvent.model_validate_json(orjson.dumps(e))
    with pytest.raises(BadEvent) as info:
        from_dict(e)
    assert "E1" not in str(info.value) and "1.2.3.4" not in str(info.value)


@pytest.mark.parametrize(("path", "value"), GOOD, ids=[p for p, _ in GOOD])
def test_fast_parser_accepts_what_the_model_accepts(path: str, value: Any) -> None:
    e = _mutate(path, value)
    model = AccessEvent.model_validate_json(orjson.dumps(e))
    fast = from_dict(e)
    slow = from_event(model)
    for name in ("event_id", "ts", "actor", "role", "session", "device", "ip", "lat", "action", "res_id",
                 "assignee", "ticket", "fields", "exposed", "outcome", "hour", "day", "q_kind", "listed"):  # fmt: skip
        assert getattr(fast, name) == getattr(slow, name), name
    assert (fast.ids is None) == (slow.ids is None) and list(fast.ids or ()) == list(slow.ids or ())


def _decisions(buf: io.BytesIO) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in buf.getvalue().splitlines()]


def test_replay_reports_bad_lines_and_keeps_going() -> None:
    events, attack = rented_stream(seed=1, couriers=4, days=5, attack_events=30)
    lines = list(iter_lines(events))
    lines.insert(10, b"{not json\n")
    lines.insert(20, b'{"id": "x"}\n')
    lines.insert(30, b"\n")
    lines.insert(40, b"[1, 2]\n")
    bad: list[tuple[int, str]] = []
    out = io.BytesIO()
    summary = replay(lines, out, RiskEngine(), on_bad=lambda n, m: bad.append((n, m)))
    assert [n for n, _ in bad] == [11, 21, 41]
    assert summary.bad_lines == 3 and summary.events == len(events)
    decided = _decisions(out)
    checked = validator("risk-decision.v1")  # date-time too
    for d in decided:
        checked.validate(d)
        assert d["action"] != "allow"
    assert {d["event_id"] for d in decided if d["action"] == "lock"} & attack


def test_replay_matches_the_inline_path() -> None:
    events, _ = rented_stream(seed=2, couriers=3, days=5, attack_events=20)
    out = io.BytesIO()
    replay(iter_lines(events), out, RiskEngine())
    inline = RiskEngine()
    expected = []
    for e in events:
        d = inline.assess(AccessEvent.model_validate(e))
        if d.action != "allow":
            expected.append((d.event_id, d.action.value, d.score, [r.code for r in d.reasons]))
    got = [
        (d["event_id"], d["action"], d["score"], [r["code"] for r in d["reasons"]]) for d in _decisions(out)
    ]
    assert got == expected


def test_cli_replay(tmp_path: Path) -> None:
    events, _ = rented_stream(seed=4, couriers=3, days=5, attack_events=20)
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"".join(iter_lines(events)) + b'{"id": 1}\n')
    dst = tmp_path / "decisions.jsonl"
    result = CliRunner().invoke(app, [str(src), "--out", str(dst), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"events.jsonl:{len(events) + 1}: bad event: id: not a string" in result.output
    assert "replayed" in result.output and "lock" in result.output
    assert dst.read_bytes().count(b"\n") >= 1


def test_replay_reports_events_out_of_time_order() -> None:
    """The input's order is the contract; a line dated years ahead would shift every later
    decision, so it is pointed at (and the later lines counted), not passed over in silence."""
    events, _ = rented_stream(seed=1, couriers=4, days=2, attack_events=5)
    lines = list(iter_lines(events))
    assert replay(lines, io.BytesIO(), RiskEngine()).out_of_order == 0  # the simulator's stream is in order
    future = orjson.loads(lines[1])
    future["ts"] = "2036-01-01T00:00:00+08:00"
    lines[1] = orjson.dumps(future) + b"\n"
    seen: list[tuple[int, str]] = []
    summary = replay(lines, io.BytesIO(), RiskEngine(), on_disorder=lambda n, m: seen.append((n, m)))
    assert summary.out_of_order == len(lines) - 2 and summary.events == len(lines)
    assert seen[0][0] == 3 and "earlier than line 2" in seen[0][1]
