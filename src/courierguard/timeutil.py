"""Timestamps: everything is stored and compared as timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from courierguard.errors import InvalidInput

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""No waybill or lifecycle step of this system predates it. An earlier time is a broken device clock
or a typo; on a waybill it would also make a data key for a month that no retention run reaches."""

CLOCK_SKEW = timedelta(minutes=10)
"""How far ahead of the server's clock a PDA's or order system's timestamp may be. Further ahead is
refused: a sign-off dated in the future would stretch a courier's 24-hour grace at will."""


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value (as SQLite returns) is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def month_of(value: datetime) -> str:
    """The ``YYYY-MM`` key month of a timestamp (UTC)."""
    # Formatted by hand: ``strftime`` cost about 1.5 µs, paid for every waybill ingested.
    moment = utc(value)
    return f"{moment.year:04d}-{moment.month:02d}"


def reported_time(value: datetime, field: str, *, now: datetime) -> datetime:
    """A time another system reports (creation, a lifecycle step), in UTC, or :class:`InvalidInput`
    naming ``field``: without a UTC offset, outside what UTC can represent, before :data:`EARLIEST`,
    or more than :data:`CLOCK_SKEW` ahead of ``now``."""
    if value.tzinfo is None:
        raise InvalidInput(field, "needs a UTC offset")
    try:
        moment = value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(field, "is out of range") from None
    if moment < EARLIEST:
        raise InvalidInput(field, f"is before {EARLIEST:%Y-%m-%d}")
    if moment > now + CLOCK_SKEW:
        raise InvalidInput(
            field, f"is more than {CLOCK_SKEW.seconds // 60} minutes ahead of the server's clock"
        )
    return moment
