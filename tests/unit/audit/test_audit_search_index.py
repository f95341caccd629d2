"""The actor, waybill and subject search indexes, written behind the log: searches stay complete wherever the
indexer has got to, the writer catches up from memory or from storage, and its failures fail no append."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select, text

import courierguard.audit.sql as sql_module
from courierguard.audit import AuditQueries, EntryKind, open_audit_log
from courierguard.audit._internal.core import actor_of, subject_of, waybills_of
from courierguard.audit.models import decode_entry
from courierguard.audit.search_index import SUBJECTS_MARK, backfill_subjects, indexed_upto, write_index
from courierguard.audit.tables import (
    audit_actors,
    audit_entries,
    audit_index_mark,
    audit_subjects,
    audit_waybills,
)
from courierguard.clock import FixedClock
from courierguard.vault.keys import LocalKeyFile

from .conftest import OpenLog, refusing_actor

START = datetime(2025, 3, 1, tzinfo=UTC)
ACTORS = ["E1", "E2", "E3", "svc"]
WAYBILLS = [f"YT{i:03d}" for i in range(12)]
TENANTS = ["t1", "t2"]


def _body(i: int) -> dict[str, Any]:
    """A deterministic mix: some entries without actor, some with several waybills, some with none."""
    body: dict[str, Any] = {"tenant": TENANTS[i % 2], "n": i}
    if i % 7:
        body["actor"] = {"id": ACTORS[i % len(ACTORS)]}
    if i % 5 == 0:
        body["waybills"] = [WAYBILLS[i % 12], WAYBILLS[(i * 5 + 1) % 12]]
    elif i % 3:
        body["resource"] = {"type": "waybill", "id": WAYBILLS[(i * 7) % 12]}
    # Some are about an employee: an officer's change to an account, or an admin entry naming one.
    if i % 4 == 2:
        body["action"] = "admin.change"
        body["purpose"] = f"devices.reset:{ACTORS[(i // 4) % 3]}:INC-{i}"
    elif i % 9 == 4:
        body["employee"] = ACTORS[i % 3]
    return body


def _truth(engine: Engine) -> list[tuple[int, int, str, str | None, str | None, set[str], str | None]]:
    """(seq, ts_us, kind, actor, tenant, waybills, subject) of every stored entry, from the bodies themselves."""
    e = audit_entries.c
    with engine.connect() as conn:
        rows = conn.execute(select(e.seq, e.ts_us, e.kind, e.tenant, e.entry).order_by(e.seq)).all()
    out = []
    for seq, ts_us, kind, tenant, entry in rows:
        body = decode_entry(bytes(entry)).body
        out.append((seq, ts_us, kind, actor_of(body), tenant, waybills_of(body), subject_of(body)))
    return out


def _index_rows(engine: Engine) -> tuple[set[tuple[str, int]], set[tuple[str, int]], int]:
    with engine.connect() as conn:
        actors = {(a, s) for a, s in conn.execute(select(audit_actors.c.actor, audit_actors.c.seq))}
        waybills = {(w, s) for w, s in conn.execute(select(audit_waybills.c.waybill, audit_waybills.c.seq))}
        return actors, waybills, indexed_upto(conn)


def _stored_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(audit_entries).order_by(audit_entries.c.seq))]


def _subject_rows(engine: Engine) -> tuple[set[tuple[str, int]], int]:
    with engine.connect() as conn:
        rows = {(a, s) for a, s in conn.execute(select(audit_subjects.c.subject, audit_subjects.c.seq))}
        return rows, indexed_upto(conn, SUBJECTS_MARK)


def _assert_index_exact(engine: Engine) -> int:
    """The index holds exactly the entries below the mark, no more, no fewer; returns the mark."""
    actors, waybills, upto = _index_rows(engine)
    truth = [t for t in _truth(engine) if t[0] < upto]
    assert actors == {(actor, seq) for seq, _, _, actor, _, _, _ in truth if actor is not None}
    assert waybills == {(w, seq) for seq, _, _, _, _, found, _ in truth for w in found}
    subjects, subjects_upto = _subject_rows(engine)
    assert subjects == {(about, seq) for seq, *_, about in _truth(engine) if seq < subjects_upto and about}
    return upto


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_writer_indexes_from_memory_in_bulk(
    open_log: OpenLog, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_expected(*_: object) -> None:
        raise AssertionError("this writer knows its own entries; it must not read them back")

    monkeypatch.setattr(sql_module, "stored_indexables", not_expected)
    log = open_log(index_every=10, head_interval=60)
    for i in range(25):
        log.append(EntryKind.ACCESS, _body(i))
    # Answered before being indexed: the flush at 20 follows the batch, so wait for it.
    _wait_for(lambda: _index_rows(engine)[2] >= 20, "the tail to be indexed")
    assert _assert_index_exact(engine) in (20, 25)
    log.close()
    assert _assert_index_exact(engine) == 25  # closing indexes the rest


def test_writer_indexes_a_tail_left_by_a_crash_from_storage(open_log: OpenLog, engine: Engine) -> None:
    log = open_log(head_interval=60)
    log.append_many(EntryKind.ACCESS, [_body(i) for i in range(30)])
    log.close()
    # As if the process died before indexing anything: no rows, no mark.
    with engine.begin() as conn:
        for table in (audit_actors, audit_waybills, audit_index_mark):
            conn.execute(delete(table))
    assert AuditQueries(engine).by_actor("E2").records  # found in the unindexed tail meanwhile
    log = open_log(index_every=8, head_interval=60)
    for i in range(30, 40):
        log.append(EntryKind.ACCESS, _body(i))
    _wait_for(lambda: _index_rows(engine)[2] >= 32, "the old tail to be indexed")
    _assert_index_exact(engine)
    log.close()
    assert _assert_index_exact(engine) == 40


def test_a_failing_indexer_fails_no_append_and_catches_up(open_log: OpenLog, engine: Engine) -> None:
    log = open_log(index_every=4, head_interval=60)
    with refusing_actor(engine, "E2", table="audit_actors"):
        indices = [log.append(EntryKind.ACCESS, _body(i)) for i in range(20)]
        assert indices == list(range(20))
        found = AuditQueries(engine).by_actor("E2", limit=100)
        assert [r.index for r in found.records] == [i for i in range(20) if i % 7 and i % 4 == 1]
        assert _index_rows(engine)[2] == 0  # every attempt was rolled back whole
    log.append(EntryKind.ACCESS, _body(20))
    log.close()
    assert _assert_index_exact(engine) == 21


# ---- searches are complete wherever the mark is -------------------------------------------------------


@pytest.fixture
def stored(engine: Engine, key_provider: LocalKeyFile) -> Engine:
    """120 entries, one an hour, two kinds; closed, so fully indexed to begin with."""
    clock = FixedClock(START)
    log = open_audit_log(engine, key_provider, clock=clock, head_interval=3600)
    for i in range(120):
        log.append(EntryKind.ADMIN if i % 11 == 0 else EntryKind.ACCESS, _body(i))
        clock.advance(timedelta(hours=1))
    log.close()
    return engine


def _set_mark(engine: Engine, mark: int, subjects_mark: int | None = None) -> None:
    """Rebuild the index as the indexer would have left it with its mark at ``mark`` and the
    subjects' at ``subjects_mark`` (at most ``mark``; the same by default)."""
    truth = [t for t in _truth(engine) if t[0] < mark]
    with engine.begin() as conn:
        for table in (audit_actors, audit_waybills, audit_subjects, audit_index_mark):
            conn.execute(delete(table))
        indexables = [(seq, actor, found, about) for seq, _, _, actor, _, found, about in truth]
        if subjects_mark is None:
            write_index(conn, mark, indexables)
        else:
            write_index(conn, mark, indexables, subjects=False)
            backfill_subjects(conn, 0, subjects_mark)


