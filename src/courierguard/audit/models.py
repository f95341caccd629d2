"""Audit trail data: entry kinds, the canonical entry encoding, signed tree heads and query results."""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from courierguard.vault.signing import verify_signature


class EntryKind(StrEnum):
    """What an audit entry records. Stable codes: they are hashed into every leaf."""

    ACCESS = "access"
    ALERT = "alert"
    ADMIN = "admin"
    POLICY = "policy"
    KEY = "key"
    SYSTEM = "system"


ENTRY_MAGIC = b"CGA1"
"""Version tag of the leaf encoding, so a future encoding can never be mistaken for this one."""

_ENTRY_HEADER = struct.Struct(">4sQqB")


def canonical_json(body: Mapping[str, Any]) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 (what is hashed for an entry's body)."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(when: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, unlike float seconds)."""
    if when.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return (when - _EPOCH) // _MICROSECOND  # timedelta // timedelta: an exact int


def from_micros(micros: int) -> datetime:
    """Inverse of :func:`to_micros`, in UTC."""
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


def encode_entry(index: int, ts_us: int, kind: EntryKind | str, body_json: bytes) -> bytes:
    """The leaf input of one entry: ``CGA1 | index u64 | ts_us i64 | len(kind) u8 | kind | body JSON``.

    The index is inside the hashed bytes so that a row moved to another position no longer matches
    its position: that is how :func:`courierguard.audit.verify` tells a reordering from an edit.
    """
    kind_bytes = str(kind).encode("ascii")
    return _ENTRY_HEADER.pack(ENTRY_MAGIC, index, ts_us, len(kind_bytes)) + kind_bytes + body_json


@dataclass(frozen=True, slots=True)
class DecodedEntry:
    """The fields of an entry's leaf input."""

    index: int
    ts_us: int
    kind: str
    body: dict[str, Any]


def entry_index(entry: bytes) -> int:
    """The index embedded in an encoded entry, without parsing the body (cheap; used by verify)."""
    if len(entry) < _ENTRY_HEADER.size or entry[:4] != ENTRY_MAGIC:
        return -1
    return int.from_bytes(entry[4:12], "big")


def entry_ts_us(entry: bytes) -> int | None:
    """The time (µs) inside an encoded entry's hashed bytes, without parsing the body; None if the
    bytes are not an entry."""
    if len(entry) < _ENTRY_HEADER.size or entry[:4] != ENTRY_MAGIC:
        return None
    return int(_ENTRY_HEADER.unpack_from(entry)[2])


def decode_entry(entry: bytes) -> DecodedEntry:
    """Parse an encoded entry; raises ``ValueError`` on anything malformed."""
    if len(entry) < _ENTRY_HEADER.size:
        raise ValueError("entry too short")
    magic, index, ts_us, kind_len = _ENTRY_HEADER.unpack_from(entry)
    if magic != ENTRY_MAGIC:
        raise ValueError("unknown entry encoding")
    start = _ENTRY_HEADER.size
    kind = entry[start : start + kind_len].decode("ascii")
    body = orjson.loads(entry[start + kind_len :])
    if not isinstance(body, dict):
        raise ValueError("entry body is not an object")
    return DecodedEntry(index, ts_us, kind, body)


_STH_STRUCT = struct.Struct(">BBQQ32s")


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """A signed commitment to the first ``size`` entries of the log.

    The signature covers :meth:`signed_bytes`, the ``TreeHeadSignature`` structure of RFC 6962 §3.5:
    version 0 (v1), signature type 1 (tree_hash), timestamp in milliseconds, tree size, root hash.
    """

    size: int
    root: bytes
    timestamp_ms: int
    signature: bytes
    public_key: bytes = field(default=b"")

    def signed_bytes(self) -> bytes:
        """Canonical bytes the Ed25519 signature is made over."""
        return signed_tree_head_bytes(self.size, self.timestamp_ms, self.root)

    def verify_signature(self, public_key: bytes) -> bool:
        """True when the signature is valid under ``public_key`` (raw 32-byte Ed25519)."""
        return verify_signature(public_key, self.signed_bytes(), self.signature)

    @property
    def timestamp(self) -> datetime:
        """The signing time as an aware UTC datetime."""
        return from_micros(self.timestamp_ms * 1000)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written to the witness file and shown by ``audit head``."""
        return {
            "size": self.size,
            "root": self.root.hex(),
            "timestamp_ms": self.timestamp_ms,
            "signature": base64.b64encode(self.signature).decode("ascii"),
            "public_key": self.public_key.hex(),
        }

    def to_json(self) -> bytes:
        """One JSON line (no newline)."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignedTreeHead:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on malformed input."""
        try:
            return cls(
                size=int(data["size"]),
                root=bytes.fromhex(str(data["root"])),
                timestamp_ms=int(data["timestamp_ms"]),
                signature=base64.b64decode(str(data["signature"]), validate=True),
                public_key=bytes.fromhex(str(data.get("public_key", ""))),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed tree head ({exc.__class__.__name__})") from None


def signed_tree_head_bytes(size: int, timestamp_ms: int, root: bytes) -> bytes:
    """RFC 6962 §3.5 ``TreeHeadSignature``: v1, tree_hash, timestamp, tree_size, sha256_root_hash."""
    return _STH_STRUCT.pack(0, 1, timestamp_ms, size, root)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry as an investigator sees it. ``body`` is ``None`` once the entry is archived."""

    index: int
    timestamp: datetime
    kind: str
    actor: str | None
    body: dict[str, Any] | None
    leaf_hash: bytes
    proof: tuple[bytes, ...] | None = None
    proof_tree_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (hashes in hex)."""
        out: dict[str, Any] = {
            "index": self.index,
            "ts": self.timestamp.isoformat(),
            "kind": self.kind,
            "actor": self.actor,
            "body": self.body,
            "leaf_hash": self.leaf_hash.hex(),
        }
        if self.proof is not None:
            out["proof"] = [p.hex() for p in self.proof]
            out["proof_tree_size"] = self.proof_tree_size
        return out


@dataclass(frozen=True, slots=True)
class Page:
    """One page of query results; pass ``next_cursor`` back to get the next page (``None``: no more)."""

    records: list[AuditRecord]
    next_cursor: int | None
    head: SignedTreeHead | None = None
    """With proofs: the signed tree head they lead to (the evidence's other half)."""

    def to_dict(self) -> dict[str, Any]:
        """The page as evidence, one format wherever it is handed out (``audit query``, ``POST
        /v1/audit/search``): ``records`` (each with ``proof`` and ``proof_tree_size`` when proved),
        ``next_cursor`` and, with proofs, ``head`` as :meth:`SignedTreeHead.to_dict` writes it (the
        witness file's and ``audit head``'s form, which audit.md's ``check_evidence.py`` reads)."""
        out: dict[str, Any] = {
            "records": [r.to_dict() for r in self.records],
            "next_cursor": self.next_cursor,
        }
        if self.head is not None:
            out["head"] = self.head.to_dict()
        return out


MIN_RETENTION_DAYS = 180
"""Days audit entries must be kept in full (Cybersecurity Law Art. 21): nothing younger is archived."""


class ProblemKind(StrEnum):
    """What :func:`courierguard.audit.verify` found wrong. Tests assert these codes."""

    ALTERED = "altered"
    MISSING = "missing"
    REORDERED = "reordered"
    INSERTED = "inserted"
    TRUNCATED = "truncated"
    ROOT_MISMATCH = "root_mismatch"
    BAD_SIGNATURE = "bad_signature"
    INCONSISTENT_HEADS = "inconsistent_heads"
    NO_TREE_HEAD = "no_tree_head"
    BAD_TILE = "bad_tile"
    INDEX_MISMATCH = "index_mismatch"
    """A searchable copy (the actor, time, kind or tenant column, the actor and waybill indexes, the
    index mark) disagrees with the hashed entries: searches and exports would miss or misfile it."""
    BAD_MAC = "bad_mac"
    """An entry row no writer holding the audit key vouches for: its MAC does not match its index and
    leaf hash, or it has none and no valid signed head covers it (an INSERT by someone without the
    key). Checked only with the key provider's row key."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One verification failure: its kind, the first bad leaf index (or tree size) and a detail line."""

    kind: ProblemKind
    index: int
    detail: str
    expected: str | None = None
    calculated: str | None = None


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of a full verification. ``ok`` is true only when nothing at all was found wrong."""

    entries: int
    archived: int
    tree_heads: int
    root: bytes
    problems: list[Problem]
    seconds: float = 0.0
    macs_checked: bool = False
    """Whether every row's MAC was checked (the row key was given), or only the public key was."""
    legacy: int = 0
    """Rows without a MAC (written before row MACs): each must lie below a valid signed head."""

    @property
    def ok(self) -> bool:
        """True when the log checks out entirely."""
        return not self.problems

    @property
    def first_problem(self) -> Problem | None:
        """The problem with the lowest index (the first bad entry), if any."""
        return min(self.problems, key=lambda p: p.index) if self.problems else None

    def summary(self) -> str:
        """One line for humans."""
        if self.ok:
            return (
                f"OK: {self.entries} entries ({self.archived} archived), {self.tree_heads} signed tree heads, "
                f"root {self.root.hex()}; {self.mac_summary()}"
            )
        first = self.first_problem
        assert first is not None
        return (
            f"FAILED: {first.kind} at index {first.index}: {first.detail} ({len(self.problems)} problem(s))"
        )

    def mac_summary(self) -> str:
        """What was checked of the row MACs, in a few words."""
        if not self.macs_checked:
            return "row MACs not checked (public key only: run with the key provider to check them)"
        legacy = f" ({self.legacy} from before row MACs, under signed heads)" if self.legacy else ""
        return f"row MACs checked{legacy}"


def stored_bytes(value: object) -> bytes:
    """A BLOB column's value as bytes, whatever the database holds there. SQLite keeps any type in
    any column: TEXT written by a tamperer's UPDATE becomes its UTF-8 bytes and a number its decimal
    text, which then fail the check they meet (a signature, a hash) instead of crashing it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return str(value).encode()
