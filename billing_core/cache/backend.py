"""Cache backends: Redis (redis.asyncio + hiredis) or in-process.

A Redis failure never fails a decision: reads return None (the caller loads from the
database) and the failure is logged. If a generation bump is lost while Redis is down,
every namespace is bumped as soon as Redis answers again, so no stale entry survives.

Generations are pushed, not polled: every decision needs them, and a round trip to Redis
per decision was a tenth of callgate's CPU (docs/performance.md). A watcher task per
process subscribes to `keys.GENERATIONS_CHANNEL`; each bump publishes there, and the
watcher then re-reads the counters (MGET), so messages carry no value that could arrive
out of order. It also re-reads them every `reconcile_s`, which bounds the staleness if a
message were ever lost. While the watcher is not subscribed (start-up, Redis down or
restarting), every decision reads the counters itself, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Protocol

import structlog
from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from billing_core.cache import keys
from billing_core.cache.shared_generations import SharedGenerations

log = structlog.get_logger(__name__)


class CacheBackend(Protocol):
    name: str

    async def generations(self) -> dict[str, int] | None: ...
    async def bump(self, namespace: str) -> None: ...
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...
    async def close(self) -> None: ...

    async def warm_up(self, connections: int) -> int:
        """Open up to `connections` connections before the first decision; how many are open."""
        ...

    async def bump_everywhere(self, namespace: str) -> bool:
        """Bump `namespace` and return once every serving process has seen the bump (the
        next lookup anywhere reloads): revokeKey and the deletes. False when that could not
        be confirmed in time (the bump itself is never skipped)."""
        ...


class MemoryBackend:
    """The embedded default: one serving process, so generations live in a dict.

    With `shared` (the database's `cache_generations`), every bump is also written there
    and a task started with the first decision polls it, so that a write by another
    process (the CLI) reaches this one's cache within about a second."""

    name = "memory"

    def __init__(self, shared: SharedGenerations | None = None) -> None:
        self._generations = dict.fromkeys(keys.NAMESPACES, 1)
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._shared = shared
        self._watcher: asyncio.Task[None] | None = None
        self._baseline = asyncio.Event()
        self._closing = False

    async def generations(self) -> dict[str, int] | None:
        if self._shared is not None and not self._baseline.is_set() and not self._closing:
            if self._watcher is None:
                self._watcher = asyncio.get_running_loop().create_task(self._watch(self._shared))
            await self._baseline.wait()  # the first decisions only: one read of a 4-row table
        return dict(self._generations)

    async def _watch(self, shared: SharedGenerations) -> None:
        seen: dict[str, int] | None = None
        try:
            seen = await shared.read()  # before any lookup: later changes are all news
        except Exception as exc:
            log.warning("cache.shared_generations_unavailable", error=type(exc).__name__)
        finally:
            self._baseline.set()
        await shared.watch(self._changed, seen)

    def _changed(self, namespace: str) -> None:
        self._generations[namespace] = self._generations.get(namespace, 0) + 1
        self._entries.clear()

    async def bump(self, namespace: str) -> None:
        self._changed(namespace)
        if self._shared is None:
            return
        try:
            await self._shared.bump(namespace)
        except Exception as exc:  # this process is already invalidated; others hear it late
            log.warning("cache.shared_bump_failed", namespace=namespace, error=type(exc).__name__)

    async def get(self, key: str) -> bytes | None:
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if len(self._entries) > keys.LOCAL_MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + ttl_s, value)

    async def warm_up(self, connections: int) -> int:
        return 0  # nothing to open: the cache is this process's memory

    async def bump_everywhere(self, namespace: str) -> bool:
        # The in-process cache serves one worker (callgate.app: several need Redis), and
        # this bump clears its memory at once; another process hears of it by the poll.
        await self.bump(namespace)
        return True

    async def close(self) -> None:
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None


