"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification: pure functions over bytes.

Hashing follows RFC 6962 §2.1 (restated in RFC 9162 §2.1.1): SHA-256, a leaf is hashed as
``SHA-256(0x00 || entry)`` and an interior node as ``SHA-256(0x01 || left || right)``; the two prefixes
make a leaf impossible to pass off as a node (second-preimage resistance). The tree over ``n`` leaves
splits at the largest power of two smaller than ``n``.

Proof generation follows RFC 6962 §2.1.1 (PATH) and §2.1.2 (SUBPROOF); verification follows the
algorithms of RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency), the same ones as
``transparency-dev/merkle`` (``proof/verify.go``), Trillian's successor library. Every failure raises
:class:`VerificationError` carrying the expected and the calculated value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from courierguard.errors import CourierGuardError

LEAF_PREFIX = b"\x00"
"""RFC 6962 §2.1: domain separation byte prepended to an entry before hashing it as a leaf."""

NODE_PREFIX = b"\x01"
"""RFC 6962 §2.1: domain separation byte prepended to two child hashes to form their parent."""

HASH_SIZE = 32

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""RFC 6962 §2.1: the hash of an empty tree is the hash of the empty string."""

_sha256 = hashlib.sha256


class VerificationError(CourierGuardError):
    """A proof, a root or a stored entry does not check out.

    ``index`` names the first bad leaf (or tree size, for tree heads) when one is known;
    ``expected`` and ``calculated`` are the two hashes that disagree, when there are two.
    """

    status = 409
    title = "Audit verification failed"
    reason = "verification_failed"

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        expected: bytes | None = None,
        calculated: bytes | None = None,
    ) -> None:
        parts = [message]
        if index is not None:
            parts.append(f"index {index}")
        if expected is not None:
            parts.append(f"expected {expected.hex()}")
        if calculated is not None:
            parts.append(f"calculated {calculated.hex()}")
        super().__init__("; ".join(parts))
        self.index = index
        self.expected = expected
        self.calculated = calculated


def leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 §2.1: ``MTH({d0}) = SHA-256(0x00 || d0)``."""
    return _sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 §2.1: ``SHA-256(0x01 || MTH(left) || MTH(right))``."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The ``k`` of RFC 6962 §2.1: the largest power of two strictly smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """The tree head of a whole list of leaf hashes, level by level.

    Pairing neighbours left to right and lifting a lone last node unchanged gives exactly the
    RFC 6962 §2.1 split, because the left subtree is always the largest complete power of two.
    """
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    sha = _sha256
    prefix = NODE_PREFIX
    while len(level) > 1:
        odd = level[-1] if len(level) % 2 else None
        level = [sha(prefix + a + b).digest() for a, b in zip(level[0::2], level[1::2], strict=False)]
        if odd is not None:
            level.append(odd)
    return level[0]


def root_from_packed(packed: bytes | bytearray | memoryview) -> bytes:
    """Like :func:`root_from_leaf_hashes` over leaf hashes concatenated in one buffer (32 bytes each)."""
    view = memoryview(packed)
    if len(view) % HASH_SIZE:
        raise ValueError("packed leaf hashes must be a multiple of 32 bytes")
    if not view:
        return EMPTY_ROOT
    while len(view) > HASH_SIZE:
        n = len(view) // HASH_SIZE
        pairs = n // 2
        out = bytearray(_pair_hashes(view[: pairs * 64]))
        if n % 2:
            out += view[pairs * 64 :]
        view = memoryview(out)
    return bytes(view)


def subtree_roots(packed: bytes | bytearray | memoryview, height: int) -> bytes:
    """The roots of consecutive complete subtrees of ``2**height`` leaves each, concatenated, over
    leaf hashes ``packed`` (a whole number of such subtrees): level by level over all of them at once,
    a few list comprehensions where one call per subtree paid Python's overhead per subtree."""
    view = memoryview(packed)
    if len(view) % (HASH_SIZE << height):
        raise ValueError(f"packed leaf hashes must be whole subtrees of {1 << height} leaves")
    level: bytes | memoryview = view
    for _ in range(height):
        level = _pair_hashes(memoryview(level))
    return bytes(level)


