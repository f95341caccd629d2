"""Row seals: the rows that decide who may see what carry a MAC the database cannot forge.

Keys live outside the database by design, but a DBA (anyone who can write the main database and
not read the key provider) could otherwise grant access by writing plain columns: an ``approvals``
row that approves an export nobody asked for, a waybill assigned to a courier who never got the
task, an employee made a security officer (the security test's F2). So every row of

* ``approvals``: id, kind, requester, scope, fields, status, approver, decision time, expiry, use;
* ``employees``: id, role, org unit, status and its reason (a security hold);
* ``waybills``: number, origin and destination outlets, status and its time, assignee, task,
  delivery time (what the policies read; routing code and key month decide nothing);
* ``cases``: id, kind, waybill, owner, state;
* ``api_keys``: every column (id, name, key hash, creation, revocation): a row a DBA inserts with
  the hash of a secret of their choosing would otherwise be a service account, which assigns
  waybills and opens cases (what opens a reveal), and clearing ``revoked_at`` would revive a key;
* ``org_units``: id, kind, parent (the hierarchy; name, city and position decide nothing)

carries ``mac = BLAKE2s-128(key = seal key, message = encode(table, tenant, columns...))``, written
by the store on every insert and update and checked on every read that decides access. A row whose
MAC is missing or wrong is refused (:class:`RowIntegrityError`, 503), never served.

* **The key** is HKDF-SHA-256 over the audit signing key's private seed with its own label
  :data:`KEY_LABEL` (the audit row MACs use another): whoever may sign audit heads may vouch for
  these rows, nobody else, and there is no new secret to distribute or back up.
* **The message** is a canonical encoding (:func:`encode`): the table name, the column count, then
  each value tagged with its type and, for text, length-prefixed; timestamps as microseconds since
  the epoch (SQLite hands back text, PostgreSQL a datetime: the same instant encodes the same).
  No two different tuples encode alike (``tests/unit/db/test_rowseal.py`` checks it by property).
* **Pre-keyed hasher copied per row**, as the audit row MACs do: about a microsecond a row; a
  row read again with the very values (and types) and seal already checked is not encoded again
  (:class:`RowSeals`), which took a guarded reveal's three checks from 16 to 4 µs.

What a seal cannot stop: putting a row back to an older *sealed* state (a DBA's own backup of the
row). The single-use of an export is therefore also anchored in the audit trail (the gateway
refuses a download the trail already records), approvals expire, and ``docs/security.md`` lists
the rest as residual risk.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Engine, Table, select, tuple_, update
from sqlalchemy.engine import Connection

from courierguard.db.fast import timestamp
from courierguard.errors import CourierGuardError
from courierguard.timeutil import utc

if TYPE_CHECKING:  # the vault imports this module
    from courierguard.vault.keys import KeyProvider

KEY_LABEL = b"courierguard/decision-row-mac/v1"
"""HKDF info of the seal key: distinct from the audit row key and every other derived key."""
MAC_SIZE = 16
_PERSON = b"cg-seal1"  # BLAKE2s personalisation (8 bytes)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TEXT = partial(struct.Struct(">cI").pack, b"S")
_INSTANT = partial(struct.Struct(">cq").pack, b"T")
_BYTES = partial(struct.Struct(">cI").pack, b"B")
_MICRO = timedelta(microseconds=1)

log = logging.getLogger("courierguard.rowseal")

SEALED_COLUMNS: dict[str, tuple[str, ...]] = {
    "approvals": (
        "tenant", "id", "kind", "requested_by", "scope", "fields", "status", "decided_by",
        "decided_at", "expires_at", "used_at",
    ),
    "employees": ("tenant", "id", "role", "org_unit", "status", "status_reason"),
    "waybills": (
        "tenant", "number", "origin_outlet", "dest_outlet", "status", "status_ts", "assignee", "task",
        "delivered_at",
    ),
    "cases": ("tenant", "id", "kind", "waybill", "owner", "state"),
    "api_keys": ("tenant", "id", "name", "key_hash", "created_at", "revoked_at"),
    "org_units": ("tenant", "id", "kind", "parent"),
    "sessions": (
        "tenant", "id", "employee", "device_id", "auth", "created_at", "step_up_at", "revoked_at",
        "revoked_reason",
    ),
}  # fmt: skip
"""The sealed columns of each table, in MAC order."""
TIMESTAMPS: dict[str, frozenset[int]] = {
    table: frozenset(
        i
        for i, name in enumerate(names)
        if name
        in (
            "decided_at",
            "expires_at",
            "used_at",
            "status_ts",
            "delivered_at",
            "created_at",
            "revoked_at",
            "step_up_at",
        )
    )
    for table, names in SEALED_COLUMNS.items()
}
"""Positions holding timestamps: encoded as instants, whichever form the driver returns."""
_STAMPS = {
    table: tuple(i in TIMESTAMPS[table] for i in range(len(names))) for table, names in SEALED_COLUMNS.items()
}
_HEADS = {table: len(table).to_bytes(1, "big") + table.encode() for table in SEALED_COLUMNS}
KEY_COLUMNS = {
    "approvals": ("id",),
    "employees": ("tenant", "id"),
    "waybills": ("tenant", "number"),
    "cases": ("tenant", "id"),
    "api_keys": ("tenant", "id"),
    "org_units": ("tenant", "id"),
    "sessions": ("tenant", "id"),
}
"""Primary key of each table: what a report names (ids and numbers, never personal data)."""


class RowIntegrityError(CourierGuardError):
    """A row that decides access carries no valid seal: it was written without the key."""

    status = 503
    title = "Record integrity failure"
    reason = "row_unsealed"


def encode(table: str, values: Sequence[Any]) -> bytes:
    """The MAC input of ``values`` (the :data:`SEALED_COLUMNS` of ``table``, in order).

    Canonical and injective: table name and every text length-prefixed, every value tagged with its
    type (``N`` null, ``S`` text, ``B`` bytes, ``T`` an instant), the value count up front.
    """
    stamps = _STAMPS[table]
    parts = [_HEADS[table], len(values).to_bytes(1, "big")]
    append = parts.append
    for value, stamp in zip(values, stamps, strict=True):
        if value is None:
            append(b"N")
        elif stamp:
            instant = value if isinstance(value, datetime) else timestamp(value)
            assert instant is not None
            if instant.tzinfo is not UTC:
                instant = utc(instant)
            append(_INSTANT((instant - _EPOCH) // _MICRO))
        elif value.__class__ is bytes or value.__class__ is memoryview:  # api_keys.key_hash
            data = bytes(value)
            append(_BYTES(len(data)))
            append(data)
        else:
            data = value.encode() if value.__class__ is str else str(value).encode()
            append(_TEXT(len(data)))
            append(data)
    return b"".join(parts)


_VERIFIED_MAX = 65_536
"""Rows whose seal :class:`RowSeals` remembers having checked (emptied when full): a few MB."""


class RowSeals:
    """The deployment's row seals, under the seal key (set up once, copied per row).

    A seal checked once is remembered with the exact values it was checked against (each value and
    its type): the same row read again, as every request of a session reads its session and its
    employee, is valid without encoding it again, which cost a guarded reveal more than its policy
    decision's share of the rows. Any change to a value, a seal or a type misses the memory and is
    checked in full; a seal that failed is never remembered. Valid is a pure function of the values,
    the seal and the key, and an instance holds one key, so what it remembers never goes stale.
    """

    __slots__ = ("_keyed", "_verified")

    def __init__(self, key: bytes) -> None:
        self._keyed = hashlib.blake2s(key=key, digest_size=MAC_SIZE, person=_PERSON)
        # (table, seal) -> (values, their types). The seal is a MAC of the values: one entry a row.
        self._verified: dict[tuple[str, bytes], tuple[tuple[Any, ...], tuple[type, ...]]] = {}

    @classmethod
    def from_keys(cls, key_provider: KeyProvider) -> RowSeals:
        """The seals under the key derived from the audit signing key ``key_provider`` holds."""
        return cls(key_provider.signer().derive_key(KEY_LABEL))

    def mac(self, table: str, values: Sequence[Any]) -> bytes:
        """The seal of a ``table`` row whose sealed columns hold ``values``."""
        mac = self._keyed.copy()
        mac.update(encode(table, values))
        return mac.digest()

    def mac_of(self, table: str, row: Any) -> bytes:
        """The seal of ``row`` (a mapping, or a row with attributes named as the columns)."""
        return self.mac(table, values_of(table, row))

    def valid(self, table: str, values: Sequence[Any], stored: object) -> bool:
        """Whether ``stored`` is the seal of ``values``; a missing seal is not."""
        if stored is None:
            return False
        if isinstance(stored, memoryview):
            stored = bytes(stored)
        if not isinstance(stored, bytes):
            return False
        values = tuple(values)
        # Types too: 1 == 1.0 == True, yet each encodes otherwise (and a DBA could store either).
        types = tuple(map(type, values))
        remembered = self._verified.get((table, stored))
        if remembered is not None and remembered[0] == values and remembered[1] == types:
            return True
        if not hmac.compare_digest(stored, self.mac(table, values)):
            return False
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[table, stored] = (values, types)
        return True

    def check(self, table: str, values: Sequence[Any], stored: object, key: str) -> None:
        """Refuse the row (:class:`RowIntegrityError`) unless ``stored`` is the seal of ``values``.

        ``key``: the row's id or number, for the log and the error (never personal data)."""
        if not self.valid(table, values, stored):
            state = "unsealed" if stored is None else "bad seal"
            log.error("row refused: %s %s is %s (written without the seal key)", table, key, state)
            raise RowIntegrityError(
                f"{table} row {key} is {state}: it was not written by Courier Guard; refused "
                "(see `courierguard keys verify-tables`)",
                table=table,
                key=key,
            )

    def reseal(self, conn: Connection, table: Table, where: ColumnElement[bool]) -> None:
        """Seal the row ``where`` selects as this transaction has stored it: the values read back,
        not the ones given (a driver may store an instant otherwise than it was handed over)."""
        row = conn.execute(select(table).where(where)).first()
        if row is not None:
            conn.execute(update(table).where(where).values(mac=self.mac_of(table.name, row)))

    def check_row(self, table: str, row: Any) -> None:
        """:meth:`check` for a full row read with its ``mac`` column (its key named only if refused)."""
        mapping = row._mapping if hasattr(row, "_mapping") else row
        values = values_of(table, mapping)
        if not self.valid(table, values, mapping["mac"]):
            self.check(table, values, mapping["mac"], _key(table, mapping))


