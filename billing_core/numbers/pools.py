"""DID pools (addDIDPool, updateDIDPool, getDIDPools, getDIDPoolInfo, deleteDIDPool) and
the shop window over them (getDIDPool), with the buyer's price.

A pool's `cost` (a month's rent) and `installcost` are in the system currency, before the
buyer's tariff: what a user pays is the pool's price × the `did_multiplier` of its default
tariff (users.rates_id; 1 without one), rounded to the ledger's 4 decimals. Provider
credentials (user, pass, param1–3) are kept encrypted with the secret box and answered
masked ("********" when set, "" when not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.auth.secrets_store import SecretBox
from billing_core.checks import check_length, invalid
from billing_core.clock import utcnow
from billing_core.directory.tables import users
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.currency import Currency, currency_or_system
from billing_core.money import ZERO, money_json, quantize_money
from billing_core.numbers.providers import Offer, PoolView, provider_for
from billing_core.numbers.tables import did_pools
from billing_core.rating.tables import tariffs
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

Generations = dict[str, int] | None
MASK = "********"
SECRET_FIELDS = {"user": "user_enc", "pass": "pass_enc", "param1": "param1_enc", "param2": "param2_enc",
                 "param3": "param3_enc"}  # fmt: skip
TEXT_FIELDS = {"country": 64, "area": 64, "provider": 32}
MAX_QTY = 1000


@dataclass(frozen=True, slots=True)
class Price:
    rent: Decimal  # a month, system currency
    install: Decimal

    @property
    def first_order(self) -> Decimal:
        return self.install + self.rent


async def did_multiplier(conn: AsyncConnection, user: UserRecord) -> Decimal:
    """The did_multiplier of the user's default tariff, read in the transaction; 1 without one."""
    found = (
        await conn.execute(
            select(tariffs.c.did_multiplier)
            .select_from(users.join(tariffs, tariffs.c.id == users.c.rates_id))
            .where(users.c.id == user.id)
        )
    ).scalar()
    return Decimal(1) if found is None else Decimal(found)


def price_for(pool: Any, multiplier: Decimal) -> Price:
    return Price(
        rent=quantize_money(Decimal(pool.cost) * multiplier),
        install=quantize_money(Decimal(pool.installcost) * multiplier),
    )


async def pool_row(conn: AsyncConnection, pool_id: int) -> Any:
    row = (
        await conn.execute(select(did_pools).where(did_pools.c.id == pool_id, did_pools.c.deleted_at.is_(None)))
    ).first()
    if row is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such DID pool")
    return row


def pool_view(box: SecretBox, row: Any) -> PoolView:
    clear = {name: box.decrypt(getattr(row, column)) for name, column in SECRET_FIELDS.items()}
    return PoolView(
        id=row.id, country=row.country, area=row.area, provider=row.provider, user=clear["user"],
        password=clear["pass"], params=(clear["param1"], clear["param2"], clear["param3"]), qty=row.qty,
    )  # fmt: skip


def _check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name in TEXT_FIELDS:
            value = value.strip()
            if not value:
                raise invalid(f"{name} must not be empty")
            check_length(name, value, TEXT_FIELDS[name])
        elif name in ("cost", "installcost"):
            if value < ZERO:
                raise invalid(f"{name} must not be negative")
            value = quantize_money(value)
        elif name == "qty":
            if not 1 <= value <= MAX_QTY:
                raise invalid(f"qty must be 1 to {MAX_QTY}")
        elif name in SECRET_FIELDS:
            check_length(name, value, 256)
        values[name] = value
    return values


def _stored(box: SecretBox, values: Mapping[str, Any]) -> dict[str, Any]:
    stored = {}
    for name, value in values.items():
        if name in SECRET_FIELDS:
            stored[SECRET_FIELDS[name]] = box.encrypt(value) if value else ""
        else:
            stored[name] = value
    return stored


async def add_pool(services: LedgerContext, actor: UserRecord, fields: Mapping[str, Any]) -> int:
    values = _check_fields(fields)
    async with services.db.begin() as conn:
        result = await conn.execute(
            did_pools.insert().values(created_at=utcnow(), **_stored(services.box, values)).returning(did_pools.c.id)
        )
        pool_id = int(result.scalar_one())
    log.info("dids.pool_added", pool=pool_id, provider=values.get("provider", "local"), by=actor.username)
    return pool_id


