"""SIGKILL during a load of appends: every acknowledged entry survives, the log still verifies, and
searches find every entry however far the search index had got."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from courierguard.audit import AuditQueries, open_audit_log, row_mac_key, verify
from courierguard.audit.search_index import indexed_upto
from courierguard.audit.tables import AUDIT_TABLES
from courierguard.db import create_db_engine
from courierguard.db.tables import metadata
from courierguard.vault.keys import LocalKeyFile

WRITER = """
import sys, threading
from pathlib import Path
from courierguard.audit import EntryKind, open_audit_log
from courierguard.db import create_db_engine
from courierguard.vault.keys import LocalKeyFile

engine = create_db_engine(sys.argv[1])
log = open_audit_log(engine, LocalKeyFile(Path(sys.argv[2])), head_interval=0.05, index_every=64)
out_lock = threading.Lock()

def client(t):
    i = 0
    while True:
        index = log.append(EntryKind.ACCESS, {"actor": {"id": f"E{t}"}, "resource": {"id": f"W{t}-{i}"}})
        with out_lock:  # an index is printed only after append returned: the client "received" it
            sys.stdout.write(f"{index}\\n")
            sys.stdout.flush()
        i += 1

for t in range(8):
    threading.Thread(target=client, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def _crash_and_check(url: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    key_provider = LocalKeyFile(keys)
    engine = create_db_engine(url)
    metadata.create_all(engine, tables=AUDIT_TABLES)
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    acked: list[int] = []
    for _round in range(2):  # crash twice: the restarted log must carry on from the recovered state
        proc = subprocess.Popen(
            [sys.executable, str(script), url, str(keys)], stdout=subprocess.PIPE, env={**os.environ}
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        start = len(acked)
        while len(acked) - start < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(int(line))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
        acked += [int(x) for x in rest.split()]
        assert len(acked) - start >= 300, "writer did not get going"
    # The entries committed after the last head carry their MACs: the reopened writer signs them.
    report = verify(engine, key_provider.signer().public_key, row_key=row_mac_key(key_provider))
    assert report.ok and report.macs_checked, report.summary()
    with engine.connect() as conn:
        present = {row[0] for row in conn.execute(text("SELECT seq FROM audit_entries"))}
    assert set(acked) <= present
    assert len(set(acked)) == len(acked)
    # Killed mid-load, the search index may stop anywhere: searches still find every entry.
    _assert_searches_complete(engine)
    log = open_audit_log(engine, key_provider)
    assert log.size == len(present)
    log.close()
    with engine.connect() as conn:
        assert indexed_upto(conn) == len(present)  # the reopened writer indexed the rest
    _assert_searches_complete(engine)
    engine.dispose()


def _assert_searches_complete(engine: Engine) -> None:
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT seq, actor FROM audit_entries ORDER BY seq")).all()
    queries = AuditQueries(engine)
    for t in range(8):
        found: list[int] = []
        cursor = None
        while True:
            page = queries.by_actor(f"E{t}", cursor=cursor, limit=1000)
            found += [r.index for r in page.records]
            if (cursor := page.next_cursor) is None:
                break
        assert found == [seq for seq, actor in stored if actor == f"E{t}"]
    # And by waybill, for a sample: each entry's own waybill finds it.
    for seq in range(0, len(stored), 97):
        body = queries.entry(seq).body
        assert body is not None
        assert seq in [r.index for r in queries.by_waybills([body["resource"]["id"]]).records]


def test_sigkill_sqlite(tmp_path: Path) -> None:
    _crash_and_check(f"sqlite:///{tmp_path / 'crash.sqlite3'}", tmp_path)


@pytest.mark.postgres
def test_sigkill_postgres(pg_engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = pg_engine.url.render_as_string(hide_password=False)
    _crash_and_check(url, tmp_path)
