"""Investigator queries, SIEM export, retention and the CLI, on SQLite."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from courierguard.audit import (
    AuditQueries,
    EntryKind,
    ExportMismatch,
    VerificationError,
    archive,
    export_jsonl,
    export_ocsf,
    open_audit_log,
    verify,
    verify_archive,
    verify_inclusion,
)
from courierguard.cli.audit import app
from courierguard.clock import FixedClock
from courierguard.errors import InvalidInput
from courierguard.events import AccessEvent
from courierguard.vault.keys import LocalKeyFile

START = datetime(2025, 1, 1, tzinfo=UTC)


def _event(i: int, when: datetime) -> AccessEvent:
    return AccessEvent.model_validate(
        {
            "id": f"ev-{i}",
            "ts": when,
            "actor": {"id": f"E{i % 3}", "role": "courier", "org_unit": "OU1"},
            "session": {"id": "s1", "device_id": "d1", "ip": "10.0.0.1", "auth": "totp"},
            "action": "auth.login" if i == 0 else "waybill.reveal",
            "resource": {"type": "waybill", "id": f"YT{i:04d}"},
            "fields": ["recipient.phone"],
            "purpose": "delivery",
            "outcome": {"decision": "deny" if i == 4 else "allow"},
        }
    )


@pytest.fixture
def filled(sqlite_engine: Engine, key_provider: LocalKeyFile) -> Engine:
    """30 access events, one a day from START, plus one admin entry; heads signed."""
    clock = FixedClock(START)
    log = open_audit_log(sqlite_engine, key_provider, clock=clock)
    for i in range(30):
        log.append_event(_event(i, clock.now()))
        clock.advance(timedelta(days=1))
    log.append(EntryKind.ADMIN, {"actor": "admin1", "waybills": ["YT0001"], "change": "role"})
    log.close()
    return sqlite_engine


def test_query_by_actor_paginates(filled: Engine) -> None:
    queries = AuditQueries(filled)
    page = queries.by_actor("E1", limit=4)
    assert [r.index for r in page.records] == [1, 4, 7, 10]
    assert page.next_cursor == 11
    rest = queries.by_actor("E1", limit=100, cursor=page.next_cursor)
    assert [r.index for r in rest.records] == [13, 16, 19, 22, 25, 28]
    assert rest.next_cursor is None


def test_query_by_waybills_and_time_with_proofs(filled: Engine) -> None:
    queries = AuditQueries(filled)
    page = queries.by_waybills(["YT0001", "YT0005"], with_proofs=True)
    assert [r.index for r in page.records] == [1, 5, 30]
    head = queries.tree_head()
    for record in page.records:
        assert record.proof is not None and record.proof_tree_size == head.size
        verify_inclusion(record.index, head.size, record.leaf_hash, list(record.proof), head.root)
    window = queries.by_time(START + timedelta(days=2), START + timedelta(days=5))
    assert [r.index for r in window.records] == [2, 3, 4]
    assert window.records[0].body is not None and window.records[0].body["id"] == "ev-2"
    with pytest.raises(InvalidInput):
        queries.by_waybills([])
    with pytest.raises(InvalidInput):
        queries.search(limit=0)


def test_export_jsonl_is_access_event_v1(filled: Engine) -> None:
    out = io.BytesIO()
    assert export_jsonl(filled, out) == 30
    lines = out.getvalue().splitlines()
    assert AccessEvent.from_json(lines[3]) == _event(3, START + timedelta(days=3))


def test_export_ocsf_mapping(filled: Engine) -> None:
    out = io.BytesIO()
    assert export_ocsf(filled, out) == 30
    events = [orjson.loads(x) for x in out.getvalue().splitlines()]
    login, reveal, denied = events[0], events[1], events[4]
    assert (login["class_uid"], login["activity_id"], login["type_uid"]) == (3002, 1, 300201)
    assert login["is_mfa"] is True
    assert (reveal["class_uid"], reveal["activity_id"], reveal["type_uid"]) == (6003, 2, 600302)
    assert reveal["api"]["operation"] == "waybill.reveal"
    assert reveal["resources"][0]["uid"] == "YT0001"
    assert reveal["status_id"] == 1 and denied["status_id"] == 2
    assert reveal["actor"]["user"]["uid"] == "E1"
    assert reveal["unmapped"]["purpose"] == "delivery"
    assert reveal["time"] == int((START + timedelta(days=1)).timestamp() * 1000)


def test_export_window_reads_the_hashed_time(filled: Engine) -> None:
    out = io.BytesIO()
    assert export_jsonl(filled, out, since=START + timedelta(days=2), until=START + timedelta(days=5)) == 3
    assert [orjson.loads(x)["id"] for x in out.getvalue().splitlines()] == ["ev-2", "ev-3", "ev-4"]
    assert export_jsonl(filled, io.BytesIO(), since=START + timedelta(days=400)) == 0


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        # A body edited in place: the SIEM would have kept the forgery.
        (
            "UPDATE audit_entries SET entry = CAST(replace(entry, 'ev-3', 'ev-X') AS BLOB) WHERE seq = 3",
            "leaf hash",
        ),
        # Relabelled as another kind, the entry had dropped out of the export silently.
        ("UPDATE audit_entries SET kind = 'system' WHERE seq = 3", "columns differ"),
        # Re-timed out of the window asked for: dropped silently too.
        ("UPDATE audit_entries SET ts_us = ts_us + 86400000000 * 900 WHERE seq = 3", "columns differ"),
    ],
)
def test_export_refuses_entries_that_do_not_match_their_hash(filled: Engine, tamper: str, says: str) -> None:
    with filled.begin() as conn:
        conn.execute(text(tamper))
    with pytest.raises(ExportMismatch, match=f"entry 3.*{says}"):
        export_jsonl(filled, io.BytesIO(), since=START, until=START + timedelta(days=10))


def test_export_cli_leaves_no_partial_file(filled: Engine, tmp_path: Path) -> None:
    runner = CliRunner()
    url = ["--database-url", filled.url.render_as_string(hide_password=False)]
    (tmp_path / "siem").mkdir()
    out = tmp_path / "siem" / "audit.jsonl"
    with filled.begin() as conn:
        conn.execute(
            text(
                "UPDATE audit_entries SET entry = CAST(replace(entry, 'ev-20', 'ev-XX') AS BLOB) WHERE seq = 20"
            )
        )
    result = runner.invoke(app, ["export", "--out", str(out), *url])
    assert result.exit_code == 2 and "entry 20 does not match its leaf hash" in result.output
    assert "Traceback" not in result.output
    assert list((tmp_path / "siem").iterdir()) == []


def test_archive_holds_to_the_retention_period_set(
    filled: Engine, key_provider: LocalKeyFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With three years set, archiving at 180 days had purged bodies verify then held for tampering,
    # for good (the docs review's D4).
    clock = FixedClock(START + timedelta(days=200))
    with pytest.raises(InvalidInput, match="at least 1095"):
        archive(filled, tmp_path / "arch", before_days=180, retention_days=1095, clock=clock)
    assert archive(filled, tmp_path / "arch", retention_days=1095, clock=clock).archived == 0
    assert archive(filled, tmp_path / "arch", retention_days=190, clock=clock).archived == 10  # the default
    runner = CliRunner()
    url = ["--database-url", filled.url.render_as_string(hide_password=False)]
    monkeypatch.setenv("COURIERGUARD_AUDIT_RETENTION_DAYS", "1095")
    refused = runner.invoke(app, ["archive", "--before-days", "180", "--out", str(tmp_path / "cli"), *url])
    assert refused.exit_code == 2 and "at least 1095" in refused.output
    assert not (tmp_path / "cli").exists()
    kept = runner.invoke(app, ["archive", "--out", str(tmp_path / "cli"), *url])
    assert kept.exit_code == 0 and "nothing older than the retention window" in kept.output
    assert verify(filled, key_provider.signer().public_key, retention_days=190).ok


def test_archive_keeps_verification(filled: Engine, key_provider: LocalKeyFile, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        archive(filled, tmp_path, before_days=30)
    clock = FixedClock(START + timedelta(days=180 + 10))
    result = archive(filled, tmp_path / "arch", before_days=180, clock=clock)
    assert (result.archived, result.first_index, result.last_index) == (10, 0, 9)
    assert result.path is not None and verify_archive(result.path, filled) == 10
    assert result.path.stat().st_mode & 0o777 == 0o600
    report = verify(filled, key_provider.signer().public_key)
    assert report.ok, report.summary()
    assert report.archived == 10
    record = AuditQueries(filled).entry(3, with_proof=True)
    assert record.body is None and record.proof is not None
    assert archive(filled, tmp_path / "arch", before_days=180, clock=clock).archived == 0
    # A doctored archive is caught, naming the row.
    table = pq.read_table(result.path)
    entries = table.column("entry").to_pylist()
    entries[4] = entries[4].replace(b"E1", b"E2")
    doctored = table.set_column(4, "entry", pa.array(entries, type=pa.binary()))
    bad = tmp_path / "bad.parquet"
    pq.write_table(doctored, bad)
    with pytest.raises(VerificationError) as info:
        verify_archive(bad)
    assert info.value.index == 4


def test_cli(filled: Engine, key_provider: LocalKeyFile, tmp_path: Path) -> None:
    runner = CliRunner()
    url = ["--database-url", filled.url.render_as_string(hide_password=False)]
    keys = ["--key-file", str(key_provider.path)]
    result = runner.invoke(app, ["verify", *url, *keys])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: 31 entries")
    head = orjson.loads(runner.invoke(app, ["head", *url, *keys]).output)
    assert head["size"] == 31 and head["public_key"] == key_provider.signer().public_key.hex()
    pinned = runner.invoke(app, ["head", *url, "--public-key", head["public_key"]])
    assert pinned.exit_code == 0 and orjson.loads(pinned.stdout) == head
    inclusion = runner.invoke(app, ["proof", "inclusion", "5", "--size", "20", *url])
    proof = orjson.loads(inclusion.stdout)
    # No stored head signs size 20: the root is computed, and the operator is told so.
    assert proof["root_signed"] is False and "no stored tree head signs size 20" in inclusion.stderr
    verify_inclusion(
        5,
        20,
        bytes.fromhex(proof["leaf_hash"]),
        [bytes.fromhex(h) for h in proof["proof"]],
        bytes.fromhex(proof["root"]),
    )
    cons = runner.invoke(app, ["proof", "consistency", "7", "31", *url])
    assert cons.exit_code == 0 and len(orjson.loads(cons.stdout)["proof"]) > 0
    assert orjson.loads(cons.stdout)["new_root_signed"] is True
    query = orjson.loads(runner.invoke(app, ["query", "--actor", "E2", "--limit", "2", *url]).output)
    assert [r["index"] for r in query["records"]] == [2, 5] and query["next_cursor"] == 6
    out = tmp_path / "x.jsonl"
    assert runner.invoke(app, ["export", "--format", "ocsf", "--out", str(out), *url]).exit_code == 0
    assert len(out.read_bytes().splitlines()) == 30
    bad = runner.invoke(app, ["export", "--format", "csv", "--out", str(out), *url])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    bad = runner.invoke(app, ["proof", "inclusion", "99", *url])
    assert bad.exit_code == 2 and "Invalid input" in bad.output
    bad = runner.invoke(app, ["archive", "--before-days", "10", "--out", str(tmp_path), *url])
    assert bad.exit_code == 2
    other = LocalKeyFile(tmp_path / "other.json")
    failed = runner.invoke(app, ["verify", *url, "--public-key", other.signer().public_key.hex()])
    assert failed.exit_code == 1 and "bad_signature" in failed.output
    # A head signed by another key (forged in the database, or another deployment's) is not printed
    # as if it were this trail's: `audit head` printed whatever was stored, exit 0.
    failed = runner.invoke(app, ["head", *url, "--public-key", other.signer().public_key.hex()])
    assert failed.exit_code == 1 and "FAILED" in failed.stderr and failed.stdout == "", failed.output


def test_archive_reads_age_from_the_hashed_entry_not_the_column(
    filled: Engine, key_provider: LocalKeyFile, tmp_path: Path
) -> None:
    """ts_us is an index column nothing signs: setting it to 2020 must not purge a young entry
    (#10, right after the old ones, so that only the hashed time stops the archive there)."""
    from sqlalchemy import text

    with filled.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET ts_us = 1577836800000000 WHERE seq = 10"))
    clock = FixedClock(START + timedelta(days=190))  # the first 10 entries are old enough, not #10
    result = archive(filled, tmp_path / "arch", before_days=180, clock=clock)
    assert (result.archived, result.first_index, result.last_index) == (10, 0, 9)
    assert AuditQueries(filled).entry(10).body is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inclusion", "5", "--size", "100"], "size: must be between 1 and 31, the entries stored"),
        (["inclusion", "5", "--size", "0"], "size: must be between 1 and 31"),
        (["inclusion", "12", "--size", "10"], r"index: no entry 12 in a tree of 10 \(indices 0 to 9\)"),
        (["inclusion", "--", "-1"], "index: no entry -1 in a tree of 31"),
        (["consistency", "3", "100"], r"need 0 <= old <= new <= 31, the entries stored"),
        (["consistency", "20", "10"], r"need 0 <= old <= new <= 31"),
    ],
)
def test_proof_cli_names_the_bound_that_was_crossed(filled: Engine, args: list[str], message: str) -> None:
    command, *rest = args
    result = CliRunner().invoke(app, ["proof", command, "--database-url", str(filled.url), *rest])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert re.search(message, result.output), result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_body_rewritten_under_its_hash_is_never_served(filled: Engine) -> None:
    # Shown with a proof that verified, the proof being of the hash (the audit review's D6).
    with filled.begin() as conn:
        entry = conn.execute(text("SELECT entry FROM audit_entries WHERE seq = 4")).scalar_one()
        conn.execute(
            text("UPDATE audit_entries SET entry = :e WHERE seq = 4"),
            {"e": bytes(entry).replace(b'"deny"', b'"allow"')},
        )
    with pytest.raises(VerificationError, match="entry 4 does not match its leaf hash"):
        AuditQueries(filled).by_actor("E1", with_proofs=True)
    result = CliRunner().invoke(app, ["query", "--actor", "E1", "--database-url", str(filled.url)])
    assert (
        result.exit_code == 2
        and "entry 4 does not match" in result.output
        and "Traceback" not in result.output
    )


