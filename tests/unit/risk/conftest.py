from __future__ import annotations

import pytest

from .helpers import Feed


@pytest.fixture
def feed() -> Feed:
    return Feed()