async def update_pool(services: LedgerContext, actor: UserRecord, pool_id: int, fields: Mapping[str, Any]) -> None:
    if not fields:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "nothing to update")
    values = _check_fields(fields)
    async with services.db.begin() as conn:
        await pool_row(conn, pool_id)
        await conn.execute(update(did_pools).where(did_pools.c.id == pool_id).values(**_stored(services.box, values)))
    log.info("dids.pool_updated", pool=pool_id, fields=sorted(values), by=actor.username)


async def delete_pool(services: LedgerContext, actor: UserRecord, pool_id: int) -> None:
    """Soft: the pool leaves the lists and the shop; numbers rented from it keep renewing."""
    async with services.db.begin() as conn:
        await pool_row(conn, pool_id)
        await conn.execute(update(did_pools).where(did_pools.c.id == pool_id).values(deleted_at=utcnow()))
    log.info("dids.pool_deleted", pool=pool_id, by=actor.username)


def pool_json(row: Any, cur: Currency) -> dict[str, Any]:
    cost, install = Decimal(row.cost), Decimal(row.installcost)
    masked = {name: MASK if getattr(row, column) else "" for name, column in SECRET_FIELDS.items()}
    return {
        "id": row.id,
        "country": row.country,
        "area": row.area,
        "cost": money_json(cost),
        "installcost": money_json(install),
        "displayinstallcost": money_json(cur.to_display(install)),
        "displaycost": money_json(cur.to_display(cost)),
        "quantity": row.qty,
        "provider": row.provider,
        "username": masked["user"],
        "password": masked["pass"],
        "param1": masked["param1"],
        "param2": masked["param2"],
        "param3": masked["param3"],
    }


async def list_pools(services: LedgerContext, gens: Generations, requester: UserRecord) -> list[dict[str, Any]]:
    cur = await currency_or_system(services, gens, requester.currency)
    async with services.db.begin() as conn:
        rows = (
            await conn.execute(select(did_pools).where(did_pools.c.deleted_at.is_(None)).order_by(did_pools.c.id))
        ).all()
    return [pool_json(row, cur) for row in rows]


async def pool_info(services: LedgerContext, gens: Generations, requester: UserRecord, pool_id: int) -> dict[str, Any]:
    cur = await currency_or_system(services, gens, requester.currency)
    async with services.db.begin() as conn:
        row = await pool_row(conn, pool_id)
    return pool_json(row, cur)


async def browse(
    services: LedgerContext,
    gens: Generations,
    buyer: UserRecord,
    *,
    country: str | None,
    area: str | None,
    pattern: str,
) -> list[dict[str, Any]]:
    """getDIDPool: no filter → the countries; a country → its areas; country and area →
    the numbers each of their pools' providers offers (at most the pool's qty each), priced
    for the buyer. A provider that cannot be asked shows no numbers (logged)."""
    live = did_pools.c.deleted_at.is_(None)
    async with services.db.begin() as conn:
        if not country:
            names = (await conn.execute(select(did_pools.c.country).where(live).distinct())).scalars()
            return [{"country": name} for name in sorted(names)]
        if not area:
            names = (
                await conn.execute(select(did_pools.c.area).where(live, did_pools.c.country == country).distinct())
            ).scalars()
            return [{"area": name} for name in sorted(names)]
        pools = (
            await conn.execute(
                select(did_pools).where(live, did_pools.c.country == country, did_pools.c.area == area)
                .order_by(did_pools.c.id)
            )
        ).all()  # fmt: skip
        multiplier = await did_multiplier(conn, buyer)
    cur = await currency_or_system(services, gens, buyer.currency)
    offers: list[dict[str, Any]] = []
    for pool in pools:
        try:
            found = await provider_for(services.db, pool.provider).available(
                pool_view(services.box, pool), pattern, pool.qty
            )
        except Exception as exc:  # one failing provider must not hide the others
            log.warning("dids.provider_list_failed", pool=pool.id, provider=pool.provider, error=type(exc).__name__)
            continue
        price = price_for(pool, multiplier)
        offers.extend(_offer_json(pool, offer, price, cur) for offer in found)
    return offers


def _offer_json(pool: Any, offer: Offer, price: Price, cur: Currency) -> dict[str, Any]:
    return {
        "displaycost": money_json(cur.to_display(price.rent)),
        "displayinstallcost": money_json(cur.to_display(price.install)),
        "cost": money_json(price.rent),
        "installcost": money_json(price.install),
        "country": pool.country,
        "area": pool.area,
        "voice_support": int(offer.voice_support),
        "sms_support": int(offer.sms_support),
        "did": offer.did,
        "pool_id": pool.id,
        "arg1": offer.args[0],
        "arg2": offer.args[1],
        "arg3": offer.args[2],
    }
