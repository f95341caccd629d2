"""The SQL audit log (SQLite or PostgreSQL) with group commit.

Callers enqueue an entry and wait: threads block (``append``), coroutines await (``append_async``).
One writer thread takes everything queued, numbers the entries, hashes them into the Merkle tree
(whole batch at once), writes them in *one* transaction per ``max_batch`` entries with driver-level
``executemany``, commits, and only then answers the batch: one fsync pays for a whole batch, yet no
caller is answered before its entry is durable. A failed transaction answers every caller of the
batch with :class:`~courierguard.errors.AuditUnavailable` and undoes the leaves in memory (fail
closed); an answer that comes without the entry having been numbered (the writer died) is refused
the same way.

Waking a batch costs one lock per batch for threads, not one ``Event`` per entry (the writer releases
the gate once and each woken caller releases it again for the next), and one
``call_soon_threadsafe`` per event loop for coroutines. Before committing, the writer may linger a
few milliseconds for companions when the arrival rate says they are coming (``_linger``).

Every row carries a MAC under a key derived from the audit signing key (:mod:`.rowmac`), and the
rows another writer committed are taken into the tree only when their MACs, or a valid signed head
below which they lie, vouch for them (``_adopt``): a row INSERTed by someone without the key is
refused, with every batch after it, rather than signed over.

A signed tree head is added to the batch transaction when the last one is ``head_interval`` seconds
old, the writer wakes on its own to sign one when entries arrived but no batch followed, and
``checkpoint()``/``close()`` force one.

The actor and waybill search indexes are not part of a batch's commit: after answering a batch, the
writer indexes the entries not yet indexed in a transaction of their own, once there are
``index_every`` of them, once the oldest is ``head_interval`` old, when idle and on close
(:mod:`courierguard.audit.search_index`). An entry is durable, and answered, before it is indexed;
searches read the unindexed tail directly.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
import threading
import time
from _thread import LockType
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select, text

from courierguard.audit._internal.core import (
    HeadSigner,
    Witness,
    actor_of,
    body_bytes,
    check_kind,
    last_witness_head,
    subject_of,
    tenant_of,
    waybills_of,
)
from courierguard.audit._internal.rowmac import MacScan, RowMac, log_key, row_mac_key
from courierguard.audit.merkle import HASH_SIZE, LEAF_PREFIX, TILE_HEIGHT, TiledTree, root_from_packed
from courierguard.audit.models import EntryKind, SignedTreeHead, encode_entry, stored_bytes, to_micros
from courierguard.audit.search_index import (
    SUBJECTS_MARK,
    Indexable,
    backfill_subjects,
    lower_mark,
    marks,
    stored_indexables,
    write_index,
)
from courierguard.audit.tables import audit_tiles, audit_tree_heads
from courierguard.clock import Clock, SystemClock
from courierguard.errors import AuditUnavailable
from courierguard.events import AccessEvent, event_dict
from courierguard.vault.keys import KeyProvider

log = logging.getLogger(__name__)

# Arbitrary constant naming the PostgreSQL advisory lock that serialises writers of several workers.
_PG_LOCK_KEY = 0x6367_6175_6469_74
_APPEND_TIMEOUT = 30.0
# Default longest wait of an entry for companions before its commit starts (see ``_linger``).
COMMIT_DELAY = 0.003
# Weight of the newest batch in the arrival-rate estimate.
_RATE_WEIGHT = 0.2
# Entries indexed together (see ``search_index``): large enough that an actor's or a neighbourhood
# of waybills' rows share pages, small enough that a search's scan of the unindexed tail stays short.
INDEX_EVERY = 4096
# Most entries indexed in one transaction, e.g. a long tail found on opening.
_INDEX_MAX = 65_536
# The writer's statements, run on its own DB-API connection (see ``_WriterConnection``); ``?`` becomes
# ``%s`` for psycopg. Values are always bound, never formatted into the SQL.
_INSERT_ENTRY = (
    "INSERT INTO audit_entries (seq, ts_us, kind, actor, tenant, entry, leaf_hash, mac) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_TILE = "INSERT INTO audit_tiles (height, idx, hash) VALUES (?, ?, ?)"
# PostgreSQL: a batch's entries as one statement of column arrays, not ``executemany`` (a pipeline
# of one Bind/Execute per row): fewer messages, and far less of psycopg's per-row work.
# The arrays go in binary (``%b``): in text psycopg escapes and quotes every element, which took
# 850 µs of CPU for a 32-entry batch against 300 µs in binary.
_INSERT_ENTRIES_PG = (
    "INSERT INTO audit_entries (seq, ts_us, kind, actor, tenant, entry, leaf_hash, mac) SELECT * FROM unnest("
    "%b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::text[], %b::bytea[], %b::bytea[], %b::bytea[])"
)
_INSERT_HEAD = (
    "INSERT INTO audit_tree_heads (size, root, timestamp_ms, signature, public_key) VALUES (?, ?, ?, ?, ?)"
)
_LEAVES_FROM = "SELECT leaf_hash FROM audit_entries WHERE seq >= ? ORDER BY seq"
_LEAVES_BETWEEN = "SELECT leaf_hash FROM audit_entries WHERE seq >= ? AND seq < ? ORDER BY seq"
# What a writer reads of rows it did not write itself: enough to tell whether a writer holding the
# key wrote them.
_ROWS_FROM = "SELECT seq, leaf_hash, mac FROM audit_entries WHERE seq >= ? ORDER BY seq"
_ROWS_BETWEEN = "SELECT seq, leaf_hash, mac FROM audit_entries WHERE seq >= ? AND seq < ? ORDER BY seq"
# Rows read at a time when a log opening checks the rows above its newest head: normally a second's
# worth, but every row when the heads are gone, and those must not all sit in memory at once.
_CHECK_CHUNK = 65_536
# max() reads one end of the primary key; count() would scan the whole table per batch.
_MAX_SEQ = "SELECT max(seq) FROM audit_entries"
# A batch's transaction opens in one round trip: the writers' lock first, then where the log ends.
# Under READ COMMITTED each statement reads a snapshot taken as it starts, so ``max`` runs after the
# lock is held and sees every batch committed before it. No parameters: psycopg sends the string
# with the simple query protocol, which allows several statements; the key is our own constant.
_PG_BEGIN = f"BEGIN; SELECT pg_advisory_xact_lock({_PG_LOCK_KEY}); {_MAX_SEQ}"
_LATEST_HEAD = (
    "SELECT size, root, timestamp_ms, signature, public_key FROM audit_tree_heads ORDER BY size DESC LIMIT 1"
)


class UnauthenticatedEntry(AuditUnavailable):
    """A stored row that no writer holding the audit key vouches for (a wrong MAC, or none above
    the newest valid signed head): the log refuses to append or sign past it (fail closed)."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(
            f"audit entry {index} {why}: not written by a writer holding the audit key; nothing is "
            "appended or signed past it; run `courierguard audit verify`",
            index=index,
        )
        self.index = index


