"""Time in the services: always UTC.

SQLite hands back naive datetimes (PostgreSQL aware ones); every naive datetime read
from the database is UTC here.
"""

from __future__ import annotations

from datetime import UTC, datetime

WIRE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # the API's datetimes ("YYYY-MM-DD HH:MM:SS", UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """A database datetime made aware: a naive one is taken as UTC (an aware one is kept)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def wire_time(value: datetime | None) -> str:
    """'YYYY-MM-DD HH:MM:SS' in UTC (an aware value is converted), '' for none."""
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime(WIRE_TIME_FORMAT)
