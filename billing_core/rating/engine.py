"""Rating: which direction a number belongs to, which tariff entry serves it, what it costs.

Rating never moves money (that is billing_core.ledger.book). Everything it reads —
directions, tariffs with their entries and routes, bill types, currencies — lives in the
NS_RATING cache namespace as small JSON entries; decoding one builds the in-memory record
once per process and cache generation, so a warm decision costs no database query.
Small catalogues are kept whole in each process (every direction; a tariff with all its
entries); above INDEX_MAX rows nothing grows with the size of a rate deck: a number's
direction is cached per number prefix (billing_core.rating.directions, the rule the
API's resolveDirection uses too) and a large tariff's entries per (tariff, direction).
The rules are written out in docs/billing.md.

Public API (other modules use only this):
- pure arithmetic: `billed_seconds`, `call_cost`, `reserve_amount`, `max_call_time`
  (billing_core.rating.arithmetic's, re-exported)
- `Rating` (what a call is charged at; JSON round-trip, stored on the reservation)
- `RatingEngine(db, cache)`: `resolve_direction`, `route_candidates`, `tariff`,
  `bill_type`, `eur_course`, `rate`
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, TypeVar

import structlog
from sqlalchemy import Select, func, select

from billing_core.cache.keys import NS_RATING
from billing_core.cache.readthrough import ReadThroughCache
from billing_core.db.engine import Database
from billing_core.errors import ApiError, ErrorCode
from billing_core.money import ZERO
from billing_core.rating import directions as direction_rules
from billing_core.rating.arithmetic import billed_seconds, call_cost, max_call_time, reserve_amount
from billing_core.rating.directions import (
    DIRECTIONS_KEY,
    META_KEY,
    Direction,
    direction_index,
    direction_meta,
    resolve_by_prefixes,
    resolve_number,
)
from billing_core.rating.tables import bill_types, currencies, routes, tariff_entries, tariffs

log = structlog.get_logger(__name__)

# The public API of the docstring; the arithmetic is rating_math's, re-exported (callers import it from here).
__all__ = ["Rating", "RatingEngine", "billed_seconds", "call_cost", "max_call_time", "reserve_amount"]

Generations = dict[str, int] | None
T = TypeVar("T")

INTERNAL = "internal"  # direction and route name of a call to a local SIP extension


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    id: int
    route: str
    prefix: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class Tariff:
    id: int
    name: str
    bill_type: str
    is_option: bool
    connect_fee: Decimal  # per billed call (callgate's own field; switch_price is not per call)
    multiplier: Decimal


@dataclass(frozen=True, slots=True)
class BillType:
    name: str
    free_threshold: int
    step: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One tariff entry (a direction's price on one route at one priority)."""

    id: int
    tariff_id: int
    direction_id: int
    cost: Decimal  # per minute, EUR, before the tariff multiplier
    priority: int
    route: Route


@dataclass(frozen=True, slots=True)
class Rating:
    """What one call attempt is charged at. Locked in by callPrepare (stored as JSON on the
    reservation) and used by callFinish, so catalog edits during the call change nothing."""

    destination: str
    direction_id: int | None
    direction: str
    route_id: int | None
    route: str
    prefix: str
    tariff_id: int | None
    price_per_minute: Decimal
    connect_fee: Decimal
    step: int
    free_threshold: int
    internal: bool = False
    # The number the caller dialled when it was an alias of `destination` (else ""): the
    # call is rated and dialled as `destination`, and its callFinish may name either.
    alias: str = ""

    def billed(self, length_s: int) -> int:
        return billed_seconds(length_s, step=self.step, free_threshold=self.free_threshold)

    def cost(self, billed_s: int) -> Decimal:
        return call_cost(billed_s, price_per_minute=self.price_per_minute, connect_fee=self.connect_fee)

    def to_json(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies, and this runs on every callPrepare.
        data = {name: getattr(self, name) for name in _RATING_FIELDS}
        if not self.alias:
            del data["alias"]  # a hold of a call without an alias is stored as it always was
        data["price_per_minute"] = str(self.price_per_minute)
        data["connect_fee"] = str(self.connect_fee)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rating:
        fields_ = dict(data)
        # A hold prepared before connect_fee existed locked in the per-call switch_price
        # then charged; its finish keeps the terms it was prepared with.
        fee = fields_.pop("switch_price", None)
        fields_.setdefault("connect_fee", fee if fee is not None else "0")
        return cls(
            **{
                **fields_,
                "price_per_minute": Decimal(fields_["price_per_minute"]),
                "connect_fee": Decimal(fields_["connect_fee"]),
            }
        )

    @classmethod
    def for_internal(cls, destination: str) -> Rating:
        return cls(destination, None, INTERNAL, None, INTERNAL, "", None, ZERO, ZERO, 1, 0, internal=True)


_RATING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Rating))


