"""Fixtures of the migration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from courierguard.db import create_db_engine


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database with no schema yet, on both backends: a test migrates it step by step."""
    url = (
        f"sqlite:///{tmp_path / 'up.sqlite3'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_empty_database")
    )
    engine = create_db_engine(url)
    yield engine
    engine.dispose()
