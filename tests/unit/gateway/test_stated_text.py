"""A justification must say something: the OpenAPI pattern and pydantic agree on which text is
blank (JSON Schema's, Python's and Rust's ``\\s`` do not, so the pattern spells it). A purpose is a
code, and the HTTP layer and the guard agree on which."""

from __future__ import annotations

import re
import sys
from typing import Annotated

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

from courierguard.errors import InvalidInput
from courierguard.gateway.http import STATED, RevealIn
from courierguard.gateway.service import _purpose

from .conftest import World

EVERY_BLANK = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
_stated = re.compile(STATED)


class _Stated(BaseModel):
    text: Annotated[str, Field(pattern=STATED)]


def _schema_accepts(text: str) -> bool:
    return _stated.fullmatch(text) is not None


def _pydantic_accepts(text: str) -> bool:
    try:
        _Stated.model_validate({"text": text})
    except ValidationError:
        return False
    return True


def _http_purpose(text: str) -> bool:
    try:
        RevealIn.model_validate({"fields": ["recipient.phone"], "purpose": text})
    except ValidationError:
        return False
    return True


def _guard_purpose(text: str) -> bool:
    try:
        _purpose(text)
    except InvalidInput:
        return False
    return True


def test_every_character_python_strips_is_blank_to_the_pattern() -> None:
    for blank in EVERY_BLANK:
        assert not _schema_accepts(blank) and not _pydantic_accepts(blank)
    assert not _pydantic_accepts(EVERY_BLANK)
    assert _pydantic_accepts("\u001d parcel YT4512000000017 \u3000")


@given(
    st.text(alphabet=st.sampled_from(EVERY_BLANK + "\x00ab1中"), min_size=1, max_size=12)
    | st.text(max_size=12)
)
def test_schema_and_pydantic_agree(text: str) -> None:
    expected = "\x00" not in text and text.strip() != ""
    assert _schema_accepts(text) is expected
    assert _pydantic_accepts(text) is expected


@given(st.text(alphabet=st.sampled_from("abz_AZ09 -.中\t"), max_size=70) | st.text(max_size=12))
def test_http_and_guard_agree_on_purpose_codes(text: str) -> None:
    expected = re.fullmatch(r"[a-z][a-z_]{0,63}", text) is not None
    assert _http_purpose(text) is expected
    if text == text.strip():  # the guard forgives surrounding blanks (the CLI's arguments)
        assert _guard_purpose(text) is expected


@pytest.mark.parametrize("text", ["call 13912345678", "测试泄露", "Delivery", "delivery contact", "x" * 65])
def test_a_purpose_that_is_not_a_code_is_refused(text: str) -> None:
    assert not _http_purpose(text) and not _guard_purpose(text)


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
    assert problem["field"] == "purpose" and "purpose code" in problem["detail"]
