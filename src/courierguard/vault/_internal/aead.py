"""AES-256-GCM with a versioned wire format. The only module that touches the AEAD primitive.

Format: ``0x01 || nonce (12 bytes) || ciphertext || tag (16 bytes)``. Nonces are random (96 bits);
one data key covers one tenant-month, far below the 2^32 messages NIST SP 800-38D allows per key
with random nonces.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_V1 = b"\x01"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32


class DecryptionFailed(Exception):
    """Opaque: a wrong key, altered bytes and swapped associated data all look the same."""


class Aead:
    """AES-256-GCM under one key. Construct once and reuse: key schedule setup is the costly part."""

    __slots__ = ("_aesgcm",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._aesgcm = AESGCM(key)

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_V1 + nonce + self._aesgcm.encrypt(nonce, plaintext, associated_data)

    def seal_many(self, fields: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """:meth:`seal` of each (plaintext, associated data), their nonces from one ``os.urandom``
        call: ingest seals six fields per waybill, and a call per nonce cost more than the
        encryption. Each nonce is still 96 fresh random bits of its own."""
        nonces = os.urandom(NONCE_BYTES * len(fields))
        encrypt = self._aesgcm.encrypt
        out = []
        for i, (plaintext, associated_data) in enumerate(fields):
            nonce = nonces[i * NONCE_BYTES : (i + 1) * NONCE_BYTES]
            out.append(FORMAT_V1 + nonce + encrypt(nonce, plaintext, associated_data))
        return out

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        if len(sealed) < 1 + NONCE_BYTES + TAG_BYTES or sealed[:1] != FORMAT_V1:
            raise DecryptionFailed
        try:
            return self._aesgcm.decrypt(
                sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], associated_data
            )
        except InvalidTag:
            raise DecryptionFailed from None


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)
