"""Timestamps are stored as instants on both backends, whatever offset they are given in.

SQLite stores an aware value's wall clock and drops its offset, and readers take a stored naive
time for UTC: a PDA's event at 18:00+08:00 came back as 18:00 UTC, eight hours late (a courier's
24 hours after sign-off would have run 32), and a ``WHERE`` compared wall clocks.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert, select

from courierguard.db.tables import tenants
from courierguard.timeutil import utc

_OFFSETS = st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_INSTANTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)


def test_a_local_time_is_stored_as_its_instant(engine: Engine) -> None:
    beijing = timezone(timedelta(hours=8))
    given_at = datetime(2026, 12, 7, 18, 0, 0, 123456, tzinfo=beijing)
    tenant = "t-" + secrets.token_hex(4)  # the PostgreSQL database is shared by the session's tests
    with engine.begin() as conn:
        conn.execute(insert(tenants).values(id=tenant, name="T", created_at=given_at))
        stored = conn.execute(select(tenants.c.created_at).where(tenants.c.id == tenant)).scalar_one()
        assert utc(stored) == given_at == datetime(2026, 12, 7, 10, 0, 0, 123456, tzinfo=UTC)

        def after(moment: datetime) -> bool:
            query = select(tenants.c.id).where(tenants.c.id == tenant, tenants.c.created_at > moment)
            return conn.execute(query).first() is not None

        # Compared as instants too, whatever offset the bound is given in.
        assert after(datetime(2026, 12, 7, 17, 59, tzinfo=beijing))
        assert not after(datetime(2026, 12, 7, 18, 1, tzinfo=beijing))
        assert after(datetime(2026, 12, 7, 9, 59, tzinfo=UTC))
        assert not after(datetime(2026, 12, 7, 10, 1, tzinfo=UTC))


# The table is emptied of the row at each example: the engine's state does not carry over.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(instant=_INSTANTS, offset=_OFFSETS)
def test_any_offset_round_trips_as_the_same_instant(
    sqlite_engine: Engine, instant: datetime, offset: timezone
) -> None:
    with sqlite_engine.begin() as conn:
        conn.execute(delete(tenants).where(tenants.c.id == "t-any"))
        conn.execute(insert(tenants).values(id="t-any", name="T", created_at=instant.astimezone(offset)))
        stored = conn.execute(select(tenants.c.created_at).where(tenants.c.id == "t-any")).scalar_one()
    assert utc(stored) == instant
