"""Bill types (tariffication: seconds free, then whole steps): addBillType, getBillTypes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from billing_core.cache.keys import NS_RATING
from billing_core.checks import invalid, required_arg
from billing_core.db.engine import Database
from billing_core.errors import ApiError, ErrorCode
from billing_core.rating.tables import bill_types

if TYPE_CHECKING:
    from billing_core.rating.context import RatingContext

log = structlog.get_logger(__name__)

Generations = dict[str, int] | None

MAX_STEP_S = 86_400
_BILL_TYPE = re.compile(r"[A-Za-z0-9_\-]{1,32}")


async def add_bill_type(db: Database, *, name: str, free_threshold: int, step: int) -> None:
    """addBillType: a new tariffication type (seconds free, then whole steps)."""
    required_arg(name, "bill_type", _BILL_TYPE, "1..32 letters, digits, '_' or '-'")
    if not 0 <= free_threshold <= MAX_STEP_S:
        raise invalid(f"free_threshold must be 0..{MAX_STEP_S} seconds")
    if not 0 < step <= MAX_STEP_S:
        raise invalid(f"step must be 1..{MAX_STEP_S} seconds")
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
