"""The audit log interface the gateway and every other capability write through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from courierguard.audit.models import EntryKind, SignedTreeHead
from courierguard.events import AccessEvent


@runtime_checkable
class AuditLog(Protocol):
    """An append-only, tamper-evident log (RFC 6962 Merkle tree with signed tree heads).

    Fail-closed contract: :meth:`append` returns only once the entry is durable, and raises
    :class:`courierguard.errors.AuditUnavailable` when it cannot be made durable; a caller must not
    serve data in that case.
    """

    def append(self, kind: EntryKind, body: Mapping[str, Any]) -> int:
        """Append one entry and block until it is durable; returns its 0-based leaf index."""
        ...

    def append_many(self, kind: EntryKind, bodies: Sequence[Mapping[str, Any]]) -> list[int]:
        """Append several entries of one kind, consecutively; same contract as :meth:`append` for all.

        Returns their leaf indices once every one of them is durable; on failure none is reported
        durable (:class:`courierguard.errors.AuditUnavailable`).
        """
        ...

    def append_event(self, event: AccessEvent) -> int:
        """Append an Access Event v1 as an ``access`` entry; same contract as :meth:`append`."""
        ...

    async def append_event_async(self, event: AccessEvent) -> int:
        """:meth:`append_event` for a coroutine: awaits durability; the same fail-closed contract."""
        ...

    def check_writable(self) -> None:
        """Raise :class:`courierguard.errors.AuditUnavailable` when an append now would fail (the log
        is closed, its writer stopped, or its last commit failed): for a health check."""
        ...

    def tree_head(self) -> SignedTreeHead:
        """The latest signed tree head (at most about a second behind the last append)."""
        ...

    def checkpoint(self) -> SignedTreeHead:
        """Sign and store a tree head covering every entry appended so far, and return it."""
        ...

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """RFC 6962 audit path of entry ``index`` in the tree of ``tree_size`` entries."""
        ...

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 6962 proof that the tree of ``old_size`` is a prefix of the tree of ``new_size``."""
        ...

    def leaf_hash(self, index: int) -> bytes:
        """The leaf hash of entry ``index``."""
        ...

    @property
    def size(self) -> int:
        """Number of durable entries."""
        ...

    def close(self) -> None:
        """Flush pending entries, sign a final tree head, and stop accepting appends."""
        ...
