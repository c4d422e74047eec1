"""The call ledger's connection set (billing_core.db.pg_connections), on the real PostgreSQL.

Checked through the server's own view (pg_stat_activity by application_name) where it
matters: the cap, a lost connection never handed out again, and close leaving nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from billing_core.db.pg_connections import ConnectionsClosed, PgConnections
from tests.conftest import BACKENDS, PG_ADMIN_DSN, PG_HOST_PORT
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.skipif("server" not in BACKENDS, reason="PostgreSQL only")


@pytest.fixture
def app_name() -> str:
    return f"cg-test-{uuid.uuid4().hex[:10]}"


PG_HOST, PG_PORT = PG_HOST_PORT.rsplit(":", 1)


def _dsn(app_name: str, port: int = int(PG_PORT)) -> str:
    base = PG_ADMIN_DSN.replace(PG_HOST_PORT, f"{PG_HOST}:{port}")
    return f"{base}?application_name={app_name}"


async def _server_side_count(app_name: str) -> int:
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        count = await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app_name)
        return int(count)
    finally:
        await admin.close()


@pytest.fixture
async def connections(app_name: str) -> AsyncIterator[PgConnections]:
    conns = PgConnections(_dsn(app_name), size=3, timeout_s=2.0)
    yield conns
    await conns.close()


async def test_opens_on_demand_and_reuses_the_last_returned(connections: PgConnections, app_name: str) -> None:
    assert connections.open_count == 0 and await _server_side_count(app_name) == 0
    first = await connections.acquire()
    assert await first.fetchval("SELECT 41 + 1") == 42
    connections.release(first)
    again = await connections.acquire()
    assert again is first  # no second connection for sequential use
    connections.release(again)
    assert connections.open_count == 1 and await _server_side_count(app_name) == 1


async def test_never_more_than_size_and_waiters_are_served_in_order(
    connections: PgConnections, app_name: str
) -> None:
    held = [await connections.acquire() for _ in range(3)]
    order: list[int] = []

    async def wait_for_one(n: int) -> None:
        conn = await connections.acquire()
        order.append(n)
        await conn.fetchval("SELECT 1")
        connections.release(conn)

    waiters = [asyncio.create_task(wait_for_one(n)) for n in range(5)]
    await asyncio.sleep(0.05)
    assert order == [] and await _server_side_count(app_name) == 3
    for conn in held:
        connections.release(conn)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2, 3, 4]
    assert connections.open_count == 3 and await _server_side_count(app_name) == 3


async def test_waiting_longer_than_the_timeout_raises_and_leaves_the_set_consistent(app_name: str) -> None:
    conns = PgConnections(_dsn(app_name), size=1, timeout_s=0.1)
    try:
        held = await conns.acquire()
        with pytest.raises(TimeoutError):
            await conns.acquire()
        conns.release(held)
        assert await conns.acquire() is held  # the timed-out waiter took nothing with it
        conns.release(held)
        assert conns.open_count == 1
    finally:
        await conns.close()


async def test_a_cancelled_waiter_does_not_swallow_a_connection(connections: PgConnections) -> None:
    held = [await connections.acquire() for _ in range(3)]
    doomed = asyncio.create_task(connections.acquire())
    patient = asyncio.create_task(connections.acquire())
    await asyncio.sleep(0.01)
    doomed.cancel()
    connections.release(held[0])
    got = await patient
    assert got is held[0]
    with pytest.raises(asyncio.CancelledError):
        await doomed
    for conn in (got, *held[1:]):
        connections.release(conn)
    assert connections.open_count == 3


async def test_discard_closes_the_connection_and_frees_its_slot_for_a_waiter(
    connections: PgConnections, app_name: str
) -> None:
    held = [await connections.acquire() for _ in range(3)]
    waiter = asyncio.create_task(connections.acquire())
    await asyncio.sleep(0.01)
    connections.discard(held[0])  # e.g. its statement timed out mid-protocol
    fresh = await waiter
    assert fresh not in held and held[0].is_closed()
    assert await fresh.fetchval("SELECT 7") == 7
    for conn in (fresh, *held[1:]):
        connections.release(conn)
    assert connections.open_count == 3 and await _server_side_count(app_name) == 3


async def test_a_connection_lost_while_idle_is_replaced(app_name: str) -> None:
    proxy = await TcpProxy(PG_HOST, int(PG_PORT)).start()
    conns = PgConnections(_dsn(app_name, proxy.port), size=2, timeout_s=2.0)
    try:
        lost = await conns.acquire()
        conns.release(lost)
        proxy.cut()  # the server goes away: the idle connection sees EOF
        for _ in range(50):
            if lost.is_closed():
                break
            await asyncio.sleep(0.02)
        assert lost.is_closed()
        with pytest.raises((OSError, asyncpg.InterfaceError)):
            await conns.acquire()  # the closed one is skipped; a new one cannot connect yet
        assert conns.open_count == 0  # neither the lost nor the failed attempt keeps a slot
        proxy.restore()
        back = await conns.acquire()
        assert back is not lost and await back.fetchval("SELECT 1") == 1
        conns.release(back)
        assert conns.open_count == 1
    finally:
        await conns.close()
        await proxy.close()


async def test_close_closes_idle_connections_and_refuses_new_work(app_name: str) -> None:
    conns = PgConnections(_dsn(app_name), size=2, timeout_s=2.0)
    idle = await conns.acquire()
    busy = await conns.acquire()
    conns.release(idle)
    await conns.close()
    assert idle.is_closed()
    with pytest.raises(ConnectionsClosed):
        await conns.acquire()
    conns.release(busy)  # given back after close: closed, not kept
    assert busy.is_closed()
    assert conns.open_count == 0
    for _ in range(50):
        if await _server_side_count(app_name) == 0:
            break
        await asyncio.sleep(0.02)
    assert await _server_side_count(app_name) == 0


async def test_close_fails_the_waiters(app_name: str) -> None:
    conns = PgConnections(_dsn(app_name), size=1, timeout_s=2.0)
    busy = await conns.acquire()
    waiter = asyncio.create_task(conns.acquire())
    await asyncio.sleep(0.01)
    await conns.close()
    with pytest.raises(ConnectionsClosed):
        await waiter
    conns.release(busy)
    assert busy.is_closed() and conns.open_count == 0


async def test_a_statement_that_times_out_is_unavailable_and_its_connection_is_dropped() -> None:
    from billing_core.errors import BackendUnavailable
    from billing_core.ledger.pg_call_ledger import PgCallLedger

    url = PG_ADMIN_DSN.replace("postgresql://", "postgresql+asyncpg://")
    ledger = PgCallLedger(url, timeout_s=0.2, max_connections=2)
    try:
        with pytest.raises(BackendUnavailable):
            await ledger._fetchrow("SELECT pg_sleep(2)")
        assert ledger.open_connections == 0  # mid-protocol: terminated, not reused
        row = await ledger._fetchrow("SELECT 5 AS five")
        assert row is not None and row["five"] == 5
        assert ledger.open_connections == 1
    finally:
        await ledger.close()


def test_a_unix_socket_url_keeps_its_host_for_asyncpg() -> None:
    from billing_core.ledger.pg_call_ledger import asyncpg_dsn

    dsn = asyncpg_dsn("postgresql+asyncpg://postgres@/callgate?host=/var/run/postgresql")
    assert dsn == "postgresql://postgres@/callgate?host=%2Fvar%2Frun%2Fpostgresql"  # asyncpg unquotes it
