"""Ingest validation and the address mask (the PII review and its re-test): what a mask shows in
clear is only ever a division's name, and a real address is never refused for its form."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from courierguard.errors import InvalidInput
from courierguard.vault.masking import MASK, mask_address
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


REAL = [
    ("广东省", "深圳市", "南山区", "广东省深圳市南山区****"),
    ("北京市", "北京市", "海淀区", "北京市海淀区****"),
    ("广西壮族自治区", "南宁市", "青秀区", "广西壮族自治区南宁市青秀区****"),
    ("吉林省", "延边朝鲜族自治州", "延吉市", "吉林省延边朝鲜族自治州延吉市****"),
    (
        "甘肃省",
        "临夏回族自治州",
        "积石山保安族东乡族撒拉族自治县",
        "甘肃省临夏回族自治州积石山保安族东乡族撒拉族自治县****",
    ),
    ("云南省", "临沧市", "双江拉祜族佤族布朗族傣族自治县", "云南省临沧市双江拉祜族佤族布朗族傣族自治县****"),
    ("广东省", "东莞市", "虎门镇", "广东省东莞市虎门镇****"),
    ("广东省", "东莞市", "东城街道", "广东省东莞市东城街道****"),
    ("湖北省", "省直辖县级行政区划", "仙桃市", "湖北省省直辖县级行政区划仙桃市****"),
    ("湖北省", "神农架林区", "松柏镇", "湖北省神农架林区松柏镇****"),
    ("海南省", "澄迈县", "金江镇", "海南省澄迈县金江镇****"),
    ("香港特别行政区", "九龙", "油尖旺区", "香港特别行政区九龙油尖旺区****"),
    ("香港特別行政區", "香港島", "中西區", "香港特別行政區香港島中西區****"),
    ("澳门特别行政区", "澳门半岛", "花地玛堂区", "澳门特别行政区澳门半岛花地玛堂区****"),
    ("臺灣省", "臺北市", "中正區", "臺灣省臺北市中正區****"),
    ("内蒙古", "呼伦贝尔市", "鄂温克族自治旗", "内蒙古呼伦贝尔市鄂温克族自治旗****"),
    ("广东", "深圳", "南山区", "广东**南山区****"),  # a bare city name is not recognisable: hidden
]


@pytest.mark.parametrize(("province", "city", "district", "masked"), REAL)
def test_real_addresses_are_stored_and_masked_to_their_divisions(
    province: str, city: str, district: str, masked: str
) -> None:
    raw = _with(
        "recipient.address", {"province": province, "city": city, "district": district, "detail": "3号楼502"}
    )
    parsed = parse_new_waybill(raw, default_time=NOW)  # never refused for its form
    a = parsed.recipient.address
    assert mask_address(a.province, a.city, a.district) == masked


@pytest.mark.parametrize(
    ("province", "city", "district", "masked"),
    [
        ("北京市", "北京市", "海淀区LEAKMARKER中关村大街27号3单元", "北京市**" + MASK * 4),
        ("北京市", "北京市", "海淀区中关村大街", "北京市**" + MASK * 4),
        ("北京市", "北京市海淀区中关村大街27号", "海淀区", "北京市**海淀区" + MASK * 4),
        ("13912345678", "深圳市", "南山区", "**深圳市南山区" + MASK * 4),
        # In Chinese characters only, ending in a division's suffix: a compound, a house number
        # written in Chinese numerals, a building's zone, a community were shown whole.
        ("广东省", "深圳市", "南山区桃源街道龙珠花园小区", "广东省深圳市**" + MASK * 4),
        ("北京市", "北京市", "中关村大街二十七号院一区", "北京市**" + MASK * 4),
        ("浙江省", "杭州市", "幸福里社区", "浙江省杭州市**" + MASK * 4),
    ],
)
def test_a_street_typed_into_a_division_is_hidden_like_the_detail(
    province: str, city: str, district: str, masked: str
) -> None:
    assert mask_address(province, city, district) == masked


@given(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20))
def test_whatever_arrives_the_mask_shows_no_digit_and_no_latin_letter(a: str, b: str, c: str) -> None:
    shown = mask_address(a, b, c)
    assert not any(ch.isascii() and ch.isalnum() for ch in shown)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("origin_outlet", "OUT-SH-01"),
        ("origin_outlet", "5180001"),  # org-unit ids the admin API accepts
        ("dest_outlet", "SZ-NS-0755001"),
        ("dest_outlet", "_HUB"),
        ("routing_code", "021-SH-PD-03"),
        ("routing_code", "755-010-A1"),
    ],
)
def test_codes_in_the_org_unit_shape_are_accepted(path: str, value: str) -> None:
    parse_new_waybill(_with(path, value), default_time=NOW)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("origin_outlet", "测试泄露LEAKMARKER", "origin_outlet"),
        ("dest_outlet", "OUT-NOPE-13912345678", "dest_outlet"),
        ("routing_code", "13912345678", "routing_code"),
        ("routing_code", "010-62345678", "routing_code"),
        ("routing_code", "A B", "routing_code"),
        # Lone surrogates (a 500 that lost the whole batch) and control characters.
        ("recipient.name", "王\udc00五", "recipient.name"),
        ("recipient.address.detail", "中关村\ud800大街", "recipient.address.detail"),
        ("recipient.address.district", "海淀\x1f区", "recipient.address.district"),
        ("routing_code", "A\udc00", "routing_code"),
    ],
)
def test_codes_with_names_or_phones_and_unstorable_text_are_refused(
    path: str, value: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_new_waybill(_with(path, value), default_time=NOW)
    assert info.value.field == field
    assert value not in str(info.value)


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("recipent_phone", "recipent_phone"),  # a typo of a field would lose what it holds
        ("recipient.mobile", "recipient.mobile"),
        ("sender.address.street", "sender.address.street"),
        ("13800138000", "(unknown)"),  # a key is the client's text: shown only if it reads as a field name
        ("recipient.张伟", "recipient.(unknown)"),
        ("sender.tel_13800138000", "sender.(unknown)"),
    ],
)
def test_a_key_no_record_has_fails_the_record_naming_its_path_not_its_value(path: str, named: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_new_waybill(_with(path, "+86 138 0013 8000"), default_time=NOW)
    assert caught.value.field == named
    assert "138" not in caught.value.field + caught.value.message