def _pair_hashes(view: memoryview) -> bytes:
    """``node_hash`` of every consecutive pair in a buffer of an even number of hashes, concatenated."""
    sha = _sha256
    prefix = NODE_PREFIX
    return b"".join([sha(prefix + view[i : i + 64]).digest() for i in range(0, len(view), 64)])


NodeSource = Callable[[int, int], bytes]
"""``node(level, index)``: the hash of the complete subtree of leaves ``index * 2**level`` up to
``(index + 1) * 2**level``. Proofs and roots need nothing else of a tree."""


def range_hash(node: NodeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) (RFC 6962 §2.1) from complete subtrees.

    Every range a root or a proof asks for starts at a multiple of the largest power of two in its
    length, so it splits into complete subtrees down the binary digits of its length.
    """
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        return node(n.bit_length() - 1, start // n)
    k = _largest_power_of_two_below(n)
    return node_hash(range_hash(node, start, start + k), range_hash(node, start + k, end))


def inclusion_path(node: NodeSource, index: int, size: int) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[0:size]) for ``0 <= index < size`` (checked by the caller)."""

    def path(m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = _largest_power_of_two_below(n)
        if m < k:
            return [*path(m, start, start + k), range_hash(node, start + k, end)]
        return [*path(m - k, start + k, end), range_hash(node, start, start + k)]

    return path(index, 0, size)


def consistency_path(node: NodeSource, old_size: int, new_size: int) -> list[bytes]:
    """RFC 6962 §2.1.2 PROOF(m, D[0:n]) for ``0 <= old_size <= new_size`` (checked by the caller)."""

    def subproof(m: int, start: int, end: int, whole: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if whole else [range_hash(node, start, end)]
        k = _largest_power_of_two_below(n)
        if m <= k:
            return [*subproof(m, start, start + k, whole), range_hash(node, start + k, end)]
        return [*subproof(m - k, start + k, end, False), range_hash(node, start, start + k)]

    if old_size in (0, new_size):
        return []
    return subproof(old_size, 0, new_size, True)


class _Proofs:
    """Roots and proofs of a tree that can hash any complete subtree (``_node``) and knows its size."""

    __slots__ = ()

    def __len__(self) -> int:
        raise NotImplementedError

    def _node(self, level: int, index: int) -> bytes:
        raise NotImplementedError

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all)."""
        size = len(self) if size is None else size
        self._check_size(size)
        return range_hash(self._node, 0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 §2.1.1 PATH(m, D[0:size]): the audit path of leaf ``index`` in the tree of ``size``."""
        size = len(self) if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} outside 0..{size - 1}")
        return inclusion_path(self._node, index, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 6962 §2.1.2 PROOF(m, D[0:n]): shows the tree of ``old_size`` is a prefix of ``new_size``."""
        new_size = len(self) if new_size is None else new_size
        self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise ValueError(f"old size {old_size} outside 0..{new_size}")
        return consistency_path(self._node, old_size, new_size)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= len(self):
            raise ValueError(f"tree size {size} outside 0..{len(self)}")


class MerkleTree(_Proofs):
    """An append-only RFC 6962 tree keeping every complete subtree hash, for O(log n) proofs.

    Level ``k`` holds the hashes of the complete subtrees of ``2**k`` leaves, packed 32 bytes apiece
    in one ``bytearray``: 10 million leaves take about 640 MB, a third of what ``bytes`` objects would.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        for h in leaf_hashes:
            self.append(h)

    @classmethod
    def from_packed(cls, packed: bytes | bytearray) -> MerkleTree:
        """A tree over leaf hashes concatenated in one buffer; builds whole levels at once (fast)."""
        tree = cls()
        tree.extend_packed(packed)
        return tree

    def extend_packed(self, packed: bytes | bytearray | memoryview) -> int:
        """Append many leaf hashes concatenated in one buffer; returns the index of the first one.

        Level by level, only the parents completed by the new leaves are hashed: the same nodes as
        :meth:`append` one by one, at a fraction of the Python overhead.
        """
        if len(packed) % HASH_SIZE:
            raise ValueError("packed leaf hashes must be a multiple of 32 bytes")
        levels = self._levels
        first = len(levels[0]) // HASH_SIZE
        levels[0] += packed
        k = 0
        old, new = first, len(levels[0]) // HASH_SIZE
        while new >= 2:
            lo, hi = old // 2, new // 2
            if lo == hi:
                break
            if len(levels) == k + 1:
                levels.append(bytearray())
            levels[k + 1] += _pair_hashes(memoryview(levels[k])[lo * 64 : hi * 64])
            k += 1
            old, new = lo, hi
        return first

    def __len__(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    def truncate(self, size: int) -> None:
        """Forget every leaf from ``size`` on (used to undo leaves whose transaction failed)."""
        self._check_size(size)
        for k, level in enumerate(self._levels):
            del level[(size >> k) * HASH_SIZE :]

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self)

    def append(self, leaf: bytes) -> int:
        """Add one leaf hash; returns its index. Completes every parent whose right child it is."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        levels = self._levels
        index = len(levels[0]) // HASH_SIZE
        levels[0] += leaf
        node, i, k = leaf, index, 0
        while i & 1:
            left = bytes(levels[k][(i - 1) * HASH_SIZE : i * HASH_SIZE])
            node = _sha256(NODE_PREFIX + left + node).digest()
            k += 1
            i >>= 1
            if len(levels) == k:
                levels.append(bytearray())
            levels[k] += node
        return index

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        return bytes(self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def subtree(self, level: int, index: int) -> bytes:
        """The hash of complete subtree ``index`` of ``2**level`` leaves; IndexError if incomplete."""
        if not (0 <= level < len(self._levels) and 0 <= index < len(self._levels[level]) // HASH_SIZE):
            raise IndexError((level, index))
        return self._node(level, index)

    def _node(self, level: int, index: int) -> bytes:
        return bytes(self._levels[level][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def _range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) (RFC 6962 §2.1) from stored complete subtrees."""
        return range_hash(self._node, start, end)


TILE_HEIGHT = 8
"""Levels per tile of :class:`TiledTree`: a tile is 2**8 = 256 leaves."""

LeafReader = Callable[[int, int], bytes]
"""``read(start, end)``: the stored leaf hashes ``start..end`` concatenated, exactly ``32 * (end -
start)`` bytes (anything else is an error for the reader to raise)."""


class TiledTree(_Proofs):
    """An RFC 6962 tree whose leaf hashes stay in storage: memory holds one hash per tile.

    The hash of every complete tile (a complete subtree of ``2**height`` leaves) lives in an
    in-memory :class:`MerkleTree` whose leaves are those tile hashes, so every node at ``height`` and
    above is at hand; the leaves of the last, incomplete tile are kept too. A node below ``height``
    is hashed from its tile's leaves, read through ``read`` (the last few tiles read are cached: a
    complete tile never changes). At 10 million leaves that is 39,063 tile hashes (2.5 MB) instead
    of 640 MB, and a log opens by reading its stored tile hashes rather than every leaf.
    """

    __slots__ = ("_cache", "_height", "_read", "_tail", "_upper")

    _CACHED_TILES = 64

    def __init__(
        self,
        read: LeafReader,
        tile_hashes: bytes | bytearray = b"",
        tail: bytes | bytearray = b"",
        *,
        height: int = TILE_HEIGHT,
    ) -> None:
        if len(tail) % HASH_SIZE or len(tail) >= HASH_SIZE << height:
            raise ValueError("the tail holds fewer leaf hashes than a tile")
        self._read = read
        self._height = height
        self._upper = MerkleTree.from_packed(tile_hashes)
        self._tail = bytearray(tail)
        self._cache: dict[int, bytes] = {}

    def __len__(self) -> int:
        return (len(self._upper) << self._height) + len(self._tail) // HASH_SIZE

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self)

    @property
    def complete_tiles(self) -> int:
        """Number of complete tiles (their hashes are what storage keeps)."""
        return len(self._upper)

    def extend_packed(self, packed: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
        """Append leaf hashes concatenated in one buffer; returns ``(tile index, tile hash)`` of each
        tile they complete, for the caller to store beside the leaves."""
        if len(packed) % HASH_SIZE:
            raise ValueError("packed leaf hashes must be a multiple of 32 bytes")
        tail = self._tail
        tail += packed
        width = HASH_SIZE << self._height
        complete = len(tail) // width
        if not complete:
            return []
        first = len(self._upper)
        view = memoryview(tail)
        tiles = [bytes(view[i * width : (i + 1) * width]) for i in range(complete)]
        view.release()
        hashes = [root_from_packed(tile) for tile in tiles]
        self._upper.extend_packed(b"".join(hashes))
        del tail[: complete * width]
        for i, tile in enumerate(
            tiles[-self._CACHED_TILES :], start=first + max(0, complete - self._CACHED_TILES)
        ):
            self._remember(i, tile)
        return [(first + i, h) for i, h in enumerate(hashes)]

    def extend_tiles(self, hashes: bytes | bytearray | memoryview) -> None:
        """Append whole tiles by their hashes alone (concatenated), the tree ending where the first
        starts: what a verifier hashed elsewhere. Their leaves stay in storage, read if a proof
        below a tile's root needs them."""
        if len(hashes) % HASH_SIZE:
            raise ValueError("packed tile hashes must be a multiple of 32 bytes")
        if self._tail:
            raise ValueError("the tree ends inside a tile")
        self._upper.extend_packed(hashes)

    def mark(self) -> tuple[int, bytes]:
        """The current state, for :meth:`restore` (to undo leaves whose transaction failed)."""
        return len(self._upper), bytes(self._tail)

    def restore(self, state: tuple[int, bytes]) -> None:
        """Go back to a state from :meth:`mark`: later leaves and tiles are forgotten."""
        tiles, tail = state
        self._upper.truncate(tiles)
        self._tail[:] = tail
        for index in [i for i in self._cache if i >= tiles]:
            del self._cache[index]

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._node(0, index)

    def tile_hash(self, index: int) -> bytes:
        """The hash of complete tile ``index``; IndexError for a tile not complete."""
        if not 0 <= index < len(self._upper):
            raise IndexError(index)
        return self._upper._node(0, index)

    def uncached_tiles(self, tiles: Iterable[int]) -> list[int]:
        """Those of ``tiles`` that are complete and whose leaves are not in memory."""
        return [t for t in tiles if 0 <= t < len(self._upper) and t not in self._cache]

    def read_tiles(self, tiles: Iterable[int]) -> dict[int, bytes]:
        """The leaves of ``tiles`` from storage, without touching the tree (so without its lock);
        a tile storage does not hold whole (not committed yet) is left out."""
        width = 1 << self._height
        out = {}
        for tile in tiles:
            leaves = self._read(tile * width, (tile + 1) * width)
            if len(leaves) == HASH_SIZE * width:
                out[tile] = leaves
        return out

    def remember_tiles(self, tiles: dict[int, bytes]) -> None:
        """Keep leaves from :meth:`read_tiles` for the proofs that follow."""
        for index, leaves in tiles.items():
            if index < len(self._upper):
                self._remember(index, leaves)

    def _node(self, level: int, index: int) -> bytes:
        height = self._height
        if level >= height:
            return self._upper._node(level - height, index)
        start = index << level
        tile = start >> height
        offset = (start - (tile << height)) * HASH_SIZE
        leaves = self._tile(tile)
        return root_from_packed(memoryview(leaves)[offset : offset + (HASH_SIZE << level)])

    def _tile(self, index: int) -> bytes | bytearray:
        if index == len(self._upper):
            return self._tail
        cached = self._cache.get(index)
        if cached is None:
            width = 1 << self._height
            cached = self._read(index * width, (index + 1) * width)
            if len(cached) != HASH_SIZE * width:
                raise ValueError(
                    f"tile {index}: storage returned {len(cached) // HASH_SIZE} of {width} leaves"
                )
            self._remember(index, cached)
        return cached

    def _remember(self, index: int, tile: bytes) -> None:
        cache = self._cache
        if len(cache) >= self._CACHED_TILES:
            del cache[next(iter(cache))]  # oldest first: dicts keep insertion order
        cache[index] = tile


def _decompose_inclusion(index: int, size: int) -> tuple[int, int]:
    """Split a proof into the part below the last common level and the part of lone left siblings."""
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by ``proof`` for leaf hash ``leaf`` at ``index`` (RFC 9162 §2.1.3.2)."""
    if index >= size or index < 0:
        raise VerificationError(f"leaf index out of range for tree size {size}", index=index)
    if len(leaf) != HASH_SIZE:
        raise VerificationError("leaf hash is not 32 bytes", index=index)
    inner, border = _decompose_inclusion(index, size)
    if len(proof) != inner + border:
        raise VerificationError(f"wrong proof length {len(proof)}, want {inner + border}", index=index)
    for item in proof:
        if len(item) != HASH_SIZE:
            raise VerificationError("proof hash is not 32 bytes", index=index)
    node = leaf
    for i, sibling in enumerate(proof[:inner]):
        node = node_hash(node, sibling) if (index >> i) & 1 == 0 else node_hash(sibling, node)
    for sibling in proof[inner:]:
        node = node_hash(sibling, node)
    return node


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise :class:`VerificationError` unless ``proof`` shows leaf ``index`` is in the tree ``root``."""
    calculated = root_from_inclusion_proof(index, size, leaf, proof)
    if calculated != root:
        raise VerificationError(
            "inclusion proof does not lead to the root", index=index, expected=root, calculated=calculated
        )


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Raise unless ``proof`` shows the tree ``old_root`` is a prefix of ``new_root`` (RFC 9162 §2.1.4.2)."""
    if old_size < 0 or new_size < old_size:
        raise VerificationError(f"old size {old_size} is beyond new size {new_size}", index=old_size)
    if old_size == new_size:
        if proof:
            raise VerificationError("proof must be empty for equal sizes", index=old_size)
        if old_root != new_root:
            raise VerificationError(
                "same size, different roots", index=old_size, expected=old_root, calculated=new_root
            )
        return
    if old_size == 0:
        if proof:
            raise VerificationError("proof must be empty from the empty tree", index=0)
        return
    if not proof:
        raise VerificationError("empty consistency proof", index=old_size)
    for item in proof:
        if len(item) != HASH_SIZE:
            raise VerificationError("proof hash is not 32 bytes", index=old_size)

    inner, border = _decompose_inclusion(old_size - 1, new_size)
    shift = (old_size & -old_size).bit_length() - 1
    inner -= shift
    # When the old tree is a complete subtree its root is the starting node; otherwise the proof
    # starts with the hash of the complete subtree that contains the old tree's last leaf.
    if old_size == 1 << shift:
        seed, rest = old_root, list(proof)
    else:
        seed, rest = proof[0], list(proof[1:])
    if len(rest) != inner + border:
        raise VerificationError(f"wrong proof length {len(proof)}", index=old_size)

    mask = (old_size - 1) >> shift
    hash1 = seed
    for i, sibling in enumerate(rest[:inner]):
        if (mask >> i) & 1:
            hash1 = node_hash(sibling, hash1)
    for sibling in rest[inner:]:
        hash1 = node_hash(sibling, hash1)
    if hash1 != old_root:
        raise VerificationError(
            "consistency proof does not lead to the old root",
            index=old_size,
            expected=old_root,
            calculated=hash1,
        )

    hash2 = seed
    for i, sibling in enumerate(rest[:inner]):
        hash2 = node_hash(hash2, sibling) if (mask >> i) & 1 == 0 else node_hash(sibling, hash2)
    for sibling in rest[inner:]:
        hash2 = node_hash(sibling, hash2)
    if hash2 != new_root:
        raise VerificationError(
            "consistency proof does not lead to the new root",
            index=new_size,
            expected=new_root,
            calculated=hash2,
        )
