"""Vault figures (issue 2): ingest, masked read and reveal rates against plain baselines, one core."""

from __future__ import annotations

import itertools
import random
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select

from benchmarks.report import Report, paired_rates, rate
from courierguard.db import create_db_engine, migrate
from courierguard.db.tables import parties, waybill_history, waybills
from courierguard.domain import NewWaybill
from courierguard.events import PiiField
from courierguard.sim.synthetic import PartyGenerator
from courierguard.vault import LocalKeyFile, Vault

BATCH = 1000
SECTION = "Vault (SQLite, one core)"


def _batches(gen: PartyGenerator, counter: itertools.count[int], n_batches: int) -> list[list[NewWaybill]]:
    created = datetime(2026, 11, 11, 9, 0, tzinfo=UTC)
    out = []
    for _ in range(n_batches):
        batch = []
        for _ in range(BATCH):
            n = next(counter)
            batch.append(
                NewWaybill(
                    number=f"YT{n:013d}",
                    origin_outlet="SZ-NS-01",
                    dest_outlet="BJ-HD-02",
                    routing_code="755-010-A1",
                    sender=gen.party(),
                    recipient=gen.party(),
                    created_at=created,
                )
            )
        out.append(batch)
    return out


def _plain_rows(batch: list[NewWaybill], tenant: str) -> tuple[list[dict[str, Any]], ...]:
    """The same rows with clear text where the vault writes ciphertext: no crypto, masks or indexes."""
    wb, hist, pt = [], [], []
    for w in batch:
        wb.append(
            {
                "tenant": tenant, "number": w.number, "origin_outlet": w.origin_outlet, "dest_outlet": w.dest_outlet,
                "routing_code": w.routing_code, "status": w.status.value, "status_ts": w.created_at,
                "assignee": None, "task": None, "created_at": w.created_at, "delivered_at": None,
                "key_month": "2026-11",
            }
        )  # fmt: skip
        hist.append({"tenant": tenant, "number": w.number, "status": w.status.value, "ts": w.created_at})
        for role in ("sender", "recipient"):
            p = getattr(w, role)
            pt.append(
                {
                    "tenant": tenant, "waybill": w.number, "role": role, "key_month": "2026-11",
                    "name_ct": p.name.encode(), "phone_ct": p.phone.encode(), "address_ct": p.address.full().encode(),
                    "name_masked": None, "phone_masked": None, "address_masked": None,
                    "phone_bidx": None, "name_bidx": None,
                }
            )  # fmt: skip
    return wb, hist, pt


def _plain_insert(engine: Engine, batch: list[NewWaybill], tenant: str) -> None:
    wb, hist, pt = _plain_rows(batch, tenant)
    with engine.begin() as conn:
        conn.execute(insert(waybills), wb)
        conn.execute(insert(waybill_history), hist)
        conn.execute(insert(parties), pt)


def run(report: Report) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cg-bench-vault-"))
    try:
        _measure(report, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(report: Report, tmp: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp / 'bench.sqlite3'}")
    migrate(engine)
    vault = Vault(engine, LocalKeyFile(tmp / "keys.json"), tenant="bench")
    gen = PartyGenerator(seed=7)
    counter = itertools.count(1)
    pending = _batches(gen, counter, 30)
    plain_pending = _batches(gen, counter, 30)

    def guarded() -> int:
        stored = 0
        for _ in range(10):
            stored += len(vault.ingest(pending.pop()).stored)
        return stored

    def plain() -> int:
        for _ in range(10):
            _plain_insert(engine, plain_pending.pop(), "bench-plain")
        return 10 * BATCH

    ingest, plain_rate = paired_rates(guarded, plain, repeat=3)
    report.add(
        SECTION, f"ingest, waybills with 6 PII fields, batches of {BATCH}", ingest, "waybills/s",
        baseline_name="plain INSERT of the same rows", baseline_value=plain_rate,
        target="≥ 10,000/s and ≥ 0.5 × plain", met=ingest >= 10_000 and ingest >= 0.5 * plain_rate,
    )  # fmt: skip

    with engine.connect() as conn:
        numbers = list(conn.execute(select(waybills.c.number).where(waybills.c.tenant == "bench")).scalars())
    rng = random.Random(1)

    plain_numbers = [f"YT{n:013d}" for n in range(30 * BATCH + 1, 60 * BATCH + 1)]

    def masked_page() -> int:
        return len(vault.masked_many(rng.sample(numbers, 100)))

    def plain_page() -> int:
        # The same two reads (waybill rows, then their party rows), returning raw rows.
        page = rng.sample(plain_numbers, 100)
        with engine.connect() as conn:
            rows = conn.execute(
                select(waybills).where(waybills.c.tenant == "bench-plain", waybills.c.number.in_(page))
            ).all()
            conn.execute(
                select(
                    parties.c.waybill,
                    parties.c.role,
                    parties.c.name_ct,
                    parties.c.phone_ct,
                    parties.c.address_ct,
                ).where(parties.c.tenant == "bench-plain", parties.c.waybill.in_(page))
            ).all()
        return len(rows)

    masked = rate(masked_page)
    masked_base = rate(plain_page)
    report.add(
        SECTION, "masked read, pages of 100", masked, "waybills/s",
        baseline_name="plain SELECT of the same rows", baseline_value=masked_base,
    )  # fmt: skip

    fields = list(PiiField)

    held = engine.connect()
    driver = held.connection.driver_connection
    sql = (
        "SELECT role, key_month, name_ct, phone_ct, address_ct FROM parties WHERE tenant = ? AND waybill = ?"
    )

    def reveal_one() -> int:
        for _ in range(100):
            vault.reveal_in(held, rng.choice(numbers), [rng.choice(fields)])
        return 100

    def select_one() -> int:
        for _ in range(100):
            driver.execute(sql, ("bench-plain", rng.choice(plain_numbers))).fetchall()  # type: ignore[union-attr]
        return 100

    def reveal_own_connection() -> int:
        for _ in range(100):
            vault.reveal(rng.choice(numbers), [rng.choice(fields)])
        return 100

    reveal = rate(reveal_one)
    report.add(
        SECTION, "reveal of single fields, in-process (caller's connection, as the gateway)", reveal, "fields/s",
        baseline_name="the same SELECT of clear-text rows", baseline_value=rate(select_one),
        target="≥ 50,000/s", met=reveal >= 50_000,
    )  # fmt: skip
    report.add(
        SECTION, "reveal of single fields, Vault.reveal (the thread's held connection)", rate(reveal_own_connection),
        "fields/s", baseline_name="reveal on the caller's connection", baseline_value=reveal,
    )  # fmt: skip
    held.close()
    engine.dispose()
