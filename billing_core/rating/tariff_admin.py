"""Changing and removing tariffs: updateRates, deleteRates.

The actor must be allowed to change the tariff (ownership.changeable_row: its own, a
reseller's managed users', an administrator's every tariff). A tariff is "in use" while a
user is on it (users.rates_id), a SIP account is on it (sip_extensions.sip_rates_id) or
has it as an active option (extension_options): such a tariff is never deleted, and it
cannot change between tariff and option under its subscribers (E_DATA_ABORT). Every write
here is reached through a registry method declared `invalidates=(NS_RATING,)`, so the next
callPrepare rates with what was written.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.checks import decimal_arg, existing_row, money_arg, text_arg
from billing_core.db.engine import Database
from billing_core.directory.ownership import changeable_row
from billing_core.directory.tables import extension_options, sip_extensions, users
from billing_core.errors import ApiError, ErrorCode
from billing_core.rating.tables import bill_types, tariff_entries, tariffs
from billing_core.rating.tariffs import MULTIPLIER_QUANT
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TariffUse:
    """Who is on a tariff: users (rates_id), SIP accounts (sip_rates_id), active options."""

    users: int
    extensions: int
    options: int

    @property
    def as_tariff(self) -> int:
        return self.users + self.extensions

    def describe(self) -> str:
        return f"{self.users} user(s), {self.extensions} SIP account(s), {self.options} active option(s)"


async def tariff_use(conn: AsyncConnection, tariff_id: int) -> TariffUse:
    async def count(query: Any) -> int:
        return int((await conn.execute(query)).scalar() or 0)

    return TariffUse(
        users=await count(select(func.count()).select_from(users).where(users.c.rates_id == tariff_id)),
        extensions=await count(
            select(func.count()).select_from(sip_extensions).where(sip_extensions.c.sip_rates_id == tariff_id)
        ),
        options=await count(
            select(func.count()).select_from(extension_options).where(extension_options.c.tariff_id == tariff_id)
        ),
    )


@dataclass(frozen=True, slots=True)
class TariffChanges:
    """updateRates' fields; None leaves a field as it is."""

    name: str | None = None
    bill_type: str | None = None
    is_option: bool | None = None
    is_public: bool | None = None
    switch_price: Decimal | None = None
    connect_fee: Decimal | None = None  # callgate's own, as addRates has it
    multiplier: Decimal | None = None
    did_multiplier: Decimal | None = None
    description: str | None = None

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def _checked(changes: TariffChanges) -> dict[str, Any]:
    """The columns to write, each checked by addRates' rules."""
    values = changes.given()
    if not values:
        raise ApiError(
            ErrorCode.E_MISSING_ARGUMENT,
            "nothing to change: give name, bill_type, is_option, is_public, switch_price, multiplier, "
            "did_multiplier and/or description",
        )
    if "name" in values:
        text_arg(values["name"], "name", max_len=64, required=True)
    if "description" in values:
        text_arg(values["description"], "description", max_len=512, required=False, newlines=True)
    if "bill_type" in values and not values["bill_type"]:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "missing argument: bill_type")
    for money in ("switch_price", "connect_fee"):
        if money in values:
            values[money] = money_arg(values[money], money)
    for factor in ("multiplier", "did_multiplier"):
        if factor in values:
            values[factor] = decimal_arg(values[factor], factor, quant=MULTIPLIER_QUANT, places=6)
    return values


async def update_tariff(db: Database, actor: UserRecord, tariff_id: int, changes: TariffChanges) -> None:
    """updateRates: the given fields of the tariff, its multiplier among them (what every
    entry's cost is multiplied by when a call is rated; updateMarkup rewrites the costs)."""
    values = _checked(changes)
    try:
        async with db.begin() as conn:
            row = await changeable_row(conn, actor, tariffs, tariff_id, "tariff")
            if "bill_type" in values:
                known = select(bill_types.c.id).where(bill_types.c.type == values["bill_type"])
                await existing_row(conn, known, f"no bill type {values['bill_type'][:32]}")
            if "name" in values and values["name"] != row.name:
                taken = select(tariffs.c.id).where(
                    tariffs.c.owner == row.owner, tariffs.c.name == values["name"], tariffs.c.id != tariff_id
                )
                if (await conn.execute(taken)).first() is not None:
                    raise ApiError(ErrorCode.E_DATA_ABORT, f"{row.owner} already has a tariff with this name")
            if "is_option" in values and values["is_option"] != bool(row.is_option):
                use = await tariff_use(conn, tariff_id)
                if use.as_tariff if values["is_option"] else use.options:
                    role = "a tariff option" if values["is_option"] else "a tariff"
                    raise ApiError(
                        ErrorCode.E_DATA_ABORT,
                        f"tariff {tariff_id} cannot become {role} while in use ({use.describe()})",
                    )
            await conn.execute(update(tariffs).where(tariffs.c.id == tariff_id).values(**values))
    except IntegrityError as exc:  # a concurrent write took the name
        raise ApiError(ErrorCode.E_DATA_ABORT, "the owner already has a tariff with this name") from exc
    log.info("tariff.updated", tariff_id=tariff_id, fields=sorted(values), by=actor.username)


async def delete_tariff(db: Database, actor: UserRecord, tariff_id: int) -> None:
    """deleteRates: remove a tariff (or option) nobody is on, with its entries. One in use
    is refused (E_DATA_ABORT, saying by how many): move its users first. Calls already
    rated on it keep their rating (the hold carries it); CDRs and transactions copy what
    they need (prices, names), so the books do not need the tariff row."""
    async with db.begin() as conn:
        await changeable_row(conn, actor, tariffs, tariff_id, "tariff")
        use = await tariff_use(conn, tariff_id)
        if use.as_tariff or use.options:
            raise ApiError(ErrorCode.E_DATA_ABORT, f"tariff {tariff_id} is in use ({use.describe()})")
        removed = (await conn.execute(delete(tariff_entries).where(tariff_entries.c.tariff_id == tariff_id))).rowcount
        await conn.execute(delete(tariffs).where(tariffs.c.id == tariff_id))
    log.info("tariff.deleted", tariff_id=tariff_id, entries=removed, by=actor.username)
