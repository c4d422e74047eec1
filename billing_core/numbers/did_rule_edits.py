"""DIDTables editing and its catalogue: updateDIDRule (fields and `pos`), deleteDIDRule,
getDIDActions, getFilters.

A DID's chain stays dense (rules 1..n, no gap, no duplicate) whatever edits run at once:
every edit locks the DID row first (SELECT … FOR UPDATE on PostgreSQL; SQLite runs one
write transaction at a time), renumbers inside that one transaction, and the unique
(did_id, position) constraint is never broken on the way (positions go through negative
numbers, as in did_rules._shift_down). resolveDIDRule reads the chain in one query of one
transaction (numbers.dids.did_record), so it sees the chain before or after an edit, never
half of one.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import structlog
from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.numbers.did_rules import (
    OWNER,
    SMS_ACTIONS,
    SOURCES,
    VOICE_ACTIONS,
    NewRule,
    check_new_rule,
    owner_extension,
)
from billing_core.numbers.dids import Generations, require_managed_did
from billing_core.numbers.tables import did_rules, dids
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

# The patterns each filter understands (numbers.did_rules.like_match): `number` takes
# SQL-LIKE patterns over the caller ID; `any` and `all` ignore the pattern.
FILTER_PATTERNS: dict[str, list[str]] = {
    "number": ["", "%", "<digits>", "<digits>%", "%<digits>", "<digits>___"],
    "any": [],
    "all": [],
}
RULE_FIELDS = tuple(NewRule.__dataclass_fields__)


async def did_actions(services: LedgerContext, gens: Generations, actor: UserRecord) -> dict[str, dict[str, str]]:
    """getDIDActions: {"voice": {action: default destination}, "sms": {…}} for the actor."""
    own = await owner_extension(services, gens, actor.username)

    def fill(actions: dict[str, str]) -> dict[str, str]:
        return {name: own if default == OWNER else default for name, default in actions.items()}

    return {"voice": fill(VOICE_ACTIONS), "sms": fill(SMS_ACTIONS)}


def filters(resolver: str | None, sources_only: bool) -> dict[str, list[str]] | list[str]:
    """getFilters: {source: [patterns]}; one source with `resolver`; names only with `sources`."""
    if resolver:
        if resolver not in FILTER_PATTERNS:
            raise ApiError(ErrorCode.E_NOT_EXIST, f"no filter {resolver[:32]!r}: one of {', '.join(SOURCES)}")
        chosen = {resolver: FILTER_PATTERNS[resolver]}
    else:
        chosen = dict(FILTER_PATTERNS)
    if sources_only:
        return list(chosen)
    return {name: list(patterns) for name, patterns in chosen.items()}


async def _lock_chain(conn: AsyncConnection, did_id: int) -> list[Any]:
    """Lock the DID row (every editor of this chain queues here), then read its rules."""
    if (await conn.execute(select(dids.c.id).where(dids.c.id == did_id).with_for_update())).first() is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such DID")
    query = select(did_rules).where(did_rules.c.did_id == did_id).order_by(did_rules.c.position)
    return list((await conn.execute(query)).all())


async def _shift(conn: AsyncConnection, did_id: int, low: int, high: int, by: int) -> None:
    """position += by for the DID's rules with low <= position <= high, through negatives
    so that the unique constraint holds after every row."""
    if low > high:
        return
    chosen = and_(did_rules.c.did_id == did_id, did_rules.c.position >= low, did_rules.c.position <= high)
    await conn.execute(update(did_rules).where(chosen).values(position=-(did_rules.c.position + by)))
    negative = and_(did_rules.c.did_id == did_id, did_rules.c.position < 0)
    await conn.execute(update(did_rules).where(negative).values(position=-did_rules.c.position))


def _as_new_rule(row: Any) -> NewRule:
    return NewRule(**{name: getattr(row, name) for name in RULE_FIELDS})


async def update_rule(
    services: LedgerContext,
    gens: Generations,
    actor: UserRecord,
    *,
    did: str,
    number: int,
    pos: int | None,
    changes: dict[str, Any],
) -> None:
    """updateDIDRule: change rule `number`'s fields and/or move it to position `pos`
    (1..n; the rules between move by one, the chain stays 1..n)."""
    if pos is None and not changes:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "nothing to update: give pos or a field")
    record = await require_managed_did(services, gens, actor, did)
    async with services.db.begin() as conn:
        rows = await _lock_chain(conn, record.id)
        row = next((r for r in rows if r.position == number), None)
        if row is None:
            raise ApiError(ErrorCode.E_NOT_EXIST, "no such rule")
        if changes:
            merged = replace(_as_new_rule(row), **changes)
            check_new_rule(merged)
            await conn.execute(update(did_rules).where(did_rules.c.id == row.id).values(**asdict(merged)))
        if pos is not None and pos != number:
            if not 1 <= pos <= len(rows):
                raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"pos must be between 1 and {len(rows)}")
            await conn.execute(update(did_rules).where(did_rules.c.id == row.id).values(position=0))
            if pos > number:
                await _shift(conn, record.id, number + 1, pos, -1)
            else:
                await _shift(conn, record.id, pos, number - 1, 1)
            await conn.execute(update(did_rules).where(did_rules.c.id == row.id).values(position=pos))
    log.info("did_rules.updated", did=did, rule=number, pos=pos, fields=sorted(changes), by=actor.username)


async def delete_rule(
    services: LedgerContext, gens: Generations, actor: UserRecord, *, did: str, number: int, pattern: str | None
) -> int:
    """deleteDIDRule: rule `number`, or with number -1 every rule whose pattern is
    `pattern`; the rules after close up. Returns how many were deleted."""
    if number == -1 and pattern is None:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "missing argument: pattern (rule=-1 deletes by pattern)")
    if number == 0 or number < -1:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "rule must be a rule number, or -1 to delete by pattern")
    record = await require_managed_did(services, gens, actor, did)
    async with services.db.begin() as conn:
        rows = await _lock_chain(conn, record.id)
        doomed = [r for r in rows if (r.pattern == pattern if number == -1 else r.position == number)]
        if not doomed:
            raise ApiError(ErrorCode.E_NOT_EXIST, "no such rule")
        await conn.execute(delete(did_rules).where(did_rules.c.id.in_([r.id for r in doomed])))
        # close the gaps: every remaining rule moves up by the deleted ones before it
        gone = sorted(r.position for r in doomed)
        kept = [r for r in rows if r.id not in {d.id for d in doomed}]
        for index, r in enumerate(kept, start=1):
            if r.position != index:
                await conn.execute(update(did_rules).where(did_rules.c.id == r.id).values(position=-index))
        await conn.execute(
            update(did_rules)
            .where(did_rules.c.did_id == record.id, did_rules.c.position < 0)
            .values(position=-did_rules.c.position)
        )
    log.info("did_rules.deleted", did=did, rules=gone, by=actor.username)
    return len(doomed)
