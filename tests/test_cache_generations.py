"""Cache generations pushed over Redis pub/sub: no round trip per decision, every bump seen
by every process, the process that bumps sees its own bump at once, and a Redis outage
falls back to reading the counters per decision until the subscription is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from billing_core.cache.backend import RedisBackend
from billing_core.cache.keys import NS_BANS, NS_PROFILES, NS_RATING
from tests.conftest import BACKENDS, REDIS_TEST_URL
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.skipif("server" not in BACKENDS, reason="needs Redis (the server backend)")

QUIET = 60.0  # reconcile interval long enough that only pub/sub can deliver a bump in a test


async def _until(condition: object, *, seconds: float = 5.0) -> None:
    """Poll `condition()` until true; fail the test after `seconds`."""
    assert callable(condition)
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail("condition not reached in time")


async def _mget_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_TEST_URL)
    await client.flushdb()
    yield client
    await client.aclose()


async def _pushed_backend(url: str = REDIS_TEST_URL) -> RedisBackend:
    backend = RedisBackend(url, reconcile_s=QUIET)
    assert await backend.generations() is not None  # starts the watcher
    await _until(lambda: backend.pushed)
    return backend


async def test_decisions_read_generations_without_a_round_trip(redis_client: aioredis.Redis) -> None:
    backend = await _pushed_backend()
    try:
        before = await _mget_calls(redis_client)
        seen = {tuple(sorted((await backend.generations() or {}).items())) for _ in range(200)}
        assert await _mget_calls(redis_client) == before
        assert len(seen) == 1
    finally:
        await backend.close()


async def test_a_bump_reaches_every_process_and_its_own_at_once(redis_client: aioredis.Redis) -> None:
    writer, reader = await _pushed_backend(), await _pushed_backend()
    try:
        start = await writer.generations()
        assert start is not None and start == await reader.generations()
        await writer.bump(NS_RATING)
        own = await writer.generations()  # no wait: read your own write
        assert own == {**start, NS_RATING: start[NS_RATING] + 1}

        async def reader_sees() -> dict[str, int] | None:
            return await reader.generations()

        for _ in range(250):
            if await reader_sees() == own:
                break
            await asyncio.sleep(0.02)
        assert await reader.generations() == own
        assert reader.pushed  # delivered by the message, not by falling back
    finally:
        await writer.close()
        await reader.close()


async def test_a_flushed_redis_restarts_counters_away_from_old_values(redis_client: aioredis.Redis) -> None:
    writer, reader = await _pushed_backend(), await _pushed_backend()
    try:
        for _ in range(3):
            await writer.bump(NS_PROFILES)
        before = await writer.generations()
        assert before is not None
        await redis_client.flushdb()
        await writer.bump(NS_PROFILES)  # the counter is gone: it restarts at a random point
        after = await writer.generations()
        # not 1 (INCR of a missing key), which every process restarting its count would share
        assert after is not None and after[NS_PROFILES] not in (before[NS_PROFILES], 1)
        assert after[NS_PROFILES] > 2**20  # a random 48-bit start
        for _ in range(250):
            if (await reader.generations() or {}).get(NS_PROFILES) == after[NS_PROFILES]:
                break
            await asyncio.sleep(0.02)
        assert (await reader.generations() or {})[NS_PROFILES] == after[NS_PROFILES]
    finally:
        await writer.close()
        await reader.close()


async def test_outage_falls_back_then_subscribes_again(redis_client: aioredis.Redis) -> None:
    url = make_url(REDIS_TEST_URL.replace("redis://", "postgresql://"))  # reuse URL parsing
    proxy = await TcpProxy(url.host or "127.0.0.1", url.port or 6379).start()
    db_index = REDIS_TEST_URL.rsplit("/", 1)[-1]
    behind = await _pushed_backend(f"redis://127.0.0.1:{proxy.port}/{db_index}")
    other = await _pushed_backend()
    try:
        proxy.cut()
        await _until(lambda: not behind.pushed)
        assert await behind.generations() is None  # per decision again, and Redis is away
        await other.bump(NS_BANS)  # a bump `behind` cannot hear about now
        proxy.restore()
        await _until(lambda: behind.pushed)
        assert await behind.generations() == await other.generations()
    finally:
        await behind.close()
        await other.close()
        await proxy.close()
