"""Validators for the public contracts (shared/schemas) that check formats too.

``jsonschema.FormatChecker`` checks ``date-time`` only when the optional ``rfc3339-validator`` is
installed, and silently passes anything otherwise: a ``ts`` of ``2026-11-11T09:15+0800`` validated.
Without it, this module checks RFC 3339 (§5.6) itself, so a contract test never goes vacuous.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker

SCHEMAS = Path(__file__).resolve().parents[2] / "src" / "courierguard" / "schemas"

_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))"
)


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats apply to strings only
    m = _DATE_TIME.fullmatch(value)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, min(second, 59))  # 60: a leap second
    except ValueError:
        return False
    return second <= 60 and int(m.group(7) or 0) <= 23 and int(m.group(8) or 0) <= 59


def format_checker() -> FormatChecker:
    checker = FormatChecker()
    if "date-time" not in checker.checkers:
        checker.checks("date-time")(_is_date_time)
    return checker


def validator(name: str) -> Draft202012Validator:
    """A validator of ``name`` (``access-event.v1`` or ``risk-decision.v1``), formats included."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=format_checker())