def values_of(table: str, row: Any) -> tuple[Any, ...]:
    """The sealed columns of ``row`` (a mapping or SQLAlchemy row), in MAC order."""
    mapping = row._mapping if hasattr(row, "_mapping") else row
    return tuple(mapping[name] for name in SEALED_COLUMNS[table])


def _key(table: str, mapping: Any) -> str:
    return "/".join(str(mapping[name]) for name in KEY_COLUMNS[table])


# --- whole tables: the operator's check and the one-time seal after the upgrade ---------------------

_SHOWN = 20
"""How many keys of refused rows a report names per table."""


@dataclass(slots=True)
class TableScan:
    """What one table's seals said: rows, and the keys (ids, numbers) of the first refused ones."""

    table: str
    rows: int = 0
    unsealed: int = 0
    bad: int = 0
    unsealed_keys: list[str] = field(default_factory=list)
    bad_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.unsealed == 0 and self.bad == 0


def _table(name: str) -> Table:
    from courierguard.db import tables

    found: Table = getattr(tables, name)
    return found


def _batches(conn: Connection, table: Table, where: Any = None, size: int = 2000) -> Iterator[list[Any]]:
    """The rows of ``table`` in primary-key order, ``size`` at a time (keyset paging)."""
    key = list(table.primary_key.columns)
    last: tuple[Any, ...] | None = None
    while True:
        stmt = select(table)
        if where is not None:
            stmt = stmt.where(where)
        if last is not None:
            stmt = stmt.where(tuple_(*key) > tuple_(*last))
        rows = list(conn.execute(stmt.order_by(*key).limit(size)).all())
        if not rows:
            return
        yield rows
        last = tuple(getattr(rows[-1], c.name) for c in key)


