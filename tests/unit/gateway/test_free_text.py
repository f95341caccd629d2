"""Free text and client-chosen keys never carry customer data onto the trail or into errors (the PII
review): justifications refuse phone numbers, approval ids have one shape, unknown keys are not echoed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from courierguard.sim.synthetic import MOBILE_PREFIXES
from courierguard.vault.normalize import contains_phone

from .conftest import World

W1 = "YT0000000000001"

PHONE = "13912345678"


@given(
    st.sampled_from(sorted(MOBILE_PREFIXES)),
    st.text("0123456789", min_size=8, max_size=8),
    st.sampled_from(["{}", "+86{}", "+86 {}", "0086{}", "86-{}", "tel:{}", "电话{}。"]),
    st.sampled_from(["", " ", "-"]),
)
def test_a_mobile_in_any_common_spelling_is_found(prefix: str, rest: str, shape: str, sep: str) -> None:
    number = prefix + sep + rest[:4] + sep + rest[4:]
    assert contains_phone("call " + shape.format(number) + " now")


@pytest.mark.parametrize("text", ["010-62345678", "0755 88881234", "客户电话02162345678"])
def test_a_landline_is_found(text: str) -> None:
    assert contains_phone(text)


@pytest.mark.parametrize(
    "text",
    [
        "parcel YT4512000000017 damaged",
        "ticket T-20261128001",
        "case 2026-11-28 claim of 300 yuan",
        "ap_0123456789abcdef",
    ],
)
def test_waybills_ids_and_dates_are_not_phones(text: str) -> None:
    assert not contains_phone(text)


def test_a_justification_with_a_phone_number_is_refused_without_echo(world: World) -> None:
    m1 = world.login("M1")
    body = {"kind": "export", "justification": f"customer {PHONE} complained", "fields": ["recipient.name"],
            "org_unit": "OUT-BJ-01"}  # fmt: skip
    r = world.client.post("/v1/approvals", json=body, headers=m1)
    assert r.status_code == 422 and r.json()["field"] == "justification", r.text
    assert PHONE not in r.text and "phone number" in r.json()["detail"]


def test_a_reveal_names_an_approval_by_its_id_only(world: World) -> None:
    c1 = world.login("C1")
    body = {"fields": ["recipient.phone"], "purpose": "delivery_contact", "approval": f"测试{PHONE}"}
    r = world.client.post(f"/v1/waybills/{W1}/reveal", json=body, headers=c1)
    assert r.status_code == 422 and r.json()["field"] == "approval" and PHONE not in r.text


@pytest.mark.parametrize("path", ["/v1/waybills/search", f"/v1/waybills/{W1}/reveal"])
def test_an_unknown_key_is_refused_without_echoing_it(world: World, path: str) -> None:
    c1 = world.login("C1")
    body = {"fields": ["recipient.phone"], "purpose": "delivery_contact", f"测试泄露{PHONE}": 1}
    r = world.client.post(path, json=body, headers=c1)
    assert r.status_code == 422, r.text
    assert PHONE not in r.text and "测试泄露" not in r.text
    assert "(unknown)" in r.json()["field"] and "not a field" in r.json()["detail"]
