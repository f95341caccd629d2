"""The one loader of the audit vector files in this folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def load_vectors(name: str) -> Any:
    """Parsed JSON of vector file ``name``."""
    return json.loads((HERE / name).read_text(encoding="utf-8"))
