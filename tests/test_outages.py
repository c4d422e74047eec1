"""When the database or the cache goes away, nothing is lost and nothing crashes.

PostgreSQL and Redis are reached through a loopback proxy the test cuts and restores,
which plays an outage or a restart of the real servers. The embedded default plays a
database outage with a database file it cannot open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from billing_core.api.dispatch import Dispatcher
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.ledger.tables import cdrs
from billing_core.rating.tables import tariff_entries
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer
from tests.asterisk_sim import run_agi_session
from tests.conftest import BACKENDS
from tests.factories import balance_of
from tests.tcp_proxy import TcpProxy
from tests.test_agi_end_to_end import build_world

FINISH = "login=10000&destination=79010000001&prior=1&length=6&status=ANSWER&answered_ms=6000"
PREPARE = "login=10000&destination=79010000001&prior=1"


class Node:
    """One callgate process (services + FastAGI) with its own spool."""

    def __init__(self, settings: Settings, spool_dir: Path) -> None:
        import billing_core.api.methods  # noqa: F401

        self.services = Services.build(settings)
        self.bridge = AGIBridge(Dispatcher(self.services), Spool(spool_dir), timeout_s=3.0)
        self.server = FastAGIServer(self.bridge)

    async def start(self) -> Node:
        await self.server.start("127.0.0.1", 0)
        return self

    async def agi(self, script: str, query: str, uniqueid: str) -> dict[str, str]:
        result = await run_agi_session("127.0.0.1", self.server.port, script, query=query, uniqueid=uniqueid)
        return result.variables

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()
        await self.services.close()


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def _replayed(verdict: str) -> float:
    return _metric("callgate_spool_replayed_total", {"verdict": verdict})


@pytest.fixture
async def pg_proxy(settings: Settings) -> AsyncIterator[TcpProxy | None]:
    if settings.is_sqlite:
        yield None
        return
    url = make_url(settings.database_url)
    proxy = await TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield proxy
    finally:
        await proxy.close()


def _through(settings: Settings, proxy: TcpProxy | None) -> Settings:
    """Settings of a node whose database can be taken away."""
    if proxy is None:
        return settings
    url = make_url(settings.database_url).set(host="127.0.0.1", port=proxy.port)
    return replace(settings, database_url=url.render_as_string(hide_password=False), db_timeout_s=1.0)


async def test_database_outage_declines_decisions_and_spools_call_finish(
    services: Services, settings: Settings, pg_proxy: TcpProxy | None, tmp_path: Path
) -> None:
    world = await build_world(services)
    node = await Node(_through(settings, pg_proxy), tmp_path / "spool").start()
    spooled_before, replayed_before = _metric("callgate_spool_appended_total"), _replayed("done")
    try:
        prepared = await node.agi("callPrepare", PREPARE, "o1")
        assert prepared["CALLGATE_RESULT"] == "Allowed"

        if pg_proxy is not None:
            pg_proxy.cut()
            # a cold cache must not hide the outage from the test: drop what this node cached
            await node.services.cache.invalidate("rating", "profiles")
        else:
            await node.services.close()
            dead = replace(settings, database_url=f"sqlite+aiosqlite:///{tmp_path}/missing/dir/db.sqlite")
            node.services = Services.build(dead)
            node.bridge.dispatcher = Dispatcher(node.services)

        declined = await node.agi("callPrepare", PREPARE.replace("prior=1", "prior=2"), "o2")
        assert declined["CALLGATE_RESULT"] == "Declined"
        assert declined["CALLGATE_ERROR"] == "E_SQL_ERROR"

        spooled = await node.agi("callFinish", FINISH, "o1")
        assert spooled["CALLGATE_RESULT"] == "Spooled"
        assert spooled["CALLGATE_ERROR"] == "E_SQL_ERROR"
        assert len(node.bridge.spool.pending()) == 1  # type: ignore[union-attr]
        assert _metric("callgate_spool_appended_total") == spooled_before + 1  # what an operator alerts on
        assert await balance_of(services, world.account) == Decimal("1.0000")

        # the database comes back: the spooled callFinish is applied exactly once
        if pg_proxy is not None:
            pg_proxy.restore()
        else:
            await node.services.close()
            node.services = services
            node.bridge.dispatcher = Dispatcher(services)
        report = await node.bridge.replay_spool()
        assert report is not None and report.done == 1 and report.pending == 0
        again = await node.bridge.replay_spool()
        assert again is not None and again.done == 0
        assert _replayed("done") == replayed_before + 1
        # 6 s answered: one 6 s step at 0.06 + 0.05 connection fee
        assert await balance_of(services, world.account) == Decimal("0.8900")
        async with services.db.begin() as conn:
            rows = (await conn.execute(select(cdrs).where(cdrs.c.call_uid == "o1"))).all()
        assert len(rows) == 1 and rows[0].cost == Decimal("0.1100")

        # and decisions work again by themselves
        after = await node.agi("callPrepare", PREPARE, "o3")
        assert after["CALLGATE_RESULT"] == "Allowed"
    finally:
        if node.services is not services:
            await node.close()
        else:
            node.server.close()
            await node.server.wait_closed()


@pytest.mark.skipif("server" not in BACKENDS, reason="Redis outages need the server backend")
@pytest.mark.parametrize("settings", ["server"], indirect=True)
async def test_redis_outage_falls_back_to_the_database_and_loses_no_invalidation(
    services: Services, settings: Settings, tmp_path: Path
) -> None:
    world = await build_world(services)
    assert settings.redis_url is not None
    url = make_url(settings.redis_url.replace("redis://", "postgresql://"))  # reuse URL parsing
    proxy = await TcpProxy(url.host or "127.0.0.1", url.port or 6379).start()
    db_index = settings.redis_url.rsplit("/", 1)[-1]
    node = await Node(replace(settings, redis_url=f"redis://127.0.0.1:{proxy.port}/{db_index}"), tmp_path).start()
    release = "login=10000&destination=79010000001&prior=1&length=0&status=NOANSWER"
    try:
        first = await node.agi("callPrepare", PREPARE, "r1")
        assert first["CALLGATE_MAXTIME"] == "90"  # (1.00 - 0.05 fee) at 0.06 per 6 s step
        await node.agi("callFinish", release, "r1")

        proxy.cut()
        during = await node.agi("callPrepare", PREPARE, "r2")
        assert during["CALLGATE_RESULT"] == "Allowed"  # decided from the database alone
        assert during["CALLGATE_MAXTIME"] == "90"
        assert (await node.agi("callFinish", release, "r2"))["CALLGATE_RESULT"] == "Saved"
        # a price change while Redis is down: its invalidation cannot reach Redis now
        async with node.services.db.begin() as conn:
            await conn.execute(update(tariff_entries).values(cost=Decimal("1.20")))
        await node.services.cache.invalidate("rating")

        proxy.restore()
        after = await node.agi("callPrepare", PREPARE, "r3")
        # the lost invalidation was replayed when Redis came back: 0.12 per step, 7 steps
        assert after["CALLGATE_MAXTIME"] == "42"
        assert await balance_of(services, world.account) == Decimal("1.0000")
    finally:
        await node.close()
        await proxy.close()


@pytest.mark.skipif("server" not in BACKENDS, reason="needs Redis")
@pytest.mark.parametrize("settings", ["server"], indirect=True)
async def test_flushed_redis_changes_no_decision(services: Services, settings: Settings, tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    await build_world(services, balance="10.00")
    node = await Node(settings, tmp_path).start()
    try:
        before = await node.agi("callPrepare", PREPARE, "f1")
        await node.agi("callFinish", "login=10000&destination=79010000001&length=0&status=BUSY", "f1")
        assert settings.redis_url is not None
        client = aioredis.Redis.from_url(settings.redis_url)
        await client.flushdb()
        await client.aclose()
        after = await node.agi("callPrepare", PREPARE, "f2")
        assert before["CALLGATE_RESULT"] == after["CALLGATE_RESULT"] == "Allowed"
        assert before["CALLGATE_ROUTE"] == after["CALLGATE_ROUTE"] == "route1-cli"
        assert before["CALLGATE_MAXTIME"] == after["CALLGATE_MAXTIME"]
    finally:
        await node.close()
