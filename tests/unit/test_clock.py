"""The injected clocks: fixed and scaled (accelerated) time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from courierguard.clock import FixedClock, ScaledClock

START = datetime(2026, 11, 4, 6, 0, tzinfo=UTC)


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_scaled_clock_runs_factor_times_faster() -> None:
    real = FakeMonotonic()
    clock = ScaledClock(START, 1440, monotonic=real)
    assert clock.now() == START
    real.t += 60.0  # a real minute is a simulated day
    assert clock.now() == START + timedelta(days=1)
    assert clock.real_seconds_until(START + timedelta(days=1, minutes=24)) == pytest.approx(1.0)


def test_scaled_clock_restart_reanchors() -> None:
    real = FakeMonotonic()
    clock = ScaledClock(START, 10, monotonic=real)
    real.t += 5
    later = START + timedelta(hours=3)
    clock.restart(later)
    assert clock.now() == later
    real.t += 1
    assert clock.now() == later + timedelta(seconds=10)


def test_scaled_clock_rejects_naive_time_and_bad_factor() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ScaledClock(datetime(2026, 1, 1), 2)
    with pytest.raises(ValueError, match="positive"):
        ScaledClock(START, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        ScaledClock(START, 2).restart(datetime(2026, 1, 1))


def test_scaled_clock_uses_real_time_by_default() -> None:
    clock = ScaledClock(START, 1000)
    assert START <= clock.now() < START + timedelta(hours=1)


def test_fixed_clock_moves_only_when_told() -> None:
    clock = FixedClock(START)
    clock.advance(timedelta(seconds=5))
    assert clock.now() == START + timedelta(seconds=5)
    clock.set(START)
    assert clock.now() == START
