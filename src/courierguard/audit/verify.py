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

Entry scanning stops at the first bad entry: later roots prove nothing about a broken prefix.
"""

from __future__ import annotations

import hashlib
import operator
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from sqlalchemy import Engine, select

from courierguard.audit._internal.core import read_witness
from courierguard.audit.merkle import LEAF_PREFIX, MerkleTree, VerificationError, verify_consistency
from courierguard.audit.models import Problem, ProblemKind, SignedTreeHead, VerifyReport, entry_index
from courierguard.audit.tables import audit_tree_heads

_FETCH = 50_000
# The big-endian index embedded at bytes 4..12 of every encoded entry (see ``encode_entry``).
_INDEX_BYTES = operator.itemgetter(slice(4, 12))
_SEQ, _ENTRY, _STORED = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(2)
_SELECT_ENTRIES = "SELECT seq, entry, leaf_hash FROM audit_entries ORDER BY seq"

_Row = tuple[int, bytes | None, bytes]


def _chunks(engine: Engine) -> Iterator[list[_Row]]:
    """Every entry row in index order, in chunks of plain DB-API tuples (no ORM rows on this path)."""
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        # PostgreSQL: a named (server-side) cursor streams instead of loading the table into memory.
        cursor = raw.cursor(name="audit_verify") if engine.dialect.name == "postgresql" else raw.cursor()
        try:
            cursor.execute(_SELECT_ENTRIES)
            while rows := cursor.fetchmany(_FETCH):
                yield cast(list[_Row], rows)
        finally:
            cursor.close()


def _rows(chunks: Iterator[list[_Row]]) -> Iterator[_Row]:
    for chunk in chunks:
        yield from chunk


def _heads(engine: Engine) -> list[SignedTreeHead]:
    with engine.connect() as conn:
        rows = conn.execute(select(audit_tree_heads).order_by(audit_tree_heads.c.size)).all()
    return [
        SignedTreeHead(r.size, bytes(r.root), r.timestamp_ms, bytes(r.signature), bytes(r.public_key))
        for r in rows
    ]


def _classify(position: int, rows: list[tuple[int, bytes | None, bytes]]) -> Problem:
    """Name what happened at ``position``, the first row that failed, given every row from there on."""
    seq, entry, stored = rows[0]
    if seq != position:
        return Problem(ProblemKind.MISSING, position, f"no entry stored at index {position} (next is {seq})")
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
    claimed = {entry_index(e) for _, e, _ in rows[1:] if e is not None}
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


def _first_bad(start: int, chunk: list[_Row]) -> int | None:
    """Index of the first row of ``chunk`` (starting at index ``start``) that fails, if any."""
    sha = hashlib.sha256
    prefix = LEAF_PREFIX
    for position, (seq, entry, stored) in enumerate(chunk, start):
        if entry is None:
            ok = seq == position
        else:
            ok = (
                seq == position
                and entry[4:12] == seq.to_bytes(8, "big")
                and sha(prefix + entry).digest() == stored
            )
        if not ok:
            return position
    return None


def verify(engine: Engine, public_key: bytes, *, witness_file: Path | None = None) -> VerifyReport:
    """Recompute the log stored on ``engine`` and check it against its signed tree heads.

    ``public_key`` is the raw Ed25519 key the heads must be signed with (``audit head`` prints it;
    auditors should pin it, not read it from the database). Returns a report; never raises for a
    tampered log, only for an unreachable database.
    """
    started = time.perf_counter()
    problems: list[Problem] = []
    packed = bytearray()
    archived = 0
    count = 0
    chunks = _chunks(engine)
    for chunk in chunks:
        n = len(chunk)
        seqs = list(map(_SEQ, chunk))
        entries = list(map(_ENTRY, chunk))
        stored = list(map(_STORED, chunk))
        if None not in entries and _chunk_ok(count, seqs, entries, stored):
            packed += b"".join(stored)
            count += n
            continue
        # Slow path: an archived entry, or something wrong somewhere in this chunk.
        bad = _first_bad(count, chunk)
        archived += sum(1 for e in entries[: n if bad is None else bad - count + 1] if e is None)
        if bad is None:
            packed += b"".join(stored)
            count += n
            continue
        good = bad - count
        packed += b"".join(stored[:good])
        rest = [*chunk[good:], *_rows(chunks)]
        problems.append(_classify(bad, rest))
        count = bad + len(rest)
        break
    valid = len(packed) // 32
    tree = MerkleTree.from_packed(packed)

    heads = _heads(engine)
    if not heads:
        problems.append(Problem(ProblemKind.NO_TREE_HEAD, 0, "no signed tree head is stored"))
    _check_heads(heads, tree, valid, count, public_key, problems, source="database")
    if witness_file is not None:
        _check_heads(read_witness(witness_file), tree, valid, count, public_key, problems, source="witness")
    return VerifyReport(
        entries=count,
        archived=archived,
        tree_heads=len(heads),
        root=tree.root(),
        problems=problems,
        seconds=time.perf_counter() - started,
    )


def _check_heads(
    heads: list[SignedTreeHead],
    tree: MerkleTree,
    valid: int,
    count: int,
    public_key: bytes,
    problems: list[Problem],
    *,
    source: str,
) -> None:
    truncated = False
    previous: SignedTreeHead | None = None
    for head in sorted(heads, key=lambda h: (h.size, h.timestamp_ms)):
        if not head.verify_signature(public_key):
            problems.append(
                Problem(
                    ProblemKind.BAD_SIGNATURE, head.size, f"{source} tree head of size {head.size} is forged"
                )
            )
            continue
        if head.size > count:
            if not truncated:
                problems.append(
                    Problem(
                        ProblemKind.TRUNCATED,
                        count,
                        f"{source} tree head signs {head.size} entries but only {count} are stored",
                    )
                )
                truncated = True
            continue
        if head.size > valid:
            continue  # beyond the first bad entry, already reported
        calculated = tree.root(head.size)
        if calculated != head.root:
            start = previous.size if previous else 0
            problems.append(
                Problem(
                    ProblemKind.ROOT_MISMATCH,
                    start,
                    f"{source} tree head of size {head.size} does not match the stored entries: "
                    f"an entry in [{start}, {head.size}) was rewritten with its hash",
                    expected=head.root.hex(),
                    calculated=calculated.hex(),
                )
            )
            continue
        if previous is not None:
            if head.timestamp_ms < previous.timestamp_ms:
                problems.append(
                    Problem(
                        ProblemKind.INCONSISTENT_HEADS, head.size, f"{source} tree head goes back in time"
                    )
                )
            try:
                proof = tree.consistency_proof(previous.size, head.size)
                verify_consistency(previous.size, head.size, proof, previous.root, head.root)
            except VerificationError as exc:
                problems.append(Problem(ProblemKind.INCONSISTENT_HEADS, previous.size, str(exc)))
        previous = head
