from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from courierguard.cli.sim import app


def test_simulate_then_evaluate(tmp_path: Path) -> None:
    runner = CliRunner()
    events, truth, decisions = tmp_path / "ev.jsonl", tmp_path / "truth.jsonl", tmp_path / "dec.jsonl"
    result = runner.invoke(
        app,
        ["simulate", "--employees", "25", "--days", "3", "--seed", "2", "--scenarios", "1,7",
         "--attack-after-days", "1", "--out", str(events), "--truth", str(truth), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = truth.read_bytes().splitlines()
    assert [orjson.loads(line).get("scenario") for line in lines] == [None, 1, 7]
    first_attack = orjson.loads(lines[1])["event_ids"][0]
    decisions.write_bytes(
        orjson.dumps(
            {
                "event_id": first_attack,
                "ts": "2026-11-03T23:00:00+08:00",
                "actor_id": "x",
                "action": "lock",
                "score": 99,
                "reasons": [{"code": "new_device"}],
            }
        )
        + b"\n"
    )
    result = runner.invoke(app, ["evaluate", str(events), str(truth), str(decisions), "--json"])
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.output)
    assert data["scenarios"][0]["contained"] is True and data["scenarios"][0]["records_exposed"] == 0
    result = runner.invoke(app, ["evaluate", str(events), str(truth), str(decisions)])
    assert result.exit_code == 0 and "rented_night_fast" in result.output


def test_bad_scenarios_are_rejected(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--scenarios", "1,x", "--out", str(tmp_path / "e")])
    assert result.exit_code != 0
