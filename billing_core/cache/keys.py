"""Every cache key prefix, namespace and TTL, in one place."""

from __future__ import annotations

from typing import Final

PREFIX: Final = "cg"

# Namespaces: a write through the registry bumps the namespace's generation, which
# makes every entry of the old generation unreachable at once (across all processes).
NS_RATING: Final = "rating"  # directions, tariffs + entries + options, routes, bill types, currencies
NS_PROFILES: Final = "profiles"  # users, extensions, API keys, DIDs and their rules
# Bans change on every bad key; their own namespace keeps a ban from evicting the profiles.
NS_BANS: Final = "bans"
# Aliases (personal plan sets) are one snapshot read by every decision; their own namespace
# keeps a profile write from reloading it, and an alias write from evicting the profiles.
NS_ALIASES: Final = "aliases"
NAMESPACES: Final[tuple[str, ...]] = (NS_RATING, NS_PROFILES, NS_BANS, NS_ALIASES)
GENERATIONS_CHANNEL: Final = f"{PREFIX}:generations"  # pub/sub: "a generation changed"

ENTRY_TTL_S: Final = 300  # bounds staleness if a bump was lost while Redis was down
LOCAL_MAX_ENTRIES: Final = 100_000


def generation_key(namespace: str) -> str:
    return f"{PREFIX}:gen:{namespace}"


def entry_key(namespace: str, generation: int, key: str) -> str:
    return f"{PREFIX}:{namespace}:{generation}:{key}"


def session_key(digest: str) -> str:
    """A front-door session, by the SHA-256 of its id (the id itself is never stored)."""
    return f"{PREFIX}:session:{digest}"
