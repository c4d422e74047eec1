"""A tariff's prices as getRates and getCurrentRates show them: read through the cache
(NS_RATING, under an "api:" key, clear of the rating engine's own snapshots)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from billing_core.cache.keys import NS_RATING
from billing_core.money import money_json, quantize_money
from billing_core.rating.tables import directions, routes, tariff_entries, tariffs

if TYPE_CHECKING:
    from billing_core.rating.context import RatingContext

Generations = dict[str, int] | None


@dataclass(frozen=True, slots=True)
class PricedEntry:
    direction_id: int
    code: str
    direction: str
    route_id: int
    routename: str
    route_enabled: bool
    priority: int
    cost: Decimal  # per minute, EUR, as set by addDirection/updateDirection


@dataclass(frozen=True, slots=True)
class TariffPrices:
    """One tariff's entries with direction and route names (what the cache keeps)."""

    tariff_id: int
    multiplier: Decimal
    entries: tuple[PricedEntry, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "tariff_id": self.tariff_id,
            "multiplier": str(self.multiplier),
            "entries": [
                [e.direction_id, e.code, e.direction, e.route_id, e.routename, e.route_enabled, e.priority, str(e.cost)]
                for e in self.entries
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TariffPrices:
        return cls(
            tariff_id=int(data["tariff_id"]),
            multiplier=Decimal(data["multiplier"]),
            entries=tuple(
                PricedEntry(int(d), str(c), str(n), int(r), str(rn), bool(en), int(p), Decimal(cost))
                for d, c, n, r, rn, en, p, cost in data["entries"]
            ),
        )


async def tariff_prices(services: RatingContext, gens: Generations, tariff_id: int) -> TariffPrices | None:
    """A tariff's priced entries, read through the cache; None when the tariff does not exist."""

    async def load() -> dict[str, Any] | None:
        query = (
            select(
                tariff_entries.c.direction_id,
                directions.c.code,
                directions.c.direction,
                tariff_entries.c.route_id,
                routes.c.route,
                routes.c.enabled,
                tariff_entries.c.priority,
                tariff_entries.c.cost,
            )
            .join(directions, directions.c.id == tariff_entries.c.direction_id)
            .join(routes, routes.c.id == tariff_entries.c.route_id)
            .where(tariff_entries.c.tariff_id == tariff_id)
        )
        async with services.db.begin() as conn:
            multiplier = (await conn.execute(select(tariffs.c.multiplier).where(tariffs.c.id == tariff_id))).scalar()
            if multiplier is None:
                return None
            rows = (await conn.execute(query)).all()
        entries = tuple(
            PricedEntry(
                r.direction_id, r.code, r.direction, r.route_id, r.route, bool(r.enabled), int(r.priority),
                quantize_money(Decimal(r.cost)),
            )
            for r in rows
        )  # fmt: skip
        return TariffPrices(tariff_id, Decimal(multiplier), entries).to_json()

    return await services.cache.lookup(
        gens, NS_RATING, f"api:prices:{tariff_id}", load, decode=TariffPrices.from_json, encode=TariffPrices.to_json
    )


def render_prices(prices: TariffPrices, eur_course: Decimal, *, serviced_only: bool = False) -> list[dict[str, Any]]:
    """The answer of getRates/getCurrentRates: one object per direction, by code.

    The spec's example (`{"direction ID": "direction name", "routing": [...]}`) cannot hold
    more than one direction per object, so each direction is its own object: the spec's
    key first (`"2": "Germany Mobile"`, the direction's id as a string), then
    `"id": direction ID, "code": prefix, "direction": name, "routing": [...]`, so a client
    reading either shape finds its fields. `routing` lists its entries by priority, each
    `{"routename", "route" (route ID), "displaycost", "priority", "cost"}`.
    `cost` is the entry's price per minute in EUR as set by addDirection; `displaycost`
    is what a minute is charged (cost × the tariff's multiplier, as the rating engine
    charges) in the requested currency, rounded half-up to 0.0001; both written as every
    answer writes money (money_json).
    `serviced_only` leaves out entries on disabled routes (they serve no call).
    """
    grouped: dict[int, list[PricedEntry]] = defaultdict(list)
    for entry in prices.entries:
        if serviced_only and not entry.route_enabled:
            continue
        grouped[entry.direction_id].append(entry)
    answer: list[dict[str, Any]] = []
    for group in sorted(grouped.values(), key=lambda g: (g[0].code, g[0].direction_id)):
        first = group[0]
        answer.append(
            {
                str(first.direction_id): first.direction,  # the spec's "direction ID": "direction name"
                "id": first.direction_id,
                "code": first.code,
                "direction": first.direction,
                "routing": [
                    {
                        "routename": e.routename,
                        "route": e.route_id,
                        "displaycost": money_json(e.cost * prices.multiplier * eur_course),
                        "priority": e.priority,
                        "cost": money_json(e.cost),
                    }
                    for e in sorted(group, key=lambda e: e.priority)
                ],
            }
        )
    return answer
