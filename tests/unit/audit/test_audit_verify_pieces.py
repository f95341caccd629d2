"""What a verify worker sends the parent for its range (tile hashes, leaves where needed) and what
the parent's tree makes of it: the same tree as from every leaf, wherever the range starts and ends."""

from __future__ import annotations

import hashlib
import importlib
import itertools
import random

import pytest

from courierguard.audit.merkle import MerkleTree, TiledTree, root_from_packed, subtree_roots

v = importlib.import_module("courierguard.audit.verify")


def _leaves(n: int) -> bytes:
    return b"".join(hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n))


def test_subtree_roots_are_the_roots_of_each_subtree() -> None:
    packed = _leaves(4 * 256)
    roots = subtree_roots(packed, 8)
    assert roots == b"".join(root_from_packed(packed[i * 8192 : (i + 1) * 8192]) for i in range(4))
    assert subtree_roots(b"", 8) == b""
    with pytest.raises(ValueError, match="whole subtrees"):
        subtree_roots(packed[:-32], 8)


@pytest.mark.parametrize("start", [0, 1, 255, 256, 300])
@pytest.mark.parametrize("length", [0, 1, 255, 256, 257, 1000])
@pytest.mark.parametrize("wanted", [frozenset(), frozenset({1}), frozenset({0, 1, 2, 3, 4})])
def test_pieces_cover_the_range_in_order(start: int, length: int, wanted: frozenset[int]) -> None:
    everything = _leaves(start + length)
    pieces = v._pieces(start, everything[start * 32 :], wanted)
    position = start
    for tiles, data in pieces:
        if tiles:  # whole tiles, none wanted: their roots
            assert position % 256 == 0
            for k in range(len(data) // 32):
                tile = position // 256
                assert tile not in wanted
                assert data[k * 32 : (k + 1) * 32] == root_from_packed(
                    everything[tile * 8192 : (tile + 1) * 8192]
                )
                position += 256
        else:
            assert data == everything[position * 32 : position * 32 + len(data)]
            position += len(data) // 32
    assert position == start + length
    assert all(a[0] != b[0] for a, b in itertools.pairwise(pieces))  # runs joined


def test_ranges_fed_as_pieces_grow_the_tree_of_every_leaf() -> None:
    n = 5000
    everything = _leaves(n)
    rng = random.Random(7)
    cuts = sorted({0, n, *(rng.randrange(n) for _ in range(12))})
    tree = TiledTree(lambda a, b: everything[a * 32 : b * 32])
    for a, b in itertools.pairwise(cuts):
        for tiles, data in v._pieces(a, everything[a * 32 : b * 32], frozenset({3, 7})):
            if tiles:
                tree.extend_tiles(data)
            else:
                tree.extend_packed(data)
    whole = MerkleTree.from_packed(everything)
    assert len(tree) == n
    for size in (1, 255, 256, 1000, 3333, n):
        assert tree.root(size) == whole.root(size)
    assert tree.consistency_proof(700, n) == whole.consistency_proof(700, n)


def test_tiles_are_fed_by_hash_only_at_a_tile_boundary() -> None:
    tree = TiledTree(lambda a, b: b"")
    tree.extend_packed(_leaves(3))
    with pytest.raises(ValueError, match="inside a tile"):
        tree.extend_tiles(b"\x00" * 32)


@pytest.mark.parametrize("seed", range(20))
def test_archived_bodies_merged_from_any_split_say_what_one_scan_says(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(1, 60)
    prefix = rng.randrange(n + 1)
    entries: list[bytes | None] = [None if i < prefix else b"x" for i in range(n)]
    for _ in range(rng.randrange(3)):
        entries[rng.randrange(n)] = None
    # One scan, as the SQL this replaced put it: the first kept body, then the first blank after it.
    kept = next((i for i, e in enumerate(entries) if e is not None), -1)
    hole = next((i for i, e in enumerate(entries) if e is None and kept >= 0 and i > kept), -1)
    cuts = sorted({0, n, *(rng.randrange(n) for _ in range(4))})
    merged = v._Archived()
    for a, b in itertools.pairwise(cuts):  # ranges of workers, merged in index order
        part = v._Archived()
        middle = rng.randrange(a, b + 1)
        part.add(a, entries[a:middle])  # chunks of a fetch, added one after another
        part.add(middle, entries[middle:b])
        merged.merge(part)
    assert (merged.kept, merged.hole) == (kept, hole)
