"""The reads on a request about one waybill: session and task facts in one statement (for a reveal,
with the sealed parties too), the same answers as reading each alone (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from courierguard.domain import EmployeeStatus
from courierguard.errors import AccessDenied, NotFound, Unauthenticated
from courierguard.events import PiiField
from courierguard.gateway.identity import PartyRead
from courierguard.vault.service import VaultError, VaultFailure

from .conftest import World

W1 = "YT0000000000001"
W2 = "YT0000000000002"
MISSING = "YT0000000000099"


def _session(world: World, headers: dict[str, str]) -> str:
    return world.deployment.tokens.verify(headers["Authorization"].split(" ", 1)[1]).session_id


def _out_for_delivery_with_two_tickets(world: World) -> None:
    """W1 out for delivery to C1, with two open tickets: the combined read's join repeats rows."""
    world.step(W1, "out_for_delivery", assignee="C1")
    for case in ("T-1", "T-2"):
        r = world.client.post(
            "/v1/cases", json={"id": case, "kind": "ticket", "waybill": W1, "owner": "S1"}, headers=world.svc
        )
        assert r.status_code == 201, r.text


def test_facts_read_with_the_session_are_the_facts_read_alone(world: World) -> None:
    _out_for_delivery_with_two_tickets(world)  # two cases: the join gives a row per case
    guard = world.deployment.guard
    session = _session(world, world.login("C1"))
    alone = guard.employee_caller("C1", session, device_id="dev-1")
    for number in (W1, W2):
        caller, read = guard.employee_caller_for("C1", session, number, device_id="dev-1")
        assert caller == alone
        assert read.number == number
        assert guard._facts(number, read) == guard.company.facts(number)
    assert (
        len(guard._facts(W1, read=guard.employee_caller_for("C1", session, W1, device_id="d")[1]).cases) == 2
    )
    # A waybill that is not there: the session still reads, the facts say "not found".
    caller, read = guard.employee_caller_for("C1", session, MISSING, device_id="dev-1")
    assert caller == alone
    with pytest.raises(NotFound):
        guard.company.facts_from(MISSING, read.rows)
    # Facts read for another waybill are never used for this one.
    _, other = guard.employee_caller_for("C1", session, W2, device_id="dev-1")
    assert guard._facts(W1, other) == guard.company.facts(W1)


def test_a_reveals_read_gives_the_same_facts_and_the_sealed_parties(world: World) -> None:
    _out_for_delivery_with_two_tickets(world)  # two cases and two parties: the join gives four rows
    guard = world.deployment.guard
    vault = guard.vault
    session = _session(world, world.login("C1"))
    alone = guard.employee_caller("C1", session, device_id="dev-1")
    every = list(PiiField)
    for number in (W1, W2):
        caller, read = guard.employee_caller_for("C1", session, number, device_id="dev-1", parties="sealed")
        plain_caller, plain = guard.employee_caller_for("C1", session, number, device_id="dev-1")
        assert caller == plain_caller == alone
        assert read.rows == [tuple(row) for row in plain.rows]  # one row per case, in the same order
        assert guard._facts(number, read) == guard.company.facts(number)
        assert read.sealed is not None and sorted(row[0] for row in read.sealed) == ["recipient", "sender"]
        assert vault.open_sealed(number, every, read.sealed) == vault.reveal(number, every)
    assert (
        len(
            guard._facts(
                W1, guard.employee_caller_for("C1", session, W1, device_id="d", parties="sealed")[1]
            ).cases
        )
        == 2
    )
    # The sealed rows of one waybill do not open as another's: the ciphertexts are bound to theirs.
    _, w2 = guard.employee_caller_for("C1", session, W2, device_id="dev-1", parties="sealed")
    assert w2.sealed is not None
    with pytest.raises(VaultError) as unreadable:
        vault.open_sealed(W1, [PiiField.RECIPIENT_PHONE], w2.sealed)
    assert unreadable.value.failure is VaultFailure.UNREADABLE
    # A waybill that is not there: no parties, "not found" from the facts and from the vault.
    _, missing = guard.employee_caller_for("C1", session, MISSING, device_id="dev-1", parties="sealed")
    assert missing.sealed == []
    with pytest.raises(NotFound):
        guard.company.facts_from(MISSING, missing.rows)
    with pytest.raises(NotFound):
        vault.open_sealed(MISSING, [PiiField.RECIPIENT_PHONE], missing.sealed)


