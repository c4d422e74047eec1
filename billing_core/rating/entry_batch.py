"""A tariff's entries changed as a whole: updateDirections, updateMarkup, copyDirections.

Each runs in one transaction: every element is checked first and one bad element leaves
the tariff as it was (all or nothing). The actor must be allowed to change the target
tariff (ownership.changeable_row) and every route an element moves an entry to. Every
write here is reached through a registry method declared `invalidates=(NS_RATING,)`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from billing_core.catalog.params import Amount, Int, Params
from billing_core.checks import MONEY_CEILING, decimal_arg, money_arg, priority_arg
from billing_core.db.engine import Database
from billing_core.directory.ownership import changeable_row
from billing_core.errors import ApiError, ErrorCode
from billing_core.money import quantize_money
from billing_core.rating.tables import routes, tariff_entries, tariffs
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

MAX_BATCH = 10_000  # elements of one updateDirections
MARKUP_QUANT = Decimal("0.000001")
MAX_MARKUP = Decimal(1000)


class DirectionChange(Params):
    """One element of updateDirections: updateDirection's arguments (`rates` may repeat
    the call's own)."""

    rates: Int | None = None
    direction: Int
    prior: Int = 1  # selects the entry
    cost: Amount | None = None
    route: Int | None = None
    priority: Int | None = None  # moves the entry


_ELEMENT_KEYS = frozenset(DirectionChange.model_fields)


