"""The parent of `callgate serve` with CALLGATE_WORKERS > 1: starts, restarts and ends workers.

- A worker that exits while the supervisor runs (kill -9, a crash) is started again after
  a back-off (0.5 s, doubling per restart within the last minute, at most 30 s). More than
  CALLGATE_WORKER_MAX_RESTARTS restarts within 60 s means something is wrong that a
  restart does not cure: the supervisor logs `supervisor.giving_up`, stops the other
  workers and exits 1, so that systemd (or the operator) sees it.
- Workers die with their parent: each asks Linux for SIGTERM when its parent goes
  (prctl(PR_SET_PDEATHSIG) through ctypes), and also watches getppid() once a second, the
  fallback where prctl is missing. A worker never serves alone after a kill -9 of the
  supervisor (it would keep the ports, so a new `serve` would share them with an orphan).
- SIGTERM / SIGINT to the supervisor: every worker gets SIGTERM (it closes its listeners,
  finishes the sessions it dispatched and closes its pools), then the supervisor exits 0.

The parent never touches the database: each worker migrates (under an advisory lock) and
so a database outage at start-up cannot stop the supervisor (billing_core.bootstrap).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.process import BaseProcess

import structlog

from billing_core.config import Settings

log = structlog.get_logger(__name__)

PR_SET_PDEATHSIG = 1
RESTART_WINDOW_S = 60.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
PARENT_POLL_S = 1.0
STOP_TIMEOUT_S = 30.0

WorkerTarget = Callable[[Settings, int], None]


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel for SIGTERM when the parent exits; False where prctl is unavailable.
    Called first thing in the worker. If the parent is already gone (it died between the
    fork and this call), the signal would never come: exit at once."""
    armed = False
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(libc_name, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    if os.getppid() != parent_pid:
        os._exit(0)
    return armed


def parent_gone(parent_pid: int) -> bool:
    """The fallback watchdog's test: an orphan is re-parented (to init or a subreaper)."""
    return os.getppid() != parent_pid


class Supervisor:
    def __init__(self, settings: Settings, workers: int, target: WorkerTarget) -> None:
        self.settings = settings
        self.workers = workers
        self.target = target
        self.max_restarts = settings.worker_max_restarts
        self._context = multiprocessing.get_context("spawn")
        self._slots: list[BaseProcess | None] = [None] * workers
        self._due: dict[int, float] = {}  # slot → when its restart is due (monotonic)
        self._restarts: deque[float] = deque()  # restart times within the window
        self._stopping = False

    def _start(self, slot: int) -> None:
        process = self._context.Process(target=self.target, args=(replace(self.settings), os.getpid()))
        process.start()
        self._slots[slot] = process
        log.info("supervisor.worker_started", slot=slot, pid=process.pid)

    def _stop(self, _signum: int, _frame: object) -> None:
        self._stopping = True

    def _backoff(self, now: float) -> float | None:
        """The delay before the next restart, or None past the restart budget."""
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            return None
        delay = min(FIRST_BACKOFF_S * float(2 ** len(self._restarts)), MAX_BACKOFF_S)
        self._restarts.append(now)
        return delay

    def _reap(self, now: float) -> bool:
        """Schedule restarts of exited workers; False when the budget is spent."""
        for slot, process in enumerate(self._slots):
            if process is None or process.is_alive():
                continue
            process.join()
            self._slots[slot] = None
            delay = self._backoff(now)
            log.warning(
                "supervisor.worker_exited", slot=slot, pid=process.pid, exitcode=process.exitcode,
                restart_in_s=delay, restarts_last_minute=len(self._restarts),
            )  # fmt: skip
            if delay is None:
                log.error("supervisor.giving_up", restarts=len(self._restarts), window_s=RESTART_WINDOW_S)
                return False
            self._due[slot] = now + delay
        return True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for slot in range(self.workers):
            self._start(slot)
        code = 0
        while not self._stopping:
            sentinels = [p.sentinel for p in self._slots if p is not None]
            multiprocessing.connection.wait(sentinels, timeout=PARENT_POLL_S)
            now = time.monotonic()
            if self._stopping:
                break
            if not self._reap(now):
                code = 1
                break
            for slot, due in list(self._due.items()):
                if due <= now:
                    del self._due[slot]
                    self._start(slot)
        self._terminate_all()
        return code

    def _terminate_all(self) -> None:
        running = [p for p in self._slots if p is not None]
        for process in running:
            if process.is_alive():
                process.terminate()  # each worker closes its listeners and pools on SIGTERM
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            process.join(max(deadline - time.monotonic(), 0.1))
            if process.is_alive():
                log.error("supervisor.worker_kill", pid=process.pid)
                process.kill()
                process.join()
