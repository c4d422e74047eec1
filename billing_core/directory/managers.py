"""The manager chain's one rule: nearest manager first, at most MAX_CHAIN_DEPTH, stopping at
a cycle. Ownership (in a transaction) and the cached profiles (outside one) walk it from
their own sources."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

MAX_CHAIN_DEPTH = 16  # a manager chain longer than this (or a cycle) is cut here


async def walk_managers(username: str, manager_of: Callable[[str], Awaitable[str | None]]) -> list[str]:
    """Managers above `username`, nearest first; `manager_of(name)` is a user's manager
    (None/"" for none or for an unknown user). Bounded against cycles."""
    chain: list[str] = []
    current = username
    while len(chain) < MAX_CHAIN_DEPTH:
        manager = await manager_of(current)
        if not manager or manager == username or manager in chain:
            break
        chain.append(manager)
        current = manager
    return chain
