"""Private helpers of the vault. Not a stable API: import from ``courierguard.vault`` instead."""