# ---------------------------------------------------------------------------
# Snapshots (JSON in the cache) and the indexes decoded from them
# ---------------------------------------------------------------------------


def _entries_query(tariff_id: int) -> Select[Any]:
    return (
        select(tariff_entries, routes.c.route, routes.c.prefix, routes.c.enabled)
        .join(routes, routes.c.id == tariff_entries.c.route_id)
        .where(tariff_entries.c.tariff_id == tariff_id)
    )


def _entry_json(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "tariff_id": r.tariff_id, "direction_id": r.direction_id, "cost": str(r.cost),
        "priority": r.priority, "route_id": r.route_id, "route": r.route, "prefix": r.prefix,
        "enabled": bool(r.enabled),
    }  # fmt: skip


def _entry(e: dict[str, Any]) -> Entry:
    route = Route(int(e["route_id"]), e["route"], e["prefix"], bool(e["enabled"]))
    cost, priority = Decimal(e["cost"]), int(e["priority"])
    return Entry(int(e["id"]), int(e["tariff_id"]), int(e["direction_id"]), cost, priority, route)


def _by_slot(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda x: (x.priority, x.id))


def _decode_entries(data: list[dict[str, Any]]) -> list[Entry]:
    return _by_slot(_entry(e) for e in data)


def _encode_entries(entries: list[Entry]) -> list[dict[str, Any]]:
    return [
        {
            "id": e.id, "tariff_id": e.tariff_id, "direction_id": e.direction_id, "cost": str(e.cost),
            "priority": e.priority, "route_id": e.route.id, "route": e.route.route, "prefix": e.route.prefix,
            "enabled": e.route.enabled,
        }
        for e in entries
    ]  # fmt: skip


