"""Several processes appending to one log at once (uvicorn workers on PostgreSQL, the CLI beside the
server on SQLite): every append succeeds with an index of its own, the log verifies, and searches and
the search index cover every process's entries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from courierguard.audit import AuditQueries, open_audit_log, row_mac_key, verify
from courierguard.audit.search_index import indexed_upto
from courierguard.audit.tables import AUDIT_TABLES
from courierguard.db import create_db_engine
from courierguard.db.tables import metadata
from courierguard.vault.keys import LocalKeyFile

PER_THREAD = 60
THREADS = 4

WRITER = """
import sys, threading
from pathlib import Path
from courierguard.audit import EntryKind, open_audit_log
from courierguard.db import create_db_engine
from courierguard.vault.keys import LocalKeyFile

url, keys, tag, per_thread, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
log = open_audit_log(create_db_engine(url), LocalKeyFile(Path(keys)), head_interval=0.05, index_every=16)
got = []

def client(t):
    for i in range(per_thread):
        body = {"actor": {"id": f"{tag}{t}"}, "resource": {"type": "waybill", "id": f"W{tag}{t}-{i}"}}
        got.append(log.append(EntryKind.ACCESS, body))

workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
log.close()
print(" ".join(map(str, got)))
"""


def _run_writers(url: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    key_provider = LocalKeyFile(keys)
    engine = create_db_engine(url)
    metadata.create_all(engine, tables=AUDIT_TABLES)
    open_audit_log(engine, key_provider).close()  # the key and a first head, before the race
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    procs = {
        tag: subprocess.Popen(
            [sys.executable, str(script), url, str(keys), tag, str(PER_THREAD), str(THREADS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for tag in ("A", "B")
    }
    indices: dict[str, list[int]] = {}
    for tag, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        indices[tag] = [int(x) for x in out.split()]
    everyone = indices["A"] + indices["B"]
    assert sorted(everyone) == list(range(2 * THREADS * PER_THREAD))  # no index given twice, none lost
    # Each process took the other's rows in on their MACs; verify checks every one of them.
    report = verify(engine, key_provider.signer().public_key, row_key=row_mac_key(key_provider))
    assert report.ok and report.macs_checked and report.legacy == 0, report.summary()
    with engine.connect() as conn:
        assert indexed_upto(conn) == len(everyone)
        stored = dict(conn.execute(text("SELECT seq, actor FROM audit_entries")).all())
    queries = AuditQueries(engine)
    for tag in ("A", "B"):
        for t in range(THREADS):
            found = [r.index for r in queries.by_actor(f"{tag}{t}", limit=1000).records]
            assert found == sorted(i for i, actor in stored.items() if actor == f"{tag}{t}")
            assert len(found) == PER_THREAD
            assert [r.index for r in queries.by_waybills([f"W{tag}{t}-7"]).records] == [found[7]]
    engine.dispose()


def test_two_processes_share_a_sqlite_log(tmp_path: Path) -> None:
    _run_writers(f"sqlite:///{tmp_path / 'shared.sqlite3'}", tmp_path)


@pytest.mark.postgres
def test_two_processes_share_a_postgres_log(pg_engine: Engine, tmp_path: Path) -> None:
    _run_writers(pg_engine.url.render_as_string(hide_password=False), tmp_path)


@pytest.mark.postgres
def test_writer_replaces_a_connection_the_server_dropped(pg_engine: Engine, tmp_path: Path) -> None:
    # A PostgreSQL restart (or an idle timeout) kills the writer's long-lived connection. The next
    # batch finds out at its first statement, before anything of it was sent, so it may reconnect
    # and carry on; it used to fail that batch (every caller denied) first.
    from courierguard.audit import EntryKind

    log = open_audit_log(pg_engine, LocalKeyFile(tmp_path / "keys.json"), head_interval=0.05)
    try:
        assert log.append(EntryKind.ACCESS, {"actor": {"id": "E1"}}) == 0
        pid = log._db._connection.driver_connection.info.backend_pid
        with pg_engine.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        assert log.append(EntryKind.ACCESS, {"actor": {"id": "E2"}}) == 1
        assert log._db._connection.driver_connection.info.backend_pid != pid
        assert log.size == 2
    finally:
        log.close()
    assert verify(pg_engine, LocalKeyFile(tmp_path / "keys.json").signer().public_key).ok


@pytest.mark.postgres
def test_writer_connection_goes_back_to_the_pool_transactional(pg_engine: Engine, tmp_path: Path) -> None:
    # The writer runs its connection in autocommit (its batches send BEGIN themselves, in the same
    # round trip as the lock). Handed back to the pool like that, the pool's next user would commit
    # every statement on its own: a failed multi-statement change would stay half-written.
    from courierguard.audit import EntryKind

    log = open_audit_log(pg_engine, LocalKeyFile(tmp_path / "keys.json"), head_interval=0.05)
    writer = log._db._connection.driver_connection
    try:
        assert writer.autocommit
        bodies = [{"actor": {"id": f"E{i}"}} for i in range(5)]
        assert log.append_many(EntryKind.ACCESS, bodies) == list(range(5))
    finally:
        log.close()
    assert not writer.closed and not writer.autocommit
    with pg_engine.connect() as conn:
        conn.execute(text("CREATE TEMPORARY TABLE half (x int)"))
        conn.execute(text("INSERT INTO half VALUES (1)"))
        conn.rollback()
        assert conn.execute(text("SELECT to_regclass('pg_temp.half')")).scalar() is None
    assert verify(pg_engine, LocalKeyFile(tmp_path / "keys.json").signer().public_key).ok
