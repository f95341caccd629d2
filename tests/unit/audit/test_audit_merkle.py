"""RFC 6962 vectors (transparency-dev/merkle and custom), property tests, and misuse of the verifiers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from audit_vectors import load_vectors
from hypothesis import given, settings
from hypothesis import strategies as st
from naive_merkle import mth, path, proof

from courierguard.audit.merkle import (
    EMPTY_ROOT,
    LEAF_PREFIX,
    NODE_PREFIX,
    MerkleTree,
    TiledTree,
    VerificationError,
    leaf_hash,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    root_from_packed,
    verify_consistency,
    verify_inclusion,
)

TD = load_vectors("rfc6962_transparency_dev.json")
CUSTOM = load_vectors("custom.json")
TD_LEAVES = [bytes.fromhex(x) for x in TD["leaves_hex"]]
TD_ROOTS = [bytes.fromhex(x) for x in TD["roots_hex"]]
SOME_HASH = bytes.fromhex(TD["some_hash_hex"])


def _tree(leaves: list[bytes]) -> MerkleTree:
    return MerkleTree(leaf_hash(x) for x in leaves)


def test_prefixes_and_empty_root() -> None:
    assert LEAF_PREFIX == b"\x00"
    assert NODE_PREFIX == b"\x01"
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("size", range(9))
def test_transparency_dev_roots(size: int) -> None:
    hashes = [leaf_hash(x) for x in TD_LEAVES[:size]]
    assert _tree(TD_LEAVES[:size]).root() == TD_ROOTS[size]
    assert root_from_leaf_hashes(hashes) == TD_ROOTS[size]
    assert root_from_packed(b"".join(hashes)) == TD_ROOTS[size]
    assert MerkleTree.from_packed(b"".join(hashes)).root() == TD_ROOTS[size]
    assert _tree(TD_LEAVES).root(size) == TD_ROOTS[size]


def test_transparency_dev_node_hashes() -> None:
    tree = _tree(TD_LEAVES)
    for level, nodes in enumerate(TD["node_hashes_hex"]):
        for i, node in enumerate(nodes):
            assert tree._range_hash(i << level, (i + 1) << level).hex() == node


def _inclusion_probes(index: int, size: int, leaf: bytes, prf: list[bytes], root: bytes) -> list[tuple]:
    """The corruptions of transparency-dev/merkle proof/verify_test.go corruptInclusionProof."""
    probes = [
        (index - 1, size, leaf, prf, root),
        (index + 1, size, leaf, prf, root),
        (index ^ 2, size, leaf, prf, root),
        (index, size * 2, leaf, prf, root),
        (index, size // 2, leaf, prf, root),
        (index, size, b"WrongLeaf", prf, root),
        (index, size, leaf, prf, EMPTY_ROOT),
        (index, size, leaf, prf, SOME_HASH),
        (index, size, leaf, [*prf, b""], root),
        (index, size, leaf, [*prf, root], root),
        (index, size, leaf, [b"", *prf], root),
        (index, size, leaf, [root, *prf], root),
    ]
    for i in range(len(prf)):
        bad = list(prf)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        probes.append((index, size, leaf, bad, root))
    if prf:
        probes.append((index, size, leaf, prf[:-1], root))
    if len(prf) > 1:
        probes.append((index, size, leaf, [prf[0], SOME_HASH, *prf[1:]], root))
    return probes


@pytest.mark.parametrize("vector", TD["inclusion"], ids=lambda v: f"{v['index']}-of-{v['size']}")
def test_transparency_dev_inclusion(vector: dict) -> None:
    index, size = vector["index"], vector["size"]
    expected = [bytes.fromhex(x) for x in vector["proof"]]
    assert _tree(TD_LEAVES).inclusion_proof(index, size) == expected
    leaf = leaf_hash(TD_LEAVES[index])
    root = TD_ROOTS[size]
    assert root_from_inclusion_proof(index, size, leaf, expected) == root
    verify_inclusion(index, size, leaf, expected, root)
    for probe in _inclusion_probes(index, size, leaf, expected, root):
        with pytest.raises(VerificationError):
            verify_inclusion(*probe)


@pytest.mark.parametrize("index,size", [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_transparency_dev_inclusion_invalid(index: int, size: int) -> None:
    for leaf, root in [(SOME_HASH, b""), (b"", EMPTY_ROOT), (SOME_HASH, EMPTY_ROOT)]:
        with pytest.raises(VerificationError):
            verify_inclusion(index, size, leaf, [], root)


def _consistency_probes(m: int, n: int, r1: bytes, r2: bytes, prf: list[bytes]) -> list[tuple]:
    """The corruptions of transparency-dev/merkle proof/verify_test.go corruptConsistencyProof."""
    probes = [
        (m - 1, n, prf, r1, r2),
        (m + 1, n, prf, r1, r2),
        (m ^ 2, n, prf, r1, r2),
        (m, n * 2, prf, r1, r2),
        (m, n // 2, prf, r1, r2),
        (m, n, prf, b"WrongRoot", r2),
        (m, n, prf, r1, b"WrongRoot"),
        (m, n, prf, r2, r1),
        (m, n, [], r1, r2),
        (m, n, [*prf, b""], r1, r2),
        (m, n, [*prf, r1], r1, r2),
        (m, n, [*prf, r2], r1, r2),
        (m, n, [b"", *prf], r1, r2),
        (m, n, [r1, *prf], r1, r2),
        (m, n, [r2, *prf], r1, r2),
        (m, n, [prf[0], *prf], r1, r2),
        (m, n, prf[:-1], r1, r2),
    ]
    for i in range(len(prf)):
        bad = list(prf)
        bad[i] = bytes([bad[i][0] ^ 16]) + bad[i][1:]
        probes.append((m, n, bad, r1, r2))
    return probes


@pytest.mark.parametrize("vector", TD["consistency"], ids=lambda v: f"{v['old']}-to-{v['new']}")
def test_transparency_dev_consistency(vector: dict) -> None:
    m, n = vector["old"], vector["new"]
    expected = [bytes.fromhex(x) for x in vector["proof"]]
    assert _tree(TD_LEAVES).consistency_proof(m, n) == expected
    r1, r2 = TD_ROOTS[m], TD_ROOTS[n]
    verify_consistency(m, n, expected, r1, r2)
    if not expected:
        return
    for probe in _consistency_probes(m, n, r1, r2, expected):
        with pytest.raises(VerificationError):
            verify_consistency(*probe)


@pytest.mark.parametrize(
    "m,n,r1,r2,prf,ok",
    [
        (0, 0, b"1", b"2", [], False),
        (1, 1, b"1", b"2", [], False),
        (0, 0, b"1", b"1", [], True),
        (0, 1, b"1", b"2", [], True),
        (1, 1, b"2", b"2", [], True),
        (1, 0, b"1", b"2", [], False),
        (2, 1, b"1", b"2", [], False),
        (1, 2, b"1", b"2", [], False),
        (0, 0, EMPTY_ROOT, b"2", [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
    ],
)
def test_transparency_dev_consistency_edge_cases(
    m: int, n: int, r1: bytes, r2: bytes, prf: list, ok: bool
) -> None:
    if ok:
        verify_consistency(m, n, prf, r1, r2)
    else:
        with pytest.raises(VerificationError):
            verify_consistency(m, n, prf, r1, r2)


def test_custom_vectors_match_naive_and_fast() -> None:
    leaves = [x.encode() for x in CUSTOM["leaves"]]
    tree = _tree(leaves)
    for size, root in enumerate(CUSTOM["roots_hex"]):
        assert mth(leaves[:size]).hex() == root  # the generator's implementation still agrees
        assert tree.root(size).hex() == root
    for v in CUSTOM["inclusion"]:
        got = tree.inclusion_proof(v["index"], v["size"])
        assert [h.hex() for h in got] == v["proof"]
        verify_inclusion(v["index"], v["size"], tree.leaf(v["index"]), got, tree.root(v["size"]))
    for v in CUSTOM["consistency"]:
        got = tree.consistency_proof(v["old"], v["new"])
        assert [h.hex() for h in got] == v["proof"]
        verify_consistency(v["old"], v["new"], got, tree.root(v["old"]), tree.root(v["new"]))


def test_verification_error_names_index_expected_calculated() -> None:
    tree = _tree(TD_LEAVES)
    prf = tree.inclusion_proof(3, 8)
    with pytest.raises(VerificationError) as info:
        verify_inclusion(3, 8, tree.leaf(3), prf, SOME_HASH)
    assert info.value.index == 3
    assert info.value.expected == SOME_HASH
    assert info.value.calculated == tree.root(8)
    assert SOME_HASH.hex() in str(info.value)


def test_truncate_undoes_appends() -> None:
    tree = _tree(TD_LEAVES)
    tree.truncate(5)
    assert tree.root() == TD_ROOTS[5]
    for x in TD_LEAVES[5:]:
        tree.append(leaf_hash(x))
    assert tree.root() == TD_ROOTS[8]


sizes = st.integers(min_value=1, max_value=300)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size=sizes)
def test_property_inclusion_verifies_and_mutations_fail(data: st.DataObject, size: int) -> None:
    tree = MerkleTree(hashlib.sha256(b"%d" % i).digest() for i in range(size))
    index = data.draw(st.integers(0, size - 1))
    prf = tree.inclusion_proof(index, size)
    root = tree.root()
    verify_inclusion(index, size, tree.leaf(index), prf, root)
    if prf:
        k = data.draw(st.integers(0, len(prf) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(prf)
        bad[k] = bytes([bad[k][bit // 8] ^ (1 << (bit % 8))]).join(
            [bad[k][: bit // 8], bad[k][bit // 8 + 1 :]]
        )
        with pytest.raises(VerificationError):
            verify_inclusion(index, size, tree.leaf(index), bad, root)
    with pytest.raises(VerificationError):
        verify_inclusion(index, size, hashlib.sha256(b"other").digest(), prf, root)
    other = data.draw(st.integers(0, size - 1))
    if tree.leaf(other) != tree.leaf(index) and other != index:
        with pytest.raises(VerificationError):
            verify_inclusion(other, size, tree.leaf(index), prf, root)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size=sizes)
def test_property_consistency_verifies_and_mutations_fail(data: st.DataObject, size: int) -> None:
    tree = MerkleTree(hashlib.sha256(b"%d" % i).digest() for i in range(size))
    old = data.draw(st.integers(1, size))
    prf = tree.consistency_proof(old, size)
    verify_consistency(old, size, prf, tree.root(old), tree.root(size))
    if prf:
        k = data.draw(st.integers(0, len(prf) - 1))
        bad = list(prf)
        bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
        with pytest.raises(VerificationError):
            verify_consistency(old, size, bad, tree.root(old), tree.root(size))
        with pytest.raises(VerificationError):
            verify_consistency(old, size, prf, tree.root(old), hashlib.sha256(b"x").digest())


@settings(max_examples=30, deadline=None)
@given(leaves=st.lists(st.binary(max_size=8), min_size=1, max_size=40), data=st.data())
def test_property_fast_equals_naive(leaves: list[bytes], data: st.DataObject) -> None:
    tree = _tree(leaves)
    n = len(leaves)
    assert tree.root() == mth(leaves) == root_from_leaf_hashes([leaf_hash(x) for x in leaves])
    m = data.draw(st.integers(0, n - 1))
    assert tree.inclusion_proof(m, n) == path(m, leaves)
    old = data.draw(st.integers(1, n))
    assert tree.consistency_proof(old, n) == proof(old, leaves)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 70), cuts=st.lists(st.integers(1, 70), max_size=6))
def test_property_extend_packed_equals_appends(size: int, cuts: list[int]) -> None:
    # Group commit adds a whole batch of leaves at once; the tree must be the one built leaf by leaf.
    hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(size)]
    one_by_one = MerkleTree(hashes)
    batched = MerkleTree()
    start = 0
    for cut in [*cuts, size]:
        end = min(size, start + cut)
        assert batched.extend_packed(b"".join(hashes[start:end])) == start
        start = end
    batched.extend_packed(b"".join(hashes[start:]))
    assert len(batched) == size
    assert batched.root() == one_by_one.root() == root_from_leaf_hashes(hashes)
    for old in range(size + 1):
        assert batched.root(old) == one_by_one.root(old)
    assert batched.consistency_proof(size // 2, size) == one_by_one.consistency_proof(size // 2, size)
    assert MerkleTree.from_packed(b"".join(hashes)).root() == one_by_one.root()


# ---- TiledTree: the same tree with its leaves in storage ------------------------------------------


def _stored_leaves(hashes: list[bytes], reads: list[tuple[int, int]]) -> Callable[[int, int], bytes]:
    def read(start: int, end: int) -> bytes:
        reads.append((start, end))
        return b"".join(hashes[start:end])

    return read


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 140),
    height=st.integers(1, 4),
    cuts=st.lists(st.integers(1, 40), max_size=8),
    data=st.data(),
)
def test_property_tiled_tree_equals_merkle_tree(
    size: int, height: int, cuts: list[int], data: st.DataObject
) -> None:
    """Roots, inclusion and consistency proofs at every size are the in-memory tree's, whether the
    tiled tree grew batch by batch or was opened from stored tile hashes and a tail."""
    hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(size)]
    reference = MerkleTree(hashes)
    reads: list[tuple[int, int]] = []
    grown = TiledTree(_stored_leaves(hashes, reads), height=height)
    completed: list[tuple[int, bytes]] = []
    start = 0
    for cut in [*cuts, size]:
        end = min(size, start + cut)
        completed += grown.extend_packed(b"".join(hashes[start:end]))
        start = end
    width = 1 << height
    tiles = size // width
    assert [i for i, _ in completed] == list(range(tiles))
    assert [h for _, h in completed] == [
        root_from_leaf_hashes(hashes[i * width : (i + 1) * width]) for i in range(tiles)
    ]
    opened = TiledTree(
        _stored_leaves(hashes, reads),
        b"".join(h for _, h in completed),
        b"".join(hashes[tiles * width :]),
        height=height,
    )
    for tree in (grown, opened):
        assert len(tree) == size
        assert tree.root() == reference.root()
        for n in range(size + 1):
            assert tree.root(n) == reference.root(n)
        if size:
            n = data.draw(st.integers(1, size))
            m = data.draw(st.integers(0, n - 1))
            assert tree.inclusion_proof(m, n) == reference.inclusion_proof(m, n)
            assert tree.leaf(m) == hashes[m]
            old = data.draw(st.integers(0, n))
            assert tree.consistency_proof(old, n) == reference.consistency_proof(old, n)
    # Only whole, complete tiles are ever read from storage.
    assert all(end - start == width and start % width == 0 and end <= tiles * width for start, end in reads)


@settings(max_examples=40, deadline=None)
@given(before=st.integers(0, 60), failed=st.integers(1, 40), after=st.integers(0, 30))
def test_property_tiled_tree_restore_forgets_a_failed_batch(before: int, failed: int, after: int) -> None:
    good = [leaf_hash(b"g%d" % i) for i in range(before + after)]
    bad = [leaf_hash(b"b%d" % i) for i in range(failed)]
    reads: list[tuple[int, int]] = []
    store = list(good[:before])  # what storage holds: never the failed batch
    tree = TiledTree(_stored_leaves(store, reads), height=2)
    tree.extend_packed(b"".join(good[:before]))
    state = tree.mark()
    tree.extend_packed(b"".join(bad))
    tree.root()  # touches tiles of the failed batch
    tree.restore(state)
    store += good[before:]
    tree.extend_packed(b"".join(good[before:]))
    reference = MerkleTree(good)
    assert len(tree) == len(good)
    assert tree.root() == reference.root()
    for n in range(1, len(good) + 1):
        assert tree.inclusion_proof(n - 1, n) == reference.inclusion_proof(n - 1, n)


def test_tiled_tree_refuses_a_short_read() -> None:
    """Rows missing from storage make a proof fail loudly, never come out as a different hash."""
    hashes = [leaf_hash(b"%d" % i) for i in range(8)]
    tiles = b"".join(root_from_leaf_hashes(hashes[i : i + 4]) for i in (0, 4))
    tree = TiledTree(lambda start, end: b"".join(hashes[start : end - 1]), tiles, height=2)
    assert tree.root() == root_from_leaf_hashes(hashes)  # tile hashes suffice for the root
    with pytest.raises(ValueError, match="storage returned 3 of 4 leaves"):
        tree.inclusion_proof(0, 8)
