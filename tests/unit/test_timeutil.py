"""The key month of a timestamp is its UTC year and month, whatever its zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from courierguard.timeutil import month_of

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
