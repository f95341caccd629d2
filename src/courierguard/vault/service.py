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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import Engine, bindparam, delete, func, insert, literal, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from courierguard.clock import Clock, SystemClock
from courierguard.db.fast import DriverInsert, DriverQuery, bind_value, timestamp
from courierguard.db.rowseal import RowSeals
from courierguard.db.tables import data_keys, org_units, parties, waybill_history, waybills
from courierguard.domain import WAYBILL_NUMBER, NewWaybill, Party, TaskKind, Waybill
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
# What ingest writes, in the order of the tuples :meth:`Vault._seal` builds. Left out: the
# waybill's assignee, task and delivery time and the history row's assignee and task, NULL at
# creation.
_WAYBILL_COLUMNS = (
    "tenant", "number", "origin_outlet", "dest_outlet", "routing_code", "status", "status_ts",
    "created_at", "key_month", "mac",
)  # fmt: skip
_HISTORY_COLUMNS = ("tenant", "number", "status", "ts")
_PARTY_COLUMNS = (
    "tenant", "waybill", "role", "key_month", "name_ct", "phone_ct", "address_ct", "name_masked",
    "phone_masked", "address_masked", "phone_bidx", "name_bidx",
)  # fmt: skip
# Placeholders for the numbers are appended per chunk of :data:`_MASKED_CHUNK`; values are bound.
_EXISTING_SQL = "SELECT number FROM waybills WHERE tenant = ? AND number IN "


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


class _Sealed(NamedTuple):
    """One record ready to insert: its rows, sealed under ``month``'s data key as then cached.

    A named tuple, not a frozen dataclass: as immutable, and built in a fifth of the time (a frozen
    dataclass sets each of its eight fields through ``object.__setattr__``), once per waybill."""

    position: int
    """The record's index in the batch (``index`` is a tuple's method)."""
    waybill: NewWaybill
    month: str
    wrapped: bytes
    """The stored (wrapped) form of the data key these rows are sealed under, as read when sealing:
    the insert proceeds only while it is still the stored key of ``month``."""
    waybill_row: tuple[Any, ...]
    """Values of :data:`_WAYBILL_COLUMNS`, ready for the driver (as are the other two)."""
    history_row: tuple[Any, ...]
    """Values of :data:`_HISTORY_COLUMNS`."""
    party_rows: tuple[tuple[Any, ...], ...]
    """Values of :data:`_PARTY_COLUMNS`, sender then recipient."""

    @property
    def number(self) -> str:
        return self.waybill.number


@dataclass(frozen=True, slots=True)
class PreparedIngest:
    """A checked and sealed batch, not yet stored: :meth:`Vault.store` stores it.

    Split from storing so that the gateway can put ``numbers`` on the audit trail before any of
    them is stored. ``failed`` already names the records refused by validation, repeated within the
    batch, or already stored.
    """

    sealed: tuple[_Sealed, ...]
    failed: tuple[RecordError, ...]

    @property
    def numbers(self) -> tuple[str, ...]:
        return tuple(s.number for s in self.sealed)


class _ClearParty(NamedTuple):
    """A party on its way in: the clear text to seal, and what is stored beside it in clear."""

    clear: tuple[bytes, bytes, bytes]
    """Name, phone (E.164) and address (parts joined by U+001F), in :data:`_PARTY_COLUMNS` order."""
    derived: tuple[str, str, str, bytes, bytes]
    """The three masks and the two blind indexes, in :data:`_PARTY_COLUMNS` order."""

    def __repr__(self) -> str:  # clear text never reaches a log line or a traceback
        return "_ClearParty(<redacted>)"


class _StaleKeys(Exception):
    """Rows were sealed under a data key that is no longer the stored one (shredded or replaced by
    another process since this one cached it): seal them again."""

    def __init__(self, months: set[str]) -> None:
        super().__init__(", ".join(sorted(months)))
        self.months = months


@dataclass(frozen=True, slots=True)
class RotationReport:
    new_kek: str
    rewrapped: int
    skipped: int
    retirable: tuple[str, ...]
    """Old KEKs no data key uses now: ``keys retire`` removes them once every worker has the new
    key document."""


@dataclass(frozen=True, slots=True)
class RetireReport:
    active_kek: str
    rewrapped: int
    skipped: int
    unused: tuple[str, ...]
    removed: bool


