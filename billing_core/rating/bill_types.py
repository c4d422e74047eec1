"""Bill types (tariffication: seconds free, then whole steps): addBillType, getBillTypes,
getBillType, updateBillType, deleteBillType. A tariff names its bill type (tariffs.bill_type):
one in use is never deleted. Every write here is reached through a registry method declared
`invalidates=(NS_RATING,)`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from billing_core.cache.keys import NS_RATING
from billing_core.checks import existing_row, invalid, required_arg
from billing_core.db.engine import Database
from billing_core.errors import ApiError, ErrorCode
from billing_core.rating.tables import bill_types, tariffs

if TYPE_CHECKING:
    from billing_core.rating.context import RatingContext

log = structlog.get_logger(__name__)

Generations = dict[str, int] | None

MAX_STEP_S = 86_400
_BILL_TYPE = re.compile(r"[A-Za-z0-9_\-]{1,32}")


def _check_free_threshold(free_threshold: int) -> None:
    if not 0 <= free_threshold <= MAX_STEP_S:
        raise invalid(f"free_threshold must be 0..{MAX_STEP_S} seconds")


def _check_step(step: int) -> None:
    if not 0 < step <= MAX_STEP_S:
        raise invalid(f"step must be 1..{MAX_STEP_S} seconds")


async def add_bill_type(db: Database, *, name: str, free_threshold: int, step: int) -> None:
    """addBillType: a new tariffication type (seconds free, then whole steps)."""
    required_arg(name, "bill_type", _BILL_TYPE, "1..32 letters, digits, '_' or '-'")
    _check_free_threshold(free_threshold)
    _check_step(step)
    try:
        async with db.begin() as conn:
            if (await conn.execute(select(bill_types.c.id).where(bill_types.c.type == name))).first() is not None:
                raise ApiError(ErrorCode.E_DATA_ABORT, f"bill type {name} already exists")
            await conn.execute(bill_types.insert().values(type=name, free_threshold=free_threshold, step=step))
    except IntegrityError as exc:
        raise ApiError(ErrorCode.E_DATA_ABORT, f"bill type {name} already exists") from exc
    log.info("bill_type.added", bill_type=name, free_threshold=free_threshold, step=step)


async def list_bill_types(services: RatingContext, gens: Generations) -> list[dict[str, Any]]:
    """getBillTypes: [{"type", "free_threshold", "step"}] by name (cached)."""

    async def load() -> list[dict[str, Any]]:
        async with services.db.begin() as conn:
            rows = (await conn.execute(select(bill_types).order_by(bill_types.c.type))).all()
        return [{"type": r.type, "free_threshold": int(r.free_threshold), "step": int(r.step)} for r in rows]

    found = await services.cache.lookup(gens, NS_RATING, "api:bill_types", load, decode=tuple, encode=list)
    return [dict(item) for item in found or ()]


def _known(name: str) -> Any:
    return select(bill_types).where(bill_types.c.type == name)


async def get_bill_type(db: Database, name: str) -> dict[str, Any]:
    """getBillType: {"type", "free_threshold", "step"}; E_NOT_EXIST for an unknown name."""
    required_arg(name, "bill_type", _BILL_TYPE, "1..32 letters, digits, '_' or '-'")
    async with db.begin() as conn:
        row = await existing_row(conn, _known(name), f"no bill type {name}")
    return {"type": row.type, "free_threshold": int(row.free_threshold), "step": int(row.step)}


async def update_bill_type(db: Database, *, name: str, free_threshold: int | None, step: int | None) -> None:
    """updateBillType: a new free threshold and/or step. Calls already prepared keep the
    terms they were rated with (the hold carries them); the next callPrepare uses these."""
    required_arg(name, "bill_type", _BILL_TYPE, "1..32 letters, digits, '_' or '-'")
    values: dict[str, int] = {}
    if free_threshold is not None:
        _check_free_threshold(free_threshold)
        values["free_threshold"] = free_threshold
    if step is not None:
        _check_step(step)
        values["step"] = step
    if not values:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "nothing to change: give free_threshold and/or step")
    async with db.begin() as conn:
        await existing_row(conn, _known(name), f"no bill type {name}")
        await conn.execute(update(bill_types).where(bill_types.c.type == name).values(**values))
    log.info("bill_type.updated", bill_type=name, **values)


async def delete_bill_type(db: Database, name: str) -> None:
    """deleteBillType: remove a bill type no tariff uses; one in use is E_DATA_ABORT."""
    required_arg(name, "bill_type", _BILL_TYPE, "1..32 letters, digits, '_' or '-'")
    async with db.begin() as conn:
        await existing_row(conn, _known(name), f"no bill type {name}")
        in_use = select(func.count()).select_from(tariffs).where(tariffs.c.bill_type == name)
        users_of = int((await conn.execute(in_use)).scalar() or 0)
        if users_of:
            raise ApiError(ErrorCode.E_DATA_ABORT, f"bill type {name} is used by {users_of} tariff(s)")
        await conn.execute(delete(bill_types).where(bill_types.c.type == name))
    log.info("bill_type.deleted", bill_type=name)