def scan_tables(engine: Engine, seals: RowSeals) -> list[TableScan]:
    """Check the seal of every row of every sealed table (read-only)."""
    out: list[TableScan] = []
    with engine.connect() as conn:
        for name in SEALED_COLUMNS:
            report = TableScan(name)
            for rows in _batches(conn, _table(name)):
                for row in rows:
                    report.rows += 1
                    mapping = row._mapping
                    if mapping["mac"] is None:
                        report.unsealed += 1
                        if len(report.unsealed_keys) < _SHOWN:
                            report.unsealed_keys.append(_key(name, mapping))
                    elif not seals.valid(name, values_of(name, mapping), mapping["mac"]):
                        report.bad += 1
                        if len(report.bad_keys) < _SHOWN:
                            report.bad_keys.append(_key(name, mapping))
            out.append(report)
    return out


def seal_unsealed(engine: Engine, seals: RowSeals, tables: Sequence[str] | None = None) -> dict[str, int]:
    """Seal every row that has no seal yet (never one whose seal is wrong) of ``tables`` (default:
    every sealed table): the one-time step after the upgrade that added the columns. Returns how
    many rows of each table it sealed."""
    sealed: dict[str, int] = {}
    for name in SEALED_COLUMNS if tables is None else tables:
        table = _table(name)
        key = list(table.primary_key.columns)
        count = 0
        with engine.begin() as conn:
            for rows in _batches(conn, table, table.c.mac.is_(None)):
                for row in rows:
                    conn.execute(
                        update(table)
                        .where(*(c == getattr(row, c.name) for c in key), table.c.mac.is_(None))
                        .values(mac=seals.mac_of(name, row))
                    )
                count += len(rows)
        sealed[name] = count
    return sealed


