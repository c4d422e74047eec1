"""A fixed set of asyncpg connections for the call ledger's one-statement primitives.

Why not `asyncpg.Pool`: measured here (docs/decisions.md, "Call ledger connections"), an
acquire/release of asyncpg's pool costs 65-80 µs of CPU per statement (a proxy object, an
inactivity timer set and cancelled, its acquire context), two to three times the statement
itself. The ledger never opens a transaction across statements and never changes session
state, so handing a connection out needs nothing but a free list.

What the set guarantees:
- at most `size` connections, opened on demand (start-up never waits for the database);
- LIFO reuse, so a light load keeps few connections warm;
- a connection that failed in a way that may leave it mid-protocol (lost, timed out,
  cancelled) is terminated, never handed out again; its slot is freed for a new one;
- waiters are served in arrival order.
"""

from __future__ import annotations

import asyncio
from collections import deque

import asyncpg


class ConnectionsClosed(asyncpg.InterfaceError):
    """The set was closed while a statement waited for a connection."""


class PgConnections:
    def __init__(self, dsn: str, *, size: int, timeout_s: float, server_settings: dict[str, str] | None = None) -> None:
        self._dsn = dsn
        self._server_settings = server_settings  # session settings of every connection (set at connect)
        self._size = size
        self._timeout_s = timeout_s  # to connect, and to wait for a busy set
        self._free: deque[asyncpg.Connection] = deque()
        # A waiter gets a connection, or None: "a slot came free, open one yourself".
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._slots_taken = 0  # connections open, handed out or being opened
        self._closed = False

    @property
    def open_count(self) -> int:
        return self._slots_taken

    async def acquire(self) -> asyncpg.Connection:
        while True:
            if self._closed:
                raise ConnectionsClosed("the connection set is closed")
            while self._free:
                conn = self._free.pop()
                if not conn.is_closed():
                    return conn
                self._slots_taken -= 1  # lost while idle (server restart): its slot is free
            if self._slots_taken < self._size:
                return await self._connect()
            waiter: asyncio.Future[asyncpg.Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(self._timeout_s):
                    got = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._pass_on(waiter.result())  # handed over while we were being cancelled
                elif waiter in self._waiters:  # _pass_on drops cancelled waiters itself
                    self._waiters.remove(waiter)
                raise
            if got is not None:
                return got
            self._slots_taken -= 1  # the slot handed to us: the loop takes it again below

    async def _connect(self) -> asyncpg.Connection:
        self._slots_taken += 1
        try:
            return await asyncpg.connect(self._dsn, timeout=self._timeout_s, server_settings=self._server_settings)
        except BaseException:
            self._pass_on(None)
            raise

    def release(self, conn: asyncpg.Connection) -> None:
        """Give back a connection whose last statement completed (successfully or with an
        ordinary SQL error: the statements run in autocommit, so nothing is left open)."""
        if conn.is_closed():
            self._pass_on(None)
        else:
            self._pass_on(conn)

    def discard(self, conn: asyncpg.Connection) -> None:
        """Give back a connection that may be mid-protocol: it is closed, its slot freed."""
        conn.terminate()
        self._pass_on(None)

    def _pass_on(self, conn: asyncpg.Connection | None) -> None:
        """Hand a connection (or a free slot) to the first live waiter, else keep it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is None:
            self._slots_taken -= 1
        elif self._closed:
            conn.terminate()
            self._slots_taken -= 1
        else:
            self._free.append(conn)

    async def close(self, timeout_s: float = 5.0) -> None:
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionsClosed("the connection set is closed"))
        self._waiters.clear()
        idle = list(self._free)
        self._free.clear()
        self._slots_taken -= len(idle)
        for conn in idle:
            try:
                await asyncio.wait_for(conn.close(), timeout=timeout_s)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
