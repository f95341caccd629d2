"""The events file: valid Access Event v1, time-ordered, unique ids, deterministic."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from courierguard.sim import SimConfig, simulate, write_files
from courierguard.sim.config import default_festival

from ..contracts import validator
from .conftest import Run

SCHEMAS = Path(__file__).resolve().parents[3] / "src" / "courierguard" / "schemas"
SHARED = Path(__file__).resolve().parents[4] / "shared" / "schemas"


def _validator() -> Draft202012Validator:
    return validator("access-event.v1")  # date-time checked too


@pytest.mark.parametrize("name", ["access-event.v1.schema.json", "risk-decision.v1.schema.json"])
def test_vendored_schemas_equal_the_shared_contracts(name: str) -> None:
    if not SHARED.is_dir():
        pytest.skip("../shared/schemas is not beside this checkout")
    assert (SCHEMAS / name).read_bytes() == (SHARED / name).read_bytes()


def test_every_kind_of_event_validates_against_the_schema(small_run: Run) -> None:
    validator = _validator()
    labels = small_run.labels()
    seen: set[tuple[str, str, int]] = set()
    checked = 0
    for i, event in enumerate(small_run.events):
        key = (event["action"], event["actor"]["role"], labels.get(event["id"], 0))
        # Every shape once, every labelled event, and a sample of the rest (full validation is slow).
        if key not in seen or key[2] or i % 25 == 0:
            seen.add(key)
            errors = list(validator.iter_errors(event))
            assert not errors, (event, errors[0].message)
            checked += 1
    assert checked > 10_000


def test_a_whole_tiny_run_validates(tmp_path: Path) -> None:
    config = SimConfig(employees=25, days=2, seed=3, attack_after_days=1)
    write_files(config, tmp_path / "e.jsonl", tmp_path / "t.jsonl")
    validator = _validator()
    lines = (tmp_path / "e.jsonl").read_bytes().splitlines()
    for line in lines:
        errors = list(validator.iter_errors(orjson.loads(line)))
        assert not errors, errors[0].message


def test_events_are_in_time_order_with_unique_ids_and_offsets(small_run: Run) -> None:
    previous = None
    ids = set()
    for event in small_run.events:
        ts = datetime.fromisoformat(event["ts"])
        assert event["ts"].endswith("+08:00")
        assert previous is None or ts >= previous
        previous = ts
        assert event["id"] not in ids
        ids.add(event["id"])
    assert len(ids) == small_run.summary.events


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    config = SimConfig(employees=40, days=4, seed=21, attack_after_days=1)
    write_files(config, tmp_path / "a.jsonl", tmp_path / "a.truth")
    write_files(config, tmp_path / "b.jsonl", tmp_path / "b.truth")
    other = SimConfig(employees=40, days=4, seed=22, attack_after_days=1)
    write_files(other, tmp_path / "c.jsonl", tmp_path / "c.truth")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.truth").read_bytes() == (tmp_path / "b.truth").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()


def test_iterator_api_yields_the_file_content(tmp_path: Path) -> None:
    config = SimConfig(employees=25, days=2, seed=5, attack_after_days=1)
    write_files(config, tmp_path / "e.jsonl", tmp_path / "t.jsonl")
    from_file = [orjson.loads(line) for line in (tmp_path / "e.jsonl").read_bytes().splitlines()]
    assert list(simulate(config)) == from_file


def test_festival_day_triples_courier_volume(small_run: Run) -> None:
    festival = {d.isoformat() for d in default_festival(small_run.config.start, small_run.config.days)}
    assert festival == {"2026-11-11"}
    views: dict[str, int] = {}
    for event in small_run.events:
        if event["actor"]["role"] == "courier" and event["action"] == "waybill.view":
            day = event["ts"][:10]
            views[day] = views.get(day, 0) + 1
    weekdays = [views[d] for d in ("2026-11-03", "2026-11-04", "2026-11-05", "2026-11-10")]
    assert views["2026-11-11"] > 2.4 * (sum(weekdays) / len(weekdays))


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="unknown scenarios"):
        SimConfig(scenarios=(99,))
    with pytest.raises(ValueError, match="employees"):
        SimConfig(employees=3)


def test_every_session_starts_with_its_login(small_run: Run) -> None:
    started: dict[str, str] = {}
    for event in small_run.events:
        sid = (event.get("session") or {}).get("id")
        if sid is None:
            assert event["action"] in ("auth.login_failed", "auth.device_bound")
            continue
        if event["action"] == "auth.login":
            assert sid not in started
            started[sid] = event["actor"]["id"]
        else:
            assert started.get(sid) == event["actor"]["id"], event


def test_waybill_status_never_comes_from_the_future(small_run: Run) -> None:
    first_day = small_run.config.start.isoformat()
    for event in small_run.events:
        status_ts = (event.get("resource") or {}).get("status_ts")
        if status_ts and not event["ts"].startswith(first_day):
            assert datetime.fromisoformat(status_ts) <= datetime.fromisoformat(event["ts"]), event
