"""The whole schema: importing this module registers every capability's tables on ``metadata``.

Alembic's environment and the migration test import it. A capability with tables adds one import.
"""

from courierguard.audit import tables as _audit_tables  # noqa: F401
from courierguard.db.tables import metadata
from courierguard.risk import tables as _risk_tables  # noqa: F401

__all__ = ["metadata"]
