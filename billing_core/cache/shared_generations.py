"""Generation counters in the database, for the in-process cache (no Redis).

Without Redis every process keeps its cache generations in memory, so a write made by
another process — the CLI's `bans remove`, `keys add`, `directions import`, on the
embedded default always another process — never reached a running `callgate serve`:
its cached bans, keys and directions stayed as they were for as long as it ran.

Each invalidation therefore also bumps the namespace's row in `cache_generations`, and a
task of each serving process reads the (one row per namespace) table every POLL_S seconds; a
counter that moved bumps the local generation, so the next lookup reloads. A write thus
reaches a running server within about POLL_S plus one read of the table (under 2 s).
The counters are first read before the process's first lookup, so that warm caches are
not thrown away by the first poll.
A database that does not answer only delays this: the poller logs once and retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from billing_core.cache.keys import NAMESPACES
from billing_core.db.engine import Database
from billing_core.db.schema import cache_generations

log = structlog.get_logger(__name__)

POLL_S = 0.5
READ_TIMEOUT_S = 1.0


class SharedGenerations:
    """The `cache_generations` rows: bumped by every process, polled by serving ones."""

    def __init__(self, db: Database, *, poll_s: float = POLL_S) -> None:
        self.db = db
        self.poll_s = poll_s

    async def read(self) -> dict[str, int]:
        async with self.db.begin(timeout_s=READ_TIMEOUT_S) as conn:
            rows = (await conn.execute(select(cache_generations))).all()
        return {row.namespace: int(row.generation) for row in rows}

    async def bump(self, namespace: str) -> None:
        dialect = postgresql if self.db.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(cache_generations).values(namespace=namespace, generation=1)
        statement = statement.on_conflict_do_update(
            index_elements=["namespace"], set_={"generation": cache_generations.c.generation + 1}
        )
        async with self.db.begin() as conn:
            await conn.execute(statement)

    async def watch(self, changed: Callable[[str], None], seen: dict[str, int] | None = None) -> None:
        """Call `changed(namespace)` for every counter that moved since `seen` (read before
        this process's first lookup), until cancelled. Without `seen` (the database did not
        answer then) the first read reports every namespace: a write before it could
        otherwise go unseen."""
        healthy = True
        while True:
            try:
                current = await self.read()
            except Exception as exc:  # a database that does not answer only delays the news
                if healthy:
                    log.warning("cache.shared_generations_unavailable", error=type(exc).__name__)
                healthy = False
            else:
                if not healthy:
                    log.info("cache.shared_generations_recovered")
                healthy = True
                for namespace in NAMESPACES if seen is None else sorted(set(current) | set(seen)):
                    if seen is None or current.get(namespace) != seen.get(namespace):
                        changed(namespace)
                seen = current
            await asyncio.sleep(self.poll_s)
