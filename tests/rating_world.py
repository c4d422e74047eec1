"""Test data for rating and call control, written straight to the database.

`RatingWorld` inserts directions, routes, bill types, tariffs and entries, options and
currencies, and invalidates the cache after every write as a registry write would.
`prepare` / `finish` call callPrepare / callFinish through the dispatcher with a server key.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update

from billing_core.api.dispatch import Credentials, Dispatcher, Outcome
from billing_core.cache.keys import NAMESPACES
from billing_core.catalog.registry import TextAnswer
from billing_core.container import Services
from billing_core.directory.tables import extension_options, sip_extensions
from billing_core.ledger.tables import cdrs, reservations, transactions
from billing_core.rating.tables import bill_types, currencies, directions, routes, tariff_entries, tariffs
from tests.factories import SETUP_TIMEOUT_S, make_key


class RatingWorld:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def _insert(self, statement: Any) -> int:
        async with self.services.db.begin(timeout_s=SETUP_TIMEOUT_S) as conn:
            result = await conn.execute(statement)
            key = result.inserted_primary_key
        await self.services.cache.invalidate(*NAMESPACES)
        return int(key[0]) if key and key[0] is not None else 0

    async def _write(self, statement: Any) -> None:
        async with self.services.db.begin(timeout_s=SETUP_TIMEOUT_S) as conn:
            await conn.execute(statement)
        await self.services.cache.invalidate(*NAMESPACES)

    async def direction(self, code: str, name: str, *, min_len: int = 1, max_len: int = 32) -> int:
        return await self._insert(
            directions.insert().values(code=code, direction=name, min_len=min_len, max_len=max_len)
        )

    async def route(self, name: str, *, prefix: str = "", enabled: bool = True) -> int:
        return await self._insert(routes.insert().values(route=name, prefix=prefix, enabled=enabled, owner="admin"))

    async def set_route_enabled(self, route_id: int, enabled: bool) -> None:
        await self._write(update(routes).where(routes.c.id == route_id).values(enabled=enabled))

    async def bill_type(self, name: str, *, free_threshold: int, step: int) -> str:
        await self._insert(bill_types.insert().values(type=name, free_threshold=free_threshold, step=step))
        return name

    async def tariff(
        self,
        name: str,
        *,
        bill_type: str = "byminute",
        switch_price: str = "0",
        connect_fee: str = "0",
        multiplier: str = "1",
        is_option: bool = False,
    ) -> int:
        return await self._insert(
            tariffs.insert().values(
                table_name=name,
                name=name,
                bill_type=bill_type,
                switch_price=Decimal(switch_price),
                connect_fee=Decimal(connect_fee),
                multiplier=Decimal(multiplier),
                is_option=is_option,
                owner="admin",
            )
        )

    async def entry(self, tariff_id: int, direction_id: int, cost: str, route_id: int, *, priority: int = 1) -> int:
        return await self._insert(
            tariff_entries.insert().values(
                tariff_id=tariff_id, direction_id=direction_id, cost=Decimal(cost), route_id=route_id, priority=priority
            )
        )

    async def set_entry_cost(self, entry_id: int, cost: str) -> None:
        await self._write(update(tariff_entries).where(tariff_entries.c.id == entry_id).values(cost=Decimal(cost)))

    async def option(self, sip_extension: str, tariff_id: int) -> None:
        async with self.services.db.begin(timeout_s=SETUP_TIMEOUT_S) as conn:
            ext_id = (
                await conn.execute(select(sip_extensions.c.id).where(sip_extensions.c.sip_extension == sip_extension))
            ).scalar_one()
        await self._insert(extension_options.insert().values(extension_id=ext_id, tariff_id=tariff_id))

    async def currency(self, code: str, eur_course: str) -> None:
        await self._write(currencies.insert().values(currency=code, eur_course=Decimal(eur_course), displayname=code))

    async def set_pitch(self, sip_extension: str, pitch: int) -> None:
        await self._write(
            update(sip_extensions).where(sip_extensions.c.sip_extension == sip_extension).values(sip_pitch_shift=pitch)
        )


# -- reading the ledger back ---------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    reservations: list[Any]
    cdrs: list[Any]
    transactions: list[Any]


async def ledger_of(services: Services, account_id: int) -> Ledger:
    async with services.db.begin(timeout_s=SETUP_TIMEOUT_S) as conn:
        res = (
            await conn.execute(
                select(reservations).where(reservations.c.account_id == account_id).order_by(reservations.c.id)
            )
        ).all()
        calls = (await conn.execute(select(cdrs).where(cdrs.c.account_id == account_id).order_by(cdrs.c.id))).all()
        moves = (
            await conn.execute(
                select(transactions)
                .where(transactions.c.account_id == account_id, transactions.c.kind == "call")
                .order_by(transactions.c.id)
            )
        ).all()
    return Ledger(list(res), list(calls), list(moves))


async def sum_of_call_transactions(services: Services, account_id: int) -> Decimal:
    async with services.db.begin(timeout_s=SETUP_TIMEOUT_S) as conn:
        total = (
            await conn.execute(
                select(func.coalesce(func.sum(transactions.c.amount), 0)).where(
                    transactions.c.account_id == account_id, transactions.c.kind == "call"
                )
            )
        ).scalar_one()
    return Decimal(total)


# -- calling ---------------------------------------------------------------


async def server_key(services: Services, *, auth_by: str = "username") -> str:
    return await make_key(services, level=50, auth_by=auth_by, name=f"asterisk-{auth_by}")


def credentials(key: str, call_uid: str | None) -> Credentials:
    return Credentials(peer_ip="127.0.0.1", transport="test", apikey=key, call_uid=call_uid)


async def prepare(
    dispatcher: Dispatcher, key: str, login: str, destination: str, *, call_uid: str | None = None, **args: str
) -> Outcome:
    return await dispatcher.call(
        "callPrepare", {"login": login, "destination": destination, **args}, credentials(key, call_uid)
    )


async def finish(
    dispatcher: Dispatcher,
    key: str,
    login: str,
    destination: str,
    *,
    length: str = "0",
    status: str = "ANSWER",
    call_uid: str | None = None,
    **args: str,
) -> Outcome:
    raw = {"login": login, "destination": destination, "length": length, "status": status, **args}
    return await dispatcher.call("callFinish", raw, credentials(key, call_uid))


def text_of(outcome: Outcome) -> TextAnswer:
    """The TextAnswer of a successful outcome (fails the test with the error otherwise)."""
    assert outcome.error is None, f"unexpected error {outcome.error.code.value}: {outcome.error.detail}"
    assert isinstance(outcome.value, TextAnswer)
    return outcome.value


# -- a ready-made catalog ---------------------------------------------------------


@dataclass(frozen=True)
class Standard:
    """Russia (7…, 11 digits) with mobile sub-directions, the UK with London, three routes
    (route1-cli, a disabled one, route2) and a byminute tariff `base` at 0.10/0.15 EUR."""

    world: RatingWorld
    key: str
    base: int
    russia: int
    mobile: int
    tele2: int
    uk: int
    london: int
    route1: int
    dead: int
    route2: int
    mobile_entry: int


async def standard_world(services: Services) -> Standard:
    w = RatingWorld(services)
    russia = await w.direction("7", "Russia", min_len=11, max_len=11)
    mobile = await w.direction("79", "Russia Mobile", min_len=11, max_len=11)
    tele2 = await w.direction("7901", "RussiaMobile-Tele2", min_len=11, max_len=11)
    uk = await w.direction("44", "United Kingdom", min_len=10, max_len=12)
    london = await w.direction("4420", "UK London", min_len=12, max_len=12)
    route1 = await w.route("route1-cli", prefix="outline/")
    dead = await w.route("dead-route", prefix="dead/", enabled=False)
    route2 = await w.route("route2", prefix="backup/")
    base = await w.tariff("base")
    mobile_entry = await w.entry(base, mobile, "0.10", route1, priority=1)
    await w.entry(base, mobile, "0.01", dead, priority=2)
    await w.entry(base, mobile, "0.15", route2, priority=3)
    for direction in (russia, tele2, uk, london):
        await w.entry(base, direction, "0.10", route1)
    return Standard(
        w, await server_key(services), base, russia, mobile, tele2, uk, london, route1, dead, route2, mobile_entry
    )
