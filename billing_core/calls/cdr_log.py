"""getLogs: a user's call log (the `cdrs` rows callFinish writes), newest first; deleteLogs hides it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.clock import utcnow, wire_time
from billing_core.directory.tables import sip_extensions, users
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.currency import all_currencies
from billing_core.ledger.tables import cdrs
from billing_core.money import money_json
from billing_core.numbers.tables import dids
from billing_core.records import UserRecord

Generations = dict[str, int] | None

log = structlog.get_logger(__name__)

MAX_LIMIT = 10000


def completed() -> ColumnElement[bool]:
    """Answered calls: status ANSWER, or coded like callFinish's '<n>ANSWER' (not NOANSWER)."""
    return or_(cdrs.c.status == "ANSWER", cdrs.c.status.like("%ANSWER") & ~cdrs.c.status.like("%NOANSWER"))


async def _called_users(conn: AsyncConnection, destinations: set[str]) -> dict[str, str]:
    """Which local user a destination reaches: its SIP account's owner, else its DID's owner."""
    if not destinations:
        return {}
    found: dict[str, str] = {}
    for did, owner in (await conn.execute(select(dids.c.did, dids.c.owner).where(dids.c.did.in_(destinations)))).all():
        found[did] = owner
    by_extension = (
        select(sip_extensions.c.sip_extension, users.c.username)
        .join(users, users.c.id == sip_extensions.c.user_id)
        .where(sip_extensions.c.deleted_at.is_(None))
    )
    for name, owner in (await conn.execute(by_extension.where(sip_extensions.c.sip_extension.in_(destinations)))).all():
        found[name] = owner
    return found


async def call_log(
    services: LedgerContext,
    gens: Generations,
    subject: UserRecord,
    *,
    limit: int,
    only_completed: bool,
    resolve_info: bool,
) -> list[dict[str, Any]]:
    query = select(cdrs).where(cdrs.c.user_id == subject.id, cdrs.c.deleted_at.is_(None))
    if only_completed:
        query = query.where(completed())
    query = query.order_by(cdrs.c.created_at.desc(), cdrs.c.id.desc()).limit(limit)
    async with services.db.begin() as conn:
        rows = (await conn.execute(query)).all()
        timezone = Decimal((await conn.execute(select(users.c.timezone).where(users.c.id == subject.id))).scalar() or 0)
        called = await _called_users(conn, {r.destination for r in rows}) if resolve_info else {}
    signs = {code: cur.sign for code, cur in (await all_currencies(services, gens)).items()}
    offset = timedelta(hours=float(timezone))  # a display shift, not money
    entries = []
    for row in rows:
        entry: dict[str, Any] = {
            "id": row.id,
            "date": wire_time(row.created_at),
            "clientdate": wire_time(row.created_at + offset),
            "username": subject.username,
            "sip_extension": row.sip_extension,
            "callerid": row.callerid,
            "destination": row.destination,
            "direction": row.direction,
            "route": row.route,
            "status": row.status,
            "time": row.length_s,
            "billed_time": row.billed_s,
            "cost": money_json(Decimal(row.cost)),
            "displaycost": money_json(Decimal(row.display_cost)),
            "displaycurrency": signs.get(row.display_currency, row.display_currency),
        }
        if resolve_info:
            entry["info"] = called.get(row.destination, "")
            entry["debug"] = (
                f"call_uid={row.call_uid} prior={row.prior} cause={row.cause} answered_ms={row.answered_ms}"
            )
        entries.append(entry)
    return entries


async def hide_log(services: LedgerContext, subject: UserRecord, *, by: str) -> int:
    """deleteLogs: mark the user's visible CDRs deleted (never remove them: they are the
    books, and their unique (call_uid, prior) guards callFinish against a second charge)."""
    async with services.db.begin() as conn:
        result = await conn.execute(
            update(cdrs).where(cdrs.c.user_id == subject.id, cdrs.c.deleted_at.is_(None)).values(deleted_at=utcnow())
        )
    hidden = int(result.rowcount or 0)
    log.info("call_log.hidden", user=subject.username, rows=hidden, by=by)
    return hidden
