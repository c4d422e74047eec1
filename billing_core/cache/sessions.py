"""Front-door sessions (JeraSoft VCS `SID`, BILLmanager `auth=`): id -> a small record,
ended by `idle_s` without use or by `end`.

They live where the cache lives, so any worker accepts any session: Redis on the server
backend (one key per session, its TTL renewed by every use with GETEX), process memory
on the embedded one (a dict apart from the cache entries, which a generation bump
clears). The id is 24 random bytes (url-safe base64, 32 characters); only its SHA-256 is
a key, so a look at Redis shows no usable id. A Redis failure makes a session look
ended (the caller logs in again), never lets one through.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Protocol

import structlog
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from billing_core.cache import keys
from billing_core.cache.backend import CacheBackend, RedisBackend

log = structlog.get_logger(__name__)

MEMORY_MAX_SESSIONS = 100_000


def new_session_id() -> str:
    return secrets.token_urlsafe(24)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore(Protocol):
    async def put(self, session_id: str, value: bytes, idle_s: int) -> bool:
        """Store a new session; False when the store cannot take it."""
        ...

    async def touch(self, session_id: str, idle_s: int) -> bytes | None:
        """The session's record with its idle time restarted, or None (unknown or ended)."""
        ...

    async def end(self, session_id: str) -> bool:
        """End the session; True when there was one."""
        ...


class MemorySessions:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, bytes]] = {}

    def _sweep(self, now: float) -> None:
        self._entries = {k: v for k, v in self._entries.items() if v[0] > now}

    async def put(self, session_id: str, value: bytes, idle_s: int) -> bool:
        now = time.monotonic()
        if len(self._entries) >= MEMORY_MAX_SESSIONS:
            self._sweep(now)
            if len(self._entries) >= MEMORY_MAX_SESSIONS:
                log.warning("sessions.full", sessions=len(self._entries))
                return False
        self._entries[_digest(session_id)] = (now + idle_s, value)
        return True

    async def touch(self, session_id: str, idle_s: int) -> bytes | None:
        digest = _digest(session_id)
        entry = self._entries.get(digest)
        now = time.monotonic()
        if entry is None or entry[0] <= now:
            self._entries.pop(digest, None)
            return None
        self._entries[digest] = (now + idle_s, entry[1])
        return entry[1]

    async def end(self, session_id: str) -> bool:
        entry = self._entries.pop(_digest(session_id), None)
        return entry is not None and entry[0] > time.monotonic()


class RedisSessions:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    async def put(self, session_id: str, value: bytes, idle_s: int) -> bool:
        try:
            await self._redis.set(keys.session_key(_digest(session_id)), value, ex=idle_s)
        except (RedisError, OSError) as exc:
            log.warning("sessions.redis_unavailable", op="put", error=type(exc).__name__)
            return False
        return True

    async def touch(self, session_id: str, idle_s: int) -> bytes | None:
        try:
            value = await self._redis.getex(keys.session_key(_digest(session_id)), ex=idle_s)
        except (RedisError, OSError) as exc:
            log.warning("sessions.redis_unavailable", op="touch", error=type(exc).__name__)
            return None
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def end(self, session_id: str) -> bool:
        try:
            return bool(await self._redis.delete(keys.session_key(_digest(session_id))))
        except (RedisError, OSError) as exc:
            log.warning("sessions.redis_unavailable", op="end", error=type(exc).__name__)
            return False


def create_sessions(backend: CacheBackend) -> SessionStore:
    """Sessions beside the cache: in Redis when the cache is Redis, else in this process."""
    if isinstance(backend, RedisBackend):
        return RedisSessions(backend.client)
    return MemorySessions()
