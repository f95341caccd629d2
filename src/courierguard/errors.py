"""One exception root for the whole package.

Every error the core raises derives from :class:`CourierGuardError`. Each carries an HTTP status,
a short title and a ``reason`` code that callers can tell apart; ``diagnostics()`` gives the one-line
human explanation the CLI prints and the problem JSON's ``detail``. Messages never contain clear-text
personal data: they name fields and record ids, never values.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class CourierGuardError(Exception):
    """Root of every error Courier Guard raises on purpose."""

    status: int = 500
    title: str = "Internal error"
    reason: str = "internal"

    def __init__(self, detail: str, *, reason: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason
        self.extra: dict[str, Any] = extra

    def diagnostics(self) -> str:
        """One line for a human: what went wrong and, where known, what to do."""
        return f"{self.title}: {self.detail}"


class InvalidInput(CourierGuardError):
    """Input that fails validation; ``field`` names the offending field (never its value)."""

    status = 422
    title = "Invalid input"
    reason = "invalid_input"

    def __init__(self, field: str, message: str, **extra: Any) -> None:
        super().__init__(f"{field}: {message}", **extra)
        self.field = field
        self.message = message


class NotFound(CourierGuardError):
    status = 404
    title = "Not found"
    reason = "not_found"


class Conflict(CourierGuardError):
    status = 409
    title = "Conflict"
    reason = "conflict"


class Unauthenticated(CourierGuardError):
    status = 401
    title = "Authentication required"
    reason = "unauthenticated"


class DenyReason(StrEnum):
    """Why an access was refused. Stable codes: they appear in audit events and problem JSON."""

    POLICY_DENIED = "policy_denied"
    NO_TASK = "no_task"
    ACCOUNT_INACTIVE = "account_inactive"
    RISK_DENIED = "risk_denied"
    RISK_LOCKED = "risk_locked"
    STEP_UP_REQUIRED = "step_up_required"
    THROTTLED = "throttled"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    FOUR_EYES = "four_eyes_required"


class AccessDenied(CourierGuardError):
    status = 403
    title = "Access denied"
    reason = DenyReason.POLICY_DENIED


class StepUpRequired(AccessDenied):
    title = "Step-up required"
    reason = DenyReason.STEP_UP_REQUIRED


class Throttled(CourierGuardError):
    status = 429
    title = "Too many requests"
    reason = DenyReason.THROTTLED

    def __init__(self, detail: str, *, retry_after: int = 60, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class AuditUnavailable(CourierGuardError):
    """The audit record could not be made durable, so nothing is served (fail-closed)."""

    status = 503
    title = "Audit trail unavailable"
    reason = DenyReason.AUDIT_UNAVAILABLE


class ConfigError(CourierGuardError):
    status = 500
    title = "Configuration error"
    reason = "config"