filters = st.fixed_dictionaries(
    {},
    optional={
        "actor": st.sampled_from([*ACTORS, "nobody"]),
        "subject": st.sampled_from([*ACTORS, "nobody"]),
        "waybills": st.lists(st.sampled_from([*WAYBILLS, "YT999"]), min_size=1, max_size=3),
        "tenant": st.sampled_from(TENANTS),
        "since": st.integers(0, 130).map(lambda h: START + timedelta(hours=h)),
        "until": st.integers(0, 130).map(lambda h: START + timedelta(hours=h)),
        "kinds": st.lists(st.sampled_from([EntryKind.ACCESS, EntryKind.ADMIN]), min_size=1, max_size=2),
    },
)


@st.composite
def people(draw: st.DrawFn) -> dict[str, Any]:
    """The filters of one search: an ``employee`` (actor or subject) alone, or any of the others."""
    if draw(st.booleans()):
        wanted = draw(filters)
        wanted.pop("actor", None)
        wanted.pop("subject", None)
        return {**wanted, "employee": draw(st.sampled_from([*ACTORS, "nobody"]))}
    return draw(filters)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mark=st.integers(0, 120), behind=st.integers(0, 120), wanted=people(), limit=st.integers(1, 40))
def test_every_search_finds_exactly_the_matching_entries(
    stored: Engine, mark: int, behind: int, wanted: dict[str, Any], limit: int
) -> None:
    # The subject index may lag the actors' (a log from before it, a writer of the version before).
    _set_mark(stored, mark, max(0, mark - behind))
    since_us = int(wanted["since"].timestamp() * 1e6) if "since" in wanted else None
    until_us = int(wanted["until"].timestamp() * 1e6) if "until" in wanted else None
    expected = [
        seq
        for seq, ts_us, kind, actor, tenant, found, about in _truth(stored)
        if ("actor" not in wanted or actor == wanted["actor"])
        and ("subject" not in wanted or about == wanted["subject"])
        and ("employee" not in wanted or wanted["employee"] in (actor, about))
        and ("waybills" not in wanted or found & set(wanted["waybills"]))
        and ("tenant" not in wanted or tenant == wanted["tenant"])
        and (since_us is None or ts_us >= since_us)
        and (until_us is None or ts_us < until_us)
        and ("kinds" not in wanted or kind in {str(k) for k in wanted["kinds"]})
    ]
    queries = AuditQueries(stored)
    got: list[int] = []
    cursor: int | None = None
    for _page in range(200):
        page = queries.search(**wanted, cursor=cursor, limit=limit)
        assert len(page.records) <= limit
        got += [r.index for r in page.records]
        if page.next_cursor is None:
            break
        assert len(page.records) == limit
        cursor = page.next_cursor
    assert got == expected


