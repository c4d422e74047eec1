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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Counter

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
