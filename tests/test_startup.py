"""Start-up of a worker (callgate.startup), on both backends, in-process over real sockets.

- With the database down, the worker listens anyway: FastAGI declines (E_SQL_ERROR) and
  spools callFinish, HTTP answers 503 E_SQL_ERROR, /healthz says "degraded"; when the
  database comes back it migrates, warms up and replays the spool by itself, and the
  spooled CDR is charged exactly once (issue 9, item 5).
- With the database up, the ports open only after the warm-up: while it runs they refuse
  connections, and the first call after it finds every connection open and causes no
  cache miss (issue 9, item 10).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.ledger.tables import cdrs, reservations
from callgate import startup
from callgate.startup import Worker
from tests.asterisk_sim import AGISessionResult, run_agi_session
from tests.factories import balance_of
from tests.ports import HOST, free_port
from tests.tcp_proxy import TcpProxy
from tests.test_agi_end_to_end import build_world

PREPARE = "login=10000&destination=79010000001&prior=1"
FINISH = "login=10000&destination=79010000001&prior=1&length=6&status=ANSWER&answered_ms=6000"


class Outage:
    """Takes the worker's database away and gives it back: a proxy to the real PostgreSQL,
    or, for SQLite, a path through a directory that does not exist until restore()."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.proxy: TcpProxy | None = None

    async def start(self) -> Settings:
        """The settings of a worker whose database is down."""
        ports = {"agi_port": free_port(), "http_port": free_port(), "startup_retry_max_s": 0.2,
                 "spool_dir": str(self.tmp_path / "node-spool")}  # fmt: skip
        if self.settings.is_sqlite:
            real = make_url(self.settings.database_url).database or ""
            through = self.tmp_path / "not-yet" / Path(real).name
            return replace(self.settings, database_url=f"sqlite+aiosqlite:///{through}", **ports)  # type: ignore[arg-type]
        url = make_url(self.settings.database_url)
        self.proxy = await TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
        self.proxy.cut()
        through_url = url.set(host="127.0.0.1", port=self.proxy.port).render_as_string(hide_password=False)
        return replace(self.settings, database_url=through_url, db_timeout_s=1.0, **ports)  # type: ignore[arg-type]

    def restore(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
            return
        real = Path(make_url(self.settings.database_url).database or "")
        os.symlink(real.parent, self.tmp_path / "not-yet")  # the same file, reachable now

    async def close(self) -> None:
        if self.proxy is not None:
            await self.proxy.close()


@pytest.fixture
async def outage(settings: Settings, tmp_path: Path) -> AsyncIterator[Outage]:
    made = Outage(settings, tmp_path)
    try:
        yield made
    finally:
        await made.close()


async def _agi(worker: Worker, script: str, query: str, uniqueid: str) -> AGISessionResult:
    return await run_agi_session(HOST, worker.settings.agi_port, script, query=query, uniqueid=uniqueid)


async def _get(worker: Worker, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{HOST}:{worker.settings.http_port}{path}") as response:
            return response.status, await response.text()


async def _until(check: object, what: str) -> None:
    """Poll an async predicate (no timing is asserted: the bound only ends a broken run)."""
    for _ in range(600):
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def _cdr_rows(services: Services, call_uid: str) -> list[object]:
    async with services.db.begin() as conn:
        return list((await conn.execute(select(cdrs).where(cdrs.c.call_uid == call_uid))).all())


async def test_serve_starts_with_the_database_down_and_recovers_by_itself(
    services: Services, dispatcher: Dispatcher, outage: Outage
) -> None:
    world = await build_world(services)
    # The callgate before the crash held money for call c1; Asterisk will finish it while
    # the new process starts with the database down.
    before_crash = await dispatcher.call(
        "callPrepare", {"login": "10000", "destination": "79010000001", "prior": "1"},
        Credentials(peer_ip="127.0.0.1", transport="agi", call_uid="c1"),
    )  # fmt: skip
    assert before_crash.error is None and before_crash.value.result == "Allowed"

    worker = Worker(await outage.start())
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait({asyncio.create_task(worker.listening.wait()), running},
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        assert not running.done(), running.exception()  # it did not crash: it listens
        assert worker.services.readiness.ready is False

        declined = await _agi(worker, "callPrepare", PREPARE.replace("prior=1", "prior=2"), "c2")
        (command,) = declined.commands  # one MSet, then the server closes: the dialplan goes on
        assert command.startswith('EXEC MSet "CALLGATE_ERROR=E_SQL_ERROR,CALLGATE_ANSWER=Declined E_SQL_ERROR,')
        assert command.endswith(',CALLGATE_RESULT=Declined"') and declined.closed_by_server
        spooled = await _agi(worker, "callFinish", FINISH, "c1")
        assert b"CALLGATE_RESULT=Spooled" in spooled.raw_received
        assert spooled.variables["CALLGATE_ERROR"] == "E_SQL_ERROR"
        assert len(worker.bridge.spool.pending()) == 1  # type: ignore[union-attr]

        status, body = await _get(worker, "/billing/api/2.2/no-such-key/getUserInfo")
        assert status == 503 and '"response": "E_SQL_ERROR"' in body
        status, body = await _get(worker, "/healthz")
        assert status == 503 and body.startswith("degraded: database not ready")
        assert await balance_of(services, world.account) == Decimal("1.0000")  # nothing charged yet

        outage.restore()

        async def healthy() -> bool:
            return (await _get(worker, "/healthz"))[0] == 200

        await _until(healthy, "/healthz answers 200 after the database came back")

        async def replayed() -> bool:
            return not worker.bridge.spool.pending()  # type: ignore[union-attr]

        await _until(replayed, "the spool is replayed")
        # 6 s answered: one 6 s step at 0.06 + 0.05 connection fee, exactly once
        assert await balance_of(services, world.account) == Decimal("0.8900")
        rows = await _cdr_rows(services, "c1")
        assert len(rows) == 1 and rows[0].cost == Decimal("0.1100")  # type: ignore[attr-defined]
        async with services.db.begin() as conn:
            open_holds = (await conn.execute(select(reservations).where(reservations.c.call_uid == "c1"))).all()
        assert open_holds == []

        again = await _agi(worker, "callFinish", FINISH, "c1")  # Asterisk retries: the stored answer
        assert again.variables["CALLGATE_RESULT"] == "Saved"
        assert await balance_of(services, world.account) == Decimal("0.8900")
        assert len(await _cdr_rows(services, "c1")) == 1
        allowed = await _agi(worker, "callPrepare", PREPARE, "c3")
        assert allowed.variables["CALLGATE_RESULT"] == "Allowed"
        assert allowed.variables["CALLGATE_MAXTIME"] == "84"  # (0.89 - 0.05) at 0.06 per 6 s
    finally:
        stop.set()
        await running


async def test_the_ports_open_only_after_connections_and_caches_are_warm(
    services: Services, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await build_world(services)
    reached, go = asyncio.Event(), asyncio.Event()
    warm_caches = startup.warm_caches

    async def held_warm_up(built: Services) -> tuple[int, int]:
        reached.set()
        await go.wait()
        return await warm_caches(built)

    monkeypatch.setattr(startup, "warm_caches", held_warm_up)
    node = replace(settings, agi_port=free_port(), http_port=free_port(), spool_dir=str(tmp_path / "node-spool"))
    worker = Worker(node)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait({asyncio.create_task(reached.wait()), asyncio.create_task(worker.listening.wait())},
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        assert reached.is_set(), "the worker listened without warming its caches"
        for port in (node.agi_port, node.http_port):  # warming up: nothing listens yet
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(HOST, port)
        go.set()
        await worker.listening.wait()
        assert worker.services.readiness.ready

        # Before the first request: every connection is open ...
        pool = worker.services.db.engine.pool
        if worker.services.db.is_sqlite:
            assert pool.checkedin() == 1  # type: ignore[attr-defined]
        else:
            assert pool.checkedin() == 10  # type: ignore[attr-defined]
            assert worker.services.call_ledger.open_connections == 10  # type: ignore[attr-defined]
            assert worker.services.cache.backend.open_connections >= startup.REDIS_WARM_CONNECTIONS  # type: ignore[attr-defined]
        # ... and the first calls find everything they read in this process's memory.
        misses = worker.services.cache.local_misses
        prepared = await _agi(worker, "callPrepare", PREPARE, "w1")
        assert prepared.variables["CALLGATE_RESULT"] == "Allowed"
        finished = await _agi(worker, "callFinish", FINISH, "w1")
        assert finished.variables["CALLGATE_RESULT"] == "Saved"
        assert worker.services.cache.local_misses == misses
    finally:
        go.set()
        stop.set()
        await running
