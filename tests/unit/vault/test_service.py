"""The vault end to end, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from courierguard.db.tables import data_keys, parties
from courierguard.errors import InvalidInput, NotFound
from courierguard.events import PiiField
from courierguard.vault import LocalKeyFile, Vault, VaultError, VaultFailure, service


def record(n: int, *, month: str = "11", phone: str = "13812345634", **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "number": f"YT{n:013d}",
        "origin_outlet": "SZ-NS-01",
        "dest_outlet": "BJ-HD-02",
        "routing_code": "755-010-A1",
        "created_at": f"2026-{month}-02T10:00:00+08:00",
        "sender": {
            "name": "张三",
            "phone": phone,
            "address": {
                "province": "广东省",
                "city": "深圳市",
                "district": "南山区",
                "detail": "科技园1栋2单元301",
            },
        },
        "recipient": {
            "name": "欧阳娜娜",
            "phone": "010-62345678",
            "address": {
                "province": "北京市",
                "city": "北京市",
                "district": "海淀区",
                "detail": "中关村3号楼502",
            },
        },
    }
    base.update(over)
    return base


@pytest.fixture
def vault(engine: Engine, tmp_path: Path) -> Vault:
    return Vault(engine, LocalKeyFile(tmp_path / "keys.json"), tenant="t-" + secrets.token_hex(4))


def test_ingest_mask_reveal_roundtrip(vault: Vault) -> None:
    result = vault.ingest_records([record(1)])
    assert result.stored == ("YT0000000000001",) and result.failed == ()
    masked = vault.masked("YT0000000000001")
    assert masked.sender is not None and masked.recipient is not None
    assert (masked.sender.name, masked.sender.phone) == ("张*", "138******34")
    assert masked.recipient.address == "北京市海淀区****"
    clear = vault.reveal("YT0000000000001", [PiiField.SENDER_PHONE, PiiField.RECIPIENT_NAME])
    assert clear == {PiiField.SENDER_PHONE: "+8613812345634", PiiField.RECIPIENT_NAME: "欧阳娜娜"}
    assert vault.reveal("YT0000000000001", [PiiField.SENDER_ADDRESS])[PiiField.SENDER_ADDRESS] == (
        "广东省深圳市南山区科技园1栋2单元301"
    )


def test_nothing_in_the_database_is_clear_text(vault: Vault) -> None:
    vault.ingest_records([record(1)])
    with vault.engine.connect() as conn:
        rows = conn.execute(select(parties).where(parties.c.tenant == vault.tenant)).all()
    dump = repr(rows).encode() + b"".join(v for row in rows for v in row if isinstance(v, bytes))
    for secret in ["13812345634", "62345678", "张三", "欧阳娜娜", "科技园", "中关村"]:
        assert secret.encode() not in dump
        assert secret not in repr(rows)


def test_bad_records_fail_alone_and_name_the_field(vault: Vault) -> None:
    no_recipient = record(3)
    del no_recipient["recipient"]
    long_detail = record(4)
    long_detail["sender"]["address"]["detail"] = "x" * 201
    result = vault.ingest_records(
        [record(1), record(2, phone="12345"), no_recipient, long_detail, "junk", record(5), record(1)]
    )
    assert result.stored == ("YT0000000000001", "YT0000000000005")
    failures = {(f.index, f.field) for f in result.failed}
    assert failures == {
        (1, "sender.phone"),
        (2, "recipient"),
        (3, "sender.address.detail"),
        (4, "record"),
        (6, "number"),
    }
    for f in result.failed:
        assert "12345" not in f.message
    with pytest.raises(NotFound):
        vault.masked("YT0000000000002")
    again = vault.ingest_records([record(5)])
    assert again.stored == () and again.failed[0].message == "already exists"


def test_tampered_ciphertext_fails(vault: Vault) -> None:
    vault.ingest_records([record(1)])
    with vault.engine.begin() as conn:
        ct = conn.execute(
            select(parties.c.phone_ct).where(parties.c.tenant == vault.tenant, parties.c.role == "sender")
        ).scalar_one()
        tampered = ct[:-1] + bytes([ct[-1] ^ 1])
        conn.execute(update(parties).where(parties.c.tenant == vault.tenant).values(phone_ct=tampered))
    with pytest.raises(VaultError) as caught:
        vault.reveal("YT0000000000001", [PiiField.SENDER_PHONE])
    assert caught.value.failure == VaultFailure.UNREADABLE
    assert "13812345634" not in caught.value.diagnostics()


def test_swapped_ciphertexts_between_records_fail(vault: Vault) -> None:
    vault.ingest_records([record(1), record(2, phone="13999998888")])
    with vault.engine.begin() as conn:
        ct = {
            r.waybill: r.phone_ct
            for r in conn.execute(
                select(parties.c.waybill, parties.c.phone_ct).where(
                    parties.c.tenant == vault.tenant, parties.c.role == "sender"
                )
            )
        }
        for number, other in (("YT0000000000001", "YT0000000000002"), ("YT0000000000002", "YT0000000000001")):
            conn.execute(
                update(parties)
                .where(
                    parties.c.tenant == vault.tenant, parties.c.waybill == number, parties.c.role == "sender"
                )
                .values(phone_ct=ct[other])
            )
    for number in ("YT0000000000001", "YT0000000000002"):
        with pytest.raises(VaultError):
            vault.reveal(number, [PiiField.SENDER_PHONE])


def test_swapped_fields_within_a_record_fail(vault: Vault) -> None:
    vault.ingest_records([record(1)])
    with vault.engine.begin() as conn:
        row = conn.execute(
            select(parties.c.name_ct, parties.c.phone_ct).where(
                parties.c.tenant == vault.tenant, parties.c.role == "sender"
            )
        ).one()
        conn.execute(
            update(parties)
            .where(parties.c.tenant == vault.tenant, parties.c.role == "sender")
            .values(name_ct=row.phone_ct, phone_ct=row.name_ct)
        )
    with pytest.raises(VaultError):
        vault.reveal("YT0000000000001", [PiiField.SENDER_NAME])


def test_rotation_rewraps_and_everything_stays_readable(vault: Vault, tmp_path: Path) -> None:
    vault.ingest_records([record(1, month="10"), record(2, month="11")])
    with vault.engine.connect() as conn:
        before = dict(
            conn.execute(
                select(data_keys.c.month, data_keys.c.wrapped).where(data_keys.c.tenant == vault.tenant)
            ).all()
        )
    report = vault.rotate_keys()
    assert report.rewrapped >= 2 and report.retirable
    keys = LocalKeyFile(tmp_path / "keys.json")
    # The old KEK is kept (a worker may not have the new file yet) until it is retired.
    assert keys.active_kek_id() == report.new_kek and keys.kek_ids() == {report.new_kek, *report.retirable}
    retired = vault.retire_keys()
    assert retired.removed and retired.unused == report.retirable and retired.rewrapped == 0
    keys = LocalKeyFile(tmp_path / "keys.json")
    assert keys.kek_ids() == {report.new_kek}
    fresh = Vault(vault.engine, keys, tenant=vault.tenant)  # no cached data keys
    for n in (1, 2):
        assert fresh.reveal(f"YT{n:013d}", [PiiField.SENDER_NAME]) == {PiiField.SENDER_NAME: "张三"}
    with vault.engine.connect() as conn:
        after = dict(
            conn.execute(
                select(data_keys.c.month, data_keys.c.wrapped).where(data_keys.c.tenant == vault.tenant)
            ).all()
        )
    assert before.keys() == after.keys() and all(before[m] != after[m] for m in before)


def test_shredding_a_month_makes_exactly_that_month_unreadable(vault: Vault, tmp_path: Path) -> None:
    vault.ingest_records([record(1, month="10"), record(2, month="11"), record(3, month="11")])
    report = vault.shred_month("2026-11")
    assert report.parties == 4
    fresh = Vault(vault.engine, LocalKeyFile(tmp_path / "keys.json"), tenant=vault.tenant)
    assert fresh.reveal("YT0000000000001", [PiiField.SENDER_NAME]) == {PiiField.SENDER_NAME: "张三"}
    for v in (vault, fresh):
        for n in (2, 3):
            with pytest.raises(VaultError) as caught:
                v.reveal(f"YT{n:013d}", [PiiField.SENDER_PHONE])
            assert caught.value.failure == VaultFailure.SHREDDED
    assert fresh.waybills_by_phone("13812345634") == ["YT0000000000001"]
    masked = fresh.masked("YT0000000000002")
    assert masked.sender == masked.sender.__class__(None, None, None)
    with pytest.raises(InvalidInput):
        vault.shred_month("secrets")


def test_a_shred_takes_the_utc_month_of_creation_as_documented(vault: Vault) -> None:
    # docs/vault.md: the key month is the UTC month of created_at, not the month in Beijing time
    created = {
        1: "2026-11-01T07:59:59.999999+08:00",  # 31 October UTC: 2026-10
        2: "2026-11-01T08:00:00+08:00",  # the first instant of 2026-11
        3: "2026-11-30T23:59:59.999+08:00",  # the last day of November in Beijing: 2026-11
        4: "2026-12-01T07:59:59.999999+08:00",  # 1 December in Beijing, 30 November UTC: 2026-11
        5: "2026-12-01T08:00:00+08:00",  # 2026-12
    }
    assert vault.ingest_records([record(n, created_at=at) for n, at in created.items()]).failed == ()
    assert vault.shred_month("2026-11").parties == 3 * 2
    for n, readable in ((1, True), (2, False), (3, False), (4, False), (5, True)):
        if readable:
            assert vault.reveal(f"YT{n:013d}", [PiiField.SENDER_NAME]) == {PiiField.SENDER_NAME: "张三"}
        else:
            with pytest.raises(VaultError) as caught:
                vault.reveal(f"YT{n:013d}", [PiiField.SENDER_NAME])
            assert caught.value.failure == VaultFailure.SHREDDED


def test_lookup_by_phone_and_name_through_the_blind_index(vault: Vault) -> None:
    vault.ingest_records([record(1), record(2, phone="13999998888"), record(3)])
    assert vault.waybills_by_phone("+86 138-1234-5634") == ["YT0000000000001", "YT0000000000003"]
    assert vault.waybills_by_phone("010 6234 5678") == [f"YT{n:013d}" for n in (1, 2, 3)]
    assert vault.waybills_by_phone("nonsense") == []
    assert vault.waybills_by_name("欧阳 娜娜") == [f"YT{n:013d}" for n in (1, 2, 3)]


def test_secrets_at_rest_roundtrip_and_bind_label(vault: Vault) -> None:
    sealed = vault.seal_secret("totp:E1:dev1", b"seed-bytes")
    assert vault.open_secret("totp:E1:dev1", sealed) == b"seed-bytes"
    with pytest.raises(VaultError):
        vault.open_secret("totp:E2:dev1", sealed)


def test_reveal_of_unknown_waybill_is_not_found(vault: Vault) -> None:
    with pytest.raises(NotFound):
        vault.reveal("YT0000000000099", [PiiField.SENDER_NAME])


def test_masked_many_keeps_the_order_asked_and_leaves_out_unknown_numbers(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert vault.ingest_records([record(n) for n in range(1, 6)]).failed == ()
    asked = ["YT0000000000004", "YT0000000000099", "YT0000000000001", "YT0000000000005", "YT0000000000004"]
    # Two numbers per statement: the chunks must join up in the order asked.
    monkeypatch.setattr(service, "_MASKED_CHUNK", 2)
    views = vault.masked_many(asked)
    assert [v.waybill.number for v in views] == [n for n in asked if n != "YT0000000000099"]
    assert views == [vault.masked(v.waybill.number) for v in views]
    assert views[0].recipient is not None and views[0].recipient.address == "北京市海淀区****"
    assert vault.masked_many([]) == []


def _worker(vault: Vault, tmp_path: Path) -> Vault:
    """Another process on the same database and key file: its own key provider and caches."""
    return Vault(vault.engine, LocalKeyFile(tmp_path / "keys.json"), tenant=vault.tenant)


def test_rotation_while_workers_run_loses_nothing(vault: Vault, tmp_path: Path) -> None:
    vault.ingest_records([record(1, month="09"), record(2, month="10")])
    warm, cold = _worker(vault, tmp_path), _worker(vault, tmp_path)
    assert warm.reveal("YT0000000000001", [PiiField.SENDER_NAME])  # caches September's key
    operator = _worker(vault, tmp_path)
    report = operator.rotate_keys()
    # A worker that had not read October's key reads it under the new KEK (it was a 500 before).
    assert cold.reveal("YT0000000000002", [PiiField.SENDER_NAME]) == {PiiField.SENDER_NAME: "张三"}
    # A worker started before the rotation wraps a new month's key with the new KEK, not the old.
    warm.ingest_records([record(3, month="12")])
    with vault.engine.connect() as conn:
        kek_of = dict(
            conn.execute(
                select(data_keys.c.month, data_keys.c.kek_id).where(data_keys.c.tenant == vault.tenant)
            ).all()
        )
    assert set(kek_of.values()) == {report.new_kek}, kek_of
    operator.retire_keys()
    fresh = _worker(vault, tmp_path)
    for n in (1, 2, 3):
        assert fresh.reveal(f"YT{n:013d}", [PiiField.SENDER_NAME]) == {PiiField.SENDER_NAME: "张三"}


def test_a_shred_by_another_process_is_not_undone_by_a_cached_key(vault: Vault, tmp_path: Path) -> None:
    vault.ingest_records([record(1, month="10")])
    a, b = _worker(vault, tmp_path), _worker(vault, tmp_path)
    assert a.reveal("YT0000000000001", [PiiField.SENDER_NAME])  # a caches October's key
    b.shred_month("2026-10")
    # Late records of the shredded month, one through each worker: both under one new key.
    assert a.ingest_records([record(11, month="10")]).stored == ("YT0000000000011",)
    assert b.ingest_records([record(12, month="10")]).stored == ("YT0000000000012",)
    for reader in (a, b, _worker(vault, tmp_path)):
        for n in (11, 12):
            assert reader.reveal(f"YT{n:013d}", [PiiField.SENDER_NAME]) == {PiiField.SENDER_NAME: "张三"}
        with pytest.raises(VaultError):
            reader.reveal("YT0000000000001", [PiiField.SENDER_NAME])


def test_prepared_batch_names_what_it_will_store_and_stores_nothing_until_asked(vault: Vault) -> None:
    vault.ingest_records([record(1)])
    prepared = vault.prepare_records([record(1), record(2), record(2), {"number": "13912345678"}])
    assert prepared.numbers == ("YT0000000000002",)
    assert [(f.index, f.number, f.message) for f in prepared.failed] == [
        (0, "YT0000000000001", "already exists"),
        (2, "YT0000000000002", "appears twice in the batch"),
        (3, None, "must be two capital letters and 13 digits"),  # never echoed
    ]
    with pytest.raises(NotFound):
        vault.masked("YT0000000000002")
    assert vault.store(prepared).stored == ("YT0000000000002",)
    # Stored by someone else in between: "already exists", nothing half-written.
    again = vault.prepare_records([record(3)])
    vault.ingest_records([record(3)])
    result = vault.store(again)
    assert result.stored == () and [f.message for f in result.failed] == ["already exists"]


def test_a_batch_sealed_before_a_shred_is_sealed_again_even_after_the_cache_moved_on(
    vault: Vault, tmp_path: Path
) -> None:
    # Two requests on one worker around a shred by another process: the first is sealed under the
    # old key and waits (its audit commit); the second meets the new key and caches it. The first
    # must not pass the insert's check because the cache now matches (the production re-test's A).
    worker, operator = _worker(vault, tmp_path), _worker(vault, tmp_path)
    worker.ingest_records([record(1, month="09")])
    waiting = worker.prepare_records([record(2, month="09")])
    operator.shred_month("2026-09")
    assert worker.ingest_records([record(3, month="09")]).stored == ("YT0000000000003",)
    assert worker.store(waiting).stored == ("YT0000000000002",)
    fresh = _worker(vault, tmp_path)
    for n in (2, 3):
        assert fresh.reveal(f"YT{n:013d}", [PiiField.SENDER_NAME]) == {PiiField.SENDER_NAME: "张三"}


def test_two_workers_creating_one_months_key_at_once_share_it(vault: Vault, tmp_path: Path) -> None:
    import threading

    workers = [_worker(vault, tmp_path) for _ in range(4)]
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def ingest(i: int) -> None:
        try:
            barrier.wait()
            workers[i].ingest_records([record(100 + i, month="03")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and not any(t.is_alive() for t in threads)  # it deadlocked when it lost the race
    fresh = _worker(vault, tmp_path)
    for i in range(len(workers)):
        assert fresh.reveal(f"YT{100 + i:013d}", [PiiField.SENDER_NAME]) == {PiiField.SENDER_NAME: "张三"}


def _masks(vault: Vault) -> dict[tuple[str, str], tuple[str | None, str | None, str | None]]:
    p = parties.c
    with vault.engine.connect() as conn:
        rows = conn.execute(
            select(p.waybill, p.role, p.name_masked, p.phone_masked, p.address_masked).where(
                p.tenant == vault.tenant
            )
        ).all()
    return {(r.waybill, r.role): (r.name_masked, r.phone_masked, r.address_masked) for r in rows}


def test_remask_derives_stored_masks_anew_and_only_where_they_differ(vault: Vault) -> None:
    vault.ingest_records([record(n) for n in range(1, 6)] + [record(9, month="10")])
    fresh = _masks(vault)
    p = parties.c
    with vault.engine.begin() as conn:
        # Masks of an older rule (the name whole), and one a DBA edited to the clear phone.
        conn.execute(
            update(parties).where(p.tenant == vault.tenant, p.role == "sender").values(name_masked="张三")
        )
        conn.execute(
            update(parties)
            .where(p.tenant == vault.tenant, p.waybill == "YT0000000000002", p.role == "recipient")
            .values(phone_masked="010-62345678", address_masked="北京市北京市海淀区中关村3号楼502")
        )
    vault.shred_month("2026-10")  # shredded parties are not sealed any more: skipped, masks stay cleared
    assert vault.sealed_parties() == 10
    done: list[int] = []
    report = vault.remask(batch=3, progress=done.append)
    assert (report.parties, report.changed, report.unreadable) == (10, 6, 0)
    assert sum(done) == 10 and max(done) == 3
    after = _masks(vault)
    assert after == {**fresh, ("YT0000000000009", "sender"): (None, None, None),
                     ("YT0000000000009", "recipient"): (None, None, None)}  # fmt: skip
    assert vault.remask().changed == 0  # idempotent
    with pytest.raises(InvalidInput):
        vault.remask(batch=0)


def test_remask_leaves_a_party_that_does_not_decrypt_as_it_was(vault: Vault) -> None:
    vault.ingest_records([record(1), record(2)])
    p = parties.c
    with vault.engine.begin() as conn:
        conn.execute(
            update(parties)
            .where(p.tenant == vault.tenant, p.waybill == "YT0000000000001", p.role == "sender")
            .values(name_ct=b"\x00" * 40, name_masked="edited")
        )
    report = vault.remask()
    assert (report.parties, report.changed, report.unreadable) == (4, 0, 1)
    assert _masks(vault)[("YT0000000000001", "sender")][0] == "edited"


@pytest.mark.postgres
def test_rotation_does_not_put_back_a_shredded_key_over_its_successor(
    pg_engine: Engine, tmp_path: Path
) -> None:
    # PostgreSQL (read committed) only: on SQLite the rotation's transaction, having read, cannot
    # write after another connection did, so it fails instead of overwriting.
    tenant = "t-" + secrets.token_hex(4)
    worker = Vault(pg_engine, LocalKeyFile(tmp_path / "keys.json"), tenant=tenant)
    worker.ingest_records([record(1, month="10")])

    class ShredDuringRotation(LocalKeyFile):
        """The operator's provider: while the rotation re-wraps October's key, another process
        shreds October and a late October parcel arrives (a new key for the month)."""

        fired = False

        def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
            key = super().unwrap(kek_id, wrapped, context)
            if not self.fired and context.endswith(b"|2026-10"):
                self.fired = True
                other = _worker(worker, tmp_path)
                other.shred_month("2026-10")
                assert other.ingest_records([record(2, month="10")]).stored == ("YT0000000000002",)
            return key

    operator = Vault(pg_engine, ShredDuringRotation(tmp_path / "keys.json"), tenant=tenant)
    operator.rotate_keys()
    assert operator._keys.fired  # type: ignore[attr-defined]
    # The late parcel stays readable: the rotation did not write the shredded key back over its
    # successor (which also resurrected the shredded key, for any copy of its ciphertexts).
    fresh = _worker(worker, tmp_path)
    assert fresh.reveal("YT0000000000002", [PiiField.SENDER_NAME]) == {PiiField.SENDER_NAME: "张三"}
    with pytest.raises(VaultError):
        fresh.reveal("YT0000000000001", [PiiField.SENDER_NAME])
