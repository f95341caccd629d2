"""Investigator queries over the stored log: by actor, by waybill, by time, with inclusion proofs.

A data subject's question ("who accessed my data?") starts at the vault: the caller turns the phone
into waybill numbers through the blind index, then asks :meth:`AuditQueries.search` for those waybills.
No clear-text personal data is needed, or accepted, here.

A search reads the entries below the index mark through the actor and waybill indexes, and the few
thousand above it (committed, not yet indexed: :mod:`courierguard.audit.search_index`) from the
entries themselves, so what it finds never depends on how far the indexer has got.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, func, select

from courierguard.audit._internal.core import actor_of, waybills_of
from courierguard.audit.merkle import TiledTree, VerificationError, leaf_hash, verify_inclusion
from courierguard.audit.models import (
    AuditRecord,
    EntryKind,
    Page,
    SignedTreeHead,
    decode_entry,
    from_micros,
    stored_bytes,
    to_micros,
)
from courierguard.audit.search_index import indexed_upto
from courierguard.audit.sql import latest_head, stored_tree
from courierguard.audit.tables import audit_actors, audit_entries, audit_tree_heads, audit_waybills
from courierguard.errors import InvalidInput, NotFound

MAX_PAGE = 1000
MAX_WAYBILLS = 1000


class AuditQueries:
    """Read-only access to a stored log for investigators and the console."""

    def __init__(self, engine: Engine, *, max_page: int = MAX_PAGE) -> None:
        self._engine = engine
        self._max_page = max_page
        self._tree: TiledTree | None = None  # loaded for the size a proof needs, grown on demand
        self._lock = threading.Lock()

    def search(
        self,
        *,
        actor: str | None = None,
        tenant: str | None = None,
        waybills: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Sequence[EntryKind] | None = None,
        cursor: int | None = None,
        limit: int = 100,
        with_proofs: bool = False,
    ) -> Page:
        """Entries matching every given filter, oldest first, ``limit`` per page.

        ``since`` is inclusive and ``until`` exclusive. ``cursor`` is the ``next_cursor`` of the previous
        page. With ``with_proofs`` each record carries its inclusion proof in the latest signed tree head.
        """
        if not 1 <= limit <= self._max_page:
            raise InvalidInput("limit", f"must be between 1 and {self._max_page}")
        wanted: list[str] | None = None
        if waybills is not None:
            wanted = sorted(set(waybills))
            if not wanted or len(wanted) > MAX_WAYBILLS:
                raise InvalidInput("waybills", f"give 1 to {MAX_WAYBILLS} waybill numbers")
        e = audit_entries.c
        # Filters on the entry's own columns hold for the indexed part and the tail alike.
        common: list[ColumnElement[bool]] = []
        if tenant is not None:
            common.append(e.tenant == tenant)
        if since is not None:
            common.append(e.ts_us >= to_micros(since))
        if until is not None:
            common.append(e.ts_us < to_micros(until))
        if kinds:
            common.append(e.kind.in_([str(k) for k in kinds]))
        start = 0 if cursor is None else cursor
        with self._engine.connect() as conn:
            # Entries below the mark stay indexed, so reading it first is consistent with both reads.
            upto = indexed_upto(conn)
            rows: list[Any] = []
            if start < upto:
                rows = list(conn.execute(_indexed(actor, wanted, common, start, upto).limit(limit + 1)).all())
            if len(rows) <= limit:
                rows += _unindexed(conn, actor, wanted, common, max(start, upto), limit + 1 - len(rows))
            head = latest_head(conn) if with_proofs else None
            if head is not None:
                self._tree_of(head.size)
        more = len(rows) > limit
        rows = rows[:limit]
        records = [self._record(r.seq, r.ts_us, r.kind, r.actor, r.entry, r.leaf_hash, head) for r in rows]
        return Page(records, rows[-1].seq + 1 if more else None)

    def by_actor(self, actor: str, **filters: object) -> Page:
        """Entries of one actor (employee or service id); same keyword filters as :meth:`search`."""
        return self.search(actor=actor, **filters)  # type: ignore[arg-type]

    def by_waybills(self, waybills: Sequence[str], **filters: object) -> Page:
        """Entries about any of ``waybills``; same keyword filters as :meth:`search`."""
        return self.search(waybills=waybills, **filters)  # type: ignore[arg-type]

    def by_time(self, since: datetime, until: datetime, **filters: object) -> Page:
        """Entries with ``since <= ts < until``; same keyword filters as :meth:`search`."""
        return self.search(since=since, until=until, **filters)  # type: ignore[arg-type]

    def entry(self, index: int, *, with_proof: bool = False) -> AuditRecord:
        """One entry by index; raises :class:`~courierguard.errors.NotFound`."""
        e = audit_entries.c
        with self._engine.connect() as conn:
            row = conn.execute(
                select(e.seq, e.ts_us, e.kind, e.actor, e.entry, e.leaf_hash).where(e.seq == index)
            ).first()
            head = latest_head(conn) if with_proof else None
            if head is not None:
                self._tree_of(head.size)
        if row is None:
            raise NotFound(f"audit entry {index} does not exist")
        return self._record(row.seq, row.ts_us, row.kind, row.actor, row.entry, row.leaf_hash, head)

    def tree_head(self) -> SignedTreeHead:
        """The latest stored signed tree head; raises NotFound on an empty store."""
        with self._engine.connect() as conn:
            head = latest_head(conn)
        if head is None:
            raise NotFound("no signed tree head is stored")
        return head

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> tuple[bytes, list[bytes], int]:
        """(leaf hash, audit path, tree size) for ``index``; the size defaults to the latest head's."""
        size = self.tree_head().size if tree_size is None else tree_size
        tree = self._tree_of(size)
        # Name the bound that was crossed: a size beyond what is stored is the size's fault, not the index's.
        if not 1 <= size <= len(tree):
            raise InvalidInput("size", f"must be between 1 and {self._stored()}, the entries stored")
        if not 0 <= index < size:
            raise InvalidInput("index", f"no entry {index} in a tree of {size} (indices 0 to {size - 1})")
        with self._lock:
            return tree.leaf(index), tree.inclusion_proof(index, size), size

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 6962 consistency proof between two stored tree sizes."""
        tree = self._tree_of(new_size)
        try:
            with self._lock:
                return tree.consistency_proof(old_size, new_size)
        except ValueError:
            raise InvalidInput(
                "size", f"need 0 <= old <= new <= {self._stored()}, the entries stored"
            ) from None

    def signed_root(self, size: int) -> bytes | None:
        """The root a stored tree head of exactly ``size`` signed, if one is stored (signature checked
        by ``audit verify``; here it only tells a computed root that no head vouches for)."""
        with self._engine.connect() as conn:
            root = conn.execute(
                select(audit_tree_heads.c.root).where(audit_tree_heads.c.size == size).limit(1)
            ).scalar()
        return None if root is None else stored_bytes(root)

    def checked_root(self, size: int) -> tuple[bytes, bool]:
        """(root of the first ``size`` entries, whether a stored head of that size signed it); raises
        :class:`VerificationError` if one did and signed another root (stored tiles were forged)."""
        computed = self.root(size)
        signed = self.signed_root(size)
        if signed is not None and signed != computed:
            raise VerificationError(
                f"the root of size {size} computed from storage differs from the signed one; run `courierguard audit verify`",
                index=size,
            )
        return computed, signed is not None

    def root(self, size: int) -> bytes:
        """Merkle root recomputed from the stored tile and leaf hashes of the first ``size`` entries."""
        tree = self._tree_of(size)
        with self._lock:
            try:
                return tree.root(size)
            except ValueError:
                raise InvalidInput("size", f"only {self._stored()} entries are stored") from None

    def _stored(self) -> int:
        """How many entries are stored now (the bound an error message names)."""
        with self._engine.connect() as conn:
            top = conn.execute(select(func.max(audit_entries.c.seq))).scalar()
        return 0 if top is None else int(top) + 1

    def _tree_of(self, size: int) -> TiledTree:
        """A tree of at least ``size`` stored entries (or of all there are, when fewer)."""
        with self._lock:
            if self._tree is None or len(self._tree) < size:
                self._tree = stored_tree(self._engine, min(max(size, 0), self._stored()))
            return self._tree

    def _record(
        self,
        seq: int,
        ts_us: int,
        kind: str,
        actor: str | None,
        entry: bytes | None,
        leaf: bytes,
        head: SignedTreeHead | None,
    ) -> AuditRecord:
        body = None
        if entry is not None:
            raw = stored_bytes(entry)
            if leaf_hash(raw) != stored_bytes(leaf):
                # A body rewritten under its old hash: never hand it out, least of all with a proof
                # that verifies (the proof is of the hash, not of these bytes).
                raise VerificationError(
                    f"entry {seq} does not match its leaf hash; run `courierguard audit verify`", index=seq
                )
            decoded = decode_entry(raw)
            # What was hashed, not the searchable copies (which `audit verify` compares).
            body, ts_us, kind, actor = decoded.body, decoded.ts_us, decoded.kind, actor_of(decoded.body)
        proof: tuple[bytes, ...] | None = None
        size: int | None = None
        if head is not None and seq < head.size:
            tree = self._tree_of(head.size)
            if len(tree) < head.size:
                raise VerificationError(
                    f"the latest signed tree head signs {head.size} entries but only {len(tree)} are stored",
                    index=len(tree),
                )
            with self._lock:
                proof = tuple(tree.inclusion_proof(seq, head.size))
            size = head.size
            # Built from stored tile hashes, which nothing signs: a proof is handed out only if it
            # leads to the signed root (a forged tile made proofs that no signed head accepts).
            try:
                verify_inclusion(seq, size, stored_bytes(leaf), proof, head.root)
            except VerificationError:
                raise VerificationError(
                    f"the stored tree does not lead to the signed root of size {size}; run `courierguard audit verify`",
                    index=seq,
                ) from None
        return AuditRecord(seq, from_micros(ts_us), kind, actor, body, bytes(leaf), proof, size)


_Row = tuple[int, int, str, str | None, bytes | None, bytes]


def _columns() -> Select[_Row]:
    e = audit_entries.c
    return select(e.seq, e.ts_us, e.kind, e.actor, e.entry, e.leaf_hash)


def _indexed(
    actor: str | None, waybills: list[str] | None, common: list[ColumnElement[bool]], start: int, upto: int
) -> Select[_Row]:
    """Matching entries of ``start..upto``, found through the search indexes, oldest first."""
    e = audit_entries.c
    query = _columns().where(*common)
    if actor is not None:
        # Walk the actor's index rows in order and fetch each entry by its key: a page of a busy
        # actor's history costs a page of index, not a scan of everyone's.
        a = audit_actors.c
        query = (
            query.join_from(audit_actors, audit_entries, e.seq == a.seq)
            .where(a.actor == actor, a.seq >= start, a.seq < upto)
            .order_by(a.seq)
        )
    else:
        query = query.where(e.seq >= start, e.seq < upto).order_by(e.seq)
    if waybills is not None:
        w = audit_waybills.c
        query = query.where(e.seq.in_(select(w.seq).where(w.waybill.in_(waybills), w.seq < upto)))
    return query


def _unindexed(
    conn: Connection,
    actor: str | None,
    waybills: list[str] | None,
    common: list[ColumnElement[bool]],
    start: int,
    count: int,
) -> list[Any]:
    """Up to ``count`` matching entries from ``start`` on, read without the search indexes.

    ``start`` is at or above the index mark, so this is the short tail the indexer has not reached.
    Waybills are matched on the stored body, with the function that fills the waybill index.
    """
    e = audit_entries.c
    query = _columns().where(e.seq >= start, *common).order_by(e.seq)
    if actor is not None:
        query = query.where(e.actor == actor)
    if waybills is None:
        return list(conn.execute(query.limit(count)).all())
    wanted = set(waybills)
    found: list[Any] = []
    for row in conn.execute(query):
        if row.entry is not None and not wanted.isdisjoint(waybills_of(decode_entry(bytes(row.entry)).body)):
            found.append(row)
            if len(found) == count:
                break
    return found
