"""Renewals of rented DIDs: renewDID, and the maintenance run's renewals and releases.

- renewDID buys the next period (billing_core.numbers.rent) unless the rent already runs
  a month less RENEW_SLACK past now: a retry (within a day) or a second caller at the same
  moment buys nothing and still answers true. An owner who cannot pay: E_INSUFFICIENT_MONEY.
- The maintenance run renews every number with auto_renew whose rent has run out, in
  chunks of CHUNK numbers per transaction. A number whose owner cannot pay is disabled
  (enabled=false, unpaid_since, renew_notify) and tried again at every run; one paid later
  is enabled again. Running it twice charges nothing twice: a renewed number's expiration
  is in the future, and each run re-reads the rows it locked (PostgreSQL: FOR UPDATE SKIP
  LOCKED, so two runs at once share the work instead of waiting on each other).
- A number past its expiration by CALLGATE_DID_RELEASE_GRACE_DAYS is released: soft
  deleted (deleted_reason `released`) and given back to its pool's provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.clock import as_utc, utcnow
from billing_core.directory.ownership import reaches_in
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.charges import lock_available, post_charges
from billing_core.ledger.context import LedgerContext
from billing_core.money import ZERO, format_money
from billing_core.numbers.dids import normalize_did
from billing_core.numbers.pools import pool_view
from billing_core.numbers.providers import provider_for
from billing_core.numbers.rent import Period, add_month, bought, next_period, owner_accounts
from billing_core.numbers.tables import did_periods, did_pools, dids
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

RENEW_SLACK = timedelta(days=1)
CHUNK = 500
RELEASED = "released"


def _due(now: datetime) -> Any:
    return (
        dids.c.deleted_at.is_(None),
        dids.c.auto_renew.is_(True),
        dids.c.expiration.is_not(None),
        dids.c.expiration <= now,
    )


async def renew_did(services: LedgerContext, actor: UserRecord, did: str) -> bool:
    """renewDID: True when a period was bought, False when the rent already ran ahead."""
    number = normalize_did(did)
    now = utcnow()
    async with services.db.begin() as conn:
        row = (
            await conn.execute(
                select(dids).where(dids.c.did == number, dids.c.deleted_at.is_(None)).with_for_update()
            )
        ).first()
        if row is None:
            raise ApiError(ErrorCode.E_NOT_EXIST, "no such DID")
        if not await reaches_in(conn, actor, row.owner):
            raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "the DID belongs to another user")
        expiration = as_utc(row.expiration)
        if expiration is None:
            raise ApiError(ErrorCode.E_DATA_ABORT, "the DID is not rented (it has no expiration)")
        if expiration >= add_month(now) - RENEW_SLACK:
            log.info("dids.renew_ahead", did=number, by=actor.username)
            return False
        accounts = await owner_accounts(conn, {row.owner})
        if row.owner not in accounts:
            raise ApiError(ErrorCode.E_NOT_EXIST, "the DID's owner no longer exists")
        period = next_period(row, accounts[row.owner], now)
        if await bought(conn, [period]):
            return False
        spendable = await lock_available(conn, [period.account_id], now)
        if period.amount > spendable.get(period.account_id, ZERO):
            raise ApiError(ErrorCode.E_INSUFFICIENT_MONEY, f"the month costs {format_money(period.amount)}")
        await _book(conn, [period], "renew", now)
    log.info("dids.renewed", did=number, until=period.end.isoformat(), amount=str(period.amount), by=actor.username)
    return True


async def _book(conn: AsyncConnection, periods: Sequence[Period], kind: str, now: datetime) -> None:
    """Charge and record the periods (their DIDs and accounts locked); extend the rents."""
    await post_charges(conn, [p.charge() for p in periods if p.amount > ZERO], now)
    await conn.execute(did_periods.insert(), [p.row(kind, now) for p in periods])
    await conn.execute(
        update(dids)
        .where(dids.c.id == bindparam("target"))
        .values(
            expiration=bindparam("until"),
            unpaid_since=None,
            renew_notify=False,
            # a number the run disabled for want of money comes back; one an operator
            # disabled (unpaid_since empty) stays as it was set
            enabled=or_(dids.c.enabled, dids.c.unpaid_since.is_not(None)),
        ),
        [{"target": p.did_id, "until": p.end} for p in periods],
    )


@dataclass
class RenewalReport:
    renewed: int = 0
    charged: Any = ZERO
    disabled: int = 0
    released: int = 0
    orders_closed: int = 0
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"renewed": self.renewed, "charged": format_money(self.charged), "disabled": self.disabled,
                "released": self.released, "orders_closed": self.orders_closed}  # fmt: skip


async def renew_due(services: LedgerContext, now: datetime, report: RenewalReport, chunk: int = CHUNK) -> None:
    """Renew every auto-renewing number whose rent ran out by `now` (see the module doc)."""
    async with services.db.begin() as conn:
        ids = list((await conn.execute(select(dids.c.id).where(*_due(now)).order_by(dids.c.id))).scalars())
    for start in range(0, len(ids), chunk):
        async with services.db.begin() as conn:
            await _renew_chunk(conn, ids[start : start + chunk], now, report)


async def _renew_chunk(conn: AsyncConnection, ids: list[int], now: datetime, report: RenewalReport) -> None:
    rows = (
        await conn.execute(
            select(dids).where(dids.c.id.in_(ids), *_due(now)).order_by(dids.c.id).with_for_update(skip_locked=True)
        )
    ).all()
    accounts = await owner_accounts(conn, {row.owner for row in rows})
    periods = [next_period(row, accounts[row.owner], now) for row in rows if row.owner in accounts]
    paid = await bought(conn, periods)
    periods = [p for p in periods if (p.did_id, p.start) not in paid]
    spendable = await lock_available(conn, {p.account_id for p in periods}, now)
    buy: list[Period] = []
    poor: list[int] = []
    for period in periods:
        left = spendable.get(period.account_id, ZERO)
        if period.amount > left:
            poor.append(period.did_id)
            continue
        spendable[period.account_id] = left - period.amount
        buy.append(period)
    if buy:
        await _book(conn, buy, "auto", now)
    if poor:
        await conn.execute(
            update(dids)
            .where(dids.c.id.in_(poor))
            .values(enabled=False, renew_notify=True, unpaid_since=func.coalesce(dids.c.unpaid_since, now))
        )
    report.renewed += len(buy)
    report.charged += sum((p.amount for p in buy), ZERO)
    report.disabled += len(poor)


async def release_lapsed(services: LedgerContext, now: datetime, report: RenewalReport) -> None:
    """Release every number past its expiration by the configured grace."""
    cutoff = now - timedelta(days=services.settings.did_release_grace_days)
    lapsed = (
        dids.c.deleted_at.is_(None),
        dids.c.expiration.is_not(None),
        dids.c.expiration <= cutoff,
    )
    async with services.db.begin() as conn:
        rows = (
            await conn.execute(
                select(dids.c.id, dids.c.did, dids.c.pool_id).where(*lapsed).with_for_update(skip_locked=True)
            )
        ).all()
        if not rows:
            return
        await conn.execute(
            update(dids)
            .where(dids.c.id.in_([row.id for row in rows]), *lapsed)
            .values(deleted_at=now, deleted_reason=RELEASED, enabled=False)
        )
        pools = {
            row.id: row
            for row in (
                await conn.execute(select(did_pools).where(did_pools.c.id.in_({r.pool_id for r in rows if r.pool_id})))
            ).all()
        }
    report.released += len(rows)
    for row in rows:
        pool = pools.get(row.pool_id)
        if pool is not None:
            await give_back(services, pool, row.did)
    log.info("dids.released", count=len(rows))


async def give_back(services: LedgerContext, pool: Any, did: str) -> None:
    """Release a number at its pool's provider; a failure is logged (the number is ours no more)."""
    try:
        await provider_for(services.db, pool.provider).release(pool_view(services.box, pool), did)
    except Exception as exc:  # a provider's failure must not stop the run
        log.warning("dids.provider_release_failed", did=did, pool=pool.id, error=type(exc).__name__)