def test_records_show_what_was_hashed_not_the_searchable_copies(filled: Engine) -> None:
    with filled.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET actor = 'E2', ts_us = 0 WHERE seq = 1"))
    record = AuditQueries(filled).search(limit=2).records[1]
    assert (record.index, record.actor) == (1, "E1") and record.timestamp.year == 2025


def _archived(filled: Engine, tmp_path: Path) -> Path:
    result = archive(
        filled, tmp_path / "arch", before_days=180, clock=FixedClock(START + timedelta(days=190))
    )
    assert result.path is not None
    return result.path


def _rewrite(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(change(pq.read_table(path)), path)


@pytest.mark.parametrize(
    ("change", "index"),
    [
        (lambda t: t.slice(0, 7), 7),  # rows dropped from the end
        (lambda t: pa.concat_tables([t.slice(0, 3), t.slice(5)]), 3),  # rows dropped from the middle
        (lambda t: t.filter(pa.compute.not_equal(t.column("actor"), "E1")), 1),  # one actor's rows
        (lambda t: t.slice(0, 0), 0),  # emptied
        (lambda t: pa.concat_tables([t.slice(0, 7), t.slice(6, 1), t.slice(8)]), 7),  # row 7 := row 6
        (lambda t: t.set_column(3, "actor", pa.array(["X"] * t.num_rows)), 0),  # unhashed column
        (lambda t: t.set_column(0, "seq", pa.array([1, 0, *range(2, t.num_rows)], pa.int64())), 0),  # relabel
    ],
    ids=["tail", "middle", "actor", "empty", "duplicate", "column", "relabel"],
)
def test_a_doctored_archive_is_caught_by_index(
    filled: Engine, tmp_path: Path, change: Callable[[pa.Table], pa.Table], index: int
) -> None:
    # Dropped, repeated, relabelled rows and edited columns all passed (the audit review's D4).
    path = _archived(filled, tmp_path)
    _rewrite(path, change)
    with pytest.raises(VerificationError) as info:
        verify_archive(path, filled)
    assert info.value.index == index, info.value
    result = CliRunner().invoke(app, ["verify-archive", str(path.parent), "--database-url", str(filled.url)])
    assert result.exit_code == 1 and f"FAILED at {index}" in result.output, result.output


def test_archives_must_cover_exactly_the_purged_entries(filled: Engine, tmp_path: Path) -> None:
    path = _archived(filled, tmp_path)
    result = CliRunner().invoke(app, ["verify-archive", str(path.parent), "--database-url", str(filled.url)])
    assert result.exit_code == 0 and "OK: 10 archived entries in 1 files" in result.output, result.output
    path.rename(path.with_name("elsewhere.bin"))  # the only archive, moved away
    result = CliRunner().invoke(app, ["verify-archive", str(path.parent), "--database-url", str(filled.url)])
    assert result.exit_code == 1 and "FAILED at 0" in result.output, result.output


def test_proofs_from_forged_tiles_are_refused_not_handed_out(filled: Engine) -> None:
    # A proof that no signed head accepts, handed to police or a regulator (the audit review's D7).
    with filled.begin() as conn:
        conn.execute(text("UPDATE audit_tiles SET hash = :h"), {"h": b"\x00" * 32})
    # Small log: no tile is complete; forge the tree another way, through a leaf hash the tiles cache.
    with filled.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET leaf_hash = :h WHERE seq = 2"), {"h": b"\x01" * 32})
    runner = CliRunner()
    url = ["--database-url", filled.url.render_as_string(hide_password=False)]
    result = runner.invoke(app, ["proof", "inclusion", "5", "--size", "31", *url])
    assert result.exit_code == 2 and "differs from the signed one" in result.output, result.output
    with pytest.raises(VerificationError):
        AuditQueries(filled).by_actor("E2", with_proofs=True)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"PAR1 not a parquet file"),  # garbage
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # cut short
        lambda p: pq.write_table(pa.table({"seq": [0]}), p),  # a Parquet file, not an archive
    ],
    ids=["garbage", "truncated", "foreign"],
)
def test_an_unreadable_archive_file_is_a_failed_check_naming_it(
    filled: Engine, tmp_path: Path, damage: Callable[[Path], object]
) -> None:
    """It said only "Error: ArrowInvalid" (exit 2): a damaged archive is what verify-archive is for."""
    path = _archived(filled, tmp_path)
    damage(path)
    result = CliRunner().invoke(app, ["verify-archive", str(path.parent), "--database-url", str(filled.url)])
    assert result.exit_code == 1 and "FAILED at 0" in result.output and path.name in result.output, (
        result.output
    )


