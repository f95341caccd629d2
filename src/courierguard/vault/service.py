"""The PII vault: envelope-encrypted party data with stored masks and a keyed blind index.

Layout of the envelope: a random 256-bit *data key* per tenant and month encrypts that month's
fields with AES-256-GCM; the data key is stored only wrapped by a key-encryption key (KEK) held by
the key provider. Each field's associated data names tenant, waybill and field, so a ciphertext
moved to another record or another field no longer decrypts.

* rotation re-wraps the data keys under a new KEK (the data itself is not re-encrypted);
* crypto-shredding deletes one month's data key (and its masks and blind indexes), making exactly
  that month's personal data unrecoverable.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from courierguard.clock import Clock, SystemClock
from courierguard.db.fast import DriverQuery, timestamp
from courierguard.db.tables import data_keys, parties, waybill_history, waybills
from courierguard.domain import NewWaybill, Party, TaskKind, Waybill
from courierguard.errors import CourierGuardError, InvalidInput, NotFound
from courierguard.events import PiiField, WaybillStatus
from courierguard.timeutil import month_of, utc, utc_or_none
from courierguard.vault._internal.aead import Aead, DecryptionFailed, new_key
from courierguard.vault.blind_index import BlindIndex
from courierguard.vault.keys import KeyProvider
from courierguard.vault.masking import mask_address, mask_name, mask_phone
from courierguard.vault.normalize import normalize_name, normalize_phone
from courierguard.vault.records import parse_new_waybill

_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")

SECRETS_MONTH = "secrets"
"""Pseudo-month of the data key that encrypts operational secrets (TOTP seeds); never shredded."""

PARTY_ROLES = ("sender", "recipient")
SEALED_COLUMNS = "p.role, p.key_month, p.name_ct, p.phone_ct, p.address_ct"
"""The columns of ``parties p`` that :meth:`Vault.open_sealed` decrypts from, in this order; for a
statement of another module that reads a waybill's sealed parties along with what it needs."""
_REVEAL_SQL = f"SELECT {SEALED_COLUMNS} FROM parties p WHERE p.tenant = ? AND p.waybill = ?"  # noqa: S608
_CT_INDEX = {"name": 2, "phone": 3, "address": 4}
MASKED_COLUMNS = (
    "w.number, w.origin_outlet, w.dest_outlet, w.routing_code, w.status, w.status_ts, w.created_at, "
    "w.assignee, w.task, w.delivered_at, p.role, p.name_masked, p.phone_masked, p.address_masked"
)
"""The columns of ``waybills w`` left-joined with its ``parties p`` that :meth:`Vault.masked_from_rows`
builds a masked view from, in this order; like :data:`SEALED_COLUMNS`, for a statement of another
module (the gateway reads them with the session on a view)."""
_MASKED_SQL = (
    f"SELECT {MASKED_COLUMNS} FROM waybills w LEFT JOIN parties p "  # noqa: S608
    "ON p.tenant = w.tenant AND p.waybill = w.number WHERE w.tenant = ? AND w.number = ?"
)
_MASKED_ROLE = 10
# Placeholders for the numbers are appended per statement; values are always bound.
_MASKED_MANY_SQL = (
    f"SELECT {MASKED_COLUMNS} FROM waybills w LEFT JOIN parties p "  # noqa: S608
    "ON p.tenant = w.tenant AND p.waybill = w.number WHERE w.tenant = ? AND w.number IN "
)
_MASKED_CHUNK = 500
"""Numbers per statement: well inside SQLite's and PostgreSQL's limits on bound values."""


class VaultFailure(StrEnum):
    UNREADABLE = "unreadable"
    SHREDDED = "shredded"
    KEY_UNAVAILABLE = "key_unavailable"


class VaultError(CourierGuardError):
    """A field could not be revealed.

    Outside, every vault failure looks the same (``reason`` is always ``record_unavailable``): a
    caller probing records must not learn which were shredded and which were tampered with. The
    real cause is ``failure``, which the gateway writes to the audit log.
    """

    status = 409
    title = "Record unavailable"
    reason = "record_unavailable"

    def __init__(self, failure: VaultFailure) -> None:
        super().__init__("the requested personal data cannot be revealed")
        self.failure = failure


@dataclass(frozen=True, slots=True)
class MaskedParty:
    name: str | None
    phone: str | None
    address: str | None


@dataclass(frozen=True, slots=True)
class MaskedWaybill:
    waybill: Waybill
    sender: MaskedParty | None
    recipient: MaskedParty | None