@dataclass(slots=True)
class Reseal:
    """What :func:`reseal_under` did to one table: rows already under the new key, moved to it,
    and left refused (no seal, or one neither key made), with the first refused keys."""

    table: str
    current: int = 0
    resealed: int = 0
    refused: int = 0
    refused_keys: list[str] = field(default_factory=list)


def reseal_under(engine: Engine, old: RowSeals, new: RowSeals) -> list[Reseal]:
    """Move every row whose seal the ``old`` key made to the ``new`` key, after the audit signing key
    (from which the seal key derives) was replaced: every row would otherwise be refused.

    Only a row the old key vouches for is resealed; one without a seal or with a seal neither key
    made stays as it is, refused, and is counted and named (a DBA's row does not ride along with the
    key change). A row already under the new key is left alone, so an interrupted run resumes.
    One transaction per table."""
    out: list[Reseal] = []
    for name in SEALED_COLUMNS:
        table = _table(name)
        key = list(table.primary_key.columns)
        report = Reseal(name)
        with engine.begin() as conn:
            for rows in _batches(conn, table):
                for row in rows:
                    mapping = row._mapping
                    values, stored = values_of(name, mapping), mapping["mac"]
                    if new.valid(name, values, stored):
                        report.current += 1
                    elif old.valid(name, values, stored):
                        conn.execute(
                            update(table)
                            .where(*(c == mapping[c.name] for c in key), table.c.mac == stored)
                            .values(mac=new.mac(name, values))
                        )
                        report.resealed += 1
                    else:
                        report.refused += 1
                        if len(report.refused_keys) < _SHOWN:
                            report.refused_keys.append(_key(name, mapping))
        out.append(report)
    return out
