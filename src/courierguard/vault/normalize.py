"""Normalisation of phones and names, so equal values index equally and invalid ones are refused.

Phones become E.164 (``+8613812345678``). Mainland mobiles, by far the common case, take a fast
path; everything else goes through ``phonenumbers`` with China as the default region. Names are
NFKC-folded with whitespace removed between Chinese characters and the many middle-dot variants of
minority and foreign names unified.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers

MAX_NAME_CHARS = 64
MAX_PHONE_CHARS = 32

# ASCII digits only: ``\d`` also matches Arabic-Indic and other decimal digits (NFKC leaves them),
# which made "138" + "١٢٣٤٥٦٧٨" a "+86138١٢٣٤٥٦٧٨" indexed apart from the same number in ASCII;
# phonenumbers, below, reads those digits as the ASCII ones.
_MAINLAND_MOBILE = re.compile(r"^(?:\+?86|0086)?(1[3-9][0-9]{9})$")
_PHONE_NOISE = re.compile(r"[\s\-().]")
_MIDDLE_DOTS = re.compile(r"[·•‧∙⋅・．.]")
_SPACES = re.compile(r"\s+")
# Control and format characters (Unicode Cc, Cf): invisible in a console, used to spoof names.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
    "\ud800-\udfff]"  # lone surrogates: JSON can carry them, UTF-8 cannot store them
)
_CJK_GAP = re.compile(r"(?<=[\u3400-\u9fff])\s+(?=[\u3400-\u9fff])")


class PhoneKind(StrEnum):
    MOBILE = "mobile"
    LANDLINE = "landline"
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class NormalizedPhone:
    e164: str
    kind: PhoneKind
    national: str
    """National significant number: digits without country code or trunk prefix."""
    area_code_length: int = 0
    """For mainland landlines, digits of the area code (without the leading 0)."""

    def __repr__(self) -> str:
        return "NormalizedPhone(<redacted>)"


class InvalidPhone(ValueError):
    """Not a dialable phone number. The message never contains the input."""


class InvalidName(ValueError):
    """Not an acceptable party name."""


def normalize_phone(raw: str) -> NormalizedPhone:
    """E.164 form and kind of ``raw``; raises :class:`InvalidPhone` for anything not dialable."""
    if not raw or len(raw) > MAX_PHONE_CHARS:
        raise InvalidPhone("empty or longer than 32 characters")
    compact = _PHONE_NOISE.sub("", unicodedata.normalize("NFKC", raw))
    mobile = _MAINLAND_MOBILE.match(compact)
    if mobile:
        digits = mobile.group(1)
        return NormalizedPhone("+86" + digits, PhoneKind.MOBILE, digits)
    try:
        parsed = phonenumbers.parse(compact, "CN")
    except phonenumbers.NumberParseException:
        raise InvalidPhone("not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone("not a valid phone number")
    national = phonenumbers.national_significant_number(parsed)
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if parsed.country_code != 86:
        return NormalizedPhone(e164, PhoneKind.FOREIGN, national)
    if phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.MOBILE:
        return NormalizedPhone(e164, PhoneKind.MOBILE, national)
    area = phonenumbers.length_of_geographical_area_code(parsed)
    return NormalizedPhone(e164, PhoneKind.LANDLINE, national, area)


def normalize_name(raw: str) -> str:
    """Canonical form of a person's name; raises :class:`InvalidName` if empty or too long."""
    text = unicodedata.normalize("NFKC", raw).strip()
    text = _MIDDLE_DOTS.sub("·", text)
    text = _CJK_GAP.sub("", text)
    text = _SPACES.sub(" ", text)
    if not text:
        raise InvalidName("empty")
    if len(text) > MAX_NAME_CHARS:
        raise InvalidName(f"longer than {MAX_NAME_CHARS} characters")
    if _CONTROL.search(text):
        raise InvalidName("contains control characters")
    return text


def name_index_form(normalized: str) -> str:
    """The form the blind index hashes, from a normalised name: case-folded, no spaces or dots."""
    return normalized.casefold().replace(" ", "").replace("·", "")


_PHONE_IN_TEXT = re.compile(
    r"(?<![A-Za-z0-9_])(?:(?:\+|00)?86[\s-]?)?1[3-9]\d(?:[\s-]?\d){8}(?!\d)"  # a mainland mobile
    r"|(?<![A-Za-z0-9_])0\d{2,3}[\s-]?\d{7,8}(?!\d)"  # a landline with its area code
)


def contains_phone(text: str) -> bool:
    """Whether free text holds something written like a Chinese phone number (spaces and hyphens
    between digits allowed). Waybill numbers (letters then 13 digits) and ids do not match."""
    return _PHONE_IN_TEXT.search(text) is not None
