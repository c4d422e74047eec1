"""Read-through lookups: process memory → cache backend → database.

A decision first reads the namespace generations (one round trip), then every lookup
is answered from process memory when its generation still matches. When the backend
is down (generations unknown) lookups go straight to the database: slower, still right.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from billing_core.cache import keys
from billing_core.cache.backend import CacheBackend

T = TypeVar("T")
Loader = Callable[[], Awaitable[Any]]


class ReadThroughCache:
    def __init__(self, backend: CacheBackend) -> None:
        self.backend = backend
        self._local: dict[tuple[str, str], tuple[int, Any]] = {}
        # Lookups this process's memory could not answer (a round trip to the backend or the
        # database): start-up warms the cache until the first decisions add none.
        self.local_misses = 0

    async def generations(self) -> dict[str, int] | None:
        return await self.backend.generations()

    async def invalidate(self, *namespaces: str) -> None:
        for namespace in namespaces:
            await self.backend.bump(namespace)
        self._local = {k: v for k, v in self._local.items() if k[0] not in namespaces}

    async def invalidate_everywhere(self, *namespaces: str) -> bool:
        """`invalidate`, returning once every serving process has seen it (a revoked key or a
        deleted user is refused by the next request on any worker). False: not confirmed."""
        confirmed = True
        for namespace in namespaces:
            confirmed = await self.backend.bump_everywhere(namespace) and confirmed
        self._local = {k: v for k, v in self._local.items() if k[0] not in namespaces}
        return confirmed

    async def lookup(
        self,
        generations: dict[str, int] | None,
        namespace: str,
        key: str,
        load: Loader,
        *,
        decode: Callable[[Any], T],
        encode: Callable[[T], Any],
    ) -> T | None:
        """The value for `key`, or None when the loader found nothing.

        `load` returns a JSON-able value (or None); `decode` turns it into the record
        kept in memory; `encode` turns that record back into JSON for the backend.
        """
        if generations is None:
            self.local_misses += 1
            raw = await load()
            return None if raw is None else decode(raw)
        generation = generations.get(namespace, 0)
        local = self._local.get((namespace, key))
        if local is not None and local[0] == generation:
            return local[1]  # type: ignore[no-any-return]
        self.local_misses += 1
        entry = keys.entry_key(namespace, generation, key)
        cached = await self.backend.get(entry)
        if cached is not None:
            payload = json.loads(cached)
            value = None if payload is None else decode(payload)
        else:
            raw = await load()
            value = None if raw is None else decode(raw)
            stored = None if value is None else encode(value)
            await self.backend.set(entry, json.dumps(stored).encode(), keys.ENTRY_TTL_S)
        if len(self._local) > keys.LOCAL_MAX_ENTRIES:
            self._local.clear()
        self._local[(namespace, key)] = (generation, value)
        return value
