"""Keyed blind index: equality lookup by phone or name without decrypting.

HMAC-SHA-256 under a key of its own (never an encryption key), over the normalised value with a
domain-separation label, truncated to 128 bits. Without the key an attacker holding the database
cannot test guesses; with 128 bits, accidental collisions are negligible at any realistic volume.
"""

from __future__ import annotations

import hashlib
import hmac

from courierguard.vault.normalize import (
    InvalidName,
    InvalidPhone,
    name_index_form,
    normalize_name,
    normalize_phone,
)

INDEX_BYTES = 16


class BlindIndex:
    __slots__ = ("_name", "_phone")

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("blind-index key needs at least 32 bytes")
        # Prepared HMAC states: copying one is cheaper than keying a new HMAC for every value.
        self._phone = hmac.new(key, b"courierguard/bidx/phone/v1\x00", hashlib.sha256)
        self._name = hmac.new(key, b"courierguard/bidx/name/v1\x00", hashlib.sha256)

    def phone_e164(self, e164: str) -> bytes:
        mac = self._phone.copy()
        mac.update(e164.encode())
        return mac.digest()[:INDEX_BYTES]

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
        mac = self._name.copy()
        mac.update(name_index_form(name).encode())
        return mac.digest()[:INDEX_BYTES]