def test_the_cli_archive_is_on_the_trail_before_the_purge(
    filled: Engine, key_provider: LocalKeyFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A purge of who-read-what bodies left no entry of its own (the privacy review).
    monkeypatch.setenv("COURIERGUARD_KEY_FILE", str(key_provider.path))
    url = ["--database-url", filled.url.render_as_string(hide_password=False)]
    done = CliRunner().invoke(app, ["archive", "--out", str(tmp_path / "arch"), *url])
    assert done.exit_code == 0, done.output
    (path,) = (tmp_path / "arch").iterdir()
    entry = AuditQueries(filled).search(kinds=[EntryKind.SYSTEM], limit=10).records[-1].body
    assert entry is not None and entry["what"] == "audit.archive"
    assert (entry["first"], entry["file"]) == (0, path.name)
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert verify(filled, key_provider.signer().public_key).ok


def test_no_purge_without_the_record_of_it(filled: Engine, tmp_path: Path) -> None:
    def unrecorded(_done: object) -> None:
        raise OSError("the trail is unreachable")

    clock = FixedClock(START + timedelta(days=190))
    with pytest.raises(OSError):
        archive(filled, tmp_path / "arch", before_days=180, clock=clock, before_purge=unrecorded)
    assert AuditQueries(filled).entry(3).body is not None  # every body still in the database


def test_query_by_session_finds_one_sessions_entries_and_its_alerts(
    sqlite_engine: Engine, key_provider: LocalKeyFile
) -> None:
    """An alert names a session: everything that session did (served or refused) and the alerts
    about it, in one query, paged like any other; another account's session of the same id is not it."""
    clock = FixedClock(START)
    log = open_audit_log(sqlite_engine, key_provider, clock=clock)
    for i in range(12):
        body = _event(i, clock.now()).model_dump(mode="json", exclude_none=True)
        body["actor"]["id"] = "E9" if i == 11 else "E1"
        body["session"]["id"] = "s_renter" if i % 2 else "s_owner"
        log.append(EntryKind.ACCESS, body)
        clock.advance(timedelta(minutes=1))
    alert = {"v": 1, "id": "a1", "actor_id": "E1", "session_id": "s_renter", "event_id": "ev-9",
             "ts": clock.now().isoformat(), "action": "lock", "score": 90.0, "reasons": [{"code": "enumeration"}]}  # fmt: skip
    log.append(EntryKind.ALERT, alert)
    log.append(EntryKind.ADMIN, {"actor": "E1", "change": "role"})
    log.close()
    queries = AuditQueries(sqlite_engine)
    renter = [r.index for r in queries.each(actor="E1", session="s_renter")]
    assert renter == [1, 3, 5, 7, 9, 12]  # entry 11 is E9's, 12 the alert, 13 names no session
    assert [r.index for r in queries.each(employee="E1", session="s_owner")] == [0, 2, 4, 6, 8, 10]
    page = queries.search(actor="E1", session="s_renter", limit=4)
    assert [r.index for r in page.records] == [1, 3, 5, 7] and page.next_cursor == 8
    rest = queries.search(actor="E1", session="s_renter", limit=4, cursor=page.next_cursor)
    assert [r.index for r in rest.records] == [9, 12] and rest.next_cursor is None
    with pytest.raises(InvalidInput, match="session"):
        queries.search(session="s_renter")  # a session is one account's: name it
    runner = CliRunner()
    url = ["--database-url", sqlite_engine.url.render_as_string(hide_password=False)]
    out = runner.invoke(app, ["query", "--actor", "E1", "--session", "s_renter", "--proofs", *url])
    assert out.exit_code == 0, out.output
    records = orjson.loads(out.stdout)["records"]
    assert [r["index"] for r in records] == renter and all(r["proof"] for r in records)
    bad = runner.invoke(app, ["query", "--session", "s_renter", *url])
    assert bad.exit_code == 2 and "session" in bad.output


def test_evidence_for_a_head_the_regulator_already_holds(
    sqlite_engine: Engine, key_provider: LocalKeyFile
) -> None:
    """`audit head`, then `audit query --proofs`: on a live trail a newer head is signed in between
    (one a second while requests arrive), the proofs were in that newer head, and the docs' check
    of the pair failed ("proof for another head"). Proofs now name their head, and can be asked
    for in a given stored head (the one handed over, a witness line's)."""
    clock = FixedClock(START)
    log = open_audit_log(sqlite_engine, key_provider, clock=clock)
    for i in range(6):
        log.append_event(_event(i, clock.now()))
        clock.advance(timedelta(minutes=1))
    log.checkpoint()
    runner = CliRunner()
    url = ["--database-url", sqlite_engine.url.render_as_string(hide_password=False)]
    given = orjson.loads(runner.invoke(app, ["head", *url, "--key-file", str(key_provider.path)]).stdout)
    for i in range(6, 9):  # the server goes on working and signs a newer head
        log.append_event(_event(i, clock.now()))
        clock.advance(timedelta(minutes=1))
    log.close()
    latest = orjson.loads(runner.invoke(app, ["query", "--actor", "E1", "--proofs", *url]).stdout)
    assert latest["head"]["size"] == 9 and {r["proof_tree_size"] for r in latest["records"]} == {9}
    pinned = runner.invoke(
        app, ["query", "--actor", "E1", "--proofs", "--head-size", str(given["size"]), *url]
    )
    assert pinned.exit_code == 0, pinned.output
    out = orjson.loads(pinned.stdout)
    assert out["head"] == given and [r["index"] for r in out["records"]] == [1, 4, 7]
    for r in out["records"]:
        if r["index"] < given["size"]:
            assert r["proof_tree_size"] == given["size"]
            proof = [bytes.fromhex(h) for h in r["proof"]]
            verify_inclusion(
                r["index"], given["size"], bytes.fromhex(r["leaf_hash"]), proof, bytes.fromhex(given["root"])
            )
        else:  # appended after the head: no proof in it
            assert r.get("proof") is None
    unsigned = runner.invoke(app, ["query", "--actor", "E1", "--proofs", "--head-size", "99", *url])
    assert unsigned.exit_code == 2 and "no signed tree head of 99 entries" in unsigned.output


def test_entries_after_the_latest_head_start_the_next_page_of_a_search_with_proofs(
    sqlite_engine: Engine, key_provider: LocalKeyFile
) -> None:
    """Evidence review: an entry committed between the head's signing and the search's read came
    back without a proof, and the outsider's check failed on it. Such entries now start the next
    page, to be proved under a later head; a page of them only is served unproved (no head may come)."""
    clock = FixedClock(START)
    for first, count in ((0, 20), (20, 11)):
        log = open_audit_log(sqlite_engine, key_provider, clock=clock)
        for i in range(first, first + count):
            log.append_event(_event(i, clock.now()))
            clock.advance(timedelta(days=1))
        log.close()
    with sqlite_engine.begin() as conn:  # as if entries 20-30 were committed after the latest head
        conn.execute(text("DELETE FROM audit_tree_heads WHERE size > 20"))
    queries = AuditQueries(sqlite_engine)
    assert queries.tree_head().size == 20
    page = queries.by_actor("E1", with_proofs=True)
    assert [r.index for r in page.records] == [1, 4, 7, 10, 13, 16, 19]
    assert all(r.proof is not None for r in page.records) and page.next_cursor == 22
    rest = queries.by_actor("E1", with_proofs=True, cursor=page.next_cursor)
    assert [r.index for r in rest.records] == [22, 25, 28] and rest.next_cursor is None
    assert all(r.proof is None for r in rest.records)
    assert [r.index for r in queries.each(actor="E1", with_proofs=True)] == [
        1,
        4,
        7,
        10,
        13,
        16,
        19,
        22,
        25,
        28,
    ]
