"""Ed25519 signatures for signed tree heads (RFC 8032), behind two small functions."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class Signer:
    """Signs with one Ed25519 private key; exposes only the raw 32-byte public key."""

    __slots__ = ("_key", "public_key")

    def __init__(self, private_key: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(private_key)
        self.public_key: bytes = self._key.public_key().public_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def derive_key(self, label: bytes, length: int = 32) -> bytes:
        """A symmetric key of its own for ``label`` (HKDF-SHA-256 over the private key).

        For secrets that must live and die with the signing key, never beside it in the database:
        the audit writers' row MAC key. Distinct labels give independent keys, and none of them
        reveals the private key or signs anything.
        """
        seed = self._key.private_bytes_raw()
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label).derive(seed)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` under ``public_key``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def new_signing_key() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes_raw()
