"""`courierguard init` and `keys`: one-line errors, audit entries for key operations."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from courierguard.audit import AuditQueries, EntryKind, verify
from courierguard.cli.main import app
from courierguard.db import create_db_engine
from courierguard.vault import LocalKeyFile

runner = CliRunner()


def test_init_rotate_and_shred_are_recorded(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert runner.invoke(app, ["init", *data]).exit_code == 0
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    # The databases hold ciphertext, masks, blind indexes and who-read-what: owner-only too.
    for database in ("courierguard.sqlite3", "courierguard-audit.sqlite3"):
        assert (tmp_path / database).stat().st_mode & 0o777 == 0o600
    rotated = runner.invoke(app, ["keys", "rotate", *data])
    assert rotated.exit_code == 0, rotated.output
    assert "active key-encryption key" in rotated.output and "keys retire" in rotated.output
    retired = runner.invoke(app, ["keys", "retire", *data])
    assert retired.exit_code == 0 and "retired: kek-" in retired.output, retired.output
    _ingest_one(tmp_path, datetime(2026, 4, 15, tzinfo=UTC))
    shred = runner.invoke(app, ["keys", "shred", "--month", "2026-04", "--yes", *data])
    assert shred.exit_code == 0, shred.output
    assert "1 parties" in shred.output or "2 parties" in shred.output
    # The trail has a file of its own beside the SQLite database.
    engine = create_db_engine(f"sqlite:///{tmp_path / 'courierguard-audit.sqlite3'}")
    entries = AuditQueries(engine).search(kinds=[EntryKind.KEY], limit=100).records
    assert [e.body["op"] for e in entries] == [
        "kek.rotate.start",
        "kek.rotate.done",
        "kek.retire.start",
        "kek.retire.done",
        "month.shred.start",
        "month.shred.done",
    ]
    report = verify(engine, LocalKeyFile(tmp_path / "keys.json").signer().public_key)
    assert report.ok, report.summary()


def _ingest_one(tmp_path: Path, created: datetime) -> None:
    from courierguard.domain import NewWaybill
    from courierguard.sim.synthetic import PartyGenerator
    from courierguard.vault import Vault

    engine = create_db_engine(f"sqlite:///{tmp_path / 'courierguard.sqlite3'}")
    gen = PartyGenerator(2)
    Vault(engine, LocalKeyFile(tmp_path / "keys.json"), tenant="demo").ingest(
        [NewWaybill("YT0000000000002", "O1", "O2", "R", gen.party(), gen.party(), created)]
    )
    engine.dispose()


def test_a_month_with_nothing_to_shred_is_refused_and_leaves_no_entry(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert runner.invoke(app, ["init", *data]).exit_code == 0
    for month in ("2025-01", "2026-13"):  # a typo, or no data that month: no "shred started" entry
        result = runner.invoke(app, ["keys", "shred", "--month", month, "--yes", *data])
        assert result.exit_code == 1 and result.output.startswith("error:"), result.output
    engine = create_db_engine(f"sqlite:///{tmp_path / 'courierguard-audit.sqlite3'}")
    assert AuditQueries(engine).search(kinds=[EntryKind.KEY], limit=10).records == []


def test_bad_month_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "shred", "--month", "2026-13", "--yes", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "month: must be YYYY-MM" in result.output
    assert "Traceback" not in result.output


def test_unreadable_key_file_is_one_line(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.json"
    key_file.write_text("{}")
    key_file.chmod(0o644)
    result = runner.invoke(app, ["init", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "chmod 600" in result.output and "Traceback" not in result.output


def test_audit_query_by_phone_reads_the_phone_from_stdin(tmp_path: Path) -> None:
    import json
    from datetime import UTC, datetime

    from courierguard.audit import EntryKind, open_audit_log
    from courierguard.domain import NewWaybill
    from courierguard.sim.synthetic import PartyGenerator
    from courierguard.vault import Vault

    data = ["--data-dir", str(tmp_path)]
    assert runner.invoke(app, ["init", *data]).exit_code == 0
    engine = create_db_engine(f"sqlite:///{tmp_path / 'courierguard.sqlite3'}")
    keys = LocalKeyFile(tmp_path / "keys.json")
    gen = PartyGenerator(1)
    sender, recipient = gen.party(), gen.party()
    now = datetime(2026, 11, 11, tzinfo=UTC)
    Vault(engine, keys, tenant="demo").ingest(
        [NewWaybill("YT0000000000001", "O1", "O2", "R", sender, recipient, now)]
    )
    log = open_audit_log(engine, keys)
    for tenant, actor in (("demo", "E7"), ("other-tenant", "X9")):  # same waybill number, two tenants
        log.append(
            EntryKind.ACCESS,
            {"id": f"ev-{actor}", "tenant": tenant, "action": "waybill.reveal", "actor": {"id": actor},
             "resource": {"type": "waybill", "id": "YT0000000000001"}},
        )  # fmt: skip

    log.close()
    result = runner.invoke(app, ["audit", "query", "--by-phone", *data[:0], "--key-file", str(tmp_path / "keys.json"),
                                 "--database-url", f"sqlite:///{tmp_path / 'courierguard.sqlite3'}"],
                           input=recipient.phone + "\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)["records"]
    assert [r["body"]["actor"]["id"] for r in records if r["kind"] == "access"] == ["E7"]
    assert recipient.phone not in result.output
    # The search itself is on the trail, as over HTTP: who went from a phone to whose parcels,
    # filed under those parcels, so the data subject's next request shows this look-up too.
    trail = AuditQueries(engine)  # this database already held the trail, so it stays there
    [searched] = [r.body for r in trail.search(kinds=[EntryKind.SYSTEM], limit=10).records]
    assert searched["what"] == "audit.search" and searched["matched"] == 1
    assert searched["waybills"] == ["YT0000000000001"]
    assert [r["body"]["what"] for r in records if r["kind"] == "system"] == ["audit.search"]
    assert recipient.phone not in json.dumps(searched)

    # --kind keeps one kind of entry, as "kinds" does over HTTP (SOC review: the CLI had none).
    url = f"sqlite:///{tmp_path / 'courierguard.sqlite3'}"
    result = runner.invoke(app, ["audit", "query", "--waybill", "YT0000000000001", "--kind", "system",
                                 "--database-url", url])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {r["kind"] for r in json.loads(result.output)["records"]} == {"system"}
    # A phone found nowhere, with proofs: still an evidence file, under the head it was searched in.
    result = runner.invoke(app, ["audit", "query", "--by-phone", "--proofs", "--key-file", str(tmp_path / "keys.json"),
                                 "--database-url", url], input="+8613900000000\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    nowhere = json.loads(result.output)
    assert nowhere["records"] == [] and nowhere["head"]["size"] >= 3


@pytest.mark.parametrize("line", ["", "   ", "not a phone", "12"])
def test_audit_query_by_phone_refuses_a_line_that_is_no_phone(tmp_path: Path, line: str) -> None:
    # `echo "$PHONE" | courierguard audit query --by-phone` with PHONE unset answered an empty page,
    # exit 0: to a data subject's request, "nobody accessed your data".
    assert runner.invoke(app, ["init", "--data-dir", str(tmp_path)]).exit_code == 0
    url = f"sqlite:///{tmp_path / 'courierguard.sqlite3'}"
    result = runner.invoke(
        app,
        ["audit", "query", "--by-phone", "--key-file", str(tmp_path / "keys.json"), "--database-url", url],
        input=line + "\n",
    )
    assert result.exit_code == 2 and "phone: the line read is not a phone number" in result.output
    assert "records" not in result.output and "Traceback" not in result.output
    searches = AuditQueries(create_db_engine(url)).search(kinds=[EntryKind.SYSTEM], limit=10).records
    assert not searches  # nothing was searched, so nothing is recorded as a search


def test_audit_query_refuses_bounds_it_cannot_hold(tmp_path: Path) -> None:
    assert runner.invoke(app, ["init", "--data-dir", str(tmp_path)]).exit_code == 0
    url = ["--database-url", f"sqlite:///{tmp_path / 'courierguard.sqlite3'}"]
    late = runner.invoke(app, ["audit", "query", "--since", "9999-12-31T23:59:59-23:59", *url])
    assert late.exit_code == 2 and "since: is out of range" in late.output and "Traceback" not in late.output
    huge = runner.invoke(app, ["audit", "query", "--cursor", str(2**63), *url])
    assert huge.exit_code == 2 and "OverflowError" not in huge.output


def test_rotate_refuses_a_key_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "typo.json"
    result = runner.invoke(app, ["keys", "rotate", "--data-dir", str(tmp_path), "--key-file", str(missing)])
    assert result.exit_code == 1 and "does not exist" in result.output
    assert not missing.exists()


def test_database_files_made_before_owner_only_are_tightened(tmp_path: Path) -> None:
    # As an older release left them under umask 022: world-readable ciphertext, masks and trails.
    assert runner.invoke(app, ["init", "--data-dir", str(tmp_path)]).exit_code == 0
    databases = sorted(tmp_path.glob("*.sqlite3*"))
    assert databases
    for path in databases:
        path.chmod(0o644)
    result = runner.invoke(app, ["init", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for path in databases:
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_remask_rewrites_stored_masks_and_is_recorded(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert runner.invoke(app, ["init", *data]).exit_code == 0
    _ingest_one(tmp_path, datetime(2026, 4, 15, tzinfo=UTC))
    engine = create_db_engine(f"sqlite:///{tmp_path / 'courierguard.sqlite3'}")
    with engine.begin() as conn:
        stored = conn.execute(text("SELECT name_masked FROM parties WHERE role = 'sender'")).scalar_one()
        conn.execute(text("UPDATE parties SET name_masked = 'whole name' WHERE role = 'sender'"))
    result = runner.invoke(app, ["keys", "remask", "--quiet", *data])
    assert result.exit_code == 0, result.output
    assert "2 parties re-masked; 1 masks changed" in result.output
    with engine.begin() as conn:
        assert (
            conn.execute(text("SELECT name_masked FROM parties WHERE role = 'sender'")).scalar_one() == stored
        )
    engine.dispose()
    audit = create_db_engine(f"sqlite:///{tmp_path / 'courierguard-audit.sqlite3'}")
    bodies = [e.body for e in AuditQueries(audit).search(kinds=[EntryKind.KEY], limit=10).records]
    assert [b["op"] for b in bodies] == ["vault.remask.start", "vault.remask.done"]
    assert (bodies[1]["parties"], bodies[1]["changed"], bodies[1]["unreadable"]) == (2, 1, 0)
    audit.dispose()
    bad = runner.invoke(app, ["keys", "remask", "--batch", "0", *data])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_audit_query_by_subject_and_employee(tmp_path: Path) -> None:
    """`--employee E7` is what E7 did and what was done to E7; `--subject E7` only the latter;
    both with `--actor` is a one-line error, exit 2."""
    import json

    from courierguard.audit import open_audit_log
    from courierguard.audit.merkle import verify_inclusion

    assert runner.invoke(app, ["init", "--data-dir", str(tmp_path)]).exit_code == 0
    url = f"sqlite:///{tmp_path / 'courierguard.sqlite3'}"
    engine = create_db_engine(url)
    log = open_audit_log(engine, LocalKeyFile(tmp_path / "keys.json"))
    reads = {"tenant": "demo", "action": "waybill.view", "actor": {"id": "E7"}}
    held = {
        "tenant": "demo",
        "action": "admin.change",
        "actor": {"id": "X1"},
        "purpose": "employee.hold:E7:INC-1",
    }
    reset = {"what": "devices.reset", "actor": "X1", "employee": "E7", "tenant": "demo"}
    other = {
        "tenant": "demo",
        "action": "admin.change",
        "actor": {"id": "X1"},
        "purpose": "sessions.revoke:E8:INC-2",
    }
    first = log.append(EntryKind.ACCESS, reads)
    log.append(EntryKind.ACCESS, held)
    log.append(EntryKind.ADMIN, reset)
    log.append(EntryKind.ACCESS, other)
    log.close()
    engine.dispose()

    def query(*args: str) -> Any:
        result = runner.invoke(app, ["audit", "query", *args, "--database-url", url])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    page = query("--employee", "E7", "--limit", "2", "--proofs")
    assert [r["index"] for r in page["records"]] == [first, first + 1]
    rest = query("--employee", "E7", "--limit", "2", "--cursor", str(page["next_cursor"]))
    assert [r["index"] for r in rest["records"]] == [first + 2] and rest["next_cursor"] is None
    for record in page["records"]:
        verify_inclusion(record["index"], record["proof_tree_size"], bytes.fromhex(record["leaf_hash"]),
                         [bytes.fromhex(h) for h in record["proof"]], AuditQueries(create_db_engine(url)).tree_head().root)  # fmt: skip
    assert [r["index"] for r in query("--subject", "E7")["records"]] == [first + 1, first + 2]
    assert [r["index"] for r in query("--actor", "E7")["records"]] == [first]
    assert [r["index"] for r in query("--subject", "E7", "--actor", "X1")["records"]] == [
        first + 1,
        first + 2,
    ]
    both = runner.invoke(app, ["audit", "query", "--employee", "E7", "--actor", "X1", "--database-url", url])
    assert both.exit_code == 2 and len(both.output.strip().splitlines()) == 1
    assert "employee" in both.output and "Traceback" not in both.output
