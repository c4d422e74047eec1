"""A durable on-disk queue for requests that must not be lost while the database is down.

One JSON file per request, written to a temporary name, fsynced, then renamed into
place: a crash leaves either the whole request or nothing. Replay runs the requests in
arrival order; an item is deleted only after it was applied (or recognised as a
duplicate, since callFinish is idempotent per call and priority), and an item that fails
for a reason other than an unavailable database is moved to `failed/` for an operator
rather than dropped.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)

# What an operator alerts on while the database is away: requests going into the spool,
# and what became of them when they were replayed (done, or set aside in failed/).
SPOOLED = Counter("callgate_spool_appended", "Requests written to the spool because the database was unavailable")
REPLAYED = Counter("callgate_spool_replayed", "Spooled requests replayed, by verdict: done or failed", ["verdict"])


class ReplayVerdict:
    DONE = "done"  # applied (or already applied): delete it
    RETRY = "retry"  # the store is still unavailable: stop, keep it
    FAILED = "failed"  # cannot ever succeed: keep it aside for an operator


@dataclass(frozen=True)
class ReplayReport:
    done: int
    failed: int
    pending: int


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.failed_dir = self.directory / "failed"

    def _ensure(self) -> None:
        self.failed_dir.mkdir(parents=True, exist_ok=True)

    def append(self, item: dict[str, Any]) -> Path:
        self._ensure()
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        tmp = self.directory / f".{name}.tmp"
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(item, fh)
            fh.flush()
            os.fsync(fh.fileno())
        final = self.directory / name
        tmp.rename(final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        SPOOLED.inc()
        return final

    def pending(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(p for p in self.directory.glob("*.json") if p.is_file())

    def failed(self) -> list[Path]:
        """Items set aside for an operator: they are never replayed on their own."""
        if not self.failed_dir.exists():
            return []
        return sorted(p for p in self.failed_dir.glob("*.json") if p.is_file())

    async def replay(self, apply: Callable[[dict[str, Any]], Awaitable[str]]) -> ReplayReport:
        """Replay what is pending; with several workers only one replays at a time."""
        self._ensure()
        with (self.directory / ".replay.lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return ReplayReport(done=0, failed=0, pending=len(self.pending()))
            return await self._replay_locked(apply)

    async def _replay_locked(self, apply: Callable[[dict[str, Any]], Awaitable[str]]) -> ReplayReport:
        done = failed = 0
        for path in self.pending():
            try:
                item = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                log.error("spool.unreadable", file=path.name)
                self._ensure()
                path.rename(self.failed_dir / path.name)
                failed += 1
                REPLAYED.labels(verdict=ReplayVerdict.FAILED).inc()
                continue
            verdict = await apply(item)
            if verdict == ReplayVerdict.RETRY:
                break
            if verdict == ReplayVerdict.FAILED:
                self._ensure()
                path.rename(self.failed_dir / path.name)
                failed += 1
                REPLAYED.labels(verdict=ReplayVerdict.FAILED).inc()
                log.error("spool.item_failed", file=path.name)
            else:
                path.unlink(missing_ok=True)
                done += 1
                REPLAYED.labels(verdict=ReplayVerdict.DONE).inc()
        return ReplayReport(done=done, failed=failed, pending=len(self.pending()))


def _spooled_at(path: Path) -> float:
    """When an item was spooled, in epoch seconds: its name starts with time.time_ns()."""
    stamp = path.name.partition("-")[0]
    if stamp.isdigit():
        return int(stamp) / 1e9
    return path.stat().st_mtime  # not a name append() gave: the file's own time


class SpoolBacklog(Collector):
    """The spool's backlog, read from its directory at scrape time.

    Counters say how many requests went in and came out; what an operator alerts on is
    what is still waiting, and for how long. Every worker spools into the same directory,
    so any worker's scrape gives the whole backlog, in multiprocess mode too.
    """

    def __init__(self, spool: Spool, clock: Callable[[], float] = time.time) -> None:
        self._spool = spool
        self._clock = clock

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            pending, failed = self._spool.pending(), self._spool.failed()
            oldest = self._clock() - _spooled_at(pending[0]) if pending else 0.0
        except OSError:  # unreadable, or an item replayed while we looked: skip this scrape
            log.warning("spool.backlog_unreadable", directory=str(self._spool.directory))
            return
        yield from self._families(len(pending), len(failed), max(oldest, 0.0))

    @staticmethod
    def _families(pending: float | None = None, failed: float | None = None,
                  oldest_s: float | None = None) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("callgate_spool_pending", "Spooled requests waiting to be replayed", value=pending)
        yield GaugeMetricFamily("callgate_spool_failed",
                                "Spooled requests set aside in failed/ for an operator", value=failed)
        yield GaugeMetricFamily("callgate_spool_oldest_age_seconds",
                                "Age of the oldest request waiting to be replayed (0 when none is)", value=oldest_s)