def _wire(value: Any) -> str | None:
    """A JSON scalar as the wire text the registry's types parse (numbers keep their text)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    raise ValueError("must be a string, number or boolean")


def _element(index: int, item: Any, tariff_id: int) -> DirectionChange:
    where = f"directions[{index}]"
    if not isinstance(item, dict):
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"{where} must be an object")
    unknown = sorted(set(item) - _ELEMENT_KEYS)
    if unknown:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"{where}: unknown field {unknown[0][:32]!r}")
    raw: dict[str, str] = {}
    for name, value in item.items():
        try:
            text = _wire(value)
        except ValueError as exc:
            raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"{where}.{name}: {exc}") from None
        if text is not None:
            raw[name] = text
    try:
        change = DirectionChange.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        absent = [str(e["loc"][0]) for e in errors if e["type"] == "missing" and e["loc"]]
        if absent:
            raise ApiError(ErrorCode.E_MISSING_ARGUMENT, f"{where}: missing {', '.join(absent)}") from None
        bad = sorted({str(e["loc"][0]) for e in errors if e["loc"]})
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"{where}: invalid {', '.join(bad)}") from None
    if change.rates is not None and change.rates != tariff_id:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"{where}.rates is not the tariff being changed ({tariff_id})")
    if change.cost is None and change.route is None and change.priority is None:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, f"{where}: nothing to change: give cost, route and/or priority")
    try:
        if change.cost is not None:
            money_arg(change.cost, "cost")
        if change.priority is not None:
            priority_arg(change.priority, "priority")
        priority_arg(change.prior, "prior")
    except ApiError as exc:
        raise ApiError(exc.code, f"{where}: {exc.detail}") from None
    return change


def parse_changes(text: str, tariff_id: int) -> list[DirectionChange]:
    """updateDirections' `directions`: a JSON array of updateDirection's arguments."""
    if not text.strip():
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "missing argument: directions")
    try:
        data = json.loads(text, parse_float=str, parse_int=str)
    except (ValueError, RecursionError):
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "directions must be a JSON array") from None
    if not isinstance(data, list):
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "directions must be a JSON array")
    if not data:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "directions is an empty array: nothing to change")
    if len(data) > MAX_BATCH:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"directions has more than {MAX_BATCH} elements")
    return [_element(i, item, tariff_id) for i, item in enumerate(data)]


def _plan(tariff_id: int, rows: Sequence[Any], changes: Sequence[DirectionChange]) -> dict[int, dict[str, Any]]:
    """entry id -> the columns it gets, checked against the tariff's entries `rows`
    (id, direction_id, priority): every element names an entry, none twice, and the
    priorities after the whole batch are distinct per direction."""
    slots = {(r.direction_id, r.priority): int(r.id) for r in rows}
    final = {int(r.id): (r.direction_id, r.priority) for r in rows}
    planned: dict[int, dict[str, Any]] = {}
    for index, change in enumerate(changes):
        entry_id = slots.get((change.direction, change.prior))
        if entry_id is None:
            detail = f"directions[{index}]: tariff {tariff_id} has no direction {change.direction}"
            raise ApiError(ErrorCode.E_NOT_EXIST, f"{detail} at priority {change.prior}")
        if entry_id in planned:
            raise ApiError(ErrorCode.E_DATA_ABORT, f"directions[{index}] changes an entry a former element changes")
        values: dict[str, Any] = {}
        if change.cost is not None:
            values["cost"] = change.cost
        if change.route is not None:
            values["route_id"] = change.route
        if change.priority is not None:
            values["priority"] = change.priority
            final[entry_id] = (change.direction, change.priority)
        planned[entry_id] = values
    if len(set(final.values())) != len(final):
        raise ApiError(ErrorCode.E_DATA_ABORT, "after the change two entries of one direction would share a priority")
    return planned


async def update_entries(db: Database, actor: UserRecord, tariff_id: int, changes: Sequence[DirectionChange]) -> int:
    """updateDirections: every element changes the entry at (tariff, direction, prior), as
    updateDirection would; all of them or none. The priorities after the whole batch must
    be distinct per direction, so two entries may swap priorities in one call. Returns the
    number of entries changed."""
    column = tariff_entries.c
    try:
        async with db.begin() as conn:
            await changeable_row(conn, actor, tariffs, tariff_id, "tariff")
            query = select(column.id, column.direction_id, column.priority).where(column.tariff_id == tariff_id)
            planned = _plan(tariff_id, (await conn.execute(query)).all(), changes)
            for route_id in sorted({v["route_id"] for v in planned.values() if "route_id" in v}):
                await changeable_row(conn, actor, routes, route_id, "route")
            # entries that move leave their slot first: the unique slot holds after every statement
            for entry_id in [e for e, values in planned.items() if "priority" in values]:
                await conn.execute(update(tariff_entries).where(column.id == entry_id).values(priority=-entry_id))
            for entry_id, values in planned.items():
                await conn.execute(update(tariff_entries).where(column.id == entry_id).values(**values))
    except IntegrityError as exc:  # a concurrent write took a slot the batch moves to
        raise ApiError(ErrorCode.E_DATA_ABORT, "the tariff changed concurrently; send the batch again") from exc
    log.info("tariff.entries_updated", tariff_id=tariff_id, entries=len(planned), by=actor.username)
    return len(planned)


async def apply_markup(db: Database, actor: UserRecord, tariff_id: int, markup: Decimal) -> int:
    """updateMarkup: every entry's cost becomes cost × markup, rounded half-up to 0.0001,
    once (the costs are rewritten; the tariff's own multiplier, updateRates, is untouched).
    Returns the number of entries rewritten."""
    factor = decimal_arg(markup, "markup", quant=MARKUP_QUANT, places=6, ceiling=MAX_MARKUP)
    if factor <= 0:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "markup must be greater than 0")
    async with db.begin() as conn:
        await changeable_row(conn, actor, tariffs, tariff_id, "tariff")
        rows = (
            await conn.execute(
                select(tariff_entries.c.id, tariff_entries.c.cost).where(tariff_entries.c.tariff_id == tariff_id)
            )
        ).all()
        costs = {int(r.id): quantize_money(Decimal(r.cost) * factor) for r in rows}
        if any(cost >= MONEY_CEILING for cost in costs.values()):
            raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"markup {factor} takes a cost to {MONEY_CEILING} or more")
        new_costs = [{"entry": entry_id, "new_cost": cost} for entry_id, cost in costs.items()]
        if new_costs:
            statement = (
                update(tariff_entries)
                .where(tariff_entries.c.id == bindparam("entry"))
                .values(cost=bindparam("new_cost", type_=tariff_entries.c.cost.type))
            )
            await conn.execute(statement, new_costs)
    log.info("tariff.markup", tariff_id=tariff_id, markup=str(factor), entries=len(new_costs), by=actor.username)
    return len(new_costs)


async def copy_entries(db: Database, actor: UserRecord, *, source_id: int, target_id: int) -> int:
    """copyDirections: the target tariff's entries become those of `source_id` (the acting
    user's current tariff): same directions, costs, routes and priorities; the target's
    own fields (its multiplier among them) stay. Returns the number of entries copied."""
    try:
        async with db.begin() as conn:
            await changeable_row(conn, actor, tariffs, target_id, "tariff")
            if source_id == target_id:
                raise ApiError(ErrorCode.E_DATA_ABORT, f"tariff {target_id} is your current tariff: nothing to copy")
            if (await conn.execute(select(tariffs.c.id).where(tariffs.c.id == source_id))).first() is None:
                raise ApiError(ErrorCode.E_NOT_EXIST, f"your current tariff {source_id} does not exist")
            column = tariff_entries.c
            rows = (
                await conn.execute(
                    select(column.direction_id, column.cost, column.route_id, column.priority).where(
                        column.tariff_id == source_id
                    )
                )
            ).all()
            await conn.execute(delete(tariff_entries).where(column.tariff_id == target_id))
            copies = [
                {"tariff_id": target_id, "direction_id": r.direction_id, "cost": Decimal(r.cost),
                 "route_id": r.route_id, "priority": r.priority}
                for r in rows
            ]  # fmt: skip
            if copies:
                await conn.execute(tariff_entries.insert(), copies)
    except IntegrityError as exc:  # a concurrent write to the target
        raise ApiError(ErrorCode.E_DATA_ABORT, "the tariff changed concurrently; copy again") from exc
    log.info("tariff.entries_copied", source=source_id, target=target_id, entries=len(copies), by=actor.username)
    return len(copies)
