"""AES-256-GCM wire format against published vectors, and the blind index against plain HMAC."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from courierguard.vault._internal.aead import FORMAT_V1, Aead, DecryptionFailed
from courierguard.vault.blind_index import BlindIndex, _PrefixedHmac

VECTORS = Path(__file__).parents[2] / "vectors" / "vault"
GCM = json.loads((VECTORS / "aes256gcm.json").read_text())


@pytest.mark.parametrize("vector", GCM, ids=[f"case{v['case']}" for v in GCM])
def test_published_gcm_vectors_open(vector: dict[str, str]) -> None:
    aead = Aead(bytes.fromhex(vector["key"]))
    sealed = FORMAT_V1 + bytes.fromhex(vector["iv"]) + bytes.fromhex(vector["ct"] + vector["tag"])
    assert aead.open(sealed, bytes.fromhex(vector["aad"])) == bytes.fromhex(vector["pt"])


@pytest.mark.parametrize("vector", GCM, ids=[f"case{v['case']}" for v in GCM])
def test_published_gcm_vectors_reject_flipped_tag(vector: dict[str, str]) -> None:
    aead = Aead(bytes.fromhex(vector["key"]))
    tag = bytearray(bytes.fromhex(vector["tag"]))
    tag[0] ^= 1
    sealed = FORMAT_V1 + bytes.fromhex(vector["iv"]) + bytes.fromhex(vector["ct"]) + bytes(tag)
    with pytest.raises(DecryptionFailed):
        aead.open(sealed, bytes.fromhex(vector["aad"]))


@given(st.binary(max_size=300), st.binary(max_size=64), st.integers(min_value=0), st.integers(0, 7))
def test_any_single_bit_flip_is_rejected(plaintext: bytes, aad: bytes, position: int, bit: int) -> None:
    aead = Aead(b"\x07" * 32)
    sealed = bytearray(aead.seal(plaintext, aad))
    assert aead.open(bytes(sealed), aad) == plaintext
    sealed[position % len(sealed)] ^= 1 << bit
    with pytest.raises(DecryptionFailed):
        aead.open(bytes(sealed), aad)


def test_wrong_associated_data_is_rejected() -> None:
    aead = Aead(b"\x01" * 32)
    sealed = aead.seal(b"13812345634", b"tenant|YT1|recipient.phone")
    with pytest.raises(DecryptionFailed):
        aead.open(sealed, b"tenant|YT2|recipient.phone")


def test_nonces_differ_between_seals() -> None:
    aead = Aead(b"\x02" * 32)
    assert aead.seal(b"x", b"") != aead.seal(b"x", b"")


@given(st.lists(st.tuples(st.binary(max_size=100), st.binary(max_size=64)), max_size=8))
def test_seal_many_is_seal_of_each_with_a_nonce_of_its_own(fields: list[tuple[bytes, bytes]]) -> None:
    aead = Aead(b"\x03" * 32)
    sealed = aead.seal_many(fields)
    assert len(sealed) == len(fields)
    for (plaintext, aad), one in zip(fields, sealed, strict=True):
        assert one[:1] == FORMAT_V1 and len(one) == 1 + 12 + len(plaintext) + 16
        assert aead.open(one, aad) == plaintext
    nonces = [one[1:13] for one in sealed]
    assert len(set(nonces)) == len(nonces)  # 96 random bits each: a repeat would be a bug


def test_seal_many_binds_each_field_to_its_own_associated_data() -> None:
    aead = Aead(b"\x04" * 32)
    name, phone = aead.seal_many([(b"x", b"t|YT1|sender.name"), (b"x", b"t|YT1|sender.phone")])
    with pytest.raises(DecryptionFailed):
        aead.open(name, b"t|YT1|sender.phone")
    with pytest.raises(DecryptionFailed):
        aead.open(phone, b"t|YT1|sender.name")


def test_key_length_is_checked() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        Aead(b"short")


@given(st.binary(min_size=32, max_size=200), st.binary(max_size=40), st.binary(max_size=300))
def test_prefixed_hmac_is_hmac_sha256(key: bytes, prefix: bytes, message: bytes) -> None:
    # Keys longer than SHA-256's block are hashed first: 65 bytes and up take that path.
    prepared = _PrefixedHmac(key, prefix)
    assert prepared.digest(message) == hmac.new(key, prefix + message, hashlib.sha256).digest()
    assert prepared.digest(message) == prepared.digest(message)  # the kept states are not consumed


def test_blind_index_matches_an_independent_hmac() -> None:
    key = bytes(range(32))
    expected = hmac.new(key, b"courierguard/bidx/phone/v1\x00+8613812345634", hashlib.sha256).digest()[:16]
    index = BlindIndex(key)
    assert index.phone("138 1234 5634") == expected
    assert index.phone("+86-138-1234-5634") == expected


def test_blind_index_depends_on_key_and_domain() -> None:
    a, b = BlindIndex(b"a" * 32), BlindIndex(b"b" * 32)
    assert a.phone("13812345634") != b.phone("13812345634")
    assert a.name("张三") != a.phone("13812345634")
    assert a.name("张 三") == a.name("张三")
    assert a.phone("not a phone") is None
