"""Keyed blind index: equality lookup by phone or name without decrypting.

HMAC-SHA-256 under a key of its own (never an encryption key), over the normalised value with a
domain-separation label, truncated to 128 bits. Without the key an attacker holding the database
cannot test guesses; with 128 bits, accidental collisions are negligible at any realistic volume.
"""

from __future__ import annotations

import hashlib

from courierguard.vault.normalize import (
    InvalidName,
    InvalidPhone,
    name_index_form,
    normalize_name,
    normalize_phone,
)

INDEX_BYTES = 16
_BLOCK = 64  # SHA-256's block size: HMAC pads (or first hashes) the key to it
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class _PrefixedHmac:
    """HMAC-SHA-256 (RFC 2104) of ``prefix + message``, keyed once: ``hmac.new(key, prefix + message,
    sha256).digest()``, bit for bit.

    The two SHA-256 states after the padded key (the inner one after ``prefix`` too) are kept and
    copied per value: 0.6 µs against 1.05 µs for copying a prepared ``hmac.HMAC``, whose Python
    wrapper costs more than the hashing; ingest computes two indexes per party.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, prefix: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\x00")
        self._inner = hashlib.sha256(key.translate(_IPAD) + prefix)
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class BlindIndex:
    __slots__ = ("_name", "_phone")

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("blind-index key needs at least 32 bytes")
        # Prepared HMAC states: copying one is cheaper than keying a new HMAC for every value.
        self._phone = _PrefixedHmac(key, b"courierguard/bidx/phone/v1\x00")
        self._name = _PrefixedHmac(key, b"courierguard/bidx/name/v1\x00")

    def phone_e164(self, e164: str) -> bytes:
        return self._phone.digest(e164.encode())[:INDEX_BYTES]

    def phone(self, raw: str) -> bytes | None:
        """Index of a raw phone as a user would type it, or None if it is not a phone."""
        try:
            return self.phone_e164(normalize_phone(raw).e164)
        except InvalidPhone:
            return None

    def name(self, raw: str) -> bytes | None:
        """Index of a name as a user would type it, or None if it is not an acceptable name."""
        try:
            return self.normalized_name(normalize_name(raw))
        except InvalidName:
            return None

    def normalized_name(self, name: str) -> bytes:
        """Index of a name already passed through ``normalize_name``."""
        return self._name.digest(name_index_form(name).encode())[:INDEX_BYTES]