class _LoopBatch:
    """The ``asyncio`` callers of one event loop in the batch being formed.

    Resolved together by one ``call_soon_threadsafe`` after the commit; one timeout timer for the
    lot, because a timer per entry (a heap push and pop on the loop) cost more than the entry.
    """

    __slots__ = ("loop", "timer", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiters: list[tuple[asyncio.Future[None], _Request]] = []
        self.timer: asyncio.TimerHandle | None = None

    def settle(self) -> None:
        """Answer every caller (runs on ``loop``): durable, or why not."""
        if self.timer is not None:
            self.timer.cancel()
        for future, request in self.waiters:
            if not future.done():
                failure = _outcome((request,))
                if failure is None:
                    future.set_result(None)
                else:
                    future.set_exception(failure)

    def expire(self) -> None:
        for future, _ in self.waiters:
            if not future.done():
                future.set_exception(AuditUnavailable("audit write timed out"))

    def wake(self) -> None:
        """Schedule :meth:`settle` on the callers' loop (called from the writer thread)."""
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left waiting there
            self.loop.call_soon_threadsafe(self.settle)


def _outcome(requests: Sequence[_Request]) -> AuditUnavailable | None:
    """Why ``requests`` are not durable, or None when every one of them is."""
    for request in requests:
        if request.error is not None:
            failure = AuditUnavailable("audit write failed")
            failure.__cause__ = request.error
            return failure
        if request.index < 0 if request.kind is not None else request.head is None:
            # The gate opened without this request being committed (the writer died): fail closed.
            return AuditUnavailable("audit write not confirmed")
    return None


class _Request:
    """One queued entry (or, with ``kind`` None, a checkpoint). Plain slots: no per-entry Event."""

    __slots__ = ("actor", "body", "error", "head", "index", "kind", "subject", "tenant", "ts_us", "waybills")

    def __init__(
        self,
        kind: str | None,
        body: bytes,
        ts_us: int,
        actor: str | None,
        waybills: set[str],
        tenant: str | None = None,
        subject: str | None = None,
    ) -> None:
        self.kind = kind
        self.subject = subject
        self.body = body
        self.ts_us = ts_us
        self.actor = actor
        self.tenant = tenant
        self.waybills = waybills
        self.index = -1
        self.head: SignedTreeHead | None = None
        self.error: BaseException | None = None


class _WriterConnection:
    """The writer thread's own DB-API connection, held for the life of the log.

    A batch is a handful of fixed statements; going through SQLAlchemy's ``Engine.begin`` for each
    (pool checkout, connection and result objects, event dispatch) cost more CPU than the SQL. Each
    transaction opens by taking the writers' lock: ``BEGIN IMMEDIATE`` on SQLite, a transaction
    advisory lock on PostgreSQL. So the writer holds it before it reads where the log ends, and a
    second writer (the CLI beside the server, another worker) waits instead of racing it for the
    same index. A connection that fails to roll back is dropped; the next batch checks out a fresh
    one.

    On PostgreSQL the connection is in autocommit mode, so that psycopg sends no ``BEGIN`` of its
    own: the transaction's ``BEGIN``, the lock and the read of the log's end go in one round trip
    (:data:`_PG_BEGIN`). It is put back out of autocommit before it returns to the pool.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._connection: Any = None

    def sql(self, statement: str) -> str:
        return statement if self._sqlite else statement.replace("?", "%s")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[tuple[Any, int]]:
        """A DB-API cursor inside one transaction holding the writers' lock, and the number of
        entries stored when the lock was taken: committed on exit, rolled back on an error."""
        cursor, stored = self._open()
        connection = self._connection
        try:
            yield cursor, stored
            connection.commit()
        except BaseException:
            try:
                connection.rollback()
            except Exception:
                self._drop()
            raise
        finally:
            with contextlib.suppress(Exception):
                cursor.close()

    def _open(self) -> tuple[Any, int]:
        """A cursor whose transaction holds the writers' lock, and the number of entries stored.

        A connection the database dropped (a PostgreSQL restart, an idle timeout) is found here, at
        the first statement, and replaced once: nothing of the batch has been sent yet, so the
        retry cannot record anything twice. A failure later in the transaction is not retried:
        after a lost commit nobody can tell whether it landed.
        """
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = self._checkout()
            connection = self._connection
            cursor = connection.cursor()
            try:
                if self._sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                    cursor.execute(_MAX_SEQ)
                else:
                    cursor.execute(_PG_BEGIN)
                    cursor.nextset()  # past BEGIN's and the lock's results, to the log's end
                    cursor.nextset()
                top = cursor.fetchone()[0]
                return cursor, 0 if top is None else int(top) + 1
            except Exception:
                with contextlib.suppress(Exception):
                    cursor.close()
                broken = self._broken()
                try:
                    connection.rollback()
                except Exception:
                    broken = True
                if broken:
                    self._drop()
                if not broken or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _checkout(self) -> Any:
        connection = self._engine.raw_connection()
        if not self._sqlite:
            try:
                connection.rollback()  # idle, as autocommit can only be switched outside a transaction
                _psycopg(connection).autocommit = True
            except BaseException:
                connection.invalidate()
                raise
        return connection

    def _broken(self) -> bool:
        """Whether the driver says the connection is lost (psycopg; sqlite3 connections are local)."""
        driver = getattr(self._connection, "driver_connection", None)
        return bool(getattr(driver, "broken", False) or getattr(driver, "closed", False))

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.invalidate()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if not self._sqlite:
                # Back to the pool as the pool's other users expect it: transactions, not autocommit.
                connection.rollback()
                _psycopg(connection).autocommit = False
        except Exception:
            with contextlib.suppress(Exception):
                connection.invalidate()
            return
        with contextlib.suppress(Exception):
            connection.close()


def _psycopg(connection: Any) -> Any:
    """The psycopg connection inside a pooled one."""
    driver = connection.driver_connection
    if driver is None:
        raise AuditUnavailable("audit database connection is closed")
    return driver


def _new_gate() -> LockType:
    gate = threading.Lock()
    gate.acquire()
    return gate


def load_leaf_hashes(conn: Connection, start: int = 0, end: int | None = None) -> bytearray:
    """Stored leaf hashes of entries ``start..end`` concatenated, in index order.

    Driver level: a proof reads a tile or two, and Core's per-row machinery cost more than the SQL.
    """
    params: tuple[int, ...] = (start,) if end is None else (start, end)
    statement = _LEAVES_FROM if end is None else _LEAVES_BETWEEN
    if conn.dialect.paramstyle != "qmark":
        statement = statement.replace("?", "%s")
    packed = bytearray()
    for (h,) in conn.exec_driver_sql(statement, params):
        packed += h
    return packed


def stored_tree(engine: Engine, size: int | None = None) -> TiledTree:
    """The Merkle tree of the first ``size`` stored entries (default: all), from the stored tile hashes.

    Reads one row per 256 entries plus the leaves of the last, incomplete tile; the leaves of a
    complete tile are read only when a proof needs them. A tile whose hash is not stored (rows
    deleted behind the log's back) is hashed from its leaves, with a warning; missing leaves raise
    :class:`AuditUnavailable`: the log cannot be trusted to extend, and ``audit verify`` will say why.
    """

    def read(start: int, end: int) -> bytes:
        with engine.connect() as conn:
            return bytes(load_leaf_hashes(conn, start, end))

    with engine.connect() as conn:
        if size is None:
            top = conn.exec_driver_sql(_MAX_SEQ).scalar()
            size = 0 if top is None else int(top) + 1
        tiles = size >> TILE_HEIGHT
        width = 1 << TILE_HEIGHT
        t = audit_tiles.c
        found = conn.execute(
            select(t.idx, t.hash).where(t.height == TILE_HEIGHT, t.idx < tiles).order_by(t.idx)
        )
        packed = bytearray()
        rehashed = 0
        for idx, stored in [*found, (tiles, b"")]:
            tile_hash = stored_bytes(stored)
            if len(tile_hash) not in (0, HASH_SIZE):
                continue  # not a hash at all: recomputed below like a missing one (verify reports it)
            while len(packed) < idx * HASH_SIZE:  # tiles without a stored hash
                missing = len(packed) // HASH_SIZE
                packed += root_from_packed(
                    _exact(load_leaf_hashes(conn, missing * width, (missing + 1) * width), width)
                )
                rehashed += 1
            packed += tile_hash
        tail = _exact(load_leaf_hashes(conn, tiles * width, size), size - tiles * width)
    if rehashed:
        log.warning("audit tree: %d tile hashes were missing and were recomputed from the entries", rehashed)
    return TiledTree(read, packed, tail)


def _exact(packed: bytearray, count: int) -> bytearray:
    if len(packed) != count * HASH_SIZE:
        raise AuditUnavailable("audit entries are missing from storage; run `courierguard audit verify`")
    return packed


def latest_head(conn: Connection) -> SignedTreeHead | None:
    """The stored tree head of the largest size, if any."""
    row = conn.execute(select(audit_tree_heads).order_by(audit_tree_heads.c.size.desc()).limit(1)).first()
    if row is None:
        return None
    return SignedTreeHead(
        row.size,
        stored_bytes(row.root),
        row.timestamp_ms,
        stored_bytes(row.signature),
        stored_bytes(row.public_key),
    )


class SqlAuditLog:
    """The durable :class:`~courierguard.audit.interfaces.AuditLog`; build it with :func:`open_audit_log`."""

    def __init__(
        self,
        engine: Engine,
        key_provider: KeyProvider,
        *,
        clock: Clock | None = None,
        witness_file: Path | None = None,
        head_interval: float = 1.0,
        max_batch: int = 8192,
        commit_delay: float = COMMIT_DELAY,
        index_every: int = INDEX_EVERY,
    ) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()
        self._signer = HeadSigner(key_provider.signer(), self._clock)
        # Row MACs (see ``_adopt``): the deployment's row key, and this log's key once it has an
        # entry 0 (it names the log). Never stored: both come from the key provider.
        self._row_key = row_mac_key(key_provider)
        self._macs: RowMac | None = None
        self._refused = -1  # the last row refused as unauthenticated, logged once
        self._failing = False  # the last commit failed (a full disk, a database gone read-only)
        self._witness = Witness(witness_file) if witness_file else None
        self._interval = head_interval
        self._max_batch = max(1, max_batch)
        self._delay = max(0.0, commit_delay)
        # Arrival-rate estimate (entries/s) and the linger it drives; see ``_linger``.
        self._rate = 0.0
        self._last_batch_at = time.monotonic()
        self._first_at = 0.0
        self._last_arrival = 0.0
        self._gap = 0.0  # between the first entry now queued and the one before it
        self._want = 0
        self._pg = engine.dialect.name == "postgresql"
        self._db = _WriterConnection(engine)
        self._insert_entry = self._db.sql(_INSERT_ENTRY)
        self._insert_head = self._db.sql(_INSERT_HEAD)
        self._insert_tile = self._db.sql(_INSERT_TILE)
        # The search index's state; only the writer thread touches it after start-up.
        self._index_every = max(1, index_every)
        self._unindexed: list[Indexable] = []  # what this writer committed above the mark
        self._tail_since: float | None = None  # when the oldest unindexed entry was committed
        # Callers append to ``_pending`` and wait on ``_gate``, the gate of the batch being formed;
        # the writer swaps both under ``_wakeup``'s lock, so a request always waits on its own batch.
        self._wakeup = threading.Condition(threading.Lock())
        self._pending: list[_Request] = []
        self._waiting: dict[asyncio.AbstractEventLoop, _LoopBatch] = {}
        # Per event loop, what its coroutines appended during the current turn (touched only there).
        self._staged: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], _Request]]] = {}
        self._gate = _new_gate()
        self._closing = False
        self._tree_lock = threading.Lock()
        with engine.connect() as conn:
            # The head first: entries only grow, so every entry it signs is stored by now.
            head = latest_head(conn)
            self._indexed, subjects_upto = marks(conn)
        self._tree = stored_tree(engine)
        if self._indexed > len(self._tree):  # a mark past the log: re-index all (see _index_tail)
            log.warning(
                "audit search index mark %d is past the %d stored entries; re-indexing",
                self._indexed,
                len(self._tree),
            )
            self._indexed = 0
        # Leaves enter the tree before their transaction commits (the batch's head needs them);
        # sizes, proofs and leaves are answered only up to here, what is known to be committed.
        self._committed = len(self._tree)
        if head is not None:
            # Signing on top of a history that no longer matches what was signed would launder the
            # change (and hand out signed indices again): refuse, and let `audit verify` say what.
            if not head.verify_signature(key_provider.signer().public_key):
                problem = "is not signed by this deployment's audit key"
            elif head.size > len(self._tree):
                problem = f"signs {head.size} entries but only {len(self._tree)} are stored"
            elif self._tree.root(head.size) != head.root:
                problem = "does not match the stored entries"
            else:
                problem = ""
            if problem:
                raise AuditUnavailable(
                    f"the latest signed tree head {problem}; run `courierguard audit verify`"
                )
        covered = head.size if head is not None else 0
        if witness_file is not None:
            # The database's heads can be rolled back with its entries; the witness, kept elsewhere,
            # cannot. Signing on after a rollback would issue the lost indices again, for other entries.
            witnessed = last_witness_head(witness_file)
            if witnessed is not None and witnessed.verify_signature(key_provider.signer().public_key):
                if witnessed.size > len(self._tree):
                    raise AuditUnavailable(
                        f"the witness file signs {witnessed.size} entries but only {len(self._tree)} are stored "
                        "(a rollback?); run `courierguard audit verify --witness`; after restoring a backup on "
                        "purpose, start a new witness file (docs/deployment.md, Backups and restore)"
                    )
                if self._tree.root(witnessed.size) != witnessed.root:
                    raise AuditUnavailable(
                        f"the stored entries differ from those the witness file signed at size {witnessed.size}; "
                        "run `courierguard audit verify --witness`"
                    )
                covered = max(covered, witnessed.size)
        if len(self._tree):
            self._macs = RowMac(log_key(self._row_key, self._tree.leaf(0)))
        # The entries no signed head covers yet (a crash before the head) are about to be signed:
        # each must carry a valid MAC, as when a running writer adopts them.
        self._check_unsigned(covered)
        self._head = head
        self._last_head_at = time.monotonic()
        if self._indexed < len(self._tree) or subjects_upto < self._indexed:
            self._tail_since = self._last_head_at  # indexing (or the subjects' back-fill) is due
        if head is None or head.size != len(self._tree):
            # A fresh log, or a crash after entries committed without a head: sign what is there.
            self._write([], force_head=True)
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    # ---- callers ------------------------------------------------------------------------------

    def append(self, kind: EntryKind, body: Mapping[str, Any]) -> int:
        """Append one entry and block until it is committed; returns its leaf index."""
        request = self._request(kind, body)
        self._submit((request,))
        return request.index

    def _request(self, kind: EntryKind, body: Mapping[str, Any]) -> _Request:
        return _Request(
            check_kind(kind).value,
            body_bytes(body),
            to_micros(self._clock.now()),
            actor_of(body),
            waybills_of(body),
            tenant_of(body),
            subject_of(body),
        )

    def append_many(self, kind: EntryKind, bodies: Sequence[Mapping[str, Any]]) -> list[int]:
        """Append several entries of one kind and block until all are committed; their leaf indices.

        The entries are numbered consecutively and committed in the same transaction (unless there
        are more than ``max_batch``); for a caller that already holds a batch, e.g. an importer.
        """
        checked = check_kind(kind).value
        ts_us = to_micros(self._clock.now())
        requests = [
            _Request(
                checked,
                body_bytes(body),
                ts_us,
                actor_of(body),
                waybills_of(body),
                tenant_of(body),
                subject_of(body),
            )
            for body in bodies
        ]
        if requests:
            self._submit(requests)
        return [r.index for r in requests]

    def append_event(self, event: AccessEvent) -> int:
        """Append an Access Event v1 as an ``access`` entry."""
        return self.append(EntryKind.ACCESS, event_dict(event))

    async def append_async(self, kind: EntryKind, body: Mapping[str, Any]) -> int:
        """:meth:`append` for a coroutine: awaits durability without parking a thread.

        Entries appended on one event loop within one turn of it are handed to the writer together,
        at the start of the next turn: a server that answers many requests per turn wakes the writer
        once for all of them, so they share a commit instead of each paying for one (the writer
        runs on the same core as the loop). The writer resolves a loop's futures with one
        ``call_soon_threadsafe``; the contract is :meth:`append`'s (durable, or
        :class:`AuditUnavailable`).
        """
        request = self._request(kind, body)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        staged = self._staged.get(loop)
        if staged is None:
            staged = self._staged[loop] = []
            loop.call_soon(self._hand_over, loop)
        staged.append((future, request))
        await future
        return request.index

    def check_writable(self) -> None:
        """Fails while appends would: every request is refused then, and a health check that said
        200 kept the load balancer sending them (a full disk, a read-only database, a dead writer)."""
        if self._closing or not self._thread.is_alive():
            raise AuditUnavailable("the audit writer is not running")
        if self._failing:
            # Tried again here, not only by the next request: a worker the load balancer drained
            # gets no requests, and must say when its storage is back. A head-only commit: it
            # raises AuditUnavailable while the storage still fails, and clears the failure once not.
            self.checkpoint()

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Queue the entries ``loop`` staged during its last turn (runs on ``loop``)."""
        staged = self._staged.pop(loop)
        try:
            with self._wakeup:
                self._enqueue([request for _, request in staged])
                batch = self._waiting.get(loop)
                first = batch is None
                if batch is None:
                    batch = self._waiting[loop] = _LoopBatch(loop)
                batch.waiters.extend(staged)
        except AuditUnavailable as exc:
            for future, _ in staged:
                if not future.done():
                    future.set_exception(AuditUnavailable(str(exc)))
            return
        if first:
            # Safe after releasing the lock: ``settle`` runs on this loop, so not before we return.
            batch.timer = loop.call_later(_APPEND_TIMEOUT, self._expire, batch)

    async def append_event_async(self, event: AccessEvent) -> int:
        """:meth:`append_event` for a coroutine (see :meth:`append_async`)."""
        return await self.append_async(EntryKind.ACCESS, event_dict(event))

    def _expire(self, batch: _LoopBatch) -> None:
        """Time out a loop's callers; later callers of that loop start a group with a timer of its own."""
        with self._wakeup:
            if self._waiting.get(batch.loop) is batch:
                del self._waiting[batch.loop]
        batch.expire()

    def _enqueue(self, requests: Sequence[_Request]) -> None:
        """Queue ``requests`` for the writer (holding ``_wakeup``), waking it when it waits for them."""
        # ``_closing`` is also set when the writer ends, however it ends.
        if self._closing:
            raise AuditUnavailable("audit log is closed")
        pending = self._pending
        now = time.monotonic()
        if not pending:
            self._first_at, self._gap = now, now - self._last_arrival
            self._wakeup.notify()
        elif self._want and len(pending) + len(requests) >= self._want:
            self._wakeup.notify()
        self._last_arrival = now
        pending.extend(requests)

    def _submit(self, requests: Sequence[_Request]) -> None:
        with self._wakeup:
            self._enqueue(requests)
            gate = self._gate
        # The writer opens the gate once the batch is committed; each caller passes it on to the
        # next one, so waking a batch costs one release per caller and no per-entry Event.
        if not gate.acquire(True, _APPEND_TIMEOUT):
            raise AuditUnavailable("audit write timed out")
        gate.release()
        failure = _outcome(requests)
        if failure is not None:
            raise failure

    def tree_head(self) -> SignedTreeHead:
        """The latest signed tree head."""
        with self._tree_lock:
            assert self._head is not None
            return self._head

    def checkpoint(self) -> SignedTreeHead:
        """Sign and store a head over every committed entry (goes through the writer, in order)."""
        request = _Request(None, b"", 0, None, set())
        self._submit((request,))
        assert request.head is not None
        return request.head

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """Audit path of ``index`` in the tree of ``tree_size`` (at most :attr:`size`)."""
        self._prefetch(index, tree_size - 1)
        with self._tree_lock:
            self._check_committed(tree_size)
            return self._tree.inclusion_proof(index, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Consistency proof between two tree sizes (at most :attr:`size`)."""
        self._prefetch(old_size - 1, old_size, new_size - 1)
        with self._tree_lock:
            self._check_committed(new_size)
            return self._tree.consistency_proof(old_size, new_size)

    def leaf_hash(self, index: int) -> bytes:
        """Leaf hash of entry ``index`` (a committed one)."""
        self._prefetch(index)
        with self._tree_lock:
            if not 0 <= index < self._committed:
                raise IndexError(index)
            return self._tree.leaf(index)

    def _check_committed(self, size: int) -> None:
        """Refuse a tree size beyond the committed entries (holding ``_tree_lock``): a proof over a
        leaf whose transaction is still open could outlive a failed commit."""
        if size > self._committed:
            raise ValueError(f"tree size {size} outside 0..{self._committed}")

    def _prefetch(self, *leaves: int) -> None:
        """Read the stored tiles a proof will need before taking the tree's lock, which the writer
        takes inside its transaction: a slow read must not hold up commits. (A tile missed here is
        read under the lock instead: slower, never wrong.)"""
        tree = self._tree
        tiles = {leaf >> TILE_HEIGHT for leaf in leaves if leaf >= 0}
        with self._tree_lock:
            wanted = tree.uncached_tiles(tiles)
        fetched = tree.read_tiles(wanted)
        if fetched:
            with self._tree_lock:
                tree.remember_tiles(fetched)

    @property
    def size(self) -> int:
        """Number of committed entries."""
        with self._tree_lock:
            return self._committed

    def close(self) -> None:
        """Commit what is queued, sign a final head, stop the writer. Idempotent."""
        with self._wakeup:
            if self._closing:
                already = True
            else:
                already = False
                self._closing = True
                self._wakeup.notify()
        if not already:
            self._thread.join()

    # ---- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._db.close()
            # However the writer ends, refuse what is still queued rather than leave callers waiting.
            with self._wakeup:
                self._closing = True
                leftover, self._pending = self._pending, []
                waiting, self._waiting = self._waiting, {}
                gate = self._gate
            for request in leftover:
                request.error = AuditUnavailable("audit log is closed")
            gate.release()
            for loop_batch in waiting.values():
                loop_batch.wake()

    def _loop(self) -> None:
        wakeup = self._wakeup
        previous = 0
        while True:
            index_only = False
            with wakeup:
                # Concurrency is evident when entries queued up during the last commit, or the last
                # batch held several; a lone caller in a loop shows neither and must never wait.
                crowded = bool(self._pending) or previous >= 2
                while not self._pending and not self._closing:
                    dirty = self._head is not None and self._head.size != len(self._tree)
                    if not dirty:
                        if self._tail_since is None:
                            wakeup.wait()
                            continue
                        # Entries wait to be indexed: do it once the oldest is ``head_interval`` old.
                        left = self._interval - (time.monotonic() - self._tail_since)
                        if left <= 0 or not wakeup.wait(left):
                            index_only = not self._pending and not self._closing
                            break
                        continue
                    left = self._interval - (time.monotonic() - self._last_head_at)
                    if left <= 0 or not wakeup.wait(left):
                        break
                if not index_only:
                    if crowded:
                        self._linger()
                    batch, self._pending = self._pending, []
                    waiting, self._waiting = self._waiting, {}
                    previous = len(batch)
                    self._learn_rate(previous)
                    gate, self._gate = self._gate, _new_gate()
                    stop = self._closing
            if index_only:
                self._safe_index()
                continue
            try:
                step = self._max_batch
                for start in range(0, max(len(batch), 1), step):
                    last = start + step >= len(batch)
                    self._safe_write(batch[start : start + step], force_head=stop and last)
            finally:
                gate.release()
                for loop_batch in waiting.values():
                    loop_batch.wake()
            if self._index_due(idle=not batch or stop):
                self._safe_index()
            if stop:
                return

    def _linger(self) -> bool:
        """Wait for companions before committing, when they are due soon enough (holds ``_wakeup``).

        A commit costs a fixed ~0.1-0.3 ms of CPU (transaction, fsync) on top of a few microseconds
        per entry, on the same core that serves requests. Committing whatever is queued the moment
        the writer wakes gives batches of one or two under a CPU-bound server, so the commits eat
        the CPU. So when the arrival rate promises at least two entries within ``commit_delay``,
        wait until that many are queued or the oldest has waited ``commit_delay``. Under light load,
        when this entry ends a pause in the traffic, or when one caller appends in a loop (nothing
        queued during the last commit, which held one entry), nothing waits; nothing here changes
        when an entry counts as durable. Answers whether it waited (the tests' window on it).
        """
        expected = min(int(self._rate * self._delay), self._max_batch)
        if expected < 2 or len(self._pending) >= expected or self._gap > max(self._delay, 2.0 / self._rate):
            return False  # light load, enough already, or arrivals had paused for longer than a linger
        deadline = self._first_at + self._delay
        # Arrivals stop early when every caller is already queued (a fixed crowd of N callers never
        # reaches a rate-based count above N): stop after two mean gaps without a new one.
        quiet = 2.0 / self._rate
        self._want = expected
        waited = False
        try:
            while len(self._pending) < expected and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                seen = len(self._pending)
                self._wakeup.wait(min(left, quiet))
                waited = True
                if len(self._pending) == seen:
                    break
            return waited
        finally:
            self._want = 0

    def _learn_rate(self, entries: int) -> None:
        now = time.monotonic()
        elapsed, self._last_batch_at = now - self._last_batch_at, now
        self._rate += _RATE_WEIGHT * (entries / max(elapsed, 1e-6) - self._rate)

    def _index_due(self, *, idle: bool) -> bool:
        """Whether to index the tail now: enough of it, old enough, or nothing else to do."""
        if self._tail_since is None:
            return False
        tail = len(self._tree) - self._indexed
        return idle or tail >= self._index_every or time.monotonic() - self._tail_since >= self._interval

    def _safe_index(self) -> None:
        # Entries are durable whether or not they are indexed, and searches read the unindexed tail,
        # so a failure here is logged and retried later; it answers nobody with an error.
        try:
            self._index_tail()
        except Exception as exc:
            log.error("audit search index not updated: %s", exc.__class__.__name__)
            self._tail_since = time.monotonic()  # retry after a while, not after every batch
            if len(self._unindexed) > 4 * _INDEX_MAX:
                self._unindexed.clear()  # bounded memory; the stored entries are read instead

    def _index_tail(self) -> None:
        with self._engine.connect() as conn:
            # The writers' exclusion first, so the mark and the end of the log read below stay true
            # until the commit (pysqlite would otherwise only lock at the first INSERT).
            if self._pg:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            upto, subjects_upto = marks(conn)
            top = conn.exec_driver_sql(_MAX_SEQ).scalar_one()
            stored = 0 if top is None else int(top) + 1
            if upto > stored:
                # Past the end of the log: someone moved it, and every entry above the true mark
                # would stay out of the search indexes. Index again from what this writer knows.
                log.warning(
                    "audit search index mark %d is past the %d stored entries; re-indexing", upto, stored
                )
                upto = min(self._indexed, stored)
                lower_mark(conn, upto)
            if subjects_upto > stored:
                subjects_upto = min(upto, stored)
                lower_mark(conn, subjects_upto, SUBJECTS_MARK)
            if subjects_upto < upto:
                # Entries indexed without their subjects (a log from before migration 0009, or a
                # writer of the version before indexing meanwhile): file a bounded chunk of them.
                behind = min(upto, subjects_upto + _INDEX_MAX)
                backfill_subjects(conn, subjects_upto, behind)
                subjects_upto = behind
            with self._tree_lock:
                committed = self._committed
            # Only entries this writer has taken in: those above are other writers' (they index
            # them, or this one does once it adopts them) or rows it refused, which no search may find.
            stop = min(stored, committed, upto + _INDEX_MAX)
            if stop > upto:
                known = self._known(upto, stop)
                if known is None:  # entries of other writers, or from before a restart, in the range
                    first = _position(self._unindexed, upto)
                    mine = {
                        item[0]: item for item in self._unindexed[first : _position(self._unindexed, stop)]
                    }
                    known = stored_indexables(conn, upto, stop, mine)
                write_index(conn, stop, known, subjects=subjects_upto >= upto)
            else:
                stop = upto
            conn.commit()
        self._indexed = stop
        unindexed = self._unindexed
        del unindexed[: _position(unindexed, stop)]
        with self._tree_lock:
            caught_up = stop >= len(self._tree) and subjects_upto >= upto
        self._tail_since = None if caught_up and not unindexed else time.monotonic()

    def _known(self, start: int, stop: int) -> list[Indexable] | None:
        """This writer's own record of entries ``start..stop``, if it has every one of them."""
        unindexed = self._unindexed
        first = _position(unindexed, start)
        known = unindexed[first : first + stop - start]
        if len(known) == stop - start and known and known[0][0] == start and known[-1][0] == stop - 1:
            return known  # indices ascend, so both ends and the count prove there is no gap
        return None

    def _safe_write(self, batch: list[_Request], *, force_head: bool = False) -> None:
        try:
            self._write(batch, force_head=force_head)
            self._refused = -1
            self._failing = False
        except Exception as exc:
            self._failing = True
            if isinstance(exc, UnauthenticatedEntry) and exc.index != self._refused:
                # Every batch fails on this row until someone acts: one alert per row, not per batch.
                # The detail names the index and why, nothing of the row.
                self._refused = exc.index
                log.critical("%s", exc.detail)
            log.error("audit batch of %d entries not committed: %s", len(batch), exc.__class__.__name__)
            # The overdue head is tried again a head interval from now, not at once: with the
            # storage still failing (a full disk), the writer otherwise looped on head-only batches,
            # thousands a second, each logged.
            self._last_head_at = time.monotonic()
            for request in batch:
                request.error = exc

    def _write(self, batch: list[_Request], *, force_head: bool = False) -> None:
        entries = [r for r in batch if r.kind is not None]
        wants_head = force_head or len(entries) < len(batch) or not batch
        with self._tree_lock:
            before = self._tree.mark()
        macs_before = self._macs
        try:
            with self._db.transaction() as (cursor, stored):
                start, head, signed = self._write_in(cursor, stored, entries, wants_head)
        except BaseException:
            # Whatever failed, a statement or the commit itself, the tree forgets the batch's leaves
            # (and the log key taken from an entry 0 that is not stored after all).
            with self._tree_lock:
                self._tree.restore(before)
            self._macs = macs_before
            raise
        # Committed: from here on every entry of the batch is durable.
        with self._tree_lock:
            self._committed = len(self._tree)
            if head is not None:
                self._head = head
        if head is not None:
            self._last_head_at = time.monotonic()
            if signed and self._witness is not None:
                try:
                    self._witness.publish(head)
                except OSError as exc:
                    # The head is durable in the database; a witness outage must not block reveals.
                    log.error("witness file not written: %s", exc.__class__.__name__)
        current = self._head
        index = start
        unindexed = self._unindexed
        for request in batch:
            if request.kind is None:
                request.head = current
            else:
                request.index = index
                unindexed.append((index, request.actor, request.waybills, request.subject))
                index += 1
        if entries and self._tail_since is None:
            self._tail_since = time.monotonic()

    def _write_in(
        self, cursor: Any, stored: int, entries: list[_Request], wants_head: bool
    ) -> tuple[int, SignedTreeHead | None, bool]:
        """One batch's statements in the writer's transaction, which found ``stored`` entries in
        the log: (index of its first entry, the head that now covers it if one was due, whether
        this writer signed that head). ``_write`` restores the tree if this or the commit fails."""
        with self._tree_lock:
            start = len(self._tree)
        if stored > start:
            # Another writer appended since we last looked: take its leaves before numbering ours
            # (the tiles they complete, that writer stored).
            start = self._adopt(cursor, start)
        rows: list[tuple[Any, ...]] = []
        leaves: list[bytes] = []
        sha = hashlib.sha256
        encode = encode_entry
        macs = self._macs
        index = start
        for request in entries:
            assert request.kind is not None
            entry = encode(index, request.ts_us, request.kind, request.body)
            h = sha(LEAF_PREFIX + entry).digest()
            if macs is None:  # entry 0 of a new log: its leaf hash names the log (``rowmac.log_key``)
                macs = self._macs = RowMac(log_key(self._row_key, h))
            leaves.append(h)
            rows.append(
                (index, request.ts_us, request.kind, request.actor, request.tenant, entry, h, macs(index, h))
            )
            index += 1
        head: SignedTreeHead | None = None
        with self._tree_lock:
            tiles = self._tree.extend_packed(b"".join(leaves))
            size = len(self._tree)
            due = time.monotonic() - self._last_head_at >= self._interval
            last = self._head
            wanted = (wants_head or due) and (last is None or last.size != size)
            root = self._tree.root() if wanted else b""
        signed = False
        if wanted:
            # Another writer may have signed since this one last did: never a second head for the
            # same size (the table refuses it), and never a timestamp before one already stored.
            cursor.execute(_LATEST_HEAD)
            row = cursor.fetchone()
            latest = (
                SignedTreeHead(int(row[0]), bytes(row[1]), int(row[2]), bytes(row[3]), bytes(row[4]))
                if row
                else None
            )
            if latest is not None and latest.size >= size:
                if latest.size > size or latest.root != root:
                    raise AuditUnavailable(
                        "a latest tree head contradicts the log; run `courierguard audit verify`"
                    )
                head = latest
            else:
                floor = max(last.timestamp_ms if last else 0, latest.timestamp_ms if latest else 0)
                head = self._signer.sign(size, root, not_before_ms=floor)
                signed = True
        if rows and self._pg:
            cursor.execute(_INSERT_ENTRIES_PG, [list(column) for column in zip(*rows, strict=True)])
        elif rows:
            cursor.executemany(self._insert_entry, rows)
        if tiles:
            cursor.executemany(self._insert_tile, [(TILE_HEIGHT, i, h) for i, h in tiles])
        if signed and head is not None:
            cursor.execute(
                self._insert_head,
                (head.size, head.root, head.timestamp_ms, head.signature, head.public_key),
            )
        return start, head, signed

    def _adopt(self, cursor: Any, start: int) -> int:
        """Take the rows other writers committed from index ``start`` on into the tree; returns
        where the log now ends. Only rows a writer holding the audit key vouched for: each needs a
        valid MAC, or, for a row from before MACs, a valid signed head above it (the newest stored
        one, checked against the tree with the rows taken in). Anything else is an INSERT by
        someone without the key, and signing a head over it would make it part of the record:
        :class:`UnauthenticatedEntry`, and ``_write`` takes the leaves out of the tree again."""
        cursor.execute(self._db.sql(_ROWS_FROM), (start,))
        packed, scan = self._vouched(start, cursor.fetchall())
        with self._tree_lock:
            self._tree.extend_packed(packed)
            end = len(self._tree)
        if scan.unmacced:
            cursor.execute(_LATEST_HEAD)
            first, _ = scan.unmacced_from(self._signed_size(cursor.fetchone(), end))
            if first >= 0:
                raise UnauthenticatedEntry(first, "has no MAC and no valid signed tree head covers it")
        return end

    def _check_unsigned(self, covered: int) -> None:
        """On opening: refuse the stored rows from ``covered`` (the newest valid head's size) on
        unless each carries a valid MAC, before a head is signed over them."""
        size = len(self._tree)
        with self._engine.connect() as conn:
            for start in range(covered, size, _CHECK_CHUNK):
                end = min(start + _CHECK_CHUNK, size)
                rows = conn.exec_driver_sql(self._db.sql(_ROWS_BETWEEN), (start, end)).all()
                if len(rows) != end - start:
                    raise AuditUnavailable(
                        "audit entries are missing from storage; run `courierguard audit verify`"
                    )
                _, scan = self._vouched(start, rows)
                first, _ = scan.unmacced_from(covered)
                if first >= 0:
                    raise UnauthenticatedEntry(first, "has no MAC and no valid signed tree head covers it")

    def _vouched(self, start: int, rows: Sequence[Any]) -> tuple[bytes, MacScan]:
        """The leaf hashes of ``rows`` (the stored rows from index ``start``) packed, and what their
        MACs say; raises for a wrong MAC wherever it is, and for a gap in the indices."""
        if not rows:
            return b"", MacScan()
        leaves = [stored_bytes(h) for _, h, _ in rows]
        if [seq for seq, _, _ in rows] != list(range(start, start + len(rows))) or any(
            len(h) != HASH_SIZE for h in leaves
        ):
            raise AuditUnavailable("audit entries are missing from storage; run `courierguard audit verify`")
        if self._macs is None:  # a log this writer found empty (``start`` is 0): entry 0 names it
            self._macs = RowMac(log_key(self._row_key, leaves[0]))
        scan = MacScan()
        scan.add(self._macs, start, leaves, [mac for _, _, mac in rows])
        if scan.wrong >= 0:
            raise UnauthenticatedEntry(scan.wrong, "carries a MAC that does not match it")
        return b"".join(leaves), scan

    def _signed_size(self, row: Any, size: int) -> int:
        """The size of the stored head ``row`` if it is signed with the audit key and its root is
        that of the tree's first entries (the tree holds ``size``), else 0: what it vouches for."""
        if row is None:
            return 0
        head = SignedTreeHead(int(row[0]), stored_bytes(row[1]), int(row[2]), stored_bytes(row[3]),
                              stored_bytes(row[4]))  # fmt: skip
        if head.size > size or not head.verify_signature(self._signer.public_key):
            return 0
        with self._tree_lock:
            return head.size if self._tree.root(head.size) == head.root else 0


def open_audit_log(
    engine: Engine,
    key_provider: KeyProvider,
    *,
    clock: Clock | None = None,
    witness_file: Path | None = None,
    head_interval: float = 1.0,
    max_batch: int = 8192,
    commit_delay: float = COMMIT_DELAY,
    index_every: int = INDEX_EVERY,
) -> SqlAuditLog:
    """Open the durable audit log on ``engine`` (schema must be migrated) and start its writer thread.

    Example::

        log = open_audit_log(create_db_engine(url), LocalKeyFile(path), witness_file=Path("heads.jsonl"))
        index = log.append_event(event)   # returns once durable, or raises AuditUnavailable
        log.close()
    """
    return SqlAuditLog(
        engine,
        key_provider,
        clock=clock,
        witness_file=witness_file,
        head_interval=head_interval,
        max_batch=max_batch,
        commit_delay=commit_delay,
        index_every=index_every,
    )


def _position(entries: Sequence[Indexable], index: int) -> int:
    """Where the first entry numbered ``index`` or more is in ``entries`` (ascending indices)."""
    return bisect.bisect_left(entries, index, key=lambda item: item[0])
