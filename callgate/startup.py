"""One worker of `callgate serve`: prepare the store, warm it, then listen.

Order (issue 9, items 5 and 10):
1. migrate + seed the base data (billing_core.bootstrap), bounded in time;
2. warm up: open every database connection (SQLAlchemy pool and the call ledger's
   asyncpg set), the Redis connections, and load the rating catalogue and the profiles
   the first calls will ask for into this process's memory;
3. only then open the FastAGI and HTTP ports: the first wave of calls after a start
   finds connections open and caches warm (it used to pay for both, up to 1.05 s).

When step 1 or 2 fails because the database is down, the worker listens anyway, in the
degraded state (billing_core.readiness): decisions are declined E_SQL_ERROR,
callFinish is spooled, HTTP answers 503 E_SQL_ERROR, /healthz says "degraded". A
background task retries steps 1-2 with exponential back-off (CALLGATE_STARTUP_RETRY_MAX_S
caps the delay) and, once they succeed, marks the store ready, starts the reservation
sweeper and replays the spool at once. Nothing else in the worker waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.api.dispatch import Dispatcher
from billing_core.bootstrap import bootstrap
from billing_core.calls.control import run_expiry_loop
from billing_core.calls.orphans import OrphanCloser
from billing_core.calls.supervision import HoldSupervisor
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.directory.tables import sip_extensions
from billing_core.http.app import start_http
from billing_core.numbers.aliases import alias_index
from billing_core.rating.tables import tariffs
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer, ServerConfig

log = structlog.get_logger(__name__)

SPOOL_REPLAY_INTERVAL_S = 5.0
EXPIRY_INTERVAL_S = 30.0
FIRST_RETRY_S = 0.5
# Bound on one attempt of steps 1-2 (a database that accepts TCP but never answers).
ATTEMPT_TIMEOUT_S = 60.0
REDIS_WARM_CONNECTIONS = 8
WARM_TARIFFS_MAX = 1000  # tariff snapshots loaded at start (a catalogue is rarely bigger)


@dataclass(frozen=True)
class WarmReport:
    db_connections: int
    ledger_connections: int
    redis_connections: int
    tariffs: int
    extensions: int


async def _open_pool(services: Services) -> int:
    """Check out as many connections as the pool keeps, at once, then give them back."""
    pool = services.db.engine.pool
    size = int(getattr(pool, "size", lambda: 1)())
    async with contextlib.AsyncExitStack() as stack:
        conns: list[AsyncConnection] = []
        for _ in range(size):
            conns.append(await stack.enter_async_context(services.db.engine.connect()))
        await asyncio.gather(*(conn.execute(text("SELECT 1")) for conn in conns))
    return size


async def warm_caches(services: Services) -> tuple[int, int]:
    """What the first decisions read, loaded through the same cache paths they use: the
    direction count and lengths (and every direction while they are few), the bill types
    and currencies, every tariff (with its entries while they are few), the server keys
    and their owners, the ban list, the aliases, and the extension + user profiles of
    the first CALLGATE_WARM_PROFILES extensions."""
    gens = await services.cache.generations()
    rating, profiles = services.rating, services.profiles
    await services.rating.resolve_direction(gens, "")  # the direction count, and all of them when few
    await rating.bill_type(gens, "")  # the catalogue (bill types, currencies)
    async with services.db.begin() as conn:
        tariff_ids = (await conn.execute(select(tariffs.c.id).order_by(tariffs.c.id).limit(WARM_TARIFFS_MAX))).scalars()
        tariff_list = list(tariff_ids)
        limit = services.settings.warm_profiles
        ext_query = (
            select(sip_extensions.c.sip_extension, sip_extensions.c.user_id)
            .where(sip_extensions.c.deleted_at.is_(None))  # a deleted SIP account is never looked up
            .order_by(sip_extensions.c.id)
        )
        ext_rows = (await conn.execute(ext_query.limit(limit))).all() if limit > 0 else []
    for tariff_id in tariff_list:
        await rating.tariff(gens, tariff_id)
    for key in await profiles.server_keys(gens):
        await profiles.user_by(gens, "username", key.owner)  # the dispatcher checks each key's owner
    await profiles.extension_lengths(gens)
    await services.bans.is_banned(gens, "")  # the ban list every request checks
    if gens is not None:
        await alias_index(services, gens)  # every decision asks whether its number is an alias
    for row in ext_rows:
        await profiles.extension(gens, row.sip_extension)
        await profiles.user_by(gens, "sip_extension", row.sip_extension)
        await profiles.first_extension_of(gens, row.user_id)
    return len(tariff_list), len(ext_rows)


async def prepare(services: Services) -> WarmReport:
    """Steps 1-2; raises when the database is not there (or not right)."""
    await bootstrap(services.db)
    db_connections = await _open_pool(services)
    await services.call_ledger.warm_up()
    redis_connections = await services.cache.backend.warm_up(REDIS_WARM_CONNECTIONS)
    tariff_count, extension_count = await warm_caches(services)
    ledger_connections = int(getattr(services.call_ledger, "open_connections", 0))
    return WarmReport(db_connections, ledger_connections, redis_connections, tariff_count, extension_count)


async def _attempt(services: Services) -> bool:
    readiness = services.readiness
    readiness.attempts += 1
    try:
        async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
            report = await prepare(services)
    except Exception as exc:  # any failure: stay degraded and retry; the type is enough to log
        readiness.degrade(type(exc).__name__)
        log.warning("callgate.store_not_ready", attempt=readiness.attempts, error=type(exc).__name__)
        return False
    readiness.mark_ready()
    log.info(
        "callgate.store_ready", attempt=readiness.attempts, db_connections=report.db_connections,
        ledger_connections=report.ledger_connections, redis_connections=report.redis_connections,
        tariffs=report.tariffs, extensions=report.extensions,
    )  # fmt: skip
    return True


async def _replay_loop(bridge: AGIBridge, interval_s: float) -> None:
    while True:
        await _replay_once(bridge)
        await asyncio.sleep(interval_s)


async def _replay_once(bridge: AGIBridge) -> None:
    try:
        report = await bridge.replay_spool()
        if report is not None and (report.done or report.failed):
            log.info("spool.replay", done=report.done, failed=report.failed, pending=report.pending)
    except Exception:
        log.exception("spool.replay_error")


class Worker:
    """Services, FastAGI and HTTP of one process; `run()` until `stop` is set."""

    def __init__(self, settings: Settings, *, reuse_port: bool = False) -> None:
        import billing_core.api.methods  # noqa: F401 - registers every method

        self.settings = settings
        self.reuse_port = reuse_port
        self.services = Services.build(settings)
        self.services.readiness.degrade("")  # not ready until prepare() succeeded
        self.dispatcher = Dispatcher(self.services)
        self.bridge = AGIBridge(self.dispatcher, Spool(settings.spool_dir))
        # The bridge bounds each registry call (and spools a callFinish that overruns) well
        # inside the server's own dispatch limit, so the server's limit is only a backstop.
        self.agi = FastAGIServer(self.bridge, ServerConfig(dispatch_timeout_s=self.bridge.timeout_s * 2))
        self.listening = asyncio.Event()

    async def _recover(self, tasks: asyncio.TaskGroup, background: list[asyncio.Task[None]]) -> None:
        delay = FIRST_RETRY_S
        while True:  # run() made the first attempt
            await asyncio.sleep(delay)
            if await _attempt(self.services):
                break
            delay = min(delay * 2, float(self.settings.startup_retry_max_s))
        log.info("callgate.recovered", attempts=self.services.readiness.attempts)
        # The sweeper needs the schema: it starts only now.
        background.append(tasks.create_task(run_expiry_loop(self.services, EXPIRY_INTERVAL_S)))
        await _replay_once(self.bridge)  # what was spooled while degraded, without waiting a tick

    async def run(self, stop: asyncio.Event) -> None:
        ready = await _attempt(self.services)  # before listening: item 10
        settings = self.settings
        await self.agi.start(settings.agi_host, settings.agi_port, reuse_port=self.reuse_port)
        http = await start_http(self.dispatcher, settings.http_host, settings.http_port, reuse_port=self.reuse_port)
        self.listening.set()
        log.info(
            "callgate.serving", agi=f"{settings.agi_host}:{settings.agi_port}",
            http=f"{settings.http_host}:{settings.http_port}", database=self.services.db.engine.dialect.name,
            cache=self.services.cache.backend.name, degraded=not ready,
        )  # fmt: skip
        # AMI connections live beside the listeners; a server that is down never delays them.
        orphans = OrphanCloser(self.services, grace_s=settings.orphan_grace_s)
        orphans.attach(self.services.ami)
        supervisor = HoldSupervisor(self.services)
        self.services.ami.start()
        orphans.start()
        supervisor.start()
        try:
            async with asyncio.TaskGroup() as tasks:
                background = [tasks.create_task(_replay_loop(self.bridge, SPOOL_REPLAY_INTERVAL_S))]
                if ready:
                    background.append(tasks.create_task(run_expiry_loop(self.services, EXPIRY_INTERVAL_S)))
                else:
                    background.append(tasks.create_task(self._recover(tasks, background)))
                await stop.wait()
                for task in background:
                    task.cancel()
        finally:
            log.info("callgate.stopping")
            self.agi.close()  # stop listening; sessions already dispatched finish (a callFinish is a CDR)
            await self.agi.wait_closed()
            await http.cleanup()
            await orphans.close()
            await supervisor.close()
            await self.services.close()
