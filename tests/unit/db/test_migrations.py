"""Migrations and declared tables agree, on both backends; migrating twice is harmless."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from courierguard.db import create_db_engine, migrate
from courierguard.db.schema import metadata


def test_migrated_schema_matches_the_declared_tables(engine: Engine) -> None:
    migrate(engine)  # second run: a no-op
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_audit_waybill_index_survives_the_0004_rebuild(tmp_path: object) -> None:
    """From 0002 to 0004 and back on SQLite: rows kept, WITHOUT ROWID on the way up, rowid on the way down."""
    from pathlib import Path

    from alembic import command
    from sqlalchemy import text

    from courierguard.db import create_db_engine
    from courierguard.db.engine import alembic_config

    assert isinstance(tmp_path, Path)
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    engine = create_db_engine(url)
    config = alembic_config(engine)
    command.upgrade(config, "0002_audit")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_waybills (waybill, seq) VALUES ('YT0000000000001', 7)"))
    command.upgrade(config, "heads")

    def table_sql() -> str:
        with engine.connect() as conn:
            return str(
                conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'audit_waybills'")).scalar_one()
            )

    def indexes() -> set[str]:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_entries'")
            )
            return {r[0] for r in rows}

    assert "WITHOUT ROWID" in table_sql().upper()
    assert "ix_audit_entries_tenant_seq" not in indexes()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT waybill, seq FROM audit_waybills")).all() == [("YT0000000000001", 7)]
    command.downgrade(config, "0002_audit")
    assert "WITHOUT ROWID" not in table_sql().upper()
    assert "ix_audit_entries_tenant_seq" in indexes()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT waybill, seq FROM audit_waybills")).all() == [("YT0000000000001", 7)]
    engine.dispose()


def test_0005_indexes_every_entry_and_downgrade_indexes_the_tail(tmp_path: object) -> None:
    """Up from 0004 with entries: every actor indexed and the mark past them. Down again with an
    unindexed tail: the tail's waybills are written, since the older code expects a complete index."""
    from pathlib import Path

    from alembic import command
    from sqlalchemy import text

    from courierguard.audit.models import canonical_json, encode_entry
    from courierguard.db import create_db_engine
    from courierguard.db.engine import alembic_config

    assert isinstance(tmp_path, Path)
    engine = create_db_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    config = alembic_config(engine)

    def add_entry(seq: int, actor: str, waybill: str) -> None:
        body = {"actor": {"id": actor}, "resource": {"type": "waybill", "id": waybill}}
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_entries (seq, ts_us, kind, actor, entry, leaf_hash) "
                    "VALUES (:seq, 0, 'access', :actor, :entry, :leaf)"
                ),
                {
                    "seq": seq,
                    "actor": actor,
                    "entry": encode_entry(seq, 0, "access", canonical_json(body)),
                    "leaf": b"\0" * 32,
                },
            )

    def names(kind: str) -> set[str]:
        with engine.connect() as conn:
            return {
                r[0]
                for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type = :k"), {"k": kind})
            }

    command.upgrade(config, "0004_audit_leaner_indexes")
    for seq in range(3):
        add_entry(seq, f"E{seq % 2}", f"YT{seq}")
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO audit_waybills (waybill, seq) VALUES (:w, :s)"), {"w": f"YT{seq}", "s": seq}
            )
    command.upgrade(config, "heads")
    assert "ix_audit_entries_actor_seq" not in names("index")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT actor, seq FROM audit_actors ORDER BY seq")).all() == [
            ("E0", 0),
            ("E1", 1),
            ("E0", 2),
        ]
        assert conn.execute(text("SELECT upto FROM audit_index_mark WHERE id = 1")).scalar_one() == 3
        # 0009 filed their subjects (none: these are reads) and put its own mark beside it.
        assert conn.execute(text("SELECT upto FROM audit_index_mark WHERE id = 2")).scalar_one() == 3
    add_entry(3, "E9", "YT3")  # committed by the new code, not indexed yet
    command.downgrade(config, "0004_audit_leaner_indexes")
    assert "ix_audit_entries_actor_seq" in names("index")
    assert not {"audit_actors", "audit_index_mark"} & names("table")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT waybill, seq FROM audit_waybills ORDER BY seq")).all()
    assert rows == [("YT0", 0), ("YT1", 1), ("YT2", 2), ("YT3", 3)]
    engine.dispose()


def test_0006_hashes_the_tiles_of_stored_entries(tmp_path: object) -> None:
    from hashlib import sha256
    from pathlib import Path

    from alembic import command
    from sqlalchemy import inspect, text

    from courierguard.audit.merkle import root_from_packed
    from courierguard.db import create_db_engine
    from courierguard.db.engine import alembic_config

    assert isinstance(tmp_path, Path)
    engine = create_db_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    config = alembic_config(engine)
    command.upgrade(config, "0005_audit_deferred_index")
    leaves = [sha256(b"%d" % i).digest() for i in range(600)]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_entries (seq, ts_us, kind, entry, leaf_hash) VALUES (:s, 0, 'system', NULL, :h)"
            ),
            [{"s": i, "h": h} for i, h in enumerate(leaves)],
        )
    command.upgrade(config, "heads")
    with engine.connect() as conn:
        tiles = conn.execute(text("SELECT height, idx, hash FROM audit_tiles ORDER BY idx")).all()
    assert [(h, i) for h, i, _ in tiles] == [(8, 0), (8, 1)]  # the third tile is incomplete
    for _, i, tile_hash in tiles:
        assert bytes(tile_hash) == root_from_packed(b"".join(leaves[i * 256 : (i + 1) * 256]))
    command.downgrade(config, "0005_audit_deferred_index")
    assert "audit_tiles" not in inspect(engine).get_table_names()
    engine.dispose()


def test_0005_takes_the_audit_writers_lock() -> None:
    """The migration holds off writers of the previous version with their own advisory lock."""
    import importlib.util
    from pathlib import Path

    from courierguard.audit import sql
    from courierguard.db import engine

    path = Path(engine.__file__).with_name("migrations") / "versions" / "0005_audit_deferred_index.py"
    spec = importlib.util.spec_from_file_location("migration_0005", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.AUDIT_WRITERS_LOCK == sql._PG_LOCK_KEY


@pytest.mark.postgres
def test_workers_starting_together_on_a_fresh_database_all_come_up(pg_empty_database: str) -> None:
    # Every worker migrates at start: three at once on an empty database had left two with
    # IntegrityError (pg_type_typname_nsp_index), racing to create the same tables (docs review D9).
    # Processes, as workers are: Alembic's context is global to a process.
    script = "import sys; from courierguard.db import create_db_engine, migrate; migrate(create_db_engine(sys.argv[1]))"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, pg_empty_database],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    outputs = [w.communicate(timeout=120)[0].decode(errors="replace") for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0, 0], outputs
    engine = create_db_engine(pg_empty_database)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()
