"""Investigator queries over the stored log: by actor, by subject, by waybill, by time, with inclusion proofs.

An entry's *actor* is who acted; its *subject* is the employee whose account someone else acted on
(suspended, reinstated, sessions ended, devices reset, role or unit changed:
:func:`~courierguard.audit._internal.core.subject_of`). ``employee`` finds both: everything an
account did and everything done to it, the timeline of a rented-account investigation.

A data subject's question ("who accessed my data?") starts at the vault: the caller turns the phone
into waybill numbers through the blind index, then asks :meth:`AuditQueries.search` for those waybills.
No clear-text personal data is needed, or accepted, here.

A search reads the entries below the index mark through the actor, subject and waybill indexes,
and the few thousand above it (committed, not yet indexed: :mod:`courierguard.audit.search_index`)
from the entries themselves, so what it finds never depends on how far the indexer has got. A
search by subject or employee uses the lower of the two marks (the subject index has its own).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, func, select

from courierguard.audit._internal.core import actor_of, session_of, subject_of, waybills_of
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
from courierguard.audit.search_index import marks
from courierguard.audit.sql import latest_head, stored_tree
from courierguard.audit.tables import (
    audit_actors,
    audit_entries,
    audit_subjects,
    audit_tree_heads,
    audit_waybills,
)
from courierguard.errors import InvalidInput, NotFound

MAX_PAGE = 1000
MAX_WAYBILLS = 1000
SESSION_SCAN = 1000  # entries of the account read at a time while looking for one session's


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
        subject: str | None = None,
        employee: str | None = None,
        session: str | None = None,
        tenant: str | None = None,
        waybills: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Sequence[EntryKind] | None = None,
        cursor: int | None = None,
        limit: int = 100,
        with_proofs: bool = False,
        head_size: int | None = None,
    ) -> Page:
        """Entries matching every given filter, oldest first, ``limit`` per page.

        ``since`` is inclusive and ``until`` exclusive. ``cursor`` is the ``next_cursor`` of the previous
        page. With ``with_proofs`` each record carries its inclusion proof in the latest signed tree head,
        or in the stored head of ``head_size`` entries (one already handed over, a witness line's;
        entries appended after it get none), and the page names that head.

        ``actor`` is who acted, ``subject`` the employee acted on (both given: what one did to the
        other), ``employee`` either of the two (an account's whole timeline; not with the other two).

        ``session`` keeps the entries of that session (an Access Event's ``session.id``) and the risk
        alerts it drew (their ``session_id``): what an alert's session did, served or refused. A
        session is one account's, so it needs ``actor`` or ``employee``; the account's entries are
        read in order and matched on their hashed bodies (a body that does not match its leaf hash
        fails the search, as when it is served).
        """
        if not 1 <= limit <= self._max_page:
            raise InvalidInput("limit", f"must be between 1 and {self._max_page}")
        if employee is not None and (actor is not None or subject is not None):
            raise InvalidInput(
                "employee", "is the actor or the subject: give it alone, not with actor or subject"
            )
        if session is not None and actor is None and employee is None:
            raise InvalidInput("session", "is one account's: give it with actor or employee")
        who = _Who(actor, subject, employee)
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
            actors_upto, subjects_upto = marks(conn)
            upto = min(actors_upto, subjects_upto) if who.needs_subjects else actors_upto

            def fetch(start: int, count: int) -> list[Any]:
                rows: list[Any] = []
                if start < upto:
                    rows = _indexed(conn, who, wanted, common, start, upto, count)
                if len(rows) < count:
                    rows += _unindexed(conn, who, wanted, common, max(start, upto), count - len(rows))
                return rows

            if session is None:
                rows = fetch(start, limit + 1)
            else:
                rows = []
                while len(rows) <= limit:
                    chunk = fetch(start, SESSION_SCAN)
                    rows += [row for row in chunk if _in_session(row, session)]
                    if len(chunk) < SESSION_SCAN:
                        break
                    start = chunk[-1].seq + 1
            head = None
            if with_proofs:
                head = latest_head(conn) if head_size is None else _head_of_size(conn, head_size)
            if head is not None:
                self._tree_of(head.size)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = rows[-1].seq + 1 if more else None
        if head is not None and head_size is None and rows and rows[0].seq < head.size <= rows[-1].seq:
            # Entries committed after the latest head was signed have no proof in it: they start the
            # next page (under a later head), so that every record of a page with proofs is proved.
            # A page of such entries only is served unproved, as before (a head may never come).
            next_cursor = next(r.seq for r in rows if r.seq >= head.size)
            rows = [r for r in rows if r.seq < head.size]
        records = [self._record(r.seq, r.ts_us, r.kind, r.actor, r.entry, r.leaf_hash, head) for r in rows]
        return Page(records, next_cursor, head)

    def each(self, **filters: Any) -> Iterator[AuditRecord]:
        """Every entry matching ``filters`` (those of :meth:`search`, without ``cursor`` or
        ``limit``), oldest first, read a page of :data:`MAX_PAGE` at a time."""
        cursor: int | None = None
        while True:
            page = self.search(**filters, cursor=cursor, limit=self._max_page)
            yield from page.records
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def by_actor(self, actor: str, **filters: object) -> Page:
        """Entries of one actor (employee or service id); same keyword filters as :meth:`search`."""
        return self.search(actor=actor, **filters)  # type: ignore[arg-type]

    def by_subject(self, subject: str, **filters: object) -> Page:
        """Entries about one employee's account made by others; same keyword filters as :meth:`search`."""
        return self.search(subject=subject, **filters)  # type: ignore[arg-type]

    def by_employee(self, employee: str, **filters: object) -> Page:
        """Entries by or about one employee; same keyword filters as :meth:`search`."""
        return self.search(employee=employee, **filters)  # type: ignore[arg-type]

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


def _head_of_size(conn: Connection, size: int) -> SignedTreeHead:
    """The stored signed tree head of exactly ``size`` entries (its signature is checked by whoever
    the evidence goes to, and by ``audit verify``)."""
    t = audit_tree_heads.c
    row = conn.execute(
        select(audit_tree_heads).where(t.size == size).order_by(t.timestamp_ms).limit(1)
    ).first()
    if row is None:
        raise InvalidInput("head_size", f"no signed tree head of {size} entries is stored")
    root, signature, key = stored_bytes(row.root), stored_bytes(row.signature), stored_bytes(row.public_key)
    return SignedTreeHead(row.size, root, row.timestamp_ms, signature, key)


def _in_session(row: Any, session: str) -> bool:
    """Whether a stored entry belongs to ``session``, read from its hashed body (never from a body
    that no longer matches its leaf hash: hiding a read from the search would be the point)."""
    if row.entry is None:
        return False  # archived: its session is in the Parquet archive
    raw = stored_bytes(row.entry)
    if leaf_hash(raw) != stored_bytes(row.leaf_hash):
        raise VerificationError(
            f"entry {row.seq} does not match its leaf hash; run `courierguard audit verify`", index=row.seq
        )
    return session_of(decode_entry(raw).body) == session


def _columns() -> Select[_Row]:
    e = audit_entries.c
    return select(e.seq, e.ts_us, e.kind, e.actor, e.entry, e.leaf_hash)


class _Who:
    """The people filters of a search: who acted, who was acted on, or either."""

    __slots__ = ("actor", "employee", "subject")

    def __init__(self, actor: str | None, subject: str | None, employee: str | None) -> None:
        self.actor = actor
        self.subject = subject
        self.employee = employee

    @property
    def needs_subjects(self) -> bool:
        return self.subject is not None or self.employee is not None

    def matches(self, actor: str | None, body: dict[str, Any] | None) -> bool:
        """Whether an entry of the unindexed tail is wanted (its actor column, its hashed body)."""
        if self.actor is not None and actor != self.actor:
            return False
        if not self.needs_subjects:
            return True
        about = subject_of(body) if body is not None else None
        if self.employee is not None:
            return self.employee in (actor, about)
        return about == self.subject


def _indexed(
    conn: Connection,
    who: _Who,
    waybills: list[str] | None,
    common: list[ColumnElement[bool]],
    start: int,
    upto: int,
    count: int,
) -> list[Any]:
    """Up to ``count`` matching entries of ``start..upto``, found through the search indexes, oldest first.

    An employee's entries are those of two index walks, each stopped at ``count``: the first
    ``count`` of their union, in order, are among them (an entry on both walks is taken once).
    """
    if who.employee is not None:
        found = {
            row.seq: row
            for walk in (("actor", who.employee), ("subject", who.employee))
            for row in conn.execute(_walk(walk, waybills, common, start, upto).limit(count))
        }
        return [found[seq] for seq in sorted(found)[:count]]
    if who.subject is not None:
        query = _walk(("subject", who.subject), waybills, common, start, upto)
        if who.actor is not None:
            query = query.where(audit_entries.c.actor == who.actor)
    else:
        query = _walk(None if who.actor is None else ("actor", who.actor), waybills, common, start, upto)
    return list(conn.execute(query.limit(count)).all())


def _walk(
    by: tuple[str, str] | None,
    waybills: list[str] | None,
    common: list[ColumnElement[bool]],
    start: int,
    upto: int,
) -> Select[_Row]:
    """Matching entries of ``start..upto`` in order: walking ``by``'s index (("actor" or "subject",
    id)) when given, else the entries' own key."""
    e = audit_entries.c
    query = _columns().where(*common)
    if by is not None:
        # Walk the person's index rows in order and fetch each entry by its key: a page of a busy
        # actor's history costs a page of index, not a scan of everyone's.
        index = audit_actors if by[0] == "actor" else audit_subjects
        key, seq = index.c[by[0]], index.c.seq
        query = (
            query.join_from(index, audit_entries, e.seq == seq)
            .where(key == by[1], seq >= start, seq < upto)
            .order_by(seq)
        )
    else:
        query = query.where(e.seq >= start, e.seq < upto).order_by(e.seq)
    if waybills is not None:
        w = audit_waybills.c
        query = query.where(e.seq.in_(select(w.seq).where(w.waybill.in_(waybills), w.seq < upto)))
    return query


def _unindexed(
    conn: Connection,
    who: _Who,
    waybills: list[str] | None,
    common: list[ColumnElement[bool]],
    start: int,
    count: int,
) -> list[Any]:
    """Up to ``count`` matching entries from ``start`` on, read without the search indexes.

    ``start`` is at or above the index mark, so this is the short tail the indexer has not reached.
    Waybills and subjects are matched on the stored body, with the functions that fill their indexes.
    """
    e = audit_entries.c
    query = _columns().where(e.seq >= start, *common).order_by(e.seq)
    if who.actor is not None:
        query = query.where(e.actor == who.actor)
    if waybills is None and not who.needs_subjects:
        return list(conn.execute(query.limit(count)).all())
    wanted = None if waybills is None else set(waybills)
    found: list[Any] = []
    for row in conn.execute(query):
        body = decode_entry(bytes(row.entry)).body if row.entry is not None else None
        if wanted is not None and (body is None or wanted.isdisjoint(waybills_of(body))):
            continue
        if who.matches(row.actor, body):
            found.append(row)
            if len(found) == count:
                break
    return found