@dataclass(frozen=True, slots=True)
class RecordError:
    index: int
    number: str | None
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    stored: tuple[str, ...]
    failed: tuple[RecordError, ...]


@dataclass(frozen=True, slots=True)
class RotationReport:
    new_kek: str
    retired: tuple[str, ...]
    rewrapped: int
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class ShredReport:
    month: str
    parties: int


def _aad(tenant: str, waybill: str, field: str) -> bytes:
    return f"cg/v1|{tenant}|{waybill}|{field}".encode()


def _wrap_context(tenant: str, month: str) -> bytes:
    return f"cg/datakey/v1|{tenant}|{month}".encode()


def waybill_from_row(row: Any) -> Waybill:
    return Waybill(
        number=row.number,
        origin_outlet=row.origin_outlet,
        dest_outlet=row.dest_outlet,
        routing_code=row.routing_code,
        status=WaybillStatus(row.status),
        status_ts=utc(row.status_ts),
        created_at=utc(row.created_at),
        assignee=row.assignee,
        task=TaskKind(row.task) if row.task else None,
        delivered_at=utc_or_none(row.delivered_at),
    )


class Vault:
    """Encrypted, indexed, masked party data of one tenant."""

    def __init__(self, engine: Engine, keys: KeyProvider, *, tenant: str, clock: Clock | None = None) -> None:
        self.engine = engine
        self.tenant = tenant
        self._keys = keys
        self._clock = clock or SystemClock()
        self._index = BlindIndex(keys.blind_index_key())
        self._data_keys: dict[str, Aead] = {}
        self._lock = threading.Lock()
        self._reveal_query = DriverQuery(engine, _REVEAL_SQL)
        self._masked_query = DriverQuery(engine, _MASKED_SQL)

    # --- data keys --------------------------------------------------------------------------------

    def _data_key(self, conn: Connection, month: str, *, create: bool) -> Aead:
        cached = self._data_keys.get(month)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._data_keys.get(month)
            if cached is not None:
                return cached
            context = _wrap_context(self.tenant, month)
            row = conn.execute(
                select(data_keys.c.kek_id, data_keys.c.wrapped).where(
                    data_keys.c.tenant == self.tenant, data_keys.c.month == month
                )
            ).first()
            if row is None:
                if not create:
                    raise VaultError(VaultFailure.SHREDDED)
                key = new_key()
                kek_id, wrapped = self._keys.wrap(key, context)
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(data_keys).values(
                                tenant=self.tenant,
                                month=month,
                                kek_id=kek_id,
                                wrapped=wrapped,
                                created_at=self._clock.now(),
                            )
                        )
                except IntegrityError:  # another worker created it first: use theirs
                    return self._data_key(conn, month, create=False)
            else:
                key = self._keys.unwrap(row.kek_id, row.wrapped, context)
            aead = Aead(key)
            self._data_keys[month] = aead
            return aead

    # --- ingest -------------------------------------------------------------------------------------

    def ingest_records(self, records: Sequence[Any]) -> IngestResult:
        """Validate and store a batch of loose records; each bad record fails alone."""
        now = self._clock.now()
        good: list[tuple[int, NewWaybill]] = []
        failed: list[RecordError] = []
        for i, raw in enumerate(records):
            try:
                good.append((i, parse_new_waybill(raw, default_time=now)))
            except InvalidInput as exc:
                number = raw.get("number") if isinstance(raw, Mapping) else None
                failed.append(
                    RecordError(i, number if isinstance(number, str) else None, exc.field, exc.message)
                )
        result = self._store([w for _, w in good], [i for i, _ in good])
        return IngestResult(result.stored, tuple(sorted(failed + list(result.failed), key=lambda e: e.index)))

    def ingest(self, batch: Sequence[NewWaybill]) -> IngestResult:
        """Store already-built waybills (phones are still validated)."""
        return self._store(batch, list(range(len(batch))))

    def _store(self, batch: Sequence[NewWaybill], indexes: list[int]) -> IngestResult:
        failed: list[RecordError] = []
        seen: set[str] = set()
        prepared: list[tuple[int, str, dict[str, Any], dict[str, Any], list[dict[str, Any]]]] = []
        with self.engine.connect() as conn:
            for i, wb in zip(indexes, batch, strict=True):
                if wb.number in seen:
                    failed.append(RecordError(i, wb.number, "number", "appears twice in the batch"))
                    continue
                seen.add(wb.number)
                try:
                    prepared.append((i, wb.number, *self._rows(conn, wb)))
                except InvalidInput as exc:
                    failed.append(RecordError(i, wb.number, exc.field, exc.message))
            conn.commit()  # a data key created for a new month is kept even if the batch fails
        if not prepared:
            return IngestResult((), tuple(sorted(failed, key=lambda e: e.index)))
        try:
            self._insert(prepared)
        except IntegrityError:
            # Optimistic first try: duplicates are rare, so only now look up which numbers exist,
            # and store the rest. The failed transaction left nothing behind.
            with self.engine.connect() as conn:
                existing = self._existing_numbers(conn, [p[1] for p in prepared])
            failed += [
                RecordError(p[0], p[1], "number", "already exists") for p in prepared if p[1] in existing
            ]
            prepared = [p for p in prepared if p[1] not in existing]
            if prepared:
                self._insert(prepared)
        return IngestResult(tuple(p[1] for p in prepared), tuple(sorted(failed, key=lambda e: e.index)))

    def _insert(
        self, prepared: list[tuple[int, str, dict[str, Any], dict[str, Any], list[dict[str, Any]]]]
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(waybills), [p[2] for p in prepared])
            conn.execute(insert(waybill_history), [p[3] for p in prepared])
            conn.execute(insert(parties), [row for p in prepared for row in p[4]])

    def _rows(
        self, conn: Connection, wb: NewWaybill
    ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        created = utc(wb.created_at)
        month = month_of(created)
        aead = self._data_keys.get(month) or self._data_key(conn, month, create=True)
        party_rows = [
            self._party_row(aead, month, wb.number, role, getattr(wb, role)) for role in PARTY_ROLES
        ]
        waybill_row = {
            "tenant": self.tenant,
            "number": wb.number,
            "origin_outlet": wb.origin_outlet,
            "dest_outlet": wb.dest_outlet,
            "routing_code": wb.routing_code,
            "status": wb.status.value,
            "status_ts": created,
            "assignee": None,
            "task": None,
            "created_at": created,
            "delivered_at": None,
            "key_month": month,
        }
        history_row = {"tenant": self.tenant, "number": wb.number, "status": wb.status.value, "ts": created}
        return waybill_row, history_row, party_rows

    def _existing_numbers(self, conn: Connection, numbers: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(numbers), 500):
            chunk = numbers[start : start + 500]
            found.update(
                conn.execute(
                    select(waybills.c.number).where(
                        waybills.c.tenant == self.tenant, waybills.c.number.in_(chunk)
                    )
                ).scalars()
            )
        return found

    def _party_row(self, aead: Aead, month: str, number: str, role: str, party: Party) -> dict[str, Any]:
        try:
            phone = normalize_phone(party.phone)
        except ValueError as exc:
            raise InvalidInput(f"{role}.phone", str(exc)) from None
        try:
            name = normalize_name(party.name)
        except ValueError as exc:
            raise InvalidInput(f"{role}.name", str(exc)) from None
        address = party.address
        tenant = self.tenant
        return {
            "tenant": tenant,
            "waybill": number,
            "role": role,
            "key_month": month,
            "name_ct": aead.seal(name.encode(), _aad(tenant, number, f"{role}.name")),
            "phone_ct": aead.seal(phone.e164.encode(), _aad(tenant, number, f"{role}.phone")),
            "address_ct": aead.seal(
                "\x1f".join((address.province, address.city, address.district, address.detail)).encode(),
                _aad(tenant, number, f"{role}.address"),
            ),
            "name_masked": mask_name(name),
            "phone_masked": mask_phone(phone),
            "address_masked": mask_address(address.province, address.city, address.district),
            "phone_bidx": self._index.phone_e164(phone.e164),
            "name_bidx": self._index.normalized_name(name),
        }

    # --- masked reads -------------------------------------------------------------------------------

    def masked(self, number: str) -> MaskedWaybill:
        """The masked view of one waybill. Never decrypts.

        One driver-level statement, as :meth:`reveal` (a Core statement through a pooled connection
        cost a served view more than the reads themselves); :meth:`masked_many` for pages.
        """
        return self.masked_from_rows(number, self._masked_query.fetch(self.engine, (self.tenant, number)))

    @staticmethod
    def masked_from_rows(number: str, rows: Sequence[Sequence[Any]]) -> MaskedWaybill:
        """:meth:`masked` from rows of :data:`MASKED_COLUMNS` read by the caller (a row per party;
        repeated rows, as a join with other tables gives, are fine).

        :class:`NotFound` when the rows hold no waybill, or another waybill than ``number``.
        """
        first = rows[0] if rows else None
        if first is None or first[0] != number:
            raise NotFound(f"waybill {number} not found")
        status_ts, created_at = timestamp(first[5]), timestamp(first[6])
        assert status_ts is not None and created_at is not None  # NOT NULL columns
        waybill = Waybill(
            number=number,
            origin_outlet=first[1],
            dest_outlet=first[2],
            routing_code=first[3],
            status=WaybillStatus(first[4]),
            status_ts=status_ts,
            created_at=created_at,
            assignee=first[7],
            task=TaskKind(first[8]) if first[8] else None,
            delivered_at=timestamp(first[9]),
        )
        masks = {row[_MASKED_ROLE]: MaskedParty(row[11], row[12], row[13]) for row in rows}
        return MaskedWaybill(waybill, masks.get("sender"), masks.get("recipient"))

    def masked_many(self, numbers: Sequence[str]) -> list[MaskedWaybill]:
        """Masked views of ``numbers`` in the given order (unknown numbers are left out). Never decrypts.

        The statement of :meth:`masked` for a list of numbers (at most :data:`_MASKED_CHUNK` per
        statement), each waybill's rows built as :meth:`masked_from_rows` builds them.
        """
        unique = list(dict.fromkeys(numbers))
        by_number: dict[str, list[Any]] = {}
        for start in range(0, len(unique), _MASKED_CHUNK):
            chunk = unique[start : start + _MASKED_CHUNK]
            query = DriverQuery(self.engine, f"{_MASKED_MANY_SQL}({', '.join('?' * len(chunk))})")
            for row in query.fetch(self.engine, (self.tenant, *chunk)):
                by_number.setdefault(row[0], []).append(row)
        return [self.masked_from_rows(n, by_number[n]) for n in numbers if n in by_number]

    # --- reveal -------------------------------------------------------------------------------------

    def reveal(self, number: str, fields: Sequence[PiiField]) -> dict[PiiField, str]:
        """Clear text of ``fields`` of one waybill. The caller has already decided this is allowed.

        One driver-level statement on the thread's held SQLite connection (a pooled one for
        PostgreSQL; see :mod:`courierguard.db.fast`): checking a SQLAlchemy connection out of the
        pool and back in cost a served reveal more than the statement and the decryption together.
        """
        return self._open(self._reveal_query.fetch(self.engine, (self.tenant, number)), number, fields, None)

    def open_sealed(
        self, number: str, fields: Sequence[PiiField], rows: Sequence[Sequence[Any]]
    ) -> dict[PiiField, str]:
        """:meth:`reveal` from the waybill's parties rows (:data:`SEALED_COLUMNS`) read by the caller.

        For a caller that reads them in a statement it runs anyway (the gateway, with the session
        and the waybill's facts). Rows of another waybill or field do not open: the associated data
        of every ciphertext names its tenant, waybill and field.
        """
        return self._open(rows, number, fields, None)

    def reveal_in(self, conn: Connection, number: str, fields: Sequence[PiiField]) -> dict[PiiField, str]:
        """:meth:`reveal` on the caller's connection (inside its transaction: an export's snapshot)."""
        return self._open(self._reveal_query.all(conn, (self.tenant, number)), number, fields, conn)

    def _open(
        self, found: Sequence[Any], number: str, fields: Sequence[PiiField], conn: Connection | None
    ) -> dict[PiiField, str]:
        """Decrypt ``fields`` from the parties rows of ``_REVEAL_SQL``."""
        rows = {row[0]: row for row in found}
        if not rows:
            raise NotFound(f"waybill {number} not found")
        out: dict[PiiField, str] = {}
        for field in fields:
            row = rows.get(field.party)
            if row is None:
                raise NotFound(f"waybill {number} has no {field.party}")
            sealed = row[_CT_INDEX[field.attribute]]
            if sealed is None:
                raise VaultError(VaultFailure.SHREDDED)
            aead = self._data_keys.get(row[1]) or self._reading_key(conn, row[1])
            try:
                clear = aead.open(bytes(sealed), _aad(self.tenant, number, field.value)).decode()
            except DecryptionFailed:
                raise VaultError(VaultFailure.UNREADABLE) from None
            out[field] = _render(field, clear)
        return out

    def _reading_key(self, conn: Connection | None, month: str) -> Aead:
        """The data key of ``month`` for decrypting (never created), read on ``conn`` or its own."""
        if conn is not None:
            return self._data_key(conn, month, create=False)
        with self.engine.connect() as own:
            return self._data_key(own, month, create=False)

    # --- lookup -------------------------------------------------------------------------------------

    def waybills_by_phone(self, phone: str, *, limit: int = 1000) -> list[str]:
        """Waybill numbers where a party has this phone (any format); empty for a non-phone."""
        digest = self._index.phone(phone)
        if digest is None:
            return []
        return self._by_index(parties.c.phone_bidx, digest, limit)

    def waybills_by_name(self, name: str, *, limit: int = 1000) -> list[str]:
        digest = self._index.name(name)
        if digest is None:
            return []
        return self._by_index(parties.c.name_bidx, digest, limit)

    def _by_index(self, column: Any, digest: bytes, limit: int) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(parties.c.waybill)
                    .where(parties.c.tenant == self.tenant, column == digest)
                    .distinct()
                    .order_by(parties.c.waybill)
                    .limit(limit)
                ).scalars()
            )

    # --- secrets at rest ----------------------------------------------------------------------------

    def seal_secret(self, label: str, secret: bytes) -> bytes:
        """Encrypt an operational secret (a TOTP seed) under the tenant's never-shredded secrets key."""
        with self.engine.begin() as conn:
            return self._data_key(conn, SECRETS_MONTH, create=True).seal(
                secret, _aad(self.tenant, "-", label)
            )

    def open_secret(self, label: str, sealed: bytes) -> bytes:
        with self.engine.connect() as conn:
            try:
                return self._data_key(conn, SECRETS_MONTH, create=False).open(
                    sealed, _aad(self.tenant, "-", label)
                )
            except DecryptionFailed:
                raise VaultError(VaultFailure.UNREADABLE) from None

    # --- key management -----------------------------------------------------------------------------

    def rotate_keys(self) -> RotationReport:
        """New KEK; every data key it can unwrap is re-wrapped under it; unused KEKs are retired.

        The data itself is not re-encrypted. A data key wrapped by a KEK this provider does not hold
        is left as it is and counted in ``skipped`` (it belongs to keys the operator must restore);
        a KEK is retired only once no wrapped data key references it any more.
        """
        held: set[str] = set(getattr(self._keys, "kek_ids", set)())
        new_kek = self._keys.rotate()
        rewrapped = skipped = 0
        with self.engine.begin() as conn:
            for row in conn.execute(select(data_keys)).all():
                if held and row.kek_id not in held:
                    skipped += 1
                    continue
                context = _wrap_context(row.tenant, row.month)
                key = self._keys.unwrap(row.kek_id, row.wrapped, context)
                kek_id, wrapped = self._keys.wrap(key, context)
                conn.execute(
                    update(data_keys)
                    .where(data_keys.c.tenant == row.tenant, data_keys.c.month == row.month)
                    .values(kek_id=kek_id, wrapped=wrapped)
                )
                rewrapped += 1
            still_used = set(conn.execute(select(data_keys.c.kek_id).distinct()).scalars())
        retired = held - still_used - {new_kek}
        if retired:
            self._keys.retire(retired)
        return RotationReport(new_kek, tuple(sorted(retired)), rewrapped, skipped)

    def has_month(self, month: str) -> bool:
        """Whether this tenant has a data key for ``month`` (``YYYY-MM``; InvalidInput otherwise):
        whether shredding it would destroy anything."""
        if not _MONTH.fullmatch(month):
            raise InvalidInput("month", "must be YYYY-MM")
        with self.engine.connect() as conn:
            found = conn.execute(
                select(data_keys.c.month).where(data_keys.c.tenant == self.tenant, data_keys.c.month == month)
            ).first()
        return found is not None

    def shred_month(self, month: str) -> ShredReport:
        """Crypto-shred one month of this tenant: delete its data key, masks and blind indexes."""
        if not _MONTH.fullmatch(month):
            raise InvalidInput("month", "must be YYYY-MM")
        with self.engine.begin() as conn:
            conn.execute(
                delete(data_keys).where(data_keys.c.tenant == self.tenant, data_keys.c.month == month)
            )
            result = conn.execute(
                update(parties)
                .where(parties.c.tenant == self.tenant, parties.c.key_month == month)
                .values(
                    name_ct=None,
                    phone_ct=None,
                    address_ct=None,
                    name_masked=None,
                    phone_masked=None,
                    address_masked=None,
                    phone_bidx=None,
                    name_bidx=None,
                )
            )
        self._data_keys.pop(month, None)
        return ShredReport(month, result.rowcount or 0)


def _render(field: PiiField, clear: str) -> str:
    if field.attribute == "address":
        return "".join(clear.split("\x1f"))
    return clear


__all__ = [
    "IngestResult",
    "MaskedParty",
    "MaskedWaybill",
    "RecordError",
    "RotationReport",
    "ShredReport",
    "Vault",
    "VaultError",
    "VaultFailure",
]