def test_a_views_read_gives_the_same_facts_and_the_masked_view(world: World) -> None:
    _out_for_delivery_with_two_tickets(world)  # two cases and two parties: the join gives four rows
    guard = world.deployment.guard
    vault = guard.vault
    session = _session(world, world.login("C1"))
    for number in (W1, W2):
        caller, read = guard.employee_caller_for("C1", session, number, device_id="dev-1", parties="masked")
        plain_caller, plain = guard.employee_caller_for("C1", session, number, device_id="dev-1")
        assert caller == plain_caller
        assert read.rows == [tuple(row) for row in plain.rows]
        assert guard._facts(number, read) == guard.company.facts(number)
        assert read.masked is not None and len(read.masked) == 2  # one row per party, repeats folded
        view = vault.masked_from_rows(number, read.masked)
        assert view == vault.masked(number) == vault.masked_many([number])[0]
        assert view.sender is not None and view.recipient is not None
        assert view.recipient.phone is not None and "*" in view.recipient.phone
    # Rows of one waybill are not another's view; a waybill that is not there is "not found".
    _, w2 = guard.employee_caller_for("C1", session, W2, device_id="dev-1", parties="masked")
    assert w2.masked is not None
    with pytest.raises(NotFound):
        vault.masked_from_rows(W1, w2.masked)
    _, missing = guard.employee_caller_for("C1", session, MISSING, device_id="dev-1", parties="masked")
    assert missing.masked is not None
    for rows in (missing.masked, []):
        with pytest.raises(NotFound):
            vault.masked_from_rows(MISSING, rows)
    with pytest.raises(NotFound):
        vault.masked(MISSING)


def test_a_view_serves_the_masked_rows_it_read_with_the_session(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    headers = world.login("C1")
    expected = world.client.get(f"/v1/waybills/{W1}", headers=headers)
    assert expected.status_code == 200, expected.text

    def no_second_read(number: str) -> None:
        raise AssertionError("the view read its waybill again")

    monkeypatch.setattr(world.deployment.guard.vault, "masked", no_second_read)
    again = world.client.get(f"/v1/waybills/{W1}", headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == expected.json()
    assert again.json()["recipient"]["phone"] == expected.json()["recipient"]["phone"]


@pytest.mark.parametrize("parties", [None, "sealed", "masked"], ids=["facts", "reveal", "view"])
def test_the_combined_read_refuses_what_the_session_read_refuses(
    world: World, parties: PartyRead | None
) -> None:
    guard = world.deployment.guard
    with pytest.raises(Unauthenticated, match="unknown session"):
        guard.employee_caller_for("C1", "s_nobody", W1, device_id="dev-1", parties=parties)
    session = _session(world, world.login("C1"))
    with pytest.raises(Unauthenticated, match="another account"):
        guard.employee_caller_for("C2", session, W1, device_id="dev-1", parties=parties)
    guard.company.set_employee_status("C1", EmployeeStatus.SUSPENDED, world.clock.now(), reason="test")
    with pytest.raises(AccessDenied):
        guard.employee_caller_for("C1", session, W1, device_id="dev-1", parties=parties)
    guard.sessions.revoke(session, world.clock.now(), "test")
    with pytest.raises(Unauthenticated, match="revoked"):
        guard.employee_caller_for("C1", session, W1, device_id="dev-1", parties=parties)


def test_over_http_a_missing_waybill_is_404_and_a_revoked_session_401(world: World) -> None:
    headers = world.login("C1")
    body = {"fields": ["recipient.phone"], "purpose": "delivery_contact"}
    assert world.client.post(f"/v1/waybills/{MISSING}/reveal", json=body, headers=headers).status_code == 404
    assert world.client.get(f"/v1/waybills/{MISSING}", headers=headers).status_code == 404
    assert world.client.post("/v1/auth/logout", headers=headers).status_code == 204
    assert world.client.post(f"/v1/waybills/{W1}/reveal", json=body, headers=headers).status_code == 401
    assert world.client.get(f"/v1/waybills/{W1}", headers=headers).status_code == 401
