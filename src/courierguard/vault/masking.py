"""Masking to GB/T 41833-2022 (personal information on electronic waybills).

The standard asks that a waybill shows at most: the name with at least one character hidden, the
phone with at least six digits hidden, and the address without its detail (unit and room). Masks
are computed once, at write, and stored beside the ciphertext so that a masked read never decrypts.
"""

from __future__ import annotations

import re

from courierguard.vault.normalize import NormalizedPhone, PhoneKind

MASK = "*"

# Compound surnames common enough to matter; keeping the whole surname visible is what the
# standard's examples do (欧阳**), and hiding half of it would be both odd and less private.
COMPOUND_SURNAMES = frozenset(
    [
        "欧阳",
        "司马",
        "上官",
        "诸葛",
        "东方",
        "皇甫",
        "尉迟",
        "公孙",
        "慕容",
        "长孙",
        "宇文",
        "司徒",
        "司空",
        "夏侯",
        "令狐",
        "澹台",
        "轩辕",
        "端木",
        "呼延",
        "南宫",
        "独孤",
        "百里",
        "东郭",
        "西门",
        "万俟",
        "闻人",
        "赫连",
        "钟离",
        "宗政",
        "濮阳",
        "淳于",
        "单于",
        "太史",
        "申屠",
        "公冶",
    ]
)

MIN_HIDDEN_PHONE_DIGITS = 6


_SYLLABIC = (
    ("\u3040", "\u30ff"),  # Hiragana, Katakana
    ("\u3400", "\u9fff"),  # CJK Unified Ideographs and Extension A
    ("\uac00", "\ud7a3"),  # Hangul syllables
    ("\uf900", "\ufaff"),  # CJK Compatibility Ideographs
    ("\U00020000", "\U0003134f"),  # CJK Extensions B to G: rare characters, common in names
)
"""Scripts written a syllable to a character, surname first, with no spaces: masked per character."""


# One character class of the same ranges: a generator over the five pairs cost a microsecond per
# name, paid twice per waybill ingested.
_SYLLABIC_CHAR = re.compile("[" + "".join(f"{low}-{high}" for low, high in _SYLLABIC) + "]")


def _is_cjk(ch: str) -> bool:
    return _SYLLABIC_CHAR.match(ch) is not None


def mask_name(name: str) -> str:
    """Keep the surname, hide every given-name character: ``张*``, ``欧阳**``, ``J*** S****``.

    Always as long as the name, and never showing it whole: a one-character name, or a name whose
    every part is one letter (``A``, ``J S``), is hidden entirely.
    """
    if not name:
        return MASK
    if _is_cjk(name[0]):
        keep = 2 if len(name) > 2 and name[:2] in COMPOUND_SURNAMES else 1
        if len(name) <= keep:  # a one-character name: nothing may stay visible
            return MASK * len(name)
        return name[:keep] + MASK * (len(name) - keep)
    # Latin and other scripts: the initial of each part of two or more letters; a one-letter part
    # is an initial already, and showing it would show the part whole.
    return " ".join(
        part[:1] + MASK * (len(part) - 1) if len(part) > 1 else MASK * len(part) for part in name.split(" ")
    )


def mask_phone(phone: NormalizedPhone) -> str:
    """Hide at least six digits: ``138******34``; landlines keep the area code: ``010-******78``."""
    digits = phone.national
    if phone.kind is PhoneKind.MOBILE and phone.e164.startswith("+86"):
        return digits[:3] + MASK * (len(digits) - 5) + digits[-2:]
    if phone.kind is PhoneKind.LANDLINE:
        area, local = digits[: phone.area_code_length], digits[phone.area_code_length :]
        shown = max(0, min(2, len(local) - MIN_HIDDEN_PHONE_DIGITS))
        prefix = f"0{area}-" if area else ""  # 400 and 800 numbers have no area code to show
        return prefix + MASK * (len(local) - shown) + local[len(local) - shown :]
    country = phone.e164[1 : len(phone.e164) - len(digits)]
    shown = max(0, min(2, len(digits) - MIN_HIDDEN_PHONE_DIGITS))
    return f"+{country} " + MASK * (len(digits) - shown) + digits[len(digits) - shown :]


_DIVISION = re.compile(
    r"[\u3400-\u9fff\uf900-\ufaff·]{1,14}"
    r"(省|市|自治区|特别行政区|特別行政區|州|盟|地区|地區|行政区划|行政區劃|区|區|县|縣|旗|街道|镇|鎮|乡|鄉)"
)
"""An administrative division's name: Chinese characters (simplified or traditional) ending in a
division's suffix, down to the town where a city has no counties (东莞市 虎门镇)."""
_KNOWN_DIVISIONS = frozenset(
    [
        "北京",
        "天津",
        "上海",
        "重庆",
        "河北",
        "山西",
        "辽宁",
        "吉林",
        "黑龙江",
        "江苏",
        "浙江",
        "安徽",
        "福建",
        "江西",
        "山东",
        "河南",
        "湖北",
        "湖南",
        "广东",
        "海南",
        "四川",
        "贵州",
        "云南",
        "陕西",
        "甘肃",
        "青海",
        "台湾",
        "臺灣",
        "内蒙古",
        "广西",
        "西藏",
        "宁夏",
        "新疆",
        "香港",
        "澳门",
        "澳門",
        "香港岛",
        "香港島",
        "九龙",
        "九龍",
        "新界",
        "离岛",
        "離島",
        "澳门半岛",
        "澳門半島",
        "氹仔",
        "路氹城",
    ]
)
"""Province-level short names and Hong Kong and Macau areas, which order systems send bare."""


_DETAIL = re.compile(r"号|號|栋|棟|幢|单元|單元|小区|小區|社区|社區")
"""Words of an address's detail that no division's name holds: a house number (二十七号, in Chinese
numerals, which the character class above admits), a building, a unit, a residential compound or a
community (below the town). A part holding one is the detail typed into a division field, even when
it ends in a division's suffix (南山区桃源街道龙珠花园小区, 中关村大街二十七号院一区)."""


def _division_shown(part: str) -> str:
    if part in _KNOWN_DIVISIONS or (_DIVISION.fullmatch(part) and not _DETAIL.search(part)):
        return part
    return MASK * 2


def mask_address(province: str, city: str, district: str) -> str:
    """Province, city and district stay; the detail (street, building, unit, room) is hidden.

    Each of the three is shown only if it reads as a division's name: a street or a room number
    typed into one of them (they arrive as free text) is hidden like the detail.
    """
    # Municipalities repeat the name as province and city (北京市北京市): show it once.
    head = (
        _division_shown(province) if province == city else _division_shown(province) + _division_shown(city)
    )
    return f"{head}{_division_shown(district)}{MASK * 4}"
