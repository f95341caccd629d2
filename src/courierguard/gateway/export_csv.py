"""The CSV of an approved bulk export, safe to open in a spreadsheet.

Names and addresses come from the order system, which takes whatever a customer typed: an order
placed as ``=HYPERLINK("http://…","点击查看")`` or ``@SUM(…)`` would otherwise become a formula in
the Excel or WPS sheet of whoever opens the export (CWE-1236, CSV injection), on the machine of the
officer or clerk who holds the most personal data. A cell that starts like a formula is written
with a leading apostrophe, the spreadsheet's own "this is text" mark, so it shows as typed and
computes nothing. A plain number (an E.164 phone such as ``+8613812345678``) is left as it is: it is
no formula, and a machine reading the file gets it unchanged.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence

FORMULA_STARTS = frozenset("=+-@\t\r\n＝＋－＠")
"""First characters that make a spreadsheet read a cell as a formula (OWASP's list, with line feed,
and the full-width forms a Chinese input method types: cheap to include, and whether an
application in a Chinese locale reads them as operators is not documented either way)."""
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def spreadsheet_safe(value: str) -> str:
    """``value`` as a cell that no spreadsheet computes: prefixed with ``'`` if it starts like a formula."""
    if value and value[0] in FORMULA_STARTS and _PLAIN_NUMBER.fullmatch(value) is None:
        return "'" + value
    return value


def export_csv(rows: Sequence[Mapping[str, str]]) -> str:
    """The export's rows as CSV: ``number`` first, then the approved fields in name order."""
    out = io.StringIO()
    columns = ["number", *sorted({k for r in rows for k in r if k != "number"})]
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)
    return out.getvalue()
