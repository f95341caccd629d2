"""The PII vault: parties' names, phones and addresses, encrypted per field, indexed and masked.

Only this package imports ``cryptography.hazmat``. Public API: :class:`Vault` and the key providers.
"""

from courierguard.vault.keys import EnvKeyProvider, KeyProvider, KmsKeyProvider, LocalKeyFile
from courierguard.vault.service import (
    IngestResult,
    MaskedParty,
    MaskedWaybill,
    RecordError,
    Vault,
    VaultError,
    VaultFailure,
)

__all__ = [
    "EnvKeyProvider",
    "IngestResult",
    "KeyProvider",
    "KmsKeyProvider",
    "LocalKeyFile",
    "MaskedParty",
    "MaskedWaybill",
    "RecordError",
    "Vault",
    "VaultError",
    "VaultFailure",
]
