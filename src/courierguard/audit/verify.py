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
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, select

from courierguard.audit._internal.core import read_witness
from courierguard.audit.merkle import LEAF_PREFIX, MerkleTree, VerificationError, verify_consistency
from courierguard.audit.models import Problem, ProblemKind, SignedTreeHead, VerifyReport, entry_index
from courierguard.audit.tables import audit_entries, audit_tree_heads

_FETCH = 20_000


def _rows(engine: Engine) -> Iterator[tuple[int, bytes | None, bytes]]:
    query = select(audit_entries.c.seq, audit_entries.c.entry, audit_entries.c.leaf_hash).order_by(
        audit_entries.c.seq
    )
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=_FETCH).execute(query)
        for part in result.partitions(_FETCH):
            for seq, entry, stored in part:
                yield seq, (bytes(entry) if entry is not None else None), bytes(stored)


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
    bad_at: int | None = None
    sha = hashlib.sha256
    prefix = LEAF_PREFIX
    rows = _rows(engine)
    for seq, entry, stored in rows:
        if bad_at is None:
            if entry is None:
                ok = seq == count
                archived += 1
            else:
                ok = (
                    seq == count
                    and entry[4:12] == seq.to_bytes(8, "big")
                    and sha(prefix + entry).digest() == stored
                )
            if ok:
                packed += stored
            else:
                bad_at = count
                rest = [(seq, entry, stored), *rows]
                problems.append(_classify(count, rest))
                count += len(rest)
                break
        count += 1
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
