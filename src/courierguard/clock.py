"""Injected time. Core code never calls ``datetime.now()`` directly, so tests and replay control it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to; for tests and simulations."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware datetime")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, when: datetime) -> None:
        self._now = when


class ScaledClock:
    """Simulated time running ``factor`` times faster than real time, from ``start``; for the demo.

    ``factor=1440`` plays a day in a minute. ``monotonic`` is the real time source (seconds); tests
    pass their own. The clock starts counting when it is made; :meth:`restart` re-anchors it.
    """

    def __init__(
        self, start: datetime, factor: float, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("ScaledClock needs a timezone-aware datetime")
        if factor <= 0:
            raise ValueError("factor must be positive")
        self.factor = float(factor)
        self._monotonic = monotonic
        self._start = start
        self._t0 = monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(self._monotonic() - self._t0) * self.factor)

    def restart(self, start: datetime) -> None:
        """Continue from ``start`` (simulated), counting real time from this call."""
        if start.tzinfo is None:
            raise ValueError("ScaledClock needs a timezone-aware datetime")
        self._start = start
        self._t0 = self._monotonic()

    def real_seconds_until(self, when: datetime) -> float:
        """Real seconds until this clock shows ``when`` (negative if it already has)."""
        return (when - self.now()).total_seconds() / self.factor
