"""`courierguard admin`: the first administrator and service API keys, made on the host, on the trail."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from courierguard.audit import AuditQueries, EntryKind
from courierguard.cli.main import app
from courierguard.company import CompanyStore
from courierguard.db import create_db_engine
from courierguard.db.rowseal import RowSeals
from courierguard.domain import EmployeeStatus
from courierguard.errors import Unauthenticated
from courierguard.events import Role
from courierguard.gateway.identity import ApiKeys
from courierguard.vault.keys import LocalKeyFile

runner = CliRunner()


def _trail(tmp_path: Path) -> list[str]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'courierguard-audit.sqlite3'}")
    return [e.body["what"] for e in AuditQueries(engine).search(kinds=[EntryKind.SYSTEM], limit=100).records]


def test_api_keys_are_shown_once_work_and_stop_working_when_revoked(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path), "--tenant", "acme"]
    created = runner.invoke(app, ["admin", "api-key", "create", "order-system", *data])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("cgk_")
    keys = ApiKeys(
        create_db_engine(f"sqlite:///{tmp_path / 'courierguard.sqlite3'}"),
        tenant="acme",
        seals=RowSeals.from_keys(LocalKeyFile(tmp_path / "keys.json")),
    )
    assert keys.verify(key).name == "order-system"
    listed = runner.invoke(app, ["admin", "api-key", "list", *data])
    key_id = key.split("_")[1]
    assert listed.exit_code == 0 and key_id in listed.output and "active" in listed.output
    assert key.split("_", 2)[2] not in listed.output  # the secret is never shown again
    revoked = runner.invoke(app, ["admin", "api-key", "revoke", key_id, *data])
    assert revoked.exit_code == 0, revoked.output
    try:
        keys.verify(key)
        raise AssertionError("a revoked key still works")
    except Unauthenticated:
        pass
    assert _trail(tmp_path) == ["api_key.created", "api_key.revoked"]


def test_another_tenants_key_cannot_be_revoked_or_seen(tmp_path: Path) -> None:
    created = runner.invoke(
        app, ["admin", "api-key", "create", "pda", "--data-dir", str(tmp_path), "--tenant", "a"]
    )
    key_id = created.output.strip().splitlines()[-1].split("_")[1]
    other = ["--data-dir", str(tmp_path), "--tenant", "b"]
    assert "no API keys" in runner.invoke(app, ["admin", "api-key", "list", *other]).output
    refused = runner.invoke(app, ["admin", "api-key", "revoke", key_id, *other])
    assert refused.exit_code == 1 and "not found" in refused.output and "Traceback" not in refused.output


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    for args in (["api-key", "create", "   "], ["api-key", "revoke", "no such id!"], ["bootstrap", "E 1"]):
        result = runner.invoke(app, ["admin", *args, *data])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert result.output.startswith("error: Invalid input")


def test_bootstrap_makes_one_administrator_per_tenant(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path), "--tenant", "acme"]
    made = runner.invoke(app, ["admin", "bootstrap", "E000001", "--org-unit", "HQ", *data])
    assert made.exit_code == 0, made.output
    seals = RowSeals.from_keys(LocalKeyFile(tmp_path / "keys.json"))
    company = CompanyStore(
        create_db_engine(f"sqlite:///{tmp_path / 'courierguard.sqlite3'}"), tenant="acme", seals=seals
    )
    assert company.employee("E000001").role is Role.ADMIN and company.org_unit("HQ").name == "Headquarters"
    again = runner.invoke(app, ["admin", "bootstrap", "E000002", *data])
    assert again.exit_code == 1 and "already has an administrator" in again.output
    assert _trail(tmp_path) == ["admin.bootstrap"]


def test_first_officer_is_made_once_on_the_host_and_recorded(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path), "--tenant", "acme"]
    assert runner.invoke(app, ["admin", "bootstrap", "E000001", "--org-unit", "HQ", *data]).exit_code == 0
    unknown_unit = runner.invoke(app, ["admin", "first-officer", "E000002", "--org-unit", "SEC", *data])
    assert unknown_unit.exit_code == 1 and unknown_unit.output.count("\n") == 1, unknown_unit.output
    taken = runner.invoke(app, ["admin", "first-officer", "E000001", *data])
    assert taken.exit_code == 1 and "exists" in taken.output
    made = runner.invoke(app, ["admin", "first-officer", "E000002", "--org-unit", "HQ", *data])
    assert made.exit_code == 0, made.output
    seals = RowSeals.from_keys(LocalKeyFile(tmp_path / "keys.json"))
    company = CompanyStore(
        create_db_engine(f"sqlite:///{tmp_path / 'courierguard.sqlite3'}"), tenant="acme", seals=seals
    )
    assert company.employee("E000002").role is Role.SECURITY_OFFICER  # and sealed: the read checks it
    again = runner.invoke(app, ["admin", "first-officer", "E000003", "--org-unit", "HQ", *data])
    assert again.exit_code == 1 and "already has an active security officer" in again.output
    assert _trail(tmp_path) == ["admin.bootstrap", "admin.first_officer"]
    # The last officer left: nobody can approve a role request, so the operator makes one again.
    company.set_employee_status("E000002", EmployeeStatus.LEFT, datetime.now(UTC), reason="officer")
    made = runner.invoke(app, ["admin", "first-officer", "E000003", "--org-unit", "HQ", *data])
    assert made.exit_code == 0, made.output
    assert company.employee("E000003").role is Role.SECURITY_OFFICER
    assert _trail(tmp_path) == ["admin.bootstrap", "admin.first_officer", "admin.first_officer"]


def test_names_must_be_printable_and_say_something(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    forged = runner.invoke(app, ["admin", "api-key", "create", "a\nb", *data])
    assert forged.exit_code == 1 and "printable" in forged.output
    for option in ("--unit-name", "--company"):
        blank = runner.invoke(app, ["admin", "bootstrap", "E1", option, "\t \u200b", *data])
        assert blank.exit_code == 1 and "say something" in blank.output, blank.output


def test_revoking_twice_records_once(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(app, ["admin", "api-key", "create", "pda", *data])
    key_id = created.output.strip().splitlines()[-1].split("_")[1]
    assert runner.invoke(app, ["admin", "api-key", "revoke", key_id, *data]).exit_code == 0
    again = runner.invoke(app, ["admin", "api-key", "revoke", key_id, *data])
    assert again.exit_code == 0 and "already" in again.output
    assert _trail(tmp_path) == ["api_key.created", "api_key.revoked"]


def test_officers_list_alerts_by_account_from_the_host(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from courierguard.db import create_db_engine
    from courierguard.risk.alerts import Alert, SqlSink

    assert runner.invoke(app, ["init", "--data-dir", str(tmp_path)]).exit_code == 0
    engine = create_db_engine(f"sqlite:///{tmp_path / 'courierguard.sqlite3'}")
    sink = SqlSink(engine)
    for n, (actor, action) in enumerate([("E000041", "step_up"), ("E000007", "deny"), ("E000041", "lock")]):
        sink.emit(Alert(actor, f"ev{n}", datetime(2026, 11, 5, 23, n, tzinfo=UTC), action, 80.0,
                        (("new_network", None), ("off_shift", "hour 23")), {}))  # fmt: skip
    engine.dispose()
    result = runner.invoke(app, ["admin", "alerts", "--actor", "E000041", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and "lock" in lines[-1] and "new_network,off_shift" in lines[-1]
    assert "E000007" not in result.output
    latest = runner.invoke(app, ["admin", "alerts", "--limit", "1", "--data-dir", str(tmp_path)])
    assert latest.exit_code == 0 and "lock" in latest.output and "step_up" not in latest.output


def test_listed_alerts_say_their_time_zone_and_session(tmp_path: Path) -> None:
    """`admin alerts` printed "2026-11-05 23:00:00", no zone (read as Beijing time, 8 hours off the
    trail and the webhook) and no session, which is what an analyst searches the trail by next."""
    from datetime import timedelta, timezone

    from courierguard.risk.alerts import Alert, SqlSink

    assert runner.invoke(app, ["init", "--data-dir", str(tmp_path)]).exit_code == 0
    engine = create_db_engine(f"sqlite:///{tmp_path / 'courierguard.sqlite3'}")
    beijing = timezone(timedelta(hours=8))
    when = datetime(2026, 11, 6, 7, 15, 2, tzinfo=beijing)
    reasons = (("unexplained_reveals", None),)
    SqlSink(engine).emit(Alert("E000041", "ev1", when, "lock", 95.0, reasons, {}, session_id="s_renter"))
    engine.dispose()
    result = runner.invoke(app, ["admin", "alerts", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("2026-11-05T23:15:02Z ") and "s_renter" in line and "unexplained_reveals" in line