@dataclass(frozen=True, slots=True)
class ShredReport:
    month: str
    parties: int
    wal_cleared: bool | None = None
    """SQLite: whether the WAL, which held the pages from before the shred, was emptied (False: a
    reader held it; run the shred's checkpoint again with the service stopped). None elsewhere."""


@dataclass(frozen=True, slots=True)
class RemaskReport:
    parties: int
    """Sealed parties whose masks were derived anew from their clear text."""
    changed: int
    """Of those, how many had stored masks that differed (an older masking rule, or edited rows)."""
    unreadable: int
    """Parties whose sealed fields would not open (tampered rows, or a key that is gone): left as they were."""


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
        self.seals = RowSeals.from_keys(keys)
        """Row seals (:mod:`courierguard.db.rowseal`): the waybills it inserts are sealed."""
        self._clock = clock or SystemClock()
        self._index = BlindIndex(keys.blind_index_key())
        self._data_keys: dict[str, Aead] = {}
        self._sealing: dict[str, tuple[Aead, bytes]] = {}
        """Each cached data key with its wrapped form as stored when cached, in one entry: rows
        remember the wrapped form they were sealed under, and an insert checks it is still stored."""
        self._lock = threading.Lock()
        self._reveal_query = DriverQuery(engine, _REVEAL_SQL)
        self._insert_waybills = DriverInsert(engine, waybills, _WAYBILL_COLUMNS)
        self._insert_history = DriverInsert(engine, waybill_history, _HISTORY_COLUMNS)
        self._insert_parties = DriverInsert(engine, parties, _PARTY_COLUMNS)
        self._bind_time = bind_value(engine, waybills.c.created_at)
        self._masked_query = DriverQuery(engine, _MASKED_SQL)

    # --- data keys --------------------------------------------------------------------------------

    def _data_key(self, conn: Connection, month: str, *, create: bool) -> Aead:
        cached = self._data_keys.get(month)
        if cached is not None:
            return cached
        return self._key_pair(conn, month, create=create)[0]

    def _sealing_key(self, conn: Connection, month: str) -> tuple[Aead, bytes]:
        """``month``'s data key for sealing (created if missing) and its wrapped form, as one pair."""
        return self._sealing.get(month) or self._key_pair(conn, month, create=True)

    def _key_pair(self, conn: Connection, month: str, *, create: bool) -> tuple[Aead, bytes]:
        with self._lock:
            pair = self._sealing.get(month)
            if pair is not None:
                return pair
            context = _wrap_context(self.tenant, month)
            row = self._stored_key(conn, month)
            if row is None:
                if not create:
                    raise VaultError(VaultFailure.SHREDDED)
                key = new_key()
                kek_id, wrapped = self._keys.wrap(key, context)
                wrapped = bytes(wrapped)
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(data_keys).values(
                                tenant=self.tenant, month=month, kek_id=kek_id, wrapped=wrapped,
                                created_at=self._clock.now(),
                            )
                        )  # fmt: skip
                except IntegrityError:  # another worker created it first: use theirs
                    row = self._stored_key(conn, month)
                    if row is None:  # and it was shredded since: very rare, the caller retries
                        raise VaultError(VaultFailure.SHREDDED) from None
            if row is not None:
                wrapped = bytes(row.wrapped)
                key = self._keys.unwrap(row.kek_id, wrapped, context)
            pair = (Aead(key), wrapped)
            self._sealing[month] = pair
            self._data_keys[month] = pair[0]
            return pair

    def _stored_key(self, conn: Connection, month: str) -> Any:
        return conn.execute(
            select(data_keys.c.kek_id, data_keys.c.wrapped).where(
                data_keys.c.tenant == self.tenant, data_keys.c.month == month
            )
        ).first()

    def _forget_key(self, month: str) -> None:
        with self._lock:
            self._data_keys.pop(month, None)
            self._sealing.pop(month, None)

    # --- ingest -------------------------------------------------------------------------------------

    def ingest_records(self, records: Sequence[Any]) -> IngestResult:
        """Validate and store a batch of loose records; each bad record fails alone."""
        return self.store(self.prepare_records(records))

    def ingest(self, batch: Sequence[NewWaybill]) -> IngestResult:
        """Store already-built waybills (phones are still validated)."""
        return self.store(self.prepare(batch))

    def prepare_records(self, records: Sequence[Any], *, known_outlets: bool = False) -> PreparedIngest:
        """Validate and seal a batch of loose records without storing any: see :meth:`store`.

        ``known_outlets``: a record whose origin or destination outlet is no org unit of the tenant
        fails too (the ingest API's records; the seed and the benchmarks build their own)."""
        now = self._clock.now()
        good: list[tuple[int, NewWaybill]] = []
        failed: list[RecordError] = []
        for i, raw in enumerate(records):
            try:
                good.append((i, parse_new_waybill(raw, default_time=now)))
            except InvalidInput as exc:
                failed.append(RecordError(i, _valid_number(raw), exc.field, exc.message))
        return self._prepare(good, failed, known_outlets=known_outlets)

    def prepare(self, batch: Sequence[NewWaybill]) -> PreparedIngest:
        return self._prepare(list(enumerate(batch)), [])

    def _prepare(
        self, good: list[tuple[int, NewWaybill]], failed: list[RecordError], *, known_outlets: bool = False
    ) -> PreparedIngest:
        seen: set[str] = set()
        sealed: list[_Sealed] = []
        with self.engine.connect() as conn:
            existing = self._existing_numbers(conn, [wb.number for _, wb in good])
            outlets = (
                {o for _, wb in good for o in (wb.origin_outlet, wb.dest_outlet)} if known_outlets else set()
            )
            units = self._org_units(conn, outlets)
            for i, wb in good:
                if known_outlets:
                    # The outlets decide who may see and deliver the parcel (outlet staff, couriers
                    # of either end): a mistyped code would leave it to nobody, or to a unit made
                    # later under that code.
                    unknown = next(
                        (f for f in ("origin_outlet", "dest_outlet") if getattr(wb, f) not in units), None
                    )
                    if unknown is not None:
                        failed.append(
                            RecordError(i, wb.number, unknown, "is not an org unit of this company")
                        )
                        continue
                if wb.number in seen:
                    failed.append(RecordError(i, wb.number, "number", "appears twice in the batch"))
                    continue
                seen.add(wb.number)
                if wb.number in existing:
                    failed.append(RecordError(i, wb.number, "number", "already exists"))
                    continue
                try:
                    sealed.append(self._seal(conn, i, wb))
                except InvalidInput as exc:
                    failed.append(RecordError(i, wb.number, exc.field, exc.message))
            conn.commit()  # a data key created for a new month is kept even if the batch fails
        return PreparedIngest(tuple(sealed), tuple(sorted(failed, key=lambda e: e.index)))

    def store(self, prepared: PreparedIngest) -> IngestResult:
        """Store a prepared batch. A number stored by someone else since it was prepared fails as
        "already exists"; rows sealed under a data key shredded or replaced since are sealed again."""
        pending = list(prepared.sealed)
        failed = list(prepared.failed)
        for _ in range(4):
            if not pending:
                break
            try:
                self._insert(pending)
                break
            except IntegrityError:
                # A race with another writer of the same numbers. The failed transaction left nothing.
                with self.engine.connect() as conn:
                    existing = self._existing_numbers(conn, [p.number for p in pending])
                if not existing:
                    raise
                failed += [
                    RecordError(p.position, p.number, "number", "already exists")
                    for p in pending
                    if p.number in existing
                ]
                pending = [p for p in pending if p.number not in existing]
            except _StaleKeys as stale:
                for month in stale.months:
                    self._forget_key(month)
                with self.engine.connect() as conn:
                    pending = [self._seal(conn, p.position, p.waybill) for p in pending]
                    conn.commit()
        else:
            raise CourierGuardError("the batch could not be stored: its data keys kept changing")
        return IngestResult(tuple(p.number for p in pending), tuple(sorted(failed, key=lambda e: e.index)))

    def _insert(self, pending: list[_Sealed]) -> None:
        months = {p.month for p in pending}
        with self.engine.begin() as conn:
            # FOR SHARE on PostgreSQL: a shred of one of these months waits for this insert (and
            # then clears its rows too) or has happened already (and this batch is sealed again).
            stored = dict(
                conn.execute(
                    select(data_keys.c.month, data_keys.c.wrapped)
                    .where(data_keys.c.tenant == self.tenant, data_keys.c.month.in_(sorted(months)))
                    .with_for_update(read=True)
                ).all()
            )
            stale = {p.month for p in pending if p.month not in stored or bytes(stored[p.month]) != p.wrapped}
            if stale:
                raise _StaleKeys(stale)
            self._insert_waybills.run(conn, [p.waybill_row for p in pending])
            self._insert_history.run(conn, [p.history_row for p in pending])
            self._insert_parties.run(conn, [row for p in pending for row in p.party_rows])

    def _seal(self, conn: Connection, index: int, wb: NewWaybill) -> _Sealed:
        created = utc(wb.created_at)
        month = month_of(created)
        aead, wrapped = self._sealing_key(conn, month)
        number = wb.number
        tenant = self.tenant
        status = wb.status.value
        sender = self._clear_party("sender", wb.sender)
        recipient = self._clear_party("recipient", wb.recipient)
        head = _aad(tenant, number, "")  # each field's associated data is head + its name
        (s_name, s_phone, s_address), (r_name, r_phone, r_address) = sender.clear, recipient.clear
        cts = aead.seal_many(
            (
                (s_name, head + b"sender.name"),
                (s_phone, head + b"sender.phone"),
                (s_address, head + b"sender.address"),
                (r_name, head + b"recipient.name"),
                (r_phone, head + b"recipient.phone"),
                (r_address, head + b"recipient.address"),
            )
        )
        party_rows = (
            (tenant, number, "sender", month, *cts[0:3], *sender.derived),
            (tenant, number, "recipient", month, *cts[3:6], *recipient.derived),
        )
        # The seal covers the values as given, as RowSeals.mac_of a row dict of them would;
        # the stored form of the timestamps is the driver's (text on SQLite).
        mac = self.seals.mac(
            "waybills", (tenant, number, wb.origin_outlet, wb.dest_outlet, status, created, None, None, None)
        )
        stored_time = self._bind_time(created)
        waybill_row = (
            tenant, number, wb.origin_outlet, wb.dest_outlet, wb.routing_code, status, stored_time,
            stored_time, month, mac,
        )  # fmt: skip
        history_row = (tenant, number, status, stored_time)
        return _Sealed(index, wb, month, wrapped, waybill_row, history_row, party_rows)

    def _org_units(self, conn: Connection, ids: set[str]) -> set[str]:
        """Which of ``ids`` are org units of the tenant."""
        found: set[str] = set()
        wanted = sorted(ids)
        for start in range(0, len(wanted), _MASKED_CHUNK):
            chunk = wanted[start : start + _MASKED_CHUNK]
            found.update(
                conn.execute(
                    select(org_units.c.id).where(org_units.c.tenant == self.tenant, org_units.c.id.in_(chunk))
                ).scalars()
            )
        return found

    def _existing_numbers(self, conn: Connection, numbers: list[str]) -> set[str]:
        # Driver-level: Core expanded and processed the 500 bound numbers of each chunk for a few
        # microseconds per waybill ingested.
        found: set[str] = set()
        for start in range(0, len(numbers), _MASKED_CHUNK):
            chunk = numbers[start : start + _MASKED_CHUNK]
            sql = f"{_EXISTING_SQL}({', '.join('?' * len(chunk))})"
            if self.engine.dialect.paramstyle != "qmark":
                sql = sql.replace("?", "%s")
            found.update(number for (number,) in conn.exec_driver_sql(sql, (self.tenant, *chunk)))
        return found

    def _clear_party(self, role: str, party: Party) -> _ClearParty:
        try:
            phone = normalize_phone(party.phone)
        except ValueError as exc:
            raise InvalidInput(f"{role}.phone", str(exc)) from None
        try:
            name = normalize_name(party.name)
        except ValueError as exc:
            raise InvalidInput(f"{role}.name", str(exc)) from None
        address = party.address
        return _ClearParty(
            (
                name.encode(),
                phone.e164.encode(),
                "\x1f".join((address.province, address.city, address.district, address.detail)).encode(),
            ),
            (
                mask_name(name),
                mask_phone(phone),
                mask_address(address.province, address.city, address.district),
                self._index.phone_e164(phone.e164),
                self._index.normalized_name(name),
            ),
        )

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
            aad = _aad(self.tenant, number, field.value)
            aead = self._data_keys.get(row[1]) or self._reading_key(conn, row[1])
            try:
                clear = aead.open(bytes(sealed), aad).decode()
            except DecryptionFailed:
                # A cached key can be stale: another process shredded the month and keyed it anew
                # for records that arrived late. Read the stored key once before giving up.
                self._forget_key(row[1])
                try:
                    clear = self._reading_key(conn, row[1]).open(bytes(sealed), aad).decode()
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
        """Make a new KEK active and re-wrap every data key under it; the old KEKs are kept.

        The data itself is not re-encrypted. With a provider the operator rotates (``COURIERGUARD_KEYS``)
        the target is the KEK the document names active. Old KEKs stay with the provider, because a
        worker that has not yet seen the new key document may still wrap a new month's key with
        one: :meth:`retire_keys`, run once every worker has the new document, removes them. A data
        key wrapped by a KEK this provider does not hold is left as it is and counted in ``skipped``.
        """
        target = self._keys.rotate()
        rewrapped, skipped = self._rewrap_to(target)
        return RotationReport(target, rewrapped, skipped, tuple(sorted(self._unused_keks(target))))

    def retire_keys(self) -> RetireReport:
        """Re-wrap what still uses an old KEK, then remove every KEK no data key uses.

        ``removed`` is False where the provider cannot write its document (``COURIERGUARD_KEYS``):
        the operator then deletes ``unused`` from the document and redeploys.
        """
        target = self._keys.active_kek_id()
        rewrapped, skipped = self._rewrap_to(target)
        unused = self._unused_keks(target)
        removed = bool(unused) and self._keys.retire(unused)
        return RetireReport(target, rewrapped, skipped, tuple(sorted(unused)), removed)

    def _rewrap_to(self, target: str) -> tuple[int, int]:
        """(re-wrapped, skipped): every data key not wrapped by ``target`` is wrapped by it now."""
        held = self._held_keks()
        rewrapped = skipped = 0
        with self.engine.begin() as conn:
            for row in conn.execute(select(data_keys).where(data_keys.c.kek_id != target)).all():
                if held is not None and row.kek_id not in held:
                    skipped += 1
                    continue
                context = _wrap_context(row.tenant, row.month)
                key = self._keys.unwrap(row.kek_id, row.wrapped, context)
                kek_id, wrapped = self._keys.wrap(key, context)
                # Only the key as read: on PostgreSQL (read committed) a shred and a late parcel
                # may have replaced the month's key since, and writing the old one back over it
                # made the new one's parcels unreadable and brought the shredded key back.
                replaced = conn.execute(
                    update(data_keys)
                    .where(
                        data_keys.c.tenant == row.tenant,
                        data_keys.c.month == row.month,
                        data_keys.c.kek_id == row.kek_id,
                        data_keys.c.wrapped == row.wrapped,
                    )
                    .values(kek_id=kek_id, wrapped=wrapped)
                )
                if replaced.rowcount == 1:
                    rewrapped += 1
        with self._lock:
            self._sealing.clear()  # re-read on the next insert of each month
            self._data_keys.clear()
        return rewrapped, skipped

    def _held_keks(self) -> set[str] | None:
        """The KEK ids the provider holds, where it can list them (a KMS cannot)."""
        kek_ids = getattr(self._keys, "kek_ids", None)
        return set(kek_ids()) if callable(kek_ids) else None

    def _unused_keks(self, target: str) -> set[str]:
        held = self._held_keks() or set()
        with self.engine.connect() as conn:
            still_used = set(conn.execute(select(data_keys.c.kek_id).distinct()).scalars())
        return held - still_used - {target}

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

    def sealed_parties(self) -> int:
        """How many parties of this tenant hold sealed personal data (not shredded)."""
        p = parties.c
        with self.engine.connect() as conn:
            query = (
                select(func.count())
                .select_from(parties)
                .where(p.tenant == self.tenant, p.name_ct.is_not(None))
            )
            return int(conn.execute(query).scalar_one())

    def remask(self, *, batch: int = 1000, progress: Callable[[int], None] | None = None) -> RemaskReport:
        """Derive every stored mask of this tenant anew from the sealed clear text.

        Masks are written at ingest and served without decrypting anything, so a stricter masking
        rule (names once shown whole: ``A``, ``J S``, ``𠮷``) reaches stored parcels only through
        this; so does the repair of masks a DBA edited. Each batch is read and rewritten in one
        transaction, keyed by (waybill, role); a party shredded meanwhile keeps its cleared masks.
        ``progress`` is called with the number of parties done in each batch.
        """
        if batch < 1:
            raise InvalidInput("batch", "must be at least 1")
        p = parties.c
        after = ("", "")
        done = changed = unreadable = 0
        while True:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    select(p.waybill, p.role, p.key_month, p.name_ct, p.phone_ct, p.address_ct,
                           p.name_masked, p.phone_masked, p.address_masked)
                    .where(p.tenant == self.tenant, p.name_ct.is_not(None),
                           tuple_(p.waybill, p.role) > tuple_(literal(after[0]), literal(after[1])))
                    .order_by(p.waybill, p.role)
                    .limit(batch)
                ).all()  # fmt: skip
                if not rows:
                    break
                fixes: list[dict[str, Any]] = []
                for row in rows:
                    masks = self._masks_of(conn, row)
                    if masks is None:
                        unreadable += 1
                    elif masks != (row.name_masked, row.phone_masked, row.address_masked):
                        fixes.append(
                            {"w": row.waybill, "r": row.role, "n": masks[0], "p": masks[1], "a": masks[2]}
                        )
                if fixes:
                    conn.execute(
                        update(parties)
                        .where(p.tenant == self.tenant, p.waybill == bindparam("w"), p.role == bindparam("r"),
                               p.name_ct.is_not(None))
                        .values(name_masked=bindparam("n"), phone_masked=bindparam("p"),
                                address_masked=bindparam("a")),
                        fixes,
                    )  # fmt: skip
            changed += len(fixes)
            done += len(rows)
            after = (rows[-1].waybill, rows[-1].role)
            if progress is not None:
                progress(len(rows))
        return RemaskReport(done, changed, unreadable)

    def _masks_of(self, conn: Connection, row: Any) -> tuple[str, str, str] | None:
        """(name, phone, address) masks of a sealed parties row, or None if it does not open."""
        if row.phone_ct is None or row.address_ct is None:
            return None
        try:
            aead = self._reading_key(conn, row.key_month)
            name, phone, address = (
                aead.open(bytes(sealed), _aad(self.tenant, row.waybill, f"{row.role}.{attribute}")).decode()
                for sealed, attribute in (
                    (row.name_ct, "name"), (row.phone_ct, "phone"), (row.address_ct, "address"),
                )
            )  # fmt: skip
            province, city, district, _detail = address.split("\x1f")
            return mask_name(name), mask_phone(normalize_phone(phone)), mask_address(province, city, district)
        except (DecryptionFailed, VaultError, ValueError):
            # A KEK this provider lacks (KeyUnavailable) is not caught: a whole month, not one bad
            # row, and the operator must hear of it.
            return None

    def shred_month(self, month: str) -> ShredReport:
        """Crypto-shred one month of this tenant: delete its data key, masks and blind indexes."""
        if not _MONTH.fullmatch(month):
            raise InvalidInput("month", "must be YYYY-MM")
        sqlite = self.engine.dialect.name == "sqlite"
        with self.engine.begin() as conn:
            if sqlite:  # the cells the shred frees are zeroed, whatever the build's default
                conn.exec_driver_sql("PRAGMA secure_delete=ON")
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
        self._forget_key(month)
        return ShredReport(month, result.rowcount or 0, self._clear_wal() if sqlite else None)

    def _clear_wal(self) -> bool:
        """Copy the shred into the SQLite file and empty the WAL; True if it could.

        While any connection is open (a running service) SQLite neither checkpoints nor removes the
        WAL, and its older frames hold the pages as they were before the shred: the wrapped data
        key, whose KEK is still in the key file, and the ciphertexts, masks and blind indexes. A
        reader in the middle of a transaction keeps the frames it reads; the checkpoint waits for
        it (busy_timeout) and, if it cannot finish, says so."""
        with self.engine.connect() as conn:
            busy, *_ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        return bool(busy == 0)


def _valid_number(raw: Any) -> str | None:
    """The record's number if it is a waybill number, else None: a failed record is named by its
    index, and a value that is not a number (it may be anything, a phone say) is never echoed."""
    number = raw.get("number") if isinstance(raw, Mapping) else None
    return number if isinstance(number, str) and WAYBILL_NUMBER.fullmatch(number) else None


def _render(field: PiiField, clear: str) -> str:
    if field.attribute == "address":
        return "".join(clear.split("\x1f"))
    return clear


__all__ = [
    "IngestResult",
    "MaskedParty",
    "MaskedWaybill",
    "PreparedIngest",
    "RecordError",
    "RemaskReport",
    "RetireReport",
    "RotationReport",
    "ShredReport",
    "Vault",
    "VaultError",
    "VaultFailure",
]
