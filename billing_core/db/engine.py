"""The async engine and the one way to run a transaction.

SQLite (the embedded default) gets a single connection: SQLite has one writer anyway,
and one connection makes every transaction serial, which is what keeps reservations
exact there. PostgreSQL gets a pool; money rows are locked with SELECT … FOR UPDATE.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from billing_core.errors import BackendUnavailable

log = structlog.get_logger(__name__)

# Errors that mean "the database is not there right now", as opposed to a bug or bad data.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


def create_engine(url: str, *, pool_size: int = 10, busy_timeout_ms: int = 10000) -> AsyncEngine:
    """`busy_timeout_ms` (SQLite): how long a write waits for another process's lock. Services
    give it the decision time-out, so SQLite gives up inside the deadline as PostgreSQL does."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=120)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.close()

        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=10,
        pool_pre_ping=True,
        connect_args={"timeout": 3, "command_timeout": 10},
    )


class Database:
    """Owns the engine; `begin()` is the only way services touch the store."""

    def __init__(self, engine: AsyncEngine, *, timeout_s: float = 5.0) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self.is_sqlite = engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def begin(self, *, timeout_s: float | None = None) -> AsyncIterator[AsyncConnection]:
        """One transaction, bounded in time; an unreachable database becomes E_SQL_ERROR."""
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                async with self.engine.begin() as conn:
                    yield conn
        except UNAVAILABLE_ERRORS as exc:
            log.warning("db.unavailable", error=type(exc).__name__, detail=str(exc)[:200])
            raise BackendUnavailable() from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                log.warning("db.connection_lost", error=type(exc).__name__)
                raise BackendUnavailable() from exc
            raise

    async def dispose(self) -> None:
        await self.engine.dispose()
