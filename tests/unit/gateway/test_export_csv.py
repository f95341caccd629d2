"""Bulk export CSV: a customer-typed name or address never becomes a spreadsheet formula."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from courierguard.gateway.export_csv import FORMULA_STARTS, export_csv, spreadsheet_safe

from .conftest import World, approved_export, record

HOSTILE = '=HYPERLINK("http://evil/x","点击查看")'


@given(st.text())
def test_a_cell_never_starts_like_a_formula_and_loses_nothing(value: str) -> None:
    cell = spreadsheet_safe(value)
    assert cell in (value, "'" + value)  # the typed text is all there, behind at most the mark
    if cell != value:
        assert value[0] in FORMULA_STARTS
    elif value and value[0] in FORMULA_STARTS:
        float(value)  # left alone only as a plain number, which computes nothing


@given(st.sampled_from(sorted(FORMULA_STARTS)), st.text())
def test_every_formula_start_is_marked(start: str, rest: str) -> None:
    value = start + rest + "x"  # never a plain number
    assert spreadsheet_safe(value) == "'" + value


def test_phones_and_ordinary_text_are_unchanged() -> None:
    for value in ("+8613812345678", "-12", "欧阳娜娜", "北京市海淀区中关村5号楼502", ""):
        assert spreadsheet_safe(value) == value
    for value in ("-1+cmd|' /C calc'!A0", "@SUM(A1:A9)", "＝1+1", "\t=1"):
        assert spreadsheet_safe(value) == "'" + value


def test_export_csv_marks_hostile_cells_and_keeps_the_columns() -> None:
    text = export_csv(
        [{"number": "YT0000000000009", "recipient.name": HOSTILE, "recipient.phone": "+8613812345678"}]
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["number", "recipient.name", "recipient.phone"]
    assert rows[0]["recipient.name"] == "'" + HOSTILE and rows[0]["recipient.phone"] == "+8613812345678"


def test_downloaded_export_carries_no_formula(world: World) -> None:
    hostile = record(9)
    hostile["recipient"] = {**hostile["recipient"], "name": HOSTILE}
    stored = world.client.post("/v1/waybills", json={"records": [hostile]}, headers=world.svc)
    assert stored.status_code == 200, stored.text
    ap, m1 = approved_export(world, ["recipient.name", "recipient.phone"])
    download = world.client.get(f"/v1/exports/{ap}/download", headers=m1)
    assert download.status_code == 200, download.text
    rows = {r["number"]: r for r in csv.DictReader(io.StringIO(download.text))}
    assert rows["YT0000000000009"]["recipient.name"] == "'" + HOSTILE
    assert all(not cell or cell[0] not in FORMULA_STARTS or cell.lstrip("+").isdigit()
               for row in rows.values() for cell in row.values())  # fmt: skip
    assert rows["YT0000000000001"]["recipient.phone"].startswith("+86")
