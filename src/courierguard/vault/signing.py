"""Signing and verification of audit tree heads, re-exported from the vault's crypto boundary."""

from courierguard.vault._internal.signing import Signer, verify_signature

__all__ = ["Signer", "verify_signature"]
