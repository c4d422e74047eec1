"""`callgate serve`: FastAGI and the HTTP shim in one process, over one registry.

With CALLGATE_WORKERS=N > 1 the parent runs the migrations once and starts N worker
processes that all bind the same ports with SO_REUSEPORT, so the kernel spreads
connections over the cores. Several workers need the server backend (PostgreSQL for
row locks across processes, Redis so that cache invalidations reach every worker);
the embedded default runs one worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import shutil
import signal
import tempfile
from dataclasses import replace
from pathlib import Path

import structlog

from billing_core.api.dispatch import Dispatcher
from billing_core.bootstrap import bootstrap
from billing_core.config import Settings
from billing_core.http.app import start_http
from billing_core.http.metrics import MULTIPROC_DIR_ENV
from billing_core.services.calls import run_expiry_loop
from billing_core.services.container import Services
from billing_core.services.spool import Spool
from callgate.logging_setup import configure_logging
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer, ServerConfig

log = structlog.get_logger(__name__)

SPOOL_REPLAY_INTERVAL_S = 5.0
EXPIRY_INTERVAL_S = 30.0


async def _replay_loop(bridge: AGIBridge, interval_s: float) -> None:
    while True:
        try:
            report = await bridge.replay_spool()
            if report is not None and (report.done or report.failed):
                log.info("spool.replay", done=report.done, failed=report.failed, pending=report.pending)
        except Exception:
            log.exception("spool.replay_error")
        await asyncio.sleep(interval_s)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def run_worker(settings: Settings, *, migrate: bool, reuse_port: bool) -> None:
    import billing_core.api.methods  # noqa: F401 - registers every method

    services = Services.build(settings)
    if migrate:
        await bootstrap(services.db)
    dispatcher = Dispatcher(services)
    bridge = AGIBridge(dispatcher, Spool(settings.spool_dir))
    # The bridge bounds each registry call (and spools a callFinish that overruns) well
    # inside the server's own dispatch limit, so the server's limit is only a backstop.
    agi = FastAGIServer(bridge, ServerConfig(dispatch_timeout_s=bridge.timeout_s * 2))
    await agi.start(settings.agi_host, settings.agi_port, reuse_port=reuse_port)
    http = await start_http(dispatcher, settings.http_host, settings.http_port, reuse_port=reuse_port)
    _settle_garbage_collector()
    log.info(
        "callgate.serving",
        agi=f"{settings.agi_host}:{settings.agi_port}",
        http=f"{settings.http_host}:{settings.http_port}",
        database=services.db.engine.dialect.name,
        cache=services.cache.backend.name,
    )
    stop = _stop_event()
    try:
        async with asyncio.TaskGroup() as tasks:
            background = [
                tasks.create_task(_replay_loop(bridge, SPOOL_REPLAY_INTERVAL_S)),
                tasks.create_task(run_expiry_loop(services, EXPIRY_INTERVAL_S)),
            ]
            tasks.create_task(services.call_ledger.warm_up())
            await stop.wait()
            for task in background:
                task.cancel()
    finally:
        log.info("callgate.stopping")
        agi.close()  # stop listening; sessions already dispatched finish (a callFinish is a CDR)
        await agi.wait_closed()
        await http.cleanup()
        await services.close()


# Young-generation collections after this many net allocations (CPython's default: 700).
# Reference counting frees almost everything a decision allocates; with the default, under
# 600 pairs/s a young collection ran every ~60 decisions and a full one every ~25 s, which
# paused the loop for up to 87 ms: the worst of the p99 (docs/performance.md).
GC_YOUNG_THRESHOLD = 50_000


def _settle_garbage_collector() -> None:
    """Start-up objects (modules, registry, settings) are never garbage: move them out of the
    collector's sight (gc.freeze) so later collections stay short, and collect less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _worker_main(settings: Settings) -> None:
    configure_logging(settings.log_level)
    _run(run_worker(settings, migrate=False, reuse_port=True))


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


async def _migrate_only(settings: Settings) -> None:
    services = Services.build(settings)
    try:
        await bootstrap(services.db)
    finally:
        await services.close()


def serve(settings: Settings) -> None:
    configure_logging(settings.log_level)
    workers = settings.workers
    if workers > 1 and (settings.is_sqlite or not settings.redis_url):
        log.warning("callgate.single_worker", reason="several workers need PostgreSQL and Redis")
        workers = 1
    if workers == 1:
        _run(run_worker(settings, migrate=True, reuse_port=False))
        return
    _run(_migrate_only(settings))
    own_metrics_dir = _shared_metrics_dir()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(replace(settings),)) for _ in range(workers)]
    for process in processes:
        process.start()

    def _terminate(_signum: int, _frame: object) -> None:
        for process in processes:
            process.terminate()  # each worker closes its listeners and pools on SIGTERM

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        for process in processes:
            process.join()
    finally:
        if own_metrics_dir is not None:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


def _shared_metrics_dir() -> str | None:
    """Make every worker's metrics land in one directory that a scrape of any worker adds up
    (billing_core.http.metrics). An operator's PROMETHEUS_MULTIPROC_DIR is used after its old
    files are removed (prometheus-client's rule: values of dead processes would count again);
    otherwise a private directory is made, and returned so that it is removed at the end.
    Workers are spawned, so they import prometheus-client after this and see the setting."""
    configured = os.environ.get(MULTIPROC_DIR_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        log.info("callgate.metrics_dir", path=configured)
        return None
    made = tempfile.mkdtemp(prefix="callgate-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = made
    return made
