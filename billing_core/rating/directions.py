"""Directions (number prefixes): the lookup rule and how a number finds its direction.

The spec has no API method that creates directions; they come from a CSV file
(`callgate directions import FILE.csv`, header `code,direction,min_len,max_len`, see
billing_core.rating.direction_import) or from a rate deck (billing_core.rating.decks).

The matching rule is written once here (`longest_prefix`, `DirectionIndex.resolve`; both
probe through `_probe`), and the API's resolveDirection and the rating engine both ask
`resolve_number`, so they agree on which direction a number is in:
among the directions whose code is a prefix of the number AND whose
min_len ≤ len(number) ≤ max_len, the one with the longest code wins. A longer code
whose length range does not admit the number therefore falls back to a shorter one
(e.g. a 10-digit number under "7901" [11..11] still matches "7" [10..11]).

`resolve_number` first reads the count and distinct code lengths (one small cached
entry). Up to INDEX_MAX directions it answers from the whole table kept in memory (the
cached `DirectionIndex`, warmed at start). A larger table (a carrier's deck holds millions
of codes) is never loaded whole: the directions whose code is one of the number's prefixes
of those lengths are read (`code IN (...)`, a handful of rows through the unique index on
code), and the answer is cached per (the number's first L digits, its length), L the
longest code length: all that the answer depends on. So a decision costs the same with
ten directions as with a million (docs/performance.md, "Rate decks").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog
from sqlalchemy import func, select

from billing_core.cache.keys import NS_RATING
from billing_core.cache.readthrough import ReadThroughCache
from billing_core.db.engine import Database
from billing_core.errors import ApiError, ErrorCode
from billing_core.rating.tables import directions

log = structlog.get_logger(__name__)

Generations = dict[str, int] | None

MAX_NUMBER_LEN = 32  # directions.code is String(32); E.164 itself stops at 15
DIRECTIONS_KEY = "directions"  # the cache entry (NS_RATING) of the whole direction table (getDirections)
META_KEY = "direction_meta"  # the cache entry (NS_RATING) of the count and distinct code lengths
# Up to this many directions every process keeps them all in memory (a dict by code, a few
# MB); beyond, a number's direction is read by its prefixes and cached per number prefix.
INDEX_MAX = 20_000

_NUMBER = re.compile(r"\+?([0-9]{1,32})")


class DirectionLike(Protocol):
    """What the matching rule needs from a direction (a record, a DB row, …)."""

    @property
    def code(self) -> str: ...
    @property
    def min_len(self) -> int: ...
    @property
    def max_len(self) -> int: ...


D = TypeVar("D", bound=DirectionLike)


@dataclass(frozen=True, slots=True)
class Direction:
    id: int
    code: str
    direction: str
    min_len: int
    max_len: int

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "id": self.id,
            "direction": self.direction,
            "min_len": self.min_len,
            "max_len": self.max_len,
        }



def _admits(row: DirectionLike, number: str) -> bool:
    return row.min_len <= len(number) <= row.max_len


def _probe(by_code: Mapping[str, D], lengths: Iterable[int], number: str) -> D | None:
    """The rule on a mapping code → direction: `number`'s prefixes of the given lengths
    (longest first) are looked up; the first whose direction admits the number wins."""
    size = len(number)
    for length in lengths:
        if length <= size:
            row = by_code.get(number[:length])
            if row is not None and row.min_len <= size <= row.max_len:
                return row
    return None


def longest_prefix(directions: Iterable[D] | Mapping[str, D], number: str) -> D | None:
    """The direction `number` belongs to, or None.

    `directions` is any iterable of direction rows (linear scan), or a mapping
    code → row (then only the number's own prefixes are looked up: O(len(number)),
    what a hot path such as the rating engine wants). `number` is expected to be
    digits only (see `normalize_number`); anything else simply matches less.
    """
    if isinstance(directions, Mapping):
        return _probe(directions, range(len(number), 0, -1), number)
    best: D | None = None
    for row in directions:
        if number.startswith(row.code) and _admits(row, number) and (best is None or len(row.code) > len(best.code)):
            best = row
    return best


def normalize_number(number: str) -> str:
    """A dialled number as digits: one leading '+' is dropped; anything else is E_INVALID_ARGUMENT."""
    match = _NUMBER.fullmatch(number.strip())
    if match is None:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "number must be 1..32 digits, optionally with a leading +")
    return match.group(1)


@dataclass(frozen=True, slots=True)
class DirectionIndex:
    """Every direction, by id and by code (immutable: the cache keeps one per generation).

    `lengths` are the distinct code lengths, longest first: a lookup probes only those
    (a handful) instead of every prefix of the number — this is the rating hot path.
    """

    by_code: Mapping[str, Direction]
    by_id: Mapping[int, Direction]
    lengths: tuple[int, ...]

    @classmethod
    def build(cls, rows: Iterable[Direction]) -> DirectionIndex:
        listed = list(rows)
        return cls(
            by_code={d.code: d for d in listed},
            by_id={d.id: d for d in listed},
            lengths=tuple(sorted({len(d.code) for d in listed}, reverse=True)),
        )

    def resolve(self, number: str) -> Direction | None:
        return _probe(self.by_code, self.lengths, number)

    def all(self) -> list[Direction]:
        return sorted(self.by_code.values(), key=lambda d: d.code)

    def to_json(self) -> list[dict[str, Any]]:
        """getDirections' answer: every direction, by code."""
        return [d.to_json() for d in self.all()]

    def to_rows(self) -> list[list[Any]]:
        """The cache snapshot: [id, code, direction, min_len, max_len] per direction."""
        return [[d.id, d.code, d.direction, d.min_len, d.max_len] for d in self.by_code.values()]

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> DirectionIndex:
        return cls.build(Direction(int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows)


def _prefixes(number: str) -> list[str]:
    return [number[:n] for n in range(1, len(number) + 1)]


def _row(d: Any) -> list[Any]:
    return [d.id, d.code, d.direction, d.min_len, d.max_len]


async def load_directions(db: Database, *, prefixes_of: str | None = None) -> list[list[Any]]:
    """Direction rows for `DirectionIndex.from_rows`: every direction, or with
    `prefixes_of` only those whose code is a prefix of that number."""
    column = directions.c
    query = select(column.id, column.code, column.direction, column.min_len, column.max_len)
    if prefixes_of is not None:
        query = query.where(directions.c.code.in_(_prefixes(prefixes_of)))
    async with db.begin() as conn:
        rows = (await conn.execute(query)).all()
    return [_row(row) for row in rows]


async def direction_index(db: Database, cache: ReadThroughCache, gens: Generations) -> DirectionIndex:
    """All directions, read through the cache (NS_RATING): getDirections' answer. The call
    path never reads it (`resolve_number`)."""
    index = await cache.lookup(
        gens,
        NS_RATING,
        DIRECTIONS_KEY,
        lambda: load_directions(db),
        decode=DirectionIndex.from_rows,
        encode=DirectionIndex.to_rows,
    )
    return index if index is not None else DirectionIndex.build(())


@dataclass(frozen=True, slots=True)
class DirectionMeta:
    """How many directions there are, and their distinct code lengths, longest first."""

    count: int
    lengths: tuple[int, ...]

    @property
    def small(self) -> bool:
        """Small enough to keep every direction in each process's memory."""
        return self.count <= INDEX_MAX

    def to_json(self) -> list[Any]:
        return [self.count, list(self.lengths)]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> DirectionMeta:
        return cls(int(data[0]), tuple(int(n) for n in data[1]))


async def direction_meta(db: Database, cache: ReadThroughCache, gens: Generations) -> DirectionMeta:
    """The count and code lengths of the direction table (one small cached entry, NS_RATING)."""

    async def load() -> list[Any]:
        query = select(func.length(directions.c.code), func.count()).group_by(func.length(directions.c.code))
        async with db.begin() as conn:
            found = (await conn.execute(query)).all()
        lengths = sorted((int(n) for n, _ in found), reverse=True)
        return DirectionMeta(sum(int(k) for _, k in found), tuple(lengths)).to_json()

    meta = await cache.lookup(gens, NS_RATING, META_KEY, load, decode=DirectionMeta.from_json,
                              encode=DirectionMeta.to_json)  # fmt: skip
    return meta if meta is not None else DirectionMeta(0, ())


async def _candidates(db: Database, number: str, lengths: Sequence[int]) -> list[list[Any]]:
    """The directions whose code is a prefix of `number` of one of `lengths` (≤ len(lengths) rows)."""
    prefixes = [number[:n] for n in lengths if n <= len(number)]
    if not prefixes:
        return []
    c = directions.c
    query = select(c.id, c.code, c.direction, c.min_len, c.max_len).where(c.code.in_(prefixes))
    async with db.begin() as conn:
        return [_row(row) for row in (await conn.execute(query)).all()]


def _decode_direction(row: Sequence[Any]) -> Direction:
    return Direction(int(row[0]), str(row[1]), str(row[2]), int(row[3]), int(row[4]))


def _encode_direction(d: Direction) -> list[Any]:
    return [d.id, d.code, d.direction, d.min_len, d.max_len]


async def resolve_by_prefixes(
    db: Database, cache: ReadThroughCache, gens: Generations, meta: DirectionMeta, number: str
) -> Direction | None:
    """The direction of `number` from its own prefixes (a deck too large for memory): the
    answer is cached per (its first L digits, its length), L the longest code length."""
    if not meta.lengths:
        return None
    key = f"dir:{number[: meta.lengths[0]]}:{len(number)}"

    async def load() -> list[Any] | None:
        found = DirectionIndex.from_rows(await _candidates(db, number, meta.lengths)).resolve(number)
        return None if found is None else _encode_direction(found)

    return await cache.lookup(gens, NS_RATING, key, load, decode=_decode_direction, encode=_encode_direction)


async def resolve_number(db: Database, cache: ReadThroughCache, gens: Generations, number: str) -> Direction | None:
    """The direction of `number` (digits) by the rule above, or None.

    With the cache down (`gens` None) only the number's own prefixes are read."""
    if gens is None:
        return DirectionIndex.from_rows(await load_directions(db, prefixes_of=number)).resolve(number)
    meta = await direction_meta(db, cache, gens)
    if meta.small:
        return (await direction_index(db, cache, gens)).resolve(number)
    return await resolve_by_prefixes(db, cache, gens, meta, number)


async def resolve(db: Database, cache: ReadThroughCache, gens: Generations, number: str) -> Direction:
    """resolveDirection: the direction of `number`; E_UNROUTABLE when no direction covers it."""
    found = await resolve_number(db, cache, gens, normalize_number(number))
    if found is None:
        raise ApiError(ErrorCode.E_UNROUTABLE, "no direction covers this number")
    return found
