"""In-memory audit log: same contract as the SQL log, for tests and single-process demos.

Nothing survives the process, so it is *not* durable; it exists so that code depending on
:class:`~courierguard.audit.interfaces.AuditLog` can be tested without a database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from courierguard.audit._internal.core import HeadSigner, Witness, body_bytes, check_kind
from courierguard.audit.merkle import MerkleTree, leaf_hash
from courierguard.audit.models import EntryKind, SignedTreeHead, encode_entry, to_micros
from courierguard.clock import Clock, SystemClock
from courierguard.errors import AuditUnavailable
from courierguard.events import AccessEvent, event_dict
from courierguard.vault.keys import KeyProvider


class MemoryAuditLog:
    """An :class:`~courierguard.audit.interfaces.AuditLog` kept in a list; appends are synchronous."""

    def __init__(
        self,
        key_provider: KeyProvider,
        *,
        clock: Clock | None = None,
        witness_file: Path | None = None,
        head_interval: float = 1.0,
    ) -> None:
        self._clock = clock or SystemClock()
        self._signer = HeadSigner(key_provider.signer(), self._clock)
        self._witness = Witness(witness_file) if witness_file else None
        self._interval = head_interval
        self._lock = threading.Lock()
        self._tree = MerkleTree()
        self.entries: list[bytes] = []
        self.heads: list[SignedTreeHead] = []
        self._last_head = time.monotonic()
        self._closed = False
        self._publish(self._signer.sign(0, self._tree.root()))

    def _publish(self, head: SignedTreeHead) -> None:
        self.heads.append(head)
        if self._witness:
            self._witness.publish(head)
        self._last_head = time.monotonic()

    def append(self, kind: EntryKind, body: Mapping[str, Any]) -> int:
        """Append one entry; returns its index."""
        checked = check_kind(kind)
        data = body_bytes(body)
        ts_us = to_micros(self._clock.now())
        with self._lock:
            if self._closed:
                raise AuditUnavailable("audit log is closed")
            index = len(self.entries)
            entry = encode_entry(index, ts_us, checked, data)
            self.entries.append(entry)
            self._tree.append(leaf_hash(entry))
            if time.monotonic() - self._last_head >= self._interval:
                self._sign_locked()
            return index

    def append_many(self, kind: EntryKind, bodies: Sequence[Mapping[str, Any]]) -> list[int]:
        """Append several entries of one kind, consecutively; returns their indices."""
        checked = check_kind(kind)
        data = [body_bytes(body) for body in bodies]
        ts_us = to_micros(self._clock.now())
        with self._lock:
            if self._closed:
                raise AuditUnavailable("audit log is closed")
            start = len(self.entries)
            entries = [encode_entry(start + i, ts_us, checked, d) for i, d in enumerate(data)]
            self.entries.extend(entries)
            self._tree.extend_packed(b"".join(leaf_hash(e) for e in entries))
            if time.monotonic() - self._last_head >= self._interval:
                self._sign_locked()
            return list(range(start, start + len(entries)))

    def append_event(self, event: AccessEvent) -> int:
        """Append an Access Event v1 as an ``access`` entry."""
        return self.append(EntryKind.ACCESS, event_dict(event))

    async def append_event_async(self, event: AccessEvent) -> int:
        """:meth:`append_event` (nothing to wait for in memory)."""
        return self.append_event(event)

    def _sign_locked(self) -> SignedTreeHead:
        last = self.heads[-1]
        if last.size == len(self._tree):
            return last
        head = self._signer.sign(len(self._tree), self._tree.root(), not_before_ms=last.timestamp_ms)
        self._publish(head)
        return head

    def tree_head(self) -> SignedTreeHead:
        """The latest signed tree head."""
        with self._lock:
            return self.heads[-1]

    def checkpoint(self) -> SignedTreeHead:
        """Sign a head over everything appended so far."""
        with self._lock:
            return self._sign_locked()

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """Audit path of ``index`` in the tree of ``tree_size``."""
        with self._lock:
            return self._tree.inclusion_proof(index, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Consistency proof between two tree sizes."""
        with self._lock:
            return self._tree.consistency_proof(old_size, new_size)

    def leaf_hash(self, index: int) -> bytes:
        """Leaf hash of entry ``index``."""
        with self._lock:
            return self._tree.leaf(index)

    @property
    def size(self) -> int:
        """Number of entries."""
        with self._lock:
            return len(self._tree)

    def check_writable(self) -> None:
        if self._closed:
            raise AuditUnavailable("audit log is closed")

    def close(self) -> None:
        """Sign a final head and refuse further appends."""
        with self._lock:
            if not self._closed:
                self._sign_locked()
                self._closed = True