def test_search_plans_use_the_indexes(sqlite_engine: Engine) -> None:
    """The indexed part is read through the indexes, not by scanning every entry (SQLite's plan)."""
    from courierguard.audit.queries import _walk

    def plan(query: Any) -> str:
        compiled = query.compile(sqlite_engine, compile_kwargs={"literal_binds": True})
        with sqlite_engine.connect() as conn:
            return " | ".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))

    by_actor = plan(_walk(("actor", "E1"), None, [], 0, 100).limit(10))
    assert "audit_actors USING PRIMARY KEY" in by_actor and "SCAN audit_entries" not in by_actor
    by_subject = plan(_walk(("subject", "E1"), None, [], 0, 100).limit(10))
    assert "audit_subjects USING PRIMARY KEY" in by_subject and "SCAN audit_entries" not in by_subject
    by_waybill = plan(_walk(None, ["YT001"], [], 0, 100).limit(10))
    assert "audit_waybills USING PRIMARY KEY" in by_waybill


# ---- the indexer never stops for good ------------------------------------------------------------------


def test_rows_already_indexed_do_not_stop_the_indexer(open_log: OpenLog, engine: Engine) -> None:
    """An older version's writer puts waybill rows in at commit time (rolling upgrade); a raced run
    may have written some rows: indexing goes on, and the mark never moves back."""
    log = open_log(index_every=10_000, head_interval=60)
    log.append_many(EntryKind.ACCESS, [_body(i) for i in range(30)])
    truth = _truth(engine)
    with engine.begin() as conn:
        write_index(
            conn, 0, [(seq, actor, found, about) for seq, _, _, actor, _, found, about in truth[10:20]]
        )
    log.close()
    assert _assert_index_exact(engine) == 30
    with engine.begin() as conn:
        write_index(conn, 12, [])  # a slower writer finishing late
    assert _index_rows(engine)[2] == 30


