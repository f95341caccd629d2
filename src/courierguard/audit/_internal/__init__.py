"""Private helpers of the audit package. Nothing here is a stable API."""
