"""Whether this process's store is ready: migrated, seeded and warm.

`callgate serve` starts listening even when the database is down (a crash during an
outage must not cost the spool and the dialplan its answers). Until the start-up path
has migrated and warmed the store, every request is answered E_SQL_ERROR by the
dispatcher without touching the database: FastAGI declines decisions and spools
callFinish, HTTP answers 503 E_SQL_ERROR, /healthz says "degraded". A store built any
other way (tests, one-shot CLI commands) is ready from the start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Readiness:
    ready: bool = True
    attempts: int = 0  # start-up attempts so far (migration + warm-up)
    last_error: str = ""  # exception type of the last failed attempt (never its message)
    since: float = field(default_factory=time.monotonic)

    def degrade(self, error: str) -> None:
        self.ready = False
        self.last_error = error

    def mark_ready(self) -> None:
        self.ready = True
        self.last_error = ""
        self.since = time.monotonic()