def test_text_the_database_cannot_hold_is_not_indexed(open_log: OpenLog, engine: Engine) -> None:
    """A NUL cannot go into PostgreSQL text: such an actor or waybill stays in the hashed body but
    out of the search columns, instead of failing the batch or the indexer."""
    log = open_log(index_every=1, head_interval=60)
    body = {"actor": {"id": "E\x001"}, "waybills": ["YT\x00001", "YT002"], "tenant": "t\x00"}
    assert log.append(EntryKind.ACCESS, body) == 0
    assert log.append(EntryKind.ACCESS, _body(1)) == 1
    log.close()
    assert _index_rows(engine)[2] == 2
    assert _index_rows(engine)[1] >= {("YT002", 0)}
    assert [r.index for r in AuditQueries(engine).by_waybills(["YT002"]).records] == [0]


def test_an_idle_writer_indexes_without_being_closed(open_log: OpenLog, engine: Engine) -> None:
    log = open_log(index_every=10_000, head_interval=0.2)
    log.append(EntryKind.ACCESS, _body(1))
    log.checkpoint()  # the head is current: nothing else would wake the writer
    _wait_for(lambda: _index_rows(engine)[2] == log.size, "the idle writer to index")
    assert _assert_index_exact(engine) == log.size


def test_a_risk_alert_is_filed_under_the_account_it_is_about() -> None:
    # Alerts carry actor_id: they were filed under no one, so `audit query --actor` missed an
    # account's lock alert (the risk review's D6).
    from courierguard.audit._internal.core import actor_of

    assert actor_of({"actor_id": "E000041", "action": "lock"}) == "E000041"
    assert actor_of({"actor": {"id": "E1"}, "actor_id": "E2"}) == "E1"


def test_a_writer_files_the_subjects_an_older_writer_left_out(open_log: OpenLog, engine: Engine) -> None:
    """A writer of the version before indexes actors and waybills only (it moves mark 1, never
    mark 2): the next writer files those entries' subjects from their bodies, in its indexing turns,
    without a new entry to prompt it; searches by subject are complete all along."""
    log = open_log(head_interval=60)
    log.append_many(EntryKind.ACCESS, [_body(i) for i in range(40)])
    log.close()
    with engine.begin() as conn:
        conn.execute(delete(audit_subjects))
        conn.execute(delete(audit_index_mark).where(audit_index_mark.c.id == SUBJECTS_MARK))
    about_e2 = [seq for seq, *_, about in _truth(engine) if about == "E2"]
    assert about_e2  # the data has entries about E2
    assert [r.index for r in AuditQueries(engine).by_subject("E2", limit=1000).records] == about_e2
    entries_before = _stored_rows(engine)
    log = open_log(index_every=8, head_interval=0.05)
    _wait_for(lambda: _subject_rows(engine)[1] == 40, "the subjects to be back-filled")
    assert _assert_index_exact(engine) == 40
    assert [r.index for r in AuditQueries(engine).by_subject("E2", limit=1000).records] == about_e2
    log.close()
    assert _stored_rows(engine) == entries_before  # nothing rewritten: bodies, hashes and MACs as they were
