"""The key month of a timestamp is its UTC year and month, whatever its zone; times that other
systems report are bounded and never overflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from courierguard.errors import InvalidInput
from courierguard.timeutil import CLOCK_SKEW, EARLIEST, month_of, reported_time

_zones = st.integers(min_value=-23 * 60, max_value=23 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@given(
    st.datetimes(
        min_value=datetime(1000, 2, 1), max_value=datetime(9999, 11, 30), timezones=_zones | st.none()
    )
)
def test_month_of_is_strftime_of_utc(value: datetime) -> None:
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    assert month_of(value) == moment.strftime("%Y-%m")


def test_month_boundary_follows_utc() -> None:
    beijing = timezone(timedelta(hours=8))
    assert month_of(datetime(2026, 12, 1, 7, 59, tzinfo=beijing)) == "2026-11"
    assert month_of(datetime(2026, 12, 1, 8, 0, tzinfo=beijing)) == "2026-12"
    assert month_of(datetime(2026, 11, 30, 23, 59)) == "2026-11"  # naive is UTC


# --- times reported by other systems ---------------------------------------------------------------

_NOW = datetime(2026, 11, 11, 9, 0, tzinfo=UTC)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_zones))
def test_reported_time_is_utc_within_bounds_or_a_named_refusal(value: datetime) -> None:
    """Any zone, any year: either the same instant in UTC within [2000, now + skew], or InvalidInput
    naming the field; never an OverflowError (a 500 over HTTP)."""
    try:
        moment = reported_time(value, "ts", now=_NOW)
    except InvalidInput as exc:
        assert exc.field == "ts"
        try:
            utc_value = value.astimezone(UTC)
        except OverflowError:
            return
        assert utc_value < EARLIEST or utc_value > _NOW + CLOCK_SKEW
    else:
        assert moment == value and moment.tzinfo is UTC
        assert EARLIEST <= moment <= _NOW + CLOCK_SKEW


def test_reported_time_edges() -> None:
    assert reported_time(_NOW + CLOCK_SKEW, "ts", now=_NOW) == _NOW + CLOCK_SKEW
    with pytest.raises(InvalidInput, match="ahead of the server's clock"):
        reported_time(_NOW + CLOCK_SKEW + timedelta(microseconds=1), "ts", now=_NOW)
    assert reported_time(EARLIEST, "ts", now=_NOW) == EARLIEST
    with pytest.raises(InvalidInput, match="before 2000-01-01"):
        reported_time(EARLIEST - timedelta(microseconds=1), "ts", now=_NOW)
    with pytest.raises(InvalidInput, match="needs a UTC offset"):
        reported_time(datetime(2026, 1, 1), "created_at", now=_NOW)
    far_west = timezone(-timedelta(hours=23, minutes=59))
    with pytest.raises(InvalidInput, match="out of range"):
        reported_time(datetime(9999, 12, 31, 23, 59, tzinfo=far_west), "ts", now=_NOW)
