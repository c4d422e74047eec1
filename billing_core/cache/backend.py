"""Cache backends: Redis (redis.asyncio + hiredis) or in-process.

A Redis failure never fails a decision: reads return None (the caller loads from the
database) and the failure is logged. If a generation bump is lost while Redis is down,
every namespace is bumped as soon as Redis answers again, so no stale entry survives.
"""

from __future__ import annotations

import secrets
import time
from typing import Protocol

import structlog
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from billing_core.cache import keys

log = structlog.get_logger(__name__)


class CacheBackend(Protocol):
    name: str

    async def generations(self) -> dict[str, int] | None: ...
    async def bump(self, namespace: str) -> None: ...
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...
    async def close(self) -> None: ...


class MemoryBackend:
    """The embedded default: one process, so generations live in a dict."""

    name = "memory"

    def __init__(self) -> None:
        self._generations = dict.fromkeys(keys.NAMESPACES, 1)
        self._entries: dict[str, tuple[float, bytes]] = {}

    async def generations(self) -> dict[str, int] | None:
        return dict(self._generations)

    async def bump(self, namespace: str) -> None:
        self._generations[namespace] = self._generations.get(namespace, 0) + 1
        self._entries.clear()

    async def get(self, key: str) -> bytes | None:
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if len(self._entries) > keys.LOCAL_MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + ttl_s, value)

    async def close(self) -> None:
        return None


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, *, timeout_s: float = 0.5, max_connections: int = 64) -> None:
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
        self._lost_bumps = False
        self._healthy = True

    def _failed(self, op: str, exc: Exception) -> None:
        if self._healthy:
            log.warning("cache.redis_unavailable", op=op, error=type(exc).__name__)
        self._healthy = False

    def _recovered(self) -> None:
        if not self._healthy:
            log.info("cache.redis_recovered")
        self._healthy = True

    async def generations(self) -> dict[str, int] | None:
        try:
            if self._lost_bumps:
                for namespace in keys.NAMESPACES:
                    await self._redis.incr(keys.generation_key(namespace))
                self._lost_bumps = False
                log.info("cache.replayed_lost_invalidations")
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
        except (RedisError, OSError) as exc:
            self._failed("generations", exc)
            return None
        self._recovered()
        return {ns: int(v) if v is not None else 0 for ns, v in zip(keys.NAMESPACES, values, strict=True)}

    async def bump(self, namespace: str) -> None:
        try:
            await self._redis.incr(keys.generation_key(namespace))
        except (RedisError, OSError) as exc:
            self._lost_bumps = True
            self._failed("bump", exc)

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

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)


def create_backend(redis_url: str | None) -> CacheBackend:
    return RedisBackend(redis_url) if redis_url else MemoryBackend()
