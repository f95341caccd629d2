"""Private helpers of ``courierguard.policy``: Cedar loading and entity building. No stability promise."""
