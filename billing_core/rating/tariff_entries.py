"""Tariff entries (the spec's "directions in a tariff"): addDirection, updateDirection,
deleteDirection. An entry prices one direction in one tariff on one route; (tariff,
direction, priority) is unique. The actor must be allowed to change the tariff and the
route (ownership.changeable_row). Every write here is reached through a registry method
declared `invalidates=(NS_RATING,)`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import Select, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.checks import existing_row, money_arg, priority_arg
from billing_core.db.engine import Database
from billing_core.directory.ownership import changeable_row
from billing_core.errors import ApiError, ErrorCode
from billing_core.rating.tables import directions, routes, tariff_entries, tariffs
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)


def _slot(tariff_id: int, direction_id: int, priority: int) -> Select[tuple[int]]:
    """The entry at (tariff, direction, priority), if any."""
    return select(tariff_entries.c.id).where(
        tariff_entries.c.tariff_id == tariff_id,
        tariff_entries.c.direction_id == direction_id,
        tariff_entries.c.priority == priority,
    )


async def _entry_id(conn: AsyncConnection, tariff_id: int, direction_id: int, priority: int) -> int:
    detail = f"tariff {tariff_id} has no direction {direction_id} at priority {priority}"
    return int((await existing_row(conn, _slot(tariff_id, direction_id, priority), detail)).id)


async def _slot_must_be_free(conn: AsyncConnection, tariff_id: int, direction_id: int, priority: int) -> None:
    if (await conn.execute(_slot(tariff_id, direction_id, priority))).first() is not None:
        raise _slot_taken(tariff_id, direction_id, priority)


def _slot_taken(tariff_id: int, direction_id: int, priority: int) -> ApiError:
    return ApiError(
        ErrorCode.E_DATA_ABORT,
        f"tariff {tariff_id} already has direction {direction_id} at priority {priority}",
    )


async def add_entry(
    db: Database, actor: UserRecord, *, tariff_id: int, direction_id: int, cost: Decimal, route_id: int, priority: int
) -> int:
    """addDirection: price a direction in a tariff on a route; (tariff, direction, priority) is unique."""
    cost = money_arg(cost, "cost")
    priority_arg(priority, "priority")
    try:
        async with db.begin() as conn:
            await changeable_row(conn, actor, tariffs, tariff_id, "tariff")
            direction = select(directions.c.id).where(directions.c.id == direction_id)
            await existing_row(conn, direction, f"no direction {direction_id}")
            await changeable_row(conn, actor, routes, route_id, "route")
            await _slot_must_be_free(conn, tariff_id, direction_id, priority)
            result = await conn.execute(
                tariff_entries.insert().values(
                    tariff_id=tariff_id, direction_id=direction_id, cost=cost, route_id=route_id, priority=priority
                )
            )
    except IntegrityError as exc:
        raise _slot_taken(tariff_id, direction_id, priority) from exc
    pk = result.inserted_primary_key
    assert pk is not None
    log.info(
        "tariff.entry_added", tariff_id=tariff_id, direction_id=direction_id, route_id=route_id,
        priority=priority, by=actor.username,
    )  # fmt: skip
    return int(pk[0])


async def update_entry(
    db: Database,
    actor: UserRecord,
    *,
    tariff_id: int,
    direction_id: int,
    prior: int,
    cost: Decimal | None,
    route_id: int | None,
    priority: int | None,
) -> None:
    """updateDirection: the entry at (tariff, direction, prior) gets a new cost, route and/or priority."""
    changes: dict[str, Any] = {}
    if cost is not None:
        changes["cost"] = money_arg(cost, "cost")
    if priority is not None:
        changes["priority"] = priority_arg(priority, "priority")
    if route_id is not None:
        changes["route_id"] = route_id
    if not changes:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "nothing to change: give cost, route and/or priority")
    new_priority = changes.get("priority", prior)
    try:
        async with db.begin() as conn:
            await changeable_row(conn, actor, tariffs, tariff_id, "tariff")
            entry_id = await _entry_id(conn, tariff_id, direction_id, prior)
            if route_id is not None:
                await changeable_row(conn, actor, routes, route_id, "route")
            if new_priority != prior:
                await _slot_must_be_free(conn, tariff_id, direction_id, new_priority)
            await conn.execute(update(tariff_entries).where(tariff_entries.c.id == entry_id).values(**changes))
    except IntegrityError as exc:
        raise _slot_taken(tariff_id, direction_id, new_priority) from exc
    log.info(
        "tariff.entry_updated", tariff_id=tariff_id, direction_id=direction_id, prior=prior,
        fields=sorted(changes), by=actor.username,
    )  # fmt: skip


async def delete_entry(db: Database, actor: UserRecord, *, tariff_id: int, direction_id: int, prior: int) -> None:
    """deleteDirection: remove the entry at (tariff, direction, prior)."""
    async with db.begin() as conn:
        await changeable_row(conn, actor, tariffs, tariff_id, "tariff")
        entry_id = await _entry_id(conn, tariff_id, direction_id, prior)
        await conn.execute(delete(tariff_entries).where(tariff_entries.c.id == entry_id))
    log.info("tariff.entry_deleted", tariff_id=tariff_id, direction_id=direction_id, prior=prior, by=actor.username)
