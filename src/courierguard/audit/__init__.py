"""Tamper-evident audit trail: an RFC 6962 Merkle log with signed tree heads and group commit.

Public API (everything else, including ``_internal``, may change without notice):

* :class:`AuditLog` – the interface every capability writes through; :func:`open_audit_log` gives the
  durable SQL implementation (SQLite or PostgreSQL), :class:`MemoryAuditLog` the in-memory one.
* :func:`verify` – full verification of a stored log, naming the first bad entry; with
  :func:`row_mac_key` it also checks that every row was written by a writer holding the audit key.
* :class:`AuditQueries` – investigator queries with inclusion proofs.
* :mod:`courierguard.audit.merkle` – RFC 6962 hashing and proofs as pure functions.
* :func:`export_jsonl`, :func:`export_ocsf`, :func:`archive` – SIEM export and retention.
"""

from courierguard.audit._internal.rowmac import row_mac_key
from courierguard.audit.export import ExportMismatch, export_jsonl, export_ocsf, to_ocsf
from courierguard.audit.interfaces import AuditLog
from courierguard.audit.memory import MemoryAuditLog
from courierguard.audit.merkle import (
    EMPTY_ROOT,
    LEAF_PREFIX,
    NODE_PREFIX,
    MerkleTree,
    VerificationError,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from courierguard.audit.models import (
    MIN_RETENTION_DAYS,
    AuditRecord,
    EntryKind,
    Page,
    Problem,
    ProblemKind,
    SignedTreeHead,
    VerifyReport,
    decode_entry,
    encode_entry,
)
from courierguard.audit.queries import AuditQueries
from courierguard.audit.retention import ArchiveResult, archive, verify_archive
from courierguard.audit.sql import SqlAuditLog, open_audit_log
from courierguard.audit.verify import verify

__all__ = [
    "EMPTY_ROOT",
    "LEAF_PREFIX",
    "MIN_RETENTION_DAYS",
    "NODE_PREFIX",
    "ArchiveResult",
    "AuditLog",
    "AuditQueries",
    "AuditRecord",
    "EntryKind",
    "ExportMismatch",
    "MemoryAuditLog",
    "MerkleTree",
    "Page",
    "Problem",
    "ProblemKind",
    "SignedTreeHead",
    "SqlAuditLog",
    "VerificationError",
    "VerifyReport",
    "archive",
    "decode_entry",
    "encode_entry",
    "export_jsonl",
    "export_ocsf",
    "leaf_hash",
    "node_hash",
    "open_audit_log",
    "root_from_inclusion_proof",
    "row_mac_key",
    "to_ocsf",
    "verify",
    "verify_archive",
    "verify_consistency",
    "verify_inclusion",
]
