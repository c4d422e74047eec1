"""Aliases (the spec's "personal plan sets") as calls see them: which number a dialled
number is rated and dialled as.

An alias is a dialled number (`alias`) with the number it stands for (`destination`), in
one of three scopes, looked up in this order on every hop:
1. `ext:<sip_extension>`: the calls of that extension;
2. `user:<owner>`: the calls of every extension of the owner (and of an owner without one);
3. `global`: everybody's calls.

A destination may itself be an alias (a chain): it is resolved again, in the same caller's
scopes, at most MAX_CHAIN aliases in a row. A chain that comes back to a number it passed
(a cycle) or goes on longer is refused: at write time by billing_core.numbers.alias_book
(E_HAS_NO_ONE_TOLD_YOU_SHE_IS_NOT_BREATHING, the spec's "endless loop", or E_DATA_ABORT for
a chain that is too long), and at call time here with `AliasLoop` (callPrepare then
declines with the same code), for a loop two concurrent writes could still have made.

On the call path the aliases cost one cache read: every alias is in one snapshot
(NS_ALIASES, key `aliases`) that is decoded once per process and generation into the set
of all alias names and a dict per scope, so a number that is nobody's alias (most calls)
is answered by one set lookup. Every alias write bumps NS_ALIASES (`invalidates=` of the
registry methods). With the cache backend down (no generations), a decision reads only the
rows named like the number it resolves instead of the whole table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import select

from billing_core.cache.keys import NS_ALIASES
from billing_core.context import Context
from billing_core.numbers.tables import aliases

Generations = dict[str, int] | None

GLOBAL = "global"
MAX_CHAIN = 4  # aliases in a row a call may pass through (111 -> 222 -> … -> the number)
SNAPSHOT_KEY = "aliases"
# What callPrepare takes as a destination (billing_core.calls.call_input), ASCII digits only.
_NUMBER = re.compile(r"\+?([0-9]{1,32})")


def dialled_number(value: str) -> str | None:
    """An alias or destination as a dialled number (digits, a leading '+' dropped), or None."""
    match = _NUMBER.fullmatch(value.strip())
    return None if match is None else match.group(1)


def extension_scope(sip_extension: str) -> str:
    return f"ext:{sip_extension}"


def user_scope(username: str) -> str:
    return f"user:{username}"


def caller_scopes(sip_extension: str | None, username: str | None) -> tuple[str, ...]:
    """The scopes a caller's dialled numbers are looked up in, first match wins."""
    found = []
    if sip_extension:
        found.append(extension_scope(sip_extension))
    if username:
        found.append(user_scope(username))
    found.append(GLOBAL)
    return tuple(found)


class AliasLoop(Exception):
    """A chain of aliases that comes back to a number it passed, or is longer than MAX_CHAIN."""

    def __init__(self, chain: Sequence[str], *, cycle: bool) -> None:
        self.chain = tuple(chain)
        self.cycle = cycle
        super().__init__(" -> ".join(chain))


class AliasIndex:
    """Every alias, by scope: {scope: {alias: destination}} and the set of all names."""

    __slots__ = ("by_scope", "names", "rows")

    def __init__(self, rows: Iterable[Sequence[str]]) -> None:
        self.rows = [list(row) for row in rows]  # [scope, alias, destination]: the snapshot's JSON
        self.by_scope: dict[str, dict[str, str]] = {}
        for scope, alias, destination in self.rows:
            self.by_scope.setdefault(scope, {})[alias] = destination
        self.names = frozenset(alias for _, alias, _ in self.rows)

    def to_json(self) -> list[list[str]]:
        return self.rows

    def resolve(self, scopes: Sequence[str], number: str) -> str:
        """The number `number` is rated and dialled as (itself when it is no alias)."""
        if number not in self.names:
            return number  # the common case: one set lookup
        tables = [table for scope in scopes if (table := self.by_scope.get(scope)) is not None]
        return follow(number, lambda name: next((t[name] for t in tables if name in t), None))


def follow(number: str, step: Callable[[str], str | None]) -> str:
    """Follow `step` (a name -> its destination, None when it is no alias) from `number` to
    a number that is no alias; AliasLoop on a cycle or past MAX_CHAIN aliases."""
    chain = [number]
    current = number
    while (target := step(current)) is not None:
        if target in chain:
            raise AliasLoop([*chain, target], cycle=True)
        chain.append(target)
        if len(chain) > MAX_CHAIN + 1:
            raise AliasLoop(chain, cycle=False)
        current = target
    return current


async def _load_all(services: Context) -> list[list[str]]:
    async with services.db.begin() as conn:
        rows = (
            await conn.execute(
                select(aliases.c.scope, aliases.c.alias, aliases.c.destination).order_by(aliases.c.id)
            )
        ).all()
    return [[row.scope, row.alias, row.destination] for row in rows]


async def alias_index(services: Context, gens: dict[str, int]) -> AliasIndex:
    """The snapshot of every alias, through the cache (one lookup; memory when warm)."""

    async def load() -> list[list[str]]:
        return await _load_all(services)

    found = await services.cache.lookup(
        gens, NS_ALIASES, SNAPSHOT_KEY, load, decode=AliasIndex, encode=AliasIndex.to_json
    )
    return found if found is not None else AliasIndex(())


async def resolve(
    services: Context, gens: Generations, *, sip_extension: str | None, username: str, number: str
) -> str:
    """The number a caller's dialled `number` is rated and dialled as (AliasLoop when its
    aliases loop). One cache read; with the cache down, the rows of each name it meets."""
    if gens is not None:
        index = await alias_index(services, gens)
        if number not in index.names:
            return number  # most calls: no scope is even named
        return index.resolve(caller_scopes(sip_extension, username), number)
    scopes = caller_scopes(sip_extension, username)
    seen: dict[str, str | None] = {}
    current: str | None = number
    for _ in range(MAX_CHAIN + 2):  # enough names to see a cycle or a chain too long
        if current is None or current in seen:
            break
        seen[current] = await _uncached_target(services, scopes, current)
        current = seen[current]
    return follow(number, seen.get)


async def _uncached_target(services: Context, scopes: Sequence[str], name: str) -> str | None:
    async with services.db.begin() as conn:
        rows = (
            await conn.execute(
                select(aliases.c.scope, aliases.c.destination).where(
                    aliases.c.alias == name, aliases.c.scope.in_(scopes)
                )
            )
        ).all()
    by_scope = {row.scope: row.destination for row in rows}
    return next((by_scope[scope] for scope in scopes if scope in by_scope), None)