class TariffIndex:
    """A tariff, and (when it has at most INDEX_MAX entries) its entries grouped by
    direction, each group by (priority, id); a larger tariff's entries are cached per
    direction instead (`by_direction` None)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        t = data["tariff"]
        self.tariff = Tariff(
            int(t["id"]), t["name"], t["bill_type"], bool(t["is_option"]),
            Decimal(t.get("connect_fee", "0")), Decimal(t["multiplier"]),
        )  # fmt: skip
        self.by_direction: dict[int, list[Entry]] | None = None
        if data.get("entries") is not None:
            groups: dict[int, list[Entry]] = defaultdict(list)
            for e in data["entries"]:
                e.setdefault("tariff_id", self.tariff.id)
                entry = _entry(e)
                groups[entry.direction_id].append(entry)
            self.by_direction = {d: _by_slot(g) for d, g in groups.items()}

    def enabled_entries(self, direction_id: int) -> list[Entry]:
        assert self.by_direction is not None
        return [e for e in self.by_direction.get(direction_id, ()) if e.route.enabled]

    def to_json(self) -> dict[str, Any]:
        return self.data


@dataclass(frozen=True, slots=True)
class Catalog:
    """The small tables: bill types by name and currency courses by code."""

    bill_types: dict[str, BillType]
    eur_courses: dict[str, Decimal]

    def to_json(self) -> dict[str, Any]:
        return {
            "bill_types": [[b.name, b.free_threshold, b.step] for b in self.bill_types.values()],
            "currencies": {code: str(course) for code, course in self.eur_courses.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Catalog:
        return cls(
            {name: BillType(name, int(free), int(step)) for name, free, step in data["bill_types"]},
            {code: Decimal(course) for code, course in data["currencies"].items()},
        )


class RatingEngine:
    """Reads the rating catalog through the cache; decides no money."""

    def __init__(self, db: Database, cache: ReadThroughCache) -> None:
        self.db = db
        self.cache = cache
        # One loader per key at a time in this process: a burst of calls on a cold cache
        # loads a snapshot once instead of once per call.
        self._loading: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def _lookup(
        self,
        gens: Generations,
        key: str,
        load: Callable[[], Awaitable[Any]],
        decode: Callable[[Any], T],
        encode: Callable[[T], Any],
    ) -> T | None:
        if gens is None:  # cache backend down: straight to the database, nothing shared
            return await self.cache.lookup(gens, NS_RATING, key, load, decode=decode, encode=encode)
        async with self._loading[key]:
            return await self.cache.lookup(gens, NS_RATING, key, load, decode=decode, encode=encode)

    # -- directions ---------------------------------------------------------

    async def resolve_direction(self, gens: Generations, number: str) -> Direction | None:
        """The direction of `number` (digits) by the rule of billing_core.rating.directions
        (the lookup the API's resolveDirection makes too); None if there is none."""
        if gens is None:  # cache down, nothing is shared: load only the number's own prefixes
            return await resolve_number(self.db, self.cache, gens, number)
        async with self._loading[META_KEY]:
            meta = await direction_meta(self.db, self.cache, gens)
        if meta.small:
            async with self._loading[DIRECTIONS_KEY]:
                index = await direction_index(self.db, self.cache, gens)
            return index.resolve(number)
        return await resolve_by_prefixes(self.db, self.cache, gens, meta, number)

    # -- tariffs ------------------------------------------------------------

    async def _tariff_index(self, gens: Generations, tariff_id: int) -> TariffIndex | None:
        async def load() -> dict[str, Any] | None:
            count = select(func.count()).select_from(tariff_entries).where(tariff_entries.c.tariff_id == tariff_id)
            async with self.db.begin() as conn:
                t = (await conn.execute(select(tariffs).where(tariffs.c.id == tariff_id))).first()
                if t is None:
                    return None
                entries = None
                small = int((await conn.execute(count)).scalar_one()) <= direction_rules.INDEX_MAX
                if gens is not None and small:
                    entries = [_entry_json(r) for r in (await conn.execute(_entries_query(tariff_id))).all()]
            header = {
                "id": t.id, "name": t.name, "bill_type": t.bill_type, "is_option": bool(t.is_option),
                "connect_fee": str(t.connect_fee), "multiplier": str(t.multiplier),
            }  # fmt: skip
            return {"tariff": header, "entries": entries}

        return await self._lookup(gens, f"tariff:{tariff_id}", load, TariffIndex, TariffIndex.to_json)

    async def tariff(self, gens: Generations, tariff_id: int) -> Tariff | None:
        index = await self._tariff_index(gens, tariff_id)
        return None if index is None else index.tariff

    async def _entries(self, gens: Generations, index: TariffIndex, direction_id: int) -> list[Entry]:
        """The tariff's enabled entries for the direction, failover order."""
        if index.by_direction is not None:
            return index.enabled_entries(direction_id)
        tariff_id = index.tariff.id

        async def load() -> list[dict[str, Any]]:
            query = _entries_query(tariff_id).where(tariff_entries.c.direction_id == direction_id)
            async with self.db.begin() as conn:
                return [_entry_json(r) for r in (await conn.execute(query)).all()]

        # No per-key lock: these keys are as many as the directions called, and a cold
        # one costs one indexed query.
        key = f"entries:{tariff_id}:{direction_id}"
        found = await self.cache.lookup(gens, NS_RATING, key, load, decode=_decode_entries, encode=_encode_entries)
        return [] if found is None else [e for e in found if e.route.enabled]

    async def route_candidates(
        self, gens: Generations, tariff_id: int, option_ids: Sequence[int], direction_id: int
    ) -> list[Entry]:
        """The entries that may serve `direction_id`, failover order (priority, then id).

        Active options (tariffs with is_option, in ascending id) are consulted before the
        base tariff; the first one with at least one enabled entry for the direction
        supplies the whole list (override, not merge). Entries on disabled routes are left
        out, so they take no priority slot. Each entry's `tariff_id` names its supplier.
        """
        _, entries = await self._supplier(gens, tariff_id, option_ids, direction_id)
        return entries

    async def _supplier(
        self, gens: Generations, tariff_id: int, option_ids: Sequence[int], direction_id: int
    ) -> tuple[Tariff | None, list[Entry]]:
        for option_id in sorted(set(option_ids)):
            option = await self._tariff_index(gens, option_id)
            if option is None or not option.tariff.is_option:
                continue
            found = await self._entries(gens, option, direction_id)
            if found:
                return option.tariff, found
        base = await self._tariff_index(gens, tariff_id)
        return (None, []) if base is None else (base.tariff, await self._entries(gens, base, direction_id))

    # -- bill types and currencies -------------------------------------------

    async def _catalog(self, gens: Generations) -> Catalog:
        async def load() -> dict[str, Any]:
            async with self.db.begin() as conn:
                types = (await conn.execute(select(bill_types))).all()
                courses = (await conn.execute(select(currencies.c.currency, currencies.c.eur_course))).all()
            return {
                "bill_types": [[b.type, b.free_threshold, b.step] for b in types],
                "currencies": {c.currency: str(c.eur_course) for c in courses},
            }

        found = await self._lookup(gens, "catalog", load, Catalog.from_json, Catalog.to_json)
        return found if found is not None else Catalog({}, {})

    async def bill_type(self, gens: Generations, name: str) -> BillType | None:
        return (await self._catalog(gens)).bill_types.get(name)

    async def eur_course(self, gens: Generations, currency: str) -> Decimal | None:
        """Units of `currency` per 1 EUR, or None for an unknown currency."""
        return (await self._catalog(gens)).eur_courses.get(currency)

    # -- the decision -------------------------------------------------------

    async def rate(
        self, gens: Generations, *, tariff_id: int | None, option_ids: Sequence[int], number: str, prior: int
    ) -> Rating:
        """Rate `number` (digits, not a local extension) on the `prior`-th route candidate.

        Raises ApiError(E_UNROUTABLE) when there is no tariff, no direction, no candidate
        left at that priority, or the supplying tariff names an unknown bill type.
        """
        if tariff_id is None:
            raise ApiError(ErrorCode.E_UNROUTABLE, "no tariff")
        direction = await self.resolve_direction(gens, number)
        if direction is None:
            raise ApiError(ErrorCode.E_UNROUTABLE, "no direction for this number")
        supplier, candidates = await self._supplier(gens, tariff_id, option_ids, direction.id)
        if supplier is None or prior > len(candidates):
            raise ApiError(ErrorCode.E_UNROUTABLE, "no route left at this priority")
        entry = candidates[prior - 1]
        bill_type = await self.bill_type(gens, supplier.bill_type)
        if bill_type is None:
            log.error("rating.unknown_bill_type", tariff_id=supplier.id, bill_type=supplier.bill_type)
            raise ApiError(ErrorCode.E_UNROUTABLE, "tariff misconfigured")
        return Rating(
            destination=number,
            direction_id=direction.id,
            direction=direction.direction,
            route_id=entry.route.id,
            route=entry.route.route,
            prefix=entry.route.prefix,
            tariff_id=supplier.id,
            price_per_minute=entry.cost * supplier.multiplier,
            connect_fee=supplier.connect_fee,
            step=bill_type.step,
            free_threshold=bill_type.free_threshold,
        )