# Bump one namespace: a missing counter (flushed or restarted Redis) restarts at a random
# point first (see _read_generations), then INCR, then tell every process's watcher.
_BUMP_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[1]) end
local value = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return value
"""
_WATCH_RETRY_S = 0.5
_POLL_S = 0.2  # the watcher's longest wait for a message, and so how soon close() is heard
_FENCE_POLL_S = 0.002  # bump_everywhere's wait between two reads of the workers' "seen" keys


class RedisBackend:
    name = "redis"

    def __init__(
        self, url: str, *, timeout_s: float = 0.5, max_connections: int = 64, reconcile_s: float = 1.0
    ) -> None:
        # A blocking pool: a burst of decisions waits (bounded) for a connection instead of
        # failing with MaxConnectionsError, which would read as "Redis is down".
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=10,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        # Pub/sub channels are server-wide, not per database: one channel per database index.
        self.channel = f"{keys.GENERATIONS_CHANNEL}:{pool.connection_kwargs.get('db', 0)}"
        self._bump_script = self._redis.register_script(_BUMP_SCRIPT)
        self._lost_bumps = False
        self._healthy = True
        self._reconcile_s = reconcile_s
        # The counters as the watcher last read them; None while it is not subscribed.
        self._pushed: dict[str, int] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._own_bumps = 0  # this process's bumps: a read that overlapped one is read again
        self._closing = False
        self._pubsub: PubSub | None = None
        # "Seen" key: the counters this process's watcher last applied, so that a writer can
        # wait until every worker has applied its bump (bump_everywhere). It expires when a
        # worker stops syncing, so a dead worker delays a fence by at most seen_ttl_s.
        db = pool.connection_kwargs.get("db", 0)
        self._seen_prefix = f"{keys.PREFIX}:seen:{db}:"
        self._seen_key = self._seen_prefix + secrets.token_hex(8)
        self.seen_ttl_s = max(3, int(3 * reconcile_s + 0.999))

    def _failed(self, op: str, exc: Exception) -> None:
        if self._healthy:
            log.warning("cache.redis_unavailable", op=op, error=type(exc).__name__)
        self._healthy = False

    def _recovered(self) -> None:
        if not self._healthy:
            log.info("cache.redis_recovered")
        self._healthy = True

    @property
    def client(self) -> aioredis.Redis:
        """The connection pool's client, for stores that live beside the cache (sessions)."""
        return self._redis

    @property
    def pushed(self) -> bool:
        """True while generations come from the watcher (no round trip per decision)."""
        return self._pushed is not None and not self._lost_bumps

    async def generations(self) -> dict[str, int] | None:
        if self._watcher is None and not self._closing:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        if self._pushed is not None and not self._lost_bumps:
            return dict(self._pushed)
        try:
            if self._lost_bumps:
                for namespace in keys.NAMESPACES:
                    await self._bump(namespace)
                self._lost_bumps = False
                log.info("cache.replayed_lost_invalidations")
            values = await self._read_generations()
        except (RedisError, OSError) as exc:
            self._failed("generations", exc)
            return None
        self._recovered()
        return values

    async def _read_generations(self) -> dict[str, int]:
        names = [keys.generation_key(ns) for ns in keys.NAMESPACES]
        values = await self._redis.mget(names)
        if any(v is None for v in values):
            # A flushed or restarted Redis lost its counters. Starting again at 0 would
            # let a process's in-memory entries from the old generation 1, 2, … look fresh
            # again, so a missing counter restarts at a random point instead.
            for name, value in zip(names, values, strict=True):
                if value is None:
                    await self._redis.set(name, secrets.randbits(48), nx=True)
            values = await self._redis.mget(names)
        return {ns: int(v) if v is not None else 0 for ns, v in zip(keys.NAMESPACES, values, strict=True)}

    async def _watch(self) -> None:
        """Keep `_pushed` current until close(); on a Redis error, fall back and retry.

        It polls for messages in short slices and checks `_closing` between them instead of
        relying on cancellation: redis-py's pub/sub read can swallow a CancelledError and
        keep waiting (seen with redis-py 8.1, RESP3), which would hang close()."""
        while not self._closing:
            try:
                async with self._redis.pubsub() as pubsub:
                    self._pubsub = pubsub
                    await pubsub.subscribe(self.channel)
                    # Read the counters only once SUBSCRIBE is in force: a bump between the
                    # two would otherwise be missed until the next reconcile.
                    while await pubsub.get_message(timeout=_POLL_S) is None:
                        if self._closing:
                            return
                    next_sync = 0.0
                    while not self._closing:
                        if time.monotonic() >= next_sync:
                            await self._sync()
                            next_sync = time.monotonic() + self._reconcile_s
                        if await pubsub.get_message(ignore_subscribe_messages=True, timeout=_POLL_S):
                            next_sync = 0.0  # a bump somewhere: read the counters now
            except (RedisError, OSError) as exc:
                if self._closing:
                    break
                if self._pushed is not None:
                    log.warning("cache.generation_watch_lost", error=type(exc).__name__)
                self._pushed = None
                await asyncio.sleep(_WATCH_RETRY_S)
            except Exception:
                # Never leave stale pushed values behind a dead watcher: fall back, retry.
                self._pushed = None
                log.exception("cache.generation_watch_failed")
                await asyncio.sleep(_WATCH_RETRY_S)
        self._pushed = None

    async def _sync(self) -> None:
        while True:
            before = self._own_bumps
            values = await self._read_generations()
            if before == self._own_bumps:  # none of our bumps landed while we read
                self._pushed = values
                await self._redis.set(self._seen_key, json.dumps(values), ex=self.seen_ttl_s)
                return

    async def _bump(self, namespace: str) -> int:
        value = int(
            await self._bump_script(
                keys=[keys.generation_key(namespace)],
                args=[secrets.randbits(48), self.channel, namespace],
            )
        )
        self._own_bumps += 1
        if self._pushed is not None:
            self._pushed = {**self._pushed, namespace: value}  # read our own write at once
        return value

    async def bump(self, namespace: str) -> None:
        try:
            await self._bump(namespace)
        except (RedisError, OSError) as exc:
            self._lost_bumps = True
            self._failed("bump", exc)

    async def bump_everywhere(self, namespace: str) -> bool:
        """Bump, then wait until every worker's watcher has applied a counter at least as new
        (its "seen" key; a worker whose watcher is not subscribed reads the counters from
        Redis on every decision, and its seen key expires). Bounded by seen_ttl_s + 1 s."""
        try:
            target = await self._bump(namespace)
        except (RedisError, OSError) as exc:
            self._lost_bumps = True
            self._failed("bump", exc)
            return False
        deadline = time.monotonic() + self.seen_ttl_s + 1
        pending: list[str] = []
        try:
            while True:
                names = [name async for name in self._redis.scan_iter(match=self._seen_prefix + "*", count=1000)]
                values = await self._redis.mget(names) if names else []
                pending = [
                    str(name) for name, raw in zip(names, values, strict=True)
                    if raw is not None and int(json.loads(raw).get(namespace, 0)) < target
                ]  # fmt: skip
                if not pending or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(_FENCE_POLL_S)
        except (RedisError, OSError) as exc:
            self._failed("bump_everywhere", exc)
            return False
        if pending:
            log.warning("cache.bump_not_confirmed", namespace=namespace, workers=len(pending))
        return not pending

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            self._failed("get", exc)
            return None
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        try:
            await self._redis.set(key, value, ex=ttl_s)
        except (RedisError, OSError) as exc:
            self._failed("set", exc)

    async def warm_up(self, connections: int) -> int:
        """Open `connections` pool connections at once and start the generation watcher, so
        that the first wave of calls neither connects nor reads generations (issue 9, item 10).
        A Redis that is down is no error: decisions fall back to the database."""
        try:
            await asyncio.gather(*(self._redis.ping() for _ in range(connections)))
            await self.generations()  # starts the watcher
        except (RedisError, OSError) as exc:
            self._failed("warm_up", exc)
        return self.open_connections

    @property
    def open_connections(self) -> int:
        pool = self._redis.connection_pool
        return len(getattr(pool, "_available_connections", ())) + len(getattr(pool, "_in_use_connections", ()))

    async def close(self) -> None:
        self._closing = True
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._seen_key)  # no fence waits for a closed worker
        if self._watcher is not None:
            # Cutting its connection wakes the watcher at once; otherwise it ends within
            # one poll slice. Cancelling is only the last resort.
            connection = self._pubsub.connection if self._pubsub is not None else None
            if connection is not None:
                await connection.disconnect()
            done, _ = await asyncio.wait({self._watcher}, timeout=_POLL_S * 5)
            if not done:
                self._watcher.cancel()
            self._watcher = None
        await self._redis.aclose(close_connection_pool=True)


def create_backend(redis_url: str | None, shared: SharedGenerations | None = None) -> CacheBackend:
    """Redis when configured; else the in-process cache, told of other processes' writes
    through `shared` (the database) when given."""
    return RedisBackend(redis_url) if redis_url else MemoryBackend(shared)
