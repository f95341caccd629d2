from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from courierguard.risk.state import MemoryState, RedisState, RiskState

from .helpers import Feed

REDIS_URL = os.environ.get("COURIERGUARD_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def feed() -> Feed:
    return Feed()


@pytest.fixture
def redis_state() -> Iterator[RedisState]:
    """Risk state on the real Redis server, under a prefix of its own (removed afterwards)."""
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"cg:test:{uuid.uuid4().hex}:"
    yield RedisState(client, prefix=prefix)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def state(request: pytest.FixtureRequest) -> RiskState:
    """Every risk state backend: process memory and the real Redis server."""
    if request.param == "memory":
        return MemoryState()
    return request.getfixturevalue("redis_state")  # type: ignore[no-any-return]
