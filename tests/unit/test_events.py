"""Access Event ids: fresh, well-formed, and never shared across a fork."""

from __future__ import annotations

import os
import re

import pytest

from courierguard.events import _RandomHex, new_event_id


def test_event_ids_are_well_formed_and_unique() -> None:
    ids = [new_event_id() for _ in range(5_000)]  # more than one pool of randomness
    assert all(re.fullmatch(r"ev_[0-9a-f]{20}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_pool_is_refilled_without_repeating() -> None:
    draw = _RandomHex(4, pool_bytes=10)  # two ids a pool: the third comes from a fresh pool
    got = [draw() for _ in range(200)]
    assert all(len(g) == 8 for g in got)
    assert len(set(got)) > 190  # 32-bit values: a few repeats by chance at most, not a cycle


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    draw = _RandomHex(16)
    draw()  # the pool is full of bytes the child must not reuse
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, draw().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != draw()
