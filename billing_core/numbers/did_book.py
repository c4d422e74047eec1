"""The direct numbers as their owners and managers see and change them: getDIDList,
getDIDInfo, updateDID, deleteDID, updateDIDState, getDisaDIDList, getDIDCount.

A deleted number (deleteDID, or released after the grace) keeps its row, hidden from
every read (deleted_at); the books (did_periods, transactions) keep naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.checks import check_length, invalid
from billing_core.clock import utcnow, wire_time
from billing_core.directory.ownership import managed_usernames, reaches_in
from billing_core.directory.tables import users
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.currency import Currency, currency_or_system
from billing_core.money import ZERO, money_json, quantize_money
from billing_core.numbers.dids import normalize_did, parse_expiration
from billing_core.numbers.renewals import give_back
from billing_core.numbers.tables import did_pools, did_rules, dids
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

Generations = dict[str, int] | None
LIVE = dids.c.deleted_at.is_(None)
SORTS = {"expiration": dids.c.expiration, "cost": dids.c.cost, "did": dids.c.did}
DISA_ACTION = "disa"
DELETED = "deleted"


def did_json(row: Any, cur: Currency) -> dict[str, Any]:
    """getDIDList's and getDIDInfo's object (also getInfo's did_numbers, with the id)."""
    cost = Decimal(row.cost)
    return {
        "displaycost": money_json(cur.to_display(cost)),
        "pool": row.pool_id,
        "renew_notify": int(bool(row.renew_notify)),
        "expiration": wire_time(row.expiration),
        "enabled": int(bool(row.enabled)),
        "did": row.did,
        "auto_renew": int(bool(row.auto_renew)),
        "comment": row.comment,
        "owner": row.owner,
        "cost": money_json(cost),
    }


async def _managed_row(conn: AsyncConnection, actor: UserRecord, did: str, *, lock: bool = False) -> Any:
    query = select(dids).where(dids.c.did == normalize_did(did), LIVE)
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    if row is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such DID")
    if not await reaches_in(conn, actor, row.owner):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "the DID belongs to another user")
    return row


async def list_dids(
    services: LedgerContext, gens: Generations, actor: UserRecord, *, sort_by: str, own: bool
) -> list[dict[str, Any]]:
    """own=true: the actor's numbers; own=false: those of every user it manages too
    (an administrator: everybody's)."""
    cur = await currency_or_system(services, gens, actor.currency)
    order = (SORTS[sort_by].is_(None), SORTS[sort_by], dids.c.did)  # no expiration last
    async with services.db.begin() as conn:
        query = select(dids).where(LIVE)
        if own:
            query = query.where(dids.c.owner == actor.username)
        elif actor.accesslevel < 33:
            query = query.where(dids.c.owner.in_(sorted(await managed_usernames(conn, actor.username))))
        rows = (await conn.execute(query.order_by(*order))).all()
    return [did_json(row, cur) for row in rows]


async def did_info(services: LedgerContext, gens: Generations, actor: UserRecord, did: str) -> dict[str, Any]:
    cur = await currency_or_system(services, gens, actor.currency)
    async with services.db.begin() as conn:
        row = await _managed_row(conn, actor, did)
    return did_json(row, cur)


async def update_did(services: LedgerContext, gens: Generations, actor: UserRecord, did: str,
                     changes: Mapping[str, Any]) -> None:  # fmt: skip
    """updateDID: owner (a user the actor manages), comment, cost (a month, system
    currency), expiration ('' for none)."""
    if not changes:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "nothing to update")
    values: dict[str, Any] = {}
    if "comment" in changes:
        check_length("comment", changes["comment"], 256)
        values["comment"] = changes["comment"]
    if "cost" in changes:
        if changes["cost"] < ZERO:
            raise invalid("cost must not be negative")
        values["cost"] = quantize_money(changes["cost"])
    if "expiration" in changes:
        values["expiration"] = parse_expiration(changes["expiration"])
    async with services.db.begin() as conn:
        row = await _managed_row(conn, actor, did, lock=True)
        if "owner" in changes:
            owner = changes["owner"]
            found = (await conn.execute(select(users.c.id).where(users.c.username == owner))).first()
            if found is None:
                raise ApiError(ErrorCode.E_NOT_EXIST, "no such owner")
            if not await reaches_in(conn, actor, owner):
                raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "the new owner is not one of your users")
            values["owner"] = owner
        await conn.execute(update(dids).where(dids.c.id == row.id).values(**values))
    log.info("dids.updated", did=row.did, fields=sorted(values), by=actor.username)


async def update_state(services: LedgerContext, actor: UserRecord, did: str, parameter: str, state: bool) -> None:
    """updateDIDState: `autorenew` or `enabled` of a number the actor owns or manages."""
    column = "auto_renew" if parameter == "autorenew" else "enabled"
    async with services.db.begin() as conn:
        row = await _managed_row(conn, actor, did, lock=True)
        values: dict[str, Any] = {column: state}
        if column == "enabled":
            values["unpaid_since"] = None  # a hand-set state is not the run's to undo
        await conn.execute(update(dids).where(dids.c.id == row.id).values(**values))
    log.info("dids.state", did=row.did, parameter=parameter, state=state, by=actor.username)


async def delete_did(services: LedgerContext, actor: UserRecord, did: str) -> None:
    """deleteDID: soft; the number goes back to its pool's provider. Paid rent is not refunded."""
    async with services.db.begin() as conn:
        row = await _managed_row(conn, actor, did, lock=True)
        await conn.execute(
            update(dids).where(dids.c.id == row.id).values(deleted_at=utcnow(), deleted_reason=DELETED, enabled=False)
        )
        pool = None
        if row.pool_id is not None:
            pool = (await conn.execute(select(did_pools).where(did_pools.c.id == row.pool_id))).first()
    if pool is not None:
        await give_back(services, pool, row.did)
    log.info("dids.deleted", did=row.did, by=actor.username)


async def disa_numbers(services: LedgerContext) -> list[dict[str, str]]:
    """getDisaDIDList: the numbers in service whose rule chain has a rule with action
    `disa` (the DISA access numbers), with their comments."""
    now = utcnow()
    async with services.db.begin() as conn:
        rows = (
            await conn.execute(
                select(dids.c.did, dids.c.comment)
                .where(
                    LIVE,
                    dids.c.enabled.is_(True),
                    (dids.c.expiration.is_(None)) | (dids.c.expiration > now),
                    dids.c.id.in_(select(did_rules.c.did_id).where(func.lower(did_rules.c.action) == DISA_ACTION)),
                )
                .order_by(dids.c.did)
            )
        ).all()
    return [{"did": row.did, "comment": row.comment} for row in rows]


async def did_count(services: LedgerContext, did: str) -> int:
    """getDIDCount: how many numbers (0 or 1) in the books are this one."""
    number = normalize_did(did)
    async with services.db.begin() as conn:
        found = (await conn.execute(select(func.count()).select_from(dids).where(dids.c.did == number, LIVE))).scalar()
    return int(found or 0)
