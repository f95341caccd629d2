"""Full verification of a stored log: recompute every leaf and root, check every signed tree head.

What is checked, in order:

1. Every entry row: its sequence number is the next index (else an entry is *missing*), its leaf
   input hashes to the stored leaf hash (else it was *altered*), and the index embedded in its hashed
   bytes equals its position (else it was *reordered*, or another entry was *inserted* before it).
2. Every stored tree head: a valid Ed25519 signature under the given public key (else *forged*), a
   size not beyond the stored entries (else the tail was *truncated*), and a root equal to the one
   recomputed from the entries (else some entry was rewritten together with its hash).
3. Consecutive heads: an RFC 6962 consistency proof between them verifies.
4. Optionally, the same checks for the heads in a witness file kept outside the database.
5. Every stored tile hash (the root of 256 entries, from which the log opens and serves proofs)
   against the tree recomputed from the entries (else a tile was *forged*: ``bad_tile``).
6. Given the row key (an operator with the key provider), every row's MAC: present and matching
   its index and leaf hash, or absent from a row below a valid signed head (a row from before
   MACs); else the row was not written by a writer holding the audit key (``bad_mac``). With the
   public key alone this step is skipped, and the report says so.

Entry scanning stops at the first bad entry: later roots prove nothing about a broken prefix.

Step 1 is most of the work (read, re-hash, compare every entry) and is embarrassingly parallel, so a
large log is checked by worker processes, each over its own range of indices on its own database
connection, while this process builds the Merkle tree from their results in index order. A worker
also hashes the whole tiles of its range, so this process takes one hash per 256 entries (and the
leaves only where a range or a head's size cuts a tile). Workers only confirm ranges that are wholly
intact and hold exactly their indices; anything else is re-scanned here, one row after another, to
name the first problem exactly.

Heads are checked as the recomputed tree grows past their sizes (``_Stream``), so the tree is a
:class:`TiledTree`: one hash per 256 entries in memory, plus the leaves of the tiles where the last
checked head ends, which the next consistency proof reads.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import operator
import os
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import cast

from sqlalchemy import Engine, NullPool, create_engine, select

from courierguard.audit._internal.core import actor_of, read_witness, subject_of, tenant_of, waybills_of
from courierguard.audit._internal.rowmac import MacScan, RowMac, log_key
from courierguard.audit.merkle import (
    HASH_SIZE,
    LEAF_PREFIX,
    TILE_HEIGHT,
    TiledTree,
    VerificationError,
    subtree_roots,
    verify_consistency,
)
from courierguard.audit.models import (
    MIN_RETENTION_DAYS,
    Problem,
    ProblemKind,
    SignedTreeHead,
    VerifyReport,
    decode_entry,
    entry_index,
    stored_bytes,
)
from courierguard.audit.search_index import marks
from courierguard.audit.tables import (
    audit_entries,
    audit_tiles,
    audit_tree_heads,
)

# Rows per fetch, each chunk then gone over by a few passes (bodies, hashes, MACs): 1,024 rows of
# about 500 bytes stay in the CPU's cache between passes, where 50,000 (30 MB) did not: 2.7 against
# 3.4 µs of CPU per entry in a worker, the same range and passes.
_FETCH = 1024
# Entries per range handed to a worker process, and the smallest log worth starting workers for.
_RANGE = 1 << 16
_PARALLEL_FROM = 2 * _RANGE
# The big-endian index embedded at bytes 4..12 of every encoded entry (see ``encode_entry``).
_INDEX_BYTES = operator.itemgetter(slice(4, 12))
_SEQ, _ENTRY, _STORED, _MAC = (operator.itemgetter(i) for i in range(4))
_SELECT_ENTRIES = "SELECT seq, entry, leaf_hash, mac FROM audit_entries ORDER BY seq"

_Row = tuple[int, bytes | None, bytes, bytes | None]


def _placeholder(engine: Engine) -> str:
    return "?" if engine.dialect.paramstyle == "qmark" else "%s"


def _chunks(engine: Engine, start: int = 0, end: int | None = None) -> Iterator[list[_Row]]:
    """Entry rows from index ``start`` (to ``end``) in index order, in chunks of plain DB-API tuples."""
    mark = _placeholder(engine)
    sql = _SELECT_ENTRIES
    params: tuple[int, ...] = ()
    if start or end is not None:
        where = f" WHERE seq >= {mark}" + ("" if end is None else f" AND seq < {mark}")
        sql = sql.replace(" ORDER BY", where + " ORDER BY")
        params = (start,) if end is None else (start, end)
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        # PostgreSQL: a named (server-side) cursor streams instead of loading the table into memory.
        cursor = raw.cursor(name="audit_verify") if engine.dialect.name == "postgresql" else raw.cursor()
        # SQLite keeps any type in any column: a body rewritten as TEXT must reach the hash check as
        # bytes, not stop the whole run with a UTF-8 decoding error.
        text_factory = getattr(raw, "text_factory", None)
        if text_factory is not None:
            raw.text_factory = bytes
        try:
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(_FETCH):
                yield cast(list[_Row], rows)
        finally:
            cursor.close()
            if text_factory is not None:
                raw.text_factory = text_factory


def _rows(chunks: Iterator[list[_Row]]) -> Iterator[_Row]:
    for chunk in chunks:
        yield from chunk


class _Archived:
    """Where the scanned rows' bodies are missing: the first row with a body (``kept``), the first
    without one (``blank``), and the first without one after a row with one (``hole``), each -1 for
    none. Found by the scan that reads every body anyway, so the archive rule costs no second read of
    the table (a ``WHERE entry IS NULL`` query has no index to use: it read every row again)."""

    __slots__ = ("blank", "hole", "kept")

    def __init__(self) -> None:
        self.kept = self.blank = self.hole = -1

    def add(self, start: int, entries: list[bytes | None]) -> None:
        """Take in the bodies of consecutive rows from index ``start``, after every row added so far."""
        if None not in entries:  # the common case: nothing archived here
            if self.kept < 0 and entries:
                self.kept = start
            return
        part = _Archived()
        for index, entry in enumerate(entries, start):
            if entry is None:
                if part.blank < 0:
                    part.blank = index
                if part.kept >= 0 and part.hole < 0:
                    part.hole = index
            elif part.kept < 0:
                part.kept = index
        self.merge(part)

    def merge(self, later: _Archived) -> None:
        """Take in what rows after every row seen so far say."""
        if self.hole < 0:
            self.hole = later.blank if self.kept >= 0 else later.hole
        if self.kept < 0:
            self.kept = later.kept
        if self.blank < 0:
            self.blank = later.blank


def _check_archived_prefix(
    found: _Archived, rows: int, heads: list[SignedTreeHead], retention_days: int, problems: list[Problem]
) -> None:
    """Archiving purges the bodies of the oldest entries only, and only once they are older than the
    retention period. So the archived entries are a prefix of the log, and the newest of them is old:

    * a body missing after one that is kept was removed some other way: the leaf hash still matches
      (it is all that is left), so only this rule tells it from an archive;
    * the newest archived entry was appended after every signed head that does not cover it, so
      such a head signed within the retention period proves it was archived too early (blanking
      every body at once would otherwise pass as one big archive).

    ``found``: what the scan of all ``rows`` rows (indices 0 up, every one checked) saw.
    """
    if found.hole >= 0:
        problems.append(
            Problem(ProblemKind.ALTERED, found.hole, "entry body removed outside the archived prefix")
        )
        return
    archived = found.kept if found.kept >= 0 else rows
    if archived == 0:
        return
    newest = archived - 1
    before = [h for h in heads if h.size <= newest]
    if not before:
        return
    signed = max(before, key=lambda h: h.size).timestamp_ms
    limit_ms = (time.time() - retention_days * 86_400) * 1000
    if signed > limit_ms:
        days = (time.time() * 1000 - signed) / 86_400_000
        problems.append(
            Problem(
                ProblemKind.ALTERED, newest,
                f"entry body archived too early: the entry is at most {days:.0f} days old (a head signed "
                f"before it was appended is), the retention period is {retention_days} days",
            )
        )  # fmt: skip


def _heads(engine: Engine) -> list[SignedTreeHead]:
    with engine.connect() as conn:
        rows = conn.execute(select(audit_tree_heads).order_by(audit_tree_heads.c.size)).all()
    return [
        SignedTreeHead(
            r.size,
            stored_bytes(r.root),
            r.timestamp_ms,
            stored_bytes(r.signature),
            stored_bytes(r.public_key),
        )
        for r in rows
    ]


def _classify(position: int, rows: list[_Row]) -> Problem:
    """Name what happened at ``position``, the first row that failed, given every row from there on."""
    seq, entry, stored, _ = rows[0]
    if seq != position:
        return Problem(ProblemKind.MISSING, position, f"no entry stored at index {position} (next is {seq})")
    if type(stored) is not bytes or (entry is not None and type(entry) is not bytes):
        return Problem(ProblemKind.ALTERED, position, "entry or leaf hash is not stored as bytes")
    if entry is None:
        return Problem(ProblemKind.ALTERED, position, "archived entry has an unexpected leaf hash")
    calculated = hashlib.sha256(LEAF_PREFIX + entry).digest()
    embedded = entry_index(entry)
    if calculated != stored:
        return Problem(
            ProblemKind.ALTERED,
            position,
            "entry does not match its stored leaf hash",
            expected=stored.hex(),
            calculated=calculated.hex(),
        )
    if embedded < 0:
        return Problem(ProblemKind.ALTERED, position, "entry is not in the audit encoding")
    if embedded < position:
        return Problem(
            ProblemKind.INSERTED,
            embedded,
            f"the entry signed as index {embedded} now sits at {position}: "
            f"{position - embedded} entr(y/ies) inserted from index {embedded}",
        )
    claimed = {entry_index(e) for _, e, _, _ in rows[1:] if e is not None}
    if position in claimed:
        return Problem(
            ProblemKind.REORDERED,
            position,
            f"the entry signed as index {embedded} sits at {position}",
        )
    return Problem(
        ProblemKind.MISSING, position, f"entry {position} is gone and later entries were renumbered"
    )


def _chunk_ok(start: int, seqs: list[int], entries: list[bytes], stored: list[bytes]) -> bool:
    """Whole-chunk check of rows ``start..start+len``: positions, embedded indices and leaf hashes.

    Compares concatenations rather than row by row, so the per-row Python work is one SHA-256 call.
    """
    n = len(seqs)
    if seqs != list(range(start, start + n)):
        return False
    if b"".join(map(_INDEX_BYTES, entries)) != struct.pack(f">{n}Q", *seqs):
        return False
    sha = hashlib.sha256
    prefix = LEAF_PREFIX
    return b"".join([sha(prefix + e).digest() for e in entries]) == b"".join(stored)


def _intact(position: int, chunk: list[_Row], bodies: _Archived) -> tuple[bytes, int] | None:
    """(Stored leaf hashes packed, archived rows) of ``chunk``, rows from index ``position``, when
    every row is intact (and then what its bodies say of the archive goes into ``bodies``); None when
    one is not. Whole-chunk comparison first, row by row only when that fails or a row is archived."""
    entries = list(map(_ENTRY, chunk))
    stored = list(map(_STORED, chunk))
    try:
        if None not in entries and _chunk_ok(position, list(map(_SEQ, chunk)), entries, stored):
            bodies.add(position, entries)
            return b"".join(stored), 0
    except TypeError:  # a value stored as text, not bytes (SQLite keeps any type): row by row
        pass
    if _first_bad(position, chunk) is None:
        bodies.add(position, entries)
        return b"".join(stored), entries.count(None)
    return None


def _first_bad(start: int, chunk: list[_Row]) -> int | None:
    """Index of the first row of ``chunk`` (starting at index ``start``) that fails, if any."""
    sha = hashlib.sha256
    prefix = LEAF_PREFIX
    for position, (seq, entry, stored, _) in enumerate(chunk, start):
        if type(stored) is not bytes:
            ok = False
        elif entry is None:
            ok = seq == position
        else:
            ok = (
                seq == position
                and type(entry) is bytes
                and entry[4:12] == seq.to_bytes(8, "big")
                and sha(prefix + entry).digest() == stored
            )
        if not ok:
            return position
    return None


def verify(
    engine: Engine,
    public_key: bytes,
    *,
    witness_file: Path | None = None,
    workers: int | None = None,
    search_copies: bool = True,
    retention_days: int = MIN_RETENTION_DAYS,
    row_key: bytes | None = None,
) -> VerifyReport:
    """Recompute the log stored on ``engine`` and check it against its signed tree heads.

    ``public_key`` is the raw Ed25519 key the heads must be signed with (``audit head`` prints it;
    auditors should pin it, not read it from the database). Returns a report; never raises for a
    tampered log, only for an unreachable database. ``workers``: processes re-hashing entries in
    parallel (default: the CPUs this process may run on; 1 checks everything in this process).
    ``search_copies``: also compare the searchable copies with the bodies (``index_mismatch``);
    it parses every body, several times the work of hashing it. ``retention_days``: the bodies of
    entries younger than this may not have been archived (default: the legal minimum).
    ``row_key``: the deployment's row MAC key (:func:`courierguard.audit.row_mac_key`, from the key
    provider) to check every row's MAC (``bad_mac``); None (a verifier holding only the public key)
    skips that check, and the report says so.
    """
    started = time.perf_counter()
    problems: list[Problem] = []
    heads = _heads(engine)
    checks = [_HeadCheck(heads, public_key, "database")]
    if witness_file is not None:
        checks.append(_HeadCheck(read_witness(witness_file), public_key, "witness"))
    stream = _Stream(checks)
    key = _log_key(engine, row_key)
    macs = MacScan()
    bodies = _Archived()
    count, archived = _parallel_prefix(engine, stream, workers, key, macs, bodies)
    chunks = _chunks(engine, count)
    for chunk in chunks:
        intact = _intact(count, chunk, bodies)
        if intact is not None:
            stream.feed(intact[0])
            _scan_macs(key, count, chunk, macs)
            archived += intact[1]
            count += len(chunk)
            continue
        # Something is wrong in this chunk: keep the rows before it, then name what happened.
        bad = _first_bad(count, chunk)
        assert bad is not None  # _intact said so, by the same check
        good = bad - count
        archived += sum(1 for row in chunk[: good + 1] if row[1] is None)
        stream.feed(b"".join(map(_STORED, chunk[:good])))
        _scan_macs(key, count, chunk[:good], macs)
        rest = [*chunk[good:], *_rows(chunks)]
        problems.append(_classify(bad, rest))
        count = bad + len(rest)
        # The log ends after its last stored index, whatever is missing before it: a deletion in the
        # middle is not also a truncated tail.
        end = max(count, int(rest[-1][0]) + 1) if rest else count
        break
    else:
        end = count
    tree = stream.tree
    valid = len(tree)
    for check in checks:
        check.finish(valid, end)

    if not heads:
        problems.append(Problem(ProblemKind.NO_TREE_HEAD, 0, "no signed tree head is stored"))
    problems += checks[0].problems
    if not problems:
        # No problem so far: the scan read every row (it stops only at a bad one).
        _check_archived_prefix(bodies, count, heads, retention_days, problems)
    _check_tiles(engine, tree, valid, problems)
    if key is not None:
        covered = max((check.previous.size for check in checks if check.previous is not None), default=0)
        problems += _mac_problems(macs, covered)
    if search_copies:
        _check_search_copies(engine, count, valid, problems, workers)
    if witness_file is not None:
        problems += checks[1].problems
    return VerifyReport(
        entries=count,
        archived=archived,
        tree_heads=len(heads),
        root=tree.root(),
        problems=problems,
        seconds=time.perf_counter() - started,
        macs_checked=key is not None,
        legacy=macs.legacy,
    )


def _log_key(engine: Engine, row_key: bytes | None) -> bytes | None:
    """The key of this log's row MACs (the row key bound to entry 0's leaf hash), or None: no row
    key given, or no entry 0 (then the scan reports the log's start as missing)."""
    if row_key is None:
        return None
    with engine.connect() as conn:
        first = conn.execute(select(audit_entries.c.leaf_hash).where(audit_entries.c.seq == 0)).scalar()
    return None if first is None else log_key(row_key, stored_bytes(first))


def _scan_macs(key: bytes | None, position: int, rows: list[_Row], macs: MacScan) -> None:
    """Check the MACs of intact ``rows`` (from index ``position``) into ``macs``."""
    if key is not None and rows:
        macs.add(RowMac(key), position, list(map(_STORED, rows)), list(map(_MAC, rows)))


def _mac_problems(macs: MacScan, covered: int) -> list[Problem]:
    """``bad_mac``: the first row whose MAC is wrong, and the first row without one that no valid
    signed head covers (``covered``: the size of the newest head that checked out)."""
    found: list[Problem] = []
    if macs.wrong >= 0:
        # Below a valid head the content is still vouched for: the MAC column was edited, not the entry.
        where = (
            "below a valid signed head, which still vouches for it"
            if macs.wrong < covered
            else "no head covers it"
        )
        found.append(
            Problem(ProblemKind.BAD_MAC, macs.wrong,
                    f"entry {macs.wrong} carries a MAC that does not match its index and leaf hash (forged, or "
                    f"copied from another entry; {where}); {macs.wrong_count} such entr(y/ies)")
        )  # fmt: skip
    first, count = macs.unmacced_from(covered)
    if first >= 0:
        found.append(
            Problem(ProblemKind.BAD_MAC, first,
                    f"entry {first} has no MAC and no valid signed tree head covers it (heads cover {covered} "
                    f"entries): no writer holding the audit key wrote it; {count} such entr(y/ies)")
        )  # fmt: skip
    return found


class _HeadCheck:
    """The signed tree heads of one source (the database or a witness file), checked in size order
    as the recomputed tree grows past each: signature, root, time order and a consistency proof from
    the head before. Problems are collected in ``problems``."""

    def __init__(self, heads: list[SignedTreeHead], public_key: bytes, source: str) -> None:
        self.pending = sorted(heads, key=lambda h: (h.size, h.timestamp_ms))
        self.public_key = public_key
        self.source = source
        self.problems: list[Problem] = []
        self.previous: SignedTreeHead | None = None

    def next_size(self) -> int | None:
        return self.pending[0].size if self.pending else None

    def tiles_kept(self) -> set[int]:
        """Tiles whose leaves the next consistency proof reads: those at the previous head's end."""
        if self.previous is None:
            return set()
        size = self.previous.size
        return {(size - 1) >> TILE_HEIGHT, size >> TILE_HEIGHT} - {-1}

    def check_at(self, tree: TiledTree) -> None:
        """Check every pending head of exactly the tree's current size."""
        while self.pending and self.pending[0].size == len(tree):
            self._check(self.pending.pop(0), tree)

    def _signed(self, head: SignedTreeHead) -> bool:
        """Whether ``head`` carries a valid signature; a forged one is reported."""
        if head.verify_signature(self.public_key):
            return True
        self.problems.append(
            Problem(
                ProblemKind.BAD_SIGNATURE, head.size, f"{self.source} tree head of size {head.size} is forged"
            )
        )
        return False

    def _check(self, head: SignedTreeHead, tree: TiledTree) -> None:
        source = self.source
        if not self._signed(head):
            return
        calculated = tree.root()
        previous = self.previous
        if calculated != head.root:
            start = previous.size if previous else 0
            self.problems.append(
                Problem(
                    ProblemKind.ROOT_MISMATCH,
                    start,
                    f"{source} tree head of size {head.size} does not match the stored entries: "
                    f"an entry in [{start}, {head.size}) was rewritten with its hash",
                    expected=head.root.hex(),
                    calculated=calculated.hex(),
                )
            )
            return
        if previous is not None:
            if head.timestamp_ms < previous.timestamp_ms:
                self.problems.append(
                    Problem(
                        ProblemKind.INCONSISTENT_HEADS, head.size, f"{source} tree head goes back in time"
                    )
                )
            try:
                proof = tree.consistency_proof(previous.size, head.size)
                verify_consistency(previous.size, head.size, proof, previous.root, head.root)
            except VerificationError as exc:
                self.problems.append(Problem(ProblemKind.INCONSISTENT_HEADS, previous.size, str(exc)))
        self.previous = head

    def finish(self, valid: int, count: int) -> None:
        """The heads the tree never reached: forged, beyond the stored entries (truncated), or past
        the first bad entry (already reported)."""
        truncated = False
        for head in self.pending:
            if not self._signed(head):
                continue
            if head.size > count and not truncated:
                self.problems.append(
                    Problem(
                        ProblemKind.TRUNCATED,
                        count,
                        f"{self.source} tree head signs {head.size} entries but only {count} are stored",
                    )
                )
                truncated = True
        self.pending = []


class _Stream:
    """The recomputed tree, grown from leaf hashes in index order, stopping at every head's size to
    check it. Memory holds one hash per tile plus the leaves of the few tiles the next consistency
    proofs read (10M entries: about 3 MB, where the whole tree took 640 MB)."""

    def __init__(self, checks: list[_HeadCheck]) -> None:
        self.checks = checks
        self._kept: dict[int, bytearray] = {}
        self.tree = TiledTree(self._read)
        for check in checks:
            check.check_at(self.tree)  # heads of size 0

    def feed(self, packed: bytes) -> None:
        """Append leaf hashes (concatenated), checking each head whose size they reach."""
        offset = 0
        while offset < len(packed):
            sizes = [s for s in (c.next_size() for c in self.checks) if s is not None]
            here = len(self.tree)
            stop = min([s for s in sizes if s > here], default=None)
            take = len(packed) - offset
            if stop is not None:
                take = min(take, (stop - here) * HASH_SIZE)
            piece = packed[offset : offset + take]
            self._keep(here, piece)
            self.tree.extend_packed(piece)
            offset += take
            for check in self.checks:
                check.check_at(self.tree)
            self._forget()

    def tiles_wanted(self) -> set[int]:
        """Tiles to be fed as leaves, not by their hashes alone: those where a head's size falls
        (its root needs the leaves of a tile it ends inside; the consistency proof from it, the
        leaves on either side of its end)."""
        return {
            tile
            for check in self.checks
            for head in check.pending
            for tile in ((head.size - 1) >> TILE_HEIGHT, head.size >> TILE_HEIGHT)
            if tile >= 0
        }

    def feed_tiles(self, hashes: bytes) -> None:
        """Append whole tiles by their hashes (concatenated), the tree ending where the first starts.
        No head can be checked in between: every tile where one's size falls is fed as leaves
        (:meth:`tiles_wanted`); one that was not would go unchecked, so it stops the run here."""
        here = len(self.tree)
        end = here + ((len(hashes) // HASH_SIZE) << TILE_HEIGHT)
        for check in self.checks:
            size = check.next_size()
            if size is not None and here < size <= end:
                raise AssertionError(f"a head of size {size} ends in tiles fed by their hashes")
        self.tree.extend_tiles(hashes)

    def _keep(self, first: int, piece: bytes) -> None:
        """Copy the leaves of kept tiles out of ``piece`` (leaves from index ``first``)."""
        wanted = set().union(*(c.tiles_kept() for c in self.checks))
        end = first + len(piece) // HASH_SIZE
        for tile in wanted:
            lo, hi = max(tile << TILE_HEIGHT, first), min((tile + 1) << TILE_HEIGHT, end)
            if lo < hi:
                self._kept.setdefault(tile, bytearray()).extend(
                    piece[(lo - first) * HASH_SIZE : (hi - first) * HASH_SIZE]
                )

    def _forget(self) -> None:
        wanted = set().union(*(c.tiles_kept() for c in self.checks))
        for tile in [t for t in self._kept if t not in wanted]:
            del self._kept[tile]
        for check in self.checks:
            # A tile wanted from now on whose leaves went by already: its start is behind us.
            for tile in check.tiles_kept():
                if tile not in self._kept and (tile << TILE_HEIGHT) < len(self.tree):
                    self._kept[tile] = self._from_tree(tile)

    def _from_tree(self, tile: int) -> bytearray:
        tree = self.tree
        end = min((tile + 1) << TILE_HEIGHT, len(tree))
        return bytearray(b"".join(tree.leaf(i) for i in range(tile << TILE_HEIGHT, end)))

    def _read(self, start: int, end: int) -> bytes:
        kept = self._kept.get(start >> TILE_HEIGHT)
        if kept is None or len(kept) != (end - start) * HASH_SIZE:
            raise AssertionError(f"verify needs tile {start >> TILE_HEIGHT}, which it did not keep")
        return bytes(kept)


def _parallel_prefix(
    engine: Engine,
    stream: _Stream,
    workers: int | None,
    key: bytes | None,
    macs: MacScan,
    bodies: _Archived,
) -> tuple[int, int]:
    """Check whole ranges in worker processes; feed ``stream`` the tree of the intact prefix, and take
    what the workers found of its MACs (under the log key ``key``, if any) into ``macs`` and of its
    archived bodies into ``bodies``.

    Returns (entries confirmed, of which archived). Stops at the first range a worker cannot confirm,
    so the caller re-scans from there and names the problem. Does nothing for a small log, a single
    worker, or a process with other threads running (forking it could copy a held lock).
    """
    workers = workers if workers is not None else len(os.sched_getaffinity(0))
    if workers < 2 or threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        return 0, 0
    with engine.connect() as conn:
        # Two subqueries, not min(seq), max(seq), count(*): SQLite answers each of these from an
        # end of the primary key, where a count (or both in one SELECT) read the whole table (0.3 s
        # at 1.27 million rows) while no worker ran. A row missing is found anyway: a worker
        # confirms a range only when it holds exactly its indices.
        low, high = conn.exec_driver_sql(
            "SELECT (SELECT min(seq) FROM audit_entries), (SELECT max(seq) FROM audit_entries)"
        ).one()
    if low != 0 or high is None or high + 1 < _PARALLEL_FROM:
        return 0, 0  # small, or an entry before 0: the sequential scan says exactly what happened
    rows = int(high) + 1
    url = engine.url.render_as_string(hide_password=False)
    wanted = frozenset(stream.tiles_wanted())
    confirmed = archived = 0
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        ranges = [pool.submit(_confirm_range, url, a, b, key, wanted) for a, b in _ranges(rows, workers)]
        for future in ranges:
            result = future.result()
            if result is None:
                for pending in ranges:
                    pending.cancel()
                break
            pieces, end, none, found, seen = result
            for tiles, packed in pieces:
                (stream.feed_tiles if tiles else stream.feed)(packed)
            macs.merge(found)
            bodies.merge(seen)
            confirmed = end
            archived += none
    return confirmed, archived


def _ranges(rows: int, workers: int) -> Iterator[tuple[int, int]]:
    """[start, end) of each worker's range over indices ``0..rows``: ``_RANGE`` entries each, then,
    once fewer than two rounds of those are left, half of each worker's share of what is left, down
    to 1/16 of ``_RANGE``. Ranges go to whichever worker is free, so with equal ranges one worker sat
    idle for up to a whole range (65,536 entries, about 0.2 s) while the other finished its last;
    a range costs about 0.5 ms to start (a connection and a query)."""
    start = 0
    while start < rows:
        left = rows - start
        size = min(_RANGE, max(left // (2 * workers), _RANGE // 16, 1))
        yield start, min(start + size, rows)
        start += size


def _confirm_range(
    url: str, start: int, end: int, key: bytes | None, wanted: frozenset[int]
) -> tuple[list[tuple[bool, bytes]], int, int, MacScan, _Archived] | None:
    """Worker: the tree pieces (:func:`_pieces`) of entries ``start..end``, ``end``, the archived
    count and what the MACs and the bodies say, if every one of these entries is intact."""
    engine = _worker_engines.get(url)
    if engine is None:  # one per worker process, made there: never a connection of the parent's
        engine = _worker_engines[url] = create_engine(url, poolclass=NullPool)
    packed = bytearray()
    archived = 0
    macs = MacScan()
    bodies = _Archived()
    position = start
    for chunk in _chunks(engine, start, end):
        intact = _intact(position, chunk, bodies)
        if intact is None:
            return None
        packed += intact[0]
        _scan_macs(key, position, chunk, macs)
        archived += intact[1]
        position += len(chunk)
    if position != end:
        return None
    return _pieces(start, packed, wanted), end, archived, macs, bodies


def _pieces(start: int, packed: bytes | bytearray, wanted: frozenset[int]) -> list[tuple[bool, bytes]]:
    """The leaf hashes ``packed`` (from index ``start``) as the parent's tree takes them: the hash of
    each whole tile (``(True, hashes)``), so 1/256 of the leaves cross to the parent and the bulk of
    the tree's hashing is done here, in parallel; and the leaves themselves (``(False, leaves)``) of
    the tiles cut by the range's ends and of the ``wanted`` ones, where a head's size falls (its root
    and the next consistency proof need them). Runs of one kind are joined, in index order."""
    width = 1 << TILE_HEIGHT
    end = start + len(packed) // HASH_SIZE
    first = -(-start // width) * width  # where the first tile that starts in the range starts
    if first >= end:
        return [(False, bytes(packed))] if packed else []
    last = end // width * width  # where the last whole tile ends
    view = memoryview(packed)
    roots = subtree_roots(view[(first - start) * HASH_SIZE : (last - start) * HASH_SIZE], TILE_HEIGHT)
    runs: list[tuple[bool, list[bytes | memoryview]]] = []

    def put(tiles: bool, data: bytes | memoryview) -> None:
        if data:
            if runs and runs[-1][0] == tiles:
                runs[-1][1].append(data)
            else:
                runs.append((tiles, [data]))

    put(False, view[: (first - start) * HASH_SIZE])
    for k, tile in enumerate(range(first // width, last // width)):
        if tile in wanted:
            at = (tile * width - start) * HASH_SIZE
            put(False, view[at : at + width * HASH_SIZE])
        else:
            put(True, roots[k * HASH_SIZE : (k + 1) * HASH_SIZE])
    put(False, view[(last - start) * HASH_SIZE :])
    return [(tiles, b"".join(parts)) for tiles, parts in runs]


_worker_engines: dict[str, Engine] = {}


_COPIES_CHUNK = 50_000


def _check_search_copies(
    engine: Engine, count: int, valid: int, problems: list[Problem], workers: int | None
) -> None:
    """Searches, exports and the HTTP audit search find entries through copies of what the hashed
    bytes say: the ``actor``, ``ts_us``, ``kind`` and ``tenant`` columns, the actor, waybill and
    subject indexes, and the marks below which those are complete. None is covered by a hash, so each is
    compared with the bodies here, over the ``valid`` prefix whose bodies the hashes vouch for; the
    first disagreement is reported (``index_mismatch``). Ranges go to worker processes as in the
    hash check: every body is parsed, which costs more than hashing it."""
    with engine.connect() as conn:
        upto, subjects_upto = marks(conn)
    for mark in (upto, subjects_upto):
        if mark > count:
            problems.append(
                Problem(ProblemKind.INDEX_MISMATCH, count,
                        f"the search index mark says {mark} entries are indexed; {count} are stored")
            )  # fmt: skip
            break
    upto, subjects_upto = min(upto, valid), min(subjects_upto, valid)
    ranges = [(a, min(a + _COPIES_CHUNK, valid)) for a in range(0, valid, _COPIES_CHUNK)]
    workers = workers if workers is not None else len(os.sched_getaffinity(0))
    parallel = (
        workers >= 2 and valid >= _PARALLEL_FROM and threading.active_count() == 1
        and "fork" in multiprocessing.get_all_start_methods()
    )  # fmt: skip
    if parallel:
        url = engine.url.render_as_string(hide_password=False)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            found = pool.map(_copies_range, [url] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges],
                             [upto] * len(ranges), [subjects_upto] * len(ranges))  # fmt: skip
            first = next((problem for problem in found if problem is not None), None)
    else:
        first = next(
            (p for p in (_copies_in(engine, a, b, upto, subjects_upto) for a, b in ranges) if p is not None),
            None,
        )
    if first is not None:
        problems.append(first)


def _copies_range(url: str, start: int, stop: int, upto: int, subjects_upto: int) -> Problem | None:
    engine = _worker_engines.get(url)
    if engine is None:
        engine = _worker_engines[url] = create_engine(url, poolclass=NullPool)
    return _copies_in(engine, start, stop, upto, subjects_upto)


def _copies_in(engine: Engine, start: int, stop: int, upto: int, subjects_upto: int) -> Problem | None:
    mark = _placeholder(engine)
    # As bytes whatever the column holds (SQLite keeps TEXT in a BLOB column).
    body = "CAST(entry AS BLOB)" if engine.dialect.name == "sqlite" else "entry"
    between = f"seq >= {mark} AND seq < {mark}"
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        try:
            cursor.execute(
                f"SELECT seq, ts_us, kind, actor, tenant, {body} FROM audit_entries WHERE {between} ORDER BY seq",  # noqa: S608
                (start, stop),
            )
            rows = cursor.fetchall()
            below = min(stop, upto)
            below_subjects = min(stop, subjects_upto)
            stored_actors: set[tuple[str, int]] = set()
            stored_waybills: set[tuple[str, int]] = set()
            stored_subjects: set[tuple[str, int]] = set()
            if start < below:
                cursor.execute(f"SELECT actor, seq FROM audit_actors WHERE {between}", (start, below))  # noqa: S608
                stored_actors = set(cursor.fetchall())
                cursor.execute(f"SELECT waybill, seq FROM audit_waybills WHERE {between}", (start, below))  # noqa: S608
                stored_waybills = set(cursor.fetchall())
            if start < below_subjects:
                subjects_sql = f"SELECT subject, seq FROM audit_subjects WHERE {between}"  # noqa: S608
                cursor.execute(subjects_sql, (start, below_subjects))
                stored_subjects = set(cursor.fetchall())
        finally:
            cursor.close()
    actors: set[tuple[str, int]] = set()
    waybills: set[tuple[str, int]] = set()
    subjects: set[tuple[str, int]] = set()
    archived: set[int] = set()
    for seq, ts_us, kind, actor, tenant, entry in rows:
        if entry is None:  # archived: its actor is all that is left to file it under
            archived.add(seq)
            if actor is not None and seq < below:
                actors.add((actor, seq))
            continue
        try:
            decoded = decode_entry(stored_bytes(entry))
        except ValueError:
            continue  # the hash check reports this entry
        hashed = decoded.body
        hashed_actor = actor_of(hashed)
        if (
            ts_us != decoded.ts_us
            or kind != decoded.kind
            or actor != hashed_actor
            or tenant != tenant_of(hashed)
        ):
            wrong = [
                name
                for name, copy, value in (
                    ("time", ts_us, decoded.ts_us), ("kind", kind, decoded.kind),
                    ("actor", actor, hashed_actor), ("tenant", tenant, tenant_of(hashed)),
                )
                if copy != value
            ]  # fmt: skip
            return Problem(
                ProblemKind.INDEX_MISMATCH,
                seq,
                f"the searchable {', '.join(wrong)} of entry {seq} differs from its hashed body",
            )
        if seq < below:
            if hashed_actor is not None:
                actors.add((hashed_actor, seq))
            for waybill in waybills_of(hashed):
                waybills.add((waybill, seq))
        if seq < below_subjects:
            about = subject_of(hashed)
            if about is not None:
                subjects.add((about, seq))
    if start >= max(below, below_subjects):
        return None
    # An archived entry's rows stay where they were filed; its body, which would vouch for them, is
    # in the archive (``verify-archive`` checks it).
    stored_waybills = {row for row in stored_waybills if row[1] not in archived}
    stored_subjects = {row for row in stored_subjects if row[1] not in archived}
    for name, expected, found in (
        ("actor", actors, stored_actors),
        ("waybill", waybills, stored_waybills),
        ("subject", subjects, stored_subjects),
    ):
        if expected != found:
            differ = expected ^ found
            seq = min(s for _, s in differ)
            what = "is missing from" if any(s == seq for _, s in expected - found) else "is misfiled in"
            return Problem(ProblemKind.INDEX_MISMATCH, seq, f"entry {seq} {what} the {name} search index")
    return None


def _check_tiles(engine: Engine, tree: TiledTree, valid: int, problems: list[Problem]) -> None:
    """Report the first stored tile hash that differs from the recomputed tree (within the valid prefix)."""
    t = audit_tiles.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.idx, t.hash).where(t.height == TILE_HEIGHT, t.idx < valid >> TILE_HEIGHT).order_by(t.idx)
        )
        for idx, value in rows:
            calculated = tree.tile_hash(idx)
            stored = stored_bytes(value)
            if stored != calculated:
                problems.append(
                    Problem(
                        ProblemKind.BAD_TILE,
                        idx << TILE_HEIGHT,
                        f"stored hash of tile {idx} (entries {idx << TILE_HEIGHT}-{((idx + 1) << TILE_HEIGHT) - 1}) "
                        "does not match the entries",
                        expected=stored.hex(),
                        calculated=calculated.hex(),
                    )
                )
                return
