"""A purpose or a justification must say something: the OpenAPI pattern, pydantic and the guard agree
on which text is blank (JSON Schema's, Python's and Rust's ``\\s`` do not, so the pattern spells it)."""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from courierguard.errors import InvalidInput
from courierguard.gateway.http import STATED, RevealIn
from courierguard.gateway.service import _purpose

from .conftest import World

EVERY_BLANK = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
_stated = re.compile(STATED)


def _schema_accepts(text: str) -> bool:
    return _stated.fullmatch(text) is not None


def _pydantic_accepts(text: str) -> bool:
    try:
        RevealIn.model_validate({"fields": ["recipient.phone"], "purpose": text})
    except ValidationError:
        return False
    return True


def _guard_accepts(text: str) -> bool:
    try:
        _purpose(text)
    except InvalidInput:
        return False
    return True


def test_every_character_python_strips_is_blank_to_the_pattern() -> None:
    for blank in EVERY_BLANK:
        assert not _schema_accepts(blank) and not _pydantic_accepts(blank) and not _guard_accepts(blank)
    assert not _pydantic_accepts(EVERY_BLANK)
    assert _pydantic_accepts("\u001d delivery_contact \u3000") and _guard_accepts(
        "\u001d delivery_contact \u3000"
    )


@given(
    st.text(alphabet=st.sampled_from(EVERY_BLANK + "\x00ab1中"), min_size=1, max_size=12)
    | st.text(max_size=12)
)
def test_schema_pydantic_and_guard_agree(text: str) -> None:
    expected = "\x00" not in text and text.strip() != ""
    assert _schema_accepts(text) is expected
    if len(text) <= 128:
        assert _pydantic_accepts(text) is expected
        if "\x00" not in text:
            assert _guard_accepts(text) is expected


@pytest.mark.parametrize("text", ["\u001d", " " * 10, "\t\n"])
def test_a_blank_purpose_is_a_422_naming_the_rule(world: World, text: str) -> None:
    headers = world.login("C1")
    r = world.client.post(
        "/v1/waybills/YT0000000000001/reveal",
        json={"fields": ["recipient.phone"], "purpose": text},
        headers=headers,
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["field"] == "purpose" and "say something" in problem["detail"]
