"""The contract validators the tests use check date-time formats, whatever jsonschema has installed."""

from __future__ import annotations

import pytest

from .contracts import validator


@pytest.mark.parametrize(
    ("ts", "valid"),
    [
        ("2026-11-11T09:15:03.120+08:00", True), ("2026-11-11T01:15:03Z", True), ("2026-11-11t01:15:03z", True),
        ("2026-11-11T09:15:03+0800", False), ("2026-11-11T09:15+08:00", False), ("2026-11-11 09:15:03+08:00", False),
        ("2026-11-11T09:15:03", False), ("2026-02-30T09:15:03Z", False), ("2026-11-11T09:15:03+24:00", False),
    ],
)  # fmt: skip
def test_a_decision_ts_is_checked_as_an_rfc_3339_date_time(ts: str, valid: bool) -> None:
    decision = {"event_id": "e1", "ts": ts, "actor_id": "E1", "action": "deny", "score": 50.0, "reasons": []}
    assert validator("risk-decision.v1").is_valid(decision) is valid
