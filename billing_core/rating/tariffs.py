"""Tariffs (and tariff options): addRates, getRatesList, getRatesInfo, and who may read which tariff.

A tariff carries `owner`, the username it was created for (the acting user; an
administrator calling with `username=` creates it for that user). Visibility is
billing_core.directory.ownership: resellers (22/25) and administrators list by owner
(`listing_owners`); ordinary users (< 22) may only read tariffs (getRatesList, getRates,
level 1): the public tariffs of their provider (their manager; the administrators when
the manager is one or when they have none) and the tariffs they are on (rates_id, their
extensions' sip_rates_id and active options). Every write here is reached through a
registry method declared `invalidates=(NS_RATING,)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.checks import decimal_arg, existing_row, missing, money_arg, required_arg, text_arg
from billing_core.db.engine import Database
from billing_core.directory.ownership import admin_usernames
from billing_core.errors import ApiError, ErrorCode
from billing_core.money import money_json, quantize_money
from billing_core.rating.tables import bill_types, tariffs
from billing_core.rating.tariff_access import may_read_tariff, tariff_list_filter
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

MULTIPLIER_QUANT = Decimal("0.000001")  # tariffs.multiplier is NUMERIC(12,6)
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class NewTariff:
    table: str
    name: str
    bill_type: str = "byminute"
    is_option: bool = False
    is_public: bool = False
    switch_price: Decimal = Decimal(0)
    connect_fee: Decimal = Decimal(0)  # callgate's own (docs/billing.md): EUR per billed call
    multiplier: Decimal = Decimal(1)
    did_multiplier: Decimal = Decimal(1)
    description: str = ""


async def add_tariff(db: Database, actor: UserRecord, new: NewTariff) -> int:
    """addRates: a tariff (or tariff option) owned by `actor`; names are unique per owner.

    `table` is the spec's "DB table name": kept as a label (entries live in one table
    here), so it only has to be an identifier.
    """
    required_arg(new.table, "table", _TABLE, "an identifier (letters, digits, '_'; not starting with a digit)")
    text_arg(new.name, "name", max_len=64, required=True)
    text_arg(new.description, "description", max_len=512, required=False, newlines=True)
    if not new.bill_type:
        raise missing("bill_type")
    switch_price = money_arg(new.switch_price, "switch_price")
    connect_fee = money_arg(new.connect_fee, "connect_fee")
    multiplier = decimal_arg(new.multiplier, "multiplier", quant=MULTIPLIER_QUANT, places=6)
    did_multiplier = decimal_arg(new.did_multiplier, "did_multiplier", quant=MULTIPLIER_QUANT, places=6)
    try:
        async with db.begin() as conn:
            known = select(bill_types.c.id).where(bill_types.c.type == new.bill_type)
            await existing_row(conn, known, f"no bill type {new.bill_type[:32]}")
            taken = (
                await conn.execute(
                    select(tariffs.c.id).where(tariffs.c.owner == actor.username, tariffs.c.name == new.name)
                )
            ).first()
            if taken is not None:
                raise ApiError(ErrorCode.E_DATA_ABORT, "you already have a tariff with this name")
            result = await conn.execute(
                tariffs.insert().values(
                    table_name=new.table,
                    name=new.name,
                    bill_type=new.bill_type,
                    is_option=new.is_option,
                    is_public=new.is_public,
                    switch_price=switch_price,
                    connect_fee=connect_fee,
                    multiplier=multiplier,
                    did_multiplier=did_multiplier,
                    description=new.description,
                    owner=actor.username,
                )
            )
    except IntegrityError as exc:
        raise ApiError(ErrorCode.E_DATA_ABORT, "you already have a tariff with this name") from exc
    pk = result.inserted_primary_key
    assert pk is not None
    log.info("tariff.added", tariff_id=int(pk[0]), is_option=new.is_option, owner=actor.username)
    return int(pk[0])


def _tariff_json(row: Any, eur_course: Decimal) -> dict[str, Any]:
    switch_price = quantize_money(Decimal(row.switch_price))
    return {
        "bill_type": row.bill_type,
        "id": row.id,
        "is_public": bool(row.is_public),
        "table name": row.table_name,  # sic: the spec's key has a blank
        "owner": row.owner,
        "display_switch_price": money_json(switch_price * eur_course),
        "name": row.name,
        "switch_price": money_json(switch_price),
        "did_multiplier": Decimal(row.did_multiplier).quantize(MULTIPLIER_QUANT),
        "is_option": bool(row.is_option),
        "multiplier": Decimal(row.multiplier).quantize(MULTIPLIER_QUANT),
        "description": row.description,
        "connect_fee": money_json(Decimal(row.connect_fee)),  # callgate's own, beyond the spec
    }


async def list_tariffs(
    db: Database,
    actor: UserRecord,
    *,
    eur_course: Decimal,
    include_managed: bool = False,
    public_only: bool = False,
    is_option: bool | None = None,
) -> list[dict[str, Any]]:
    """getRatesList: tariffs `actor` may see, by id; display_switch_price at `eur_course`."""
    query = select(tariffs).order_by(tariffs.c.id)
    if public_only:
        query = query.where(tariffs.c.is_public.is_(True))
    if is_option is not None:
        query = query.where(tariffs.c.is_option.is_(is_option))
    async with db.begin() as conn:
        visible = await tariff_list_filter(conn, actor, include_managed)
        if visible is not None:
            query = query.where(visible)
        rows = (await conn.execute(query)).all()
    return [_tariff_json(row, eur_course) for row in rows]


async def readable_tariff(db: Database, actor: UserRecord, tariff_id: int) -> None:
    """E_NOT_EXIST / E_DOES_NOT_BELONG_TO_YOU unless `actor` may read the tariff (getRates)."""
    async with db.begin() as conn:
        row = await existing_row(conn, select(tariffs).where(tariffs.c.id == tariff_id), f"no tariff {tariff_id}")
        if not await may_read_tariff(conn, actor, row):
            raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, f"tariff {tariff_id} is not offered to you")


async def visible_tariff(
    conn: AsyncConnection, caller: UserRecord, tariff_id: int, *, option: bool | None = None
) -> Any:
    """A tariff row the caller may put itself or its users on (updateUser's `rates`,
    updateExtension's `sip_rates_id`, switchRates): one it may read
    (tariff_access.may_read_tariff, as getRates). Unlike `readable_tariff`, a tariff it may
    not read is E_NOT_EXIST too, so its existence is not revealed.

    `option` True/False also requires it to be (or not be) a tariff option.
    """
    row = (await conn.execute(select(tariffs).where(tariffs.c.id == tariff_id))).first()
    if row is None or not await may_read_tariff(conn, caller, row):
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such tariff")
    if option is not None and bool(row.is_option) != option:
        kind = "a tariff option" if option else "a tariff (not an option)"
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"tariff {tariff_id} is not {kind}")
    return row


async def public_price_list(db: Database) -> int | None:
    """The tariff an anonymous getCurrentRates shows: the administrators' first public tariff."""
    async with db.begin() as conn:
        admins = await admin_usernames(conn)
        found = (
            await conn.execute(
                select(tariffs.c.id)
                .where(
                    tariffs.c.is_public.is_(True),
                    tariffs.c.is_option.is_(False),
                    tariffs.c.owner.in_(sorted(admins)),
                )
                .order_by(tariffs.c.id)
                .limit(1)
            )
        ).scalar()
    return None if found is None else int(found)


async def tariff_info(db: Database, actor: UserRecord, tariff_id: int, *, eur_course: Decimal) -> dict[str, Any]:
    """getRatesInfo: one tariff as getRatesList shows it, if `actor` may read it (the rule of
    getRates: tariff_access.may_read_tariff); display_switch_price at `eur_course`."""
    async with db.begin() as conn:
        row = await existing_row(conn, select(tariffs).where(tariffs.c.id == tariff_id), f"no tariff {tariff_id}")
        if not await may_read_tariff(conn, actor, row):
            raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, f"tariff {tariff_id} is not offered to you")
    return _tariff_json(row, eur_course)
