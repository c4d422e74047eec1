"""`callgate serve`: FastAGI and the HTTP shim in one process, over one registry.

With CALLGATE_WORKERS=N > 1 a supervisor (callgate.supervisor) starts N worker processes
that all bind the same ports with SO_REUSEPORT, so the kernel spreads connections over
the cores; it restarts a worker that dies and takes them all down with it. Several
workers need the server backend (PostgreSQL for row locks across processes, Redis so
that cache invalidations reach every worker); the embedded default runs one worker.

Each worker migrates, warms up and only then listens; with the database down it listens
degraded and recovers by itself (callgate.startup).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import tempfile
from pathlib import Path

import structlog

from billing_core.config import Settings
from billing_core.http.metrics import MULTIPROC_DIR_ENV
from callgate.logging_setup import configure_logging
from callgate.startup import Worker
from callgate.supervisor import Supervisor, die_with_parent, parent_gone

log = structlog.get_logger(__name__)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _watch_parent(parent_pid: int, stop: asyncio.Event, interval_s: float = 1.0) -> None:
    """The fallback of PR_SET_PDEATHSIG: an orphaned worker stops serving on its own."""
    while not stop.is_set():
        if parent_gone(parent_pid):
            log.warning("callgate.parent_gone", parent=parent_pid)
            stop.set()
            return
        await asyncio.sleep(interval_s)


async def run_worker(settings: Settings, *, reuse_port: bool, parent_pid: int | None = None) -> None:
    worker = Worker(settings, reuse_port=reuse_port)
    stop = _stop_event()
    watchdog = None if parent_pid is None else asyncio.create_task(_watch_parent(parent_pid, stop))
    serving = asyncio.create_task(worker.run(stop))
    await worker_listening(worker, serving)
    _settle_garbage_collector()
    try:
        await serving
    finally:
        if watchdog is not None:
            watchdog.cancel()


async def worker_listening(worker: Worker, serving: asyncio.Task[None]) -> None:
    """Wait until the worker listens (or ended: its exception is raised)."""
    listening = asyncio.create_task(worker.listening.wait())
    await asyncio.wait({listening, serving}, return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        listening.cancel()
        serving.result()


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


def _worker_main(settings: Settings, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    configure_logging(settings.log_level)
    _run(run_worker(settings, reuse_port=True, parent_pid=parent_pid))


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level)
    workers = settings.workers
    if workers > 1 and (settings.is_sqlite or not settings.redis_url):
        log.warning("callgate.single_worker", reason="several workers need PostgreSQL and Redis")
        workers = 1
    if workers == 1:
        _run(run_worker(settings, reuse_port=False))
        return 0
    own_metrics_dir = _shared_metrics_dir()
    try:
        return Supervisor(settings, workers, _worker_main).run()
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
