"""Validation of incoming waybill records: one bad record fails alone, naming the field.

Input arrives as loose mappings (JSON from the order system), so that a batch with one broken
record can still store the others: the HTTP layer must not reject the whole batch for one record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from courierguard.domain import WAYBILL_NUMBER, Address, NewWaybill, Party
from courierguard.errors import InvalidInput
from courierguard.events import WaybillStatus
from courierguard.timeutil import reported_time, utc
from courierguard.vault.normalize import (
    InvalidName,
    InvalidPhone,
    contains_phone,
    normalize_name,
    normalize_phone,
)

MAX_ADDRESS_PART = 32
MAX_ADDRESS_DETAIL = 200
MAX_ORG_UNIT = 64
MAX_ROUTING_CODE = 32

# Codes (outlets, routing) are shown to every role that sees the waybill, and kept in clear: the
# org-unit id shape of the admin API, and nothing written like a phone number.
_CODE = re.compile(r"[A-Za-z0-9_.:\-]+")
_UNSTORABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
"""Control characters (the address's parts are joined with \\x1f) and lone UTF-16 surrogates, which
JSON can carry but UTF-8 cannot store."""

RECORD_KEYS = frozenset(
    {"number", "origin_outlet", "dest_outlet", "routing_code", "created_at", "status", "sender", "recipient"}
)
PARTY_KEYS = frozenset({"name", "phone", "address"})
ADDRESS_KEYS = frozenset({"province", "city", "district", "detail"})
_KEY_SHOWN = re.compile(r"[a-z][a-z_]{0,31}")
"""An unknown key written like a field name (``recipent_phone``) is named in the failure; any other
is the client's text, which may be anything (a phone number, a name), and is named ``(unknown)``: no
digit is echoed, nor anything but lower-case ASCII letters and underscores."""


def _known_keys(raw: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    """Refuse a key ``known`` does not have: dropped, it would lose what the sender meant to store
    (a ``recipent_phone`` typo), so the record fails, naming the key's path, never its value."""
    for key in raw:
        if key not in known:
            safe = isinstance(key, str) and _KEY_SHOWN.fullmatch(key)
            raise InvalidInput(f"{where}{key if safe else '(unknown)'}", "is not a field of a waybill record")


def _text(raw: Mapping[str, Any], key: str, where: str, limit: int) -> str:
    value = raw.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidInput(f"{where}{key}", "is required")
    if not isinstance(value, str):
        raise InvalidInput(f"{where}{key}", "must be a string")
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"{where}{key}", f"is longer than {limit} characters")
    if _UNSTORABLE.search(value):
        raise InvalidInput(f"{where}{key}", "contains control characters or unpaired surrogates")
    return value


def _code(raw: Mapping[str, Any], key: str, limit: int) -> str:
    value = _text(raw, key, "", limit)
    if not _CODE.fullmatch(value):
        raise InvalidInput(key, "must be letters, digits and - _ . : (a code, not a name)")
    if contains_phone(value):
        raise InvalidInput(key, "must not hold a phone number (a code is shown in clear)")
    return value


def parse_party(raw: Any, role: str) -> Party:
    if raw is None:
        raise InvalidInput(role, "is required")
    if not isinstance(raw, Mapping):
        raise InvalidInput(role, "must be an object")
    _known_keys(raw, PARTY_KEYS, f"{role}.")
    name_raw = raw.get("name")
    if not isinstance(name_raw, str):
        raise InvalidInput(f"{role}.name", "is required")
    try:
        name = normalize_name(name_raw)
    except InvalidName as exc:
        raise InvalidInput(f"{role}.name", str(exc)) from None
    phone_raw = raw.get("phone")
    if not isinstance(phone_raw, str):
        raise InvalidInput(f"{role}.phone", "is required")
    try:
        normalize_phone(phone_raw)
    except InvalidPhone as exc:
        raise InvalidInput(f"{role}.phone", str(exc)) from None
    address = raw.get("address")
    if not isinstance(address, Mapping):
        raise InvalidInput(f"{role}.address", "is required (province, city, district, detail)")
    where = f"{role}.address."
    _known_keys(address, ADDRESS_KEYS, where)
    return Party(
        name=name,
        phone=phone_raw.strip(),
        address=Address(
            province=_text(address, "province", where, MAX_ADDRESS_PART),
            city=_text(address, "city", where, MAX_ADDRESS_PART),
            district=_text(address, "district", where, MAX_ADDRESS_PART),
            detail=_text(address, "detail", where, MAX_ADDRESS_DETAIL),
        ),
    )


def parse_new_waybill(raw: Any, *, default_time: datetime) -> NewWaybill:
    """A validated :class:`NewWaybill` from a loose mapping; raises InvalidInput naming the field."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("record", "must be an object")
    _known_keys(raw, RECORD_KEYS, "")
    number = _text(raw, "number", "", 32)
    if not WAYBILL_NUMBER.match(number):
        raise InvalidInput("number", "must be two capital letters and 13 digits")
    created = raw.get("created_at")
    if created is None:
        created_at = default_time
    elif isinstance(created, datetime):
        created_at = created
    elif isinstance(created, str):
        try:
            created_at = datetime.fromisoformat(created)
        except ValueError:
            raise InvalidInput("created_at", "must be an RFC 3339 timestamp") from None
    else:
        raise InvalidInput("created_at", "must be an RFC 3339 timestamp")
    created_at = reported_time(created_at, "created_at", now=default_time)
    status_raw = raw.get("status", WaybillStatus.CREATED.value)
    try:
        status = WaybillStatus(status_raw)
    except ValueError:
        raise InvalidInput("status", "is not a waybill status") from None
    if status is not WaybillStatus.CREATED:
        # Every later status is a lifecycle step, checked against the one before it: a waybill
        # stored as out for delivery or delivered would skip those checks.
        raise InvalidInput("status", "must be created: later steps are lifecycle events")
    return NewWaybill(
        number=number,
        origin_outlet=_code(raw, "origin_outlet", MAX_ORG_UNIT),
        dest_outlet=_code(raw, "dest_outlet", MAX_ORG_UNIT),
        routing_code=_code(raw, "routing_code", MAX_ROUTING_CODE),
        sender=parse_party(raw.get("sender"), "sender"),
        recipient=parse_party(raw.get("recipient"), "recipient"),
        created_at=utc(created_at),
        status=status,
    )
