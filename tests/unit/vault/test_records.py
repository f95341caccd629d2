"""Ingest validation: what the mask shows in clear must be what it is meant to be (the PII review)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from courierguard.errors import InvalidInput
from courierguard.vault.records import parse_new_waybill

from .test_service import record

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def _with(path: str, value: object) -> dict[str, Any]:
    raw = copy.deepcopy(record(1))
    *parents, last = path.split(".")
    target = raw
    for key in parents:
        target = target[key]
    target[last] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("recipient.address.province", "北京市"),
        ("recipient.address.province", "广西壮族自治区"),
        ("recipient.address.province", "香港特别行政区"),
        ("recipient.address.city", "延边朝鲜族自治州"),
        ("recipient.address.city", "大兴安岭地区"),
        ("recipient.address.district", "管城回族区"),
        ("recipient.address.district", "滨海新区"),
        ("recipient.address.district", "长安县"),
        ("recipient.address.district", "额尔古纳市"),
        ("recipient.address.district", "科尔沁右翼前旗"),
        ("recipient.address.district", "积石山保安族东乡族撒拉族自治县"),
        ("recipient.address.district", "虎门镇"),  # 东莞市 has no counties: the town stands here
        ("recipient.address.district", "东城街道"),
        ("recipient.address.city", "省直辖县级行政区划"),
        ("recipient.address.city", "克孜勒苏柯尔克孜自治州"),
        ("origin_outlet", "OUT-SH-01"),
        ("routing_code", "021-SH-PD-03"),
        ("routing_code", "755-010-A1"),
    ],
)
def test_real_divisions_and_codes_are_accepted(path: str, value: str) -> None:
    parse_new_waybill(_with(path, value), default_time=NOW)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        # Shown in clear on every masked view: a street, a building or a marker must not get in.
        ("recipient.address.district", "海淀区LEAKMARKER中关村大街27号3单元", "recipient.address.district"),
        ("recipient.address.district", "海淀区中关村大街", "recipient.address.district"),
        ("recipient.address.city", "北京市海淀区中关村大街27号", "recipient.address.city"),
        ("sender.address.province", "Guangdong", "sender.address.province"),
        ("sender.address.province", "13912345678", "sender.address.province"),
        # Codes are kept and shown in clear: no names, no phone numbers.
        ("origin_outlet", "测试泄露LEAKMARKER", "origin_outlet"),
        ("dest_outlet", "OUT-NOPE-13912345678", "dest_outlet"),
        ("routing_code", "13912345678", "routing_code"),
        ("routing_code", "A B", "routing_code"),
        # Lone surrogates (a 500 that lost the whole batch) and control characters.
        ("recipient.name", "王\udc00五", "recipient.name"),
        ("recipient.address.detail", "中关村\ud800大街", "recipient.address.detail"),
        ("recipient.address.detail", "中关村\x1f大街", "recipient.address.detail"),
        ("routing_code", "A\udc00", "routing_code"),
    ],
)
def test_values_the_mask_would_leak_are_refused(path: str, value: str, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_new_waybill(_with(path, value), default_time=NOW)
    assert info.value.field == field
    assert value not in str(info.value)


@given(st.text(max_size=40))
def test_any_district_is_accepted_or_refused_cleanly(district: str) -> None:
    try:
        parsed = parse_new_waybill(_with("recipient.address.district", district), default_time=NOW)
    except InvalidInput as exc:
        assert exc.field == "recipient.address.district"
        return
    shown = parsed.recipient.address.district
    assert len(shown) <= 16 and not any(c.isascii() for c in shown)
