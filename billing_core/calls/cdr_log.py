"""getLogs: a user's call log (the `cdrs` rows callFinish writes), newest first; deleteLogs hides it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Row, or_, select, update
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


async def called_users(conn: AsyncConnection, destinations: set[str]) -> dict[str, str]:
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


@dataclass(frozen=True, slots=True)
class LogView:
    username: str
    offset: timedelta  # the subject's time zone
    signs: dict[str, str]  # currency code -> sign


async def subject_view(services: LedgerContext, gens: Generations, subject: UserRecord) -> LogView:
    """How the subject's rows are shown: its time zone and the currencies' signs."""
    async with services.db.begin() as conn:
        timezone = Decimal((await conn.execute(select(users.c.timezone).where(users.c.id == subject.id))).scalar() or 0)
    signs = {code: cur.sign for code, cur in (await all_currencies(services, gens)).items()}
    return LogView(subject.username, timedelta(hours=float(timezone)), signs)  # a display shift, not money


def entry(row: Row[Any], view: LogView, called: dict[str, str] | None) -> dict[str, Any]:
    """One getLogs entry; `called` (destination -> user) adds info/debug (resolve_info)."""
    item: dict[str, Any] = {
        "id": row.id,
        "date": wire_time(row.created_at),
        "clientdate": wire_time(row.created_at + view.offset),
        "username": view.username,
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
        "displaycurrency": view.signs.get(row.display_currency, row.display_currency),
    }
    if called is not None:
        item["info"] = called.get(row.destination, "")
        item["debug"] = f"call_uid={row.call_uid} prior={row.prior} cause={row.cause} answered_ms={row.answered_ms}"
    return item


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
        called = await called_users(conn, {r.destination for r in rows}) if resolve_info else None
    view = await subject_view(services, gens, subject)
    return [entry(row, view, called) for row in rows]


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
