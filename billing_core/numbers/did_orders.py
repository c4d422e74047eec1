"""orderDID: a number from a pool, paid once (docs/billing.md, "DID rent").

1. One transaction: the buyer's account locked, its available money must cover the
   install cost + the first month (both × its tariff's did_multiplier); a hold of that
   total is placed (a `reservations` row, uid `did-order:<hex>`, which calls see as held
   money) and a `did_orders` row written, `pending`.
2. The pool's provider is asked for the number, outside any transaction.
3. Obtained: one transaction deletes the hold, charges the install cost and the first
   period (two `transactions` rows, kind `did`), gives the number to the buyer and marks
   the order `done`. Not obtained (or an unknown provider): the hold is deleted and the
   order marked `failed` — E_DID_ORDER_FAIL, nothing charged. If step 3 itself fails,
   the number is given back to the provider and the order failed.
4. An order left `pending` by a crash is closed by the maintenance run once its hold has
   lapsed (`close_stale_orders`): hold deleted, number given back, nothing charged.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.clock import utcnow
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.book import Hold, reserve
from billing_core.ledger.charges import Charge, lock_available, post_charges
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.money_rules import account_of
from billing_core.ledger.tables import reservations
from billing_core.money import ZERO, format_money
from billing_core.numbers.dids import normalize_did, place_did
from billing_core.numbers.pools import did_multiplier, pool_row, pool_view, price_for
from billing_core.numbers.providers import provider_for
from billing_core.numbers.renewals import give_back
from billing_core.numbers.rent import KIND_DID, Period, add_month
from billing_core.numbers.tables import did_orders, did_periods, did_pools, dids
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

PENDING, DONE, FAILED = "pending", "done", "failed"
STALE_MARGIN = timedelta(seconds=60)


async def order_did(
    services: LedgerContext, actor: UserRecord, *, pool_id: int, did: str, args: tuple[str, str, str]
) -> None:
    number = normalize_did(did)
    now = utcnow()
    uid = f"did-order:{uuid.uuid4().hex}"
    async with services.db.begin() as conn:
        pool = await pool_row(conn, pool_id)
        provider = provider_for(services.db, pool.provider)  # unknown: E_DID_ORDER_FAIL, nothing held
        taken = (
            await conn.execute(select(dids.c.id).where(dids.c.did == number, dids.c.deleted_at.is_(None)))
        ).first()
        if taken is not None:
            raise ApiError(ErrorCode.E_DATA_ABORT, "the number is someone's already")
        price = price_for(pool, await did_multiplier(conn, actor))
        account_id = await account_of(conn, actor)
        spendable = await lock_available(conn, [account_id], now)
        if price.first_order > spendable.get(account_id, ZERO):
            raise ApiError(ErrorCode.E_INSUFFICIENT_MONEY, f"the number costs {format_money(price.first_order)}")
        await reserve(conn, Hold(uid, 0, account_id, actor.id, price.first_order, 0, now,
                                 now + timedelta(seconds=services.settings.did_order_hold_s),
                                 {"did": number, "pool_id": pool.id}))  # fmt: skip
        await conn.execute(
            did_orders.insert().values(
                hold_uid=uid, did=number, pool_id=pool.id, provider=pool.provider, owner=actor.username,
                account_id=account_id, amount=price.first_order, state=PENDING, created_at=now,
            )
        )  # fmt: skip
    view = pool_view(services.box, pool)
    try:
        await provider.order(view, number, args)
    except Exception as exc:  # whatever the provider raised, the order failed
        await _fail(services, uid)
        log.warning("dids.order_failed", did=number, pool=pool.id, provider=pool.provider, error=type(exc).__name__)
        # the provider's own message is not passed on: it may carry the pool's credentials
        raise ApiError(ErrorCode.E_DID_ORDER_FAIL, "the provider could not give the number") from None
    try:
        await _complete(services, uid, pool, number, price.install, price.rent)
    except BaseException:
        await give_back(services, pool, number)
        await _fail(services, uid)
        raise
    log.info("dids.ordered", did=number, pool=pool.id, owner=actor.username, amount=str(price.first_order))


async def _complete(services: LedgerContext, uid: str, pool: Any, number: str, install: Decimal, rent: Decimal) -> None:
    now = utcnow()
    async with services.db.begin() as conn:
        order = await _pending(conn, uid)
        if order is None:  # closed meanwhile by the maintenance run: the number goes back
            raise ApiError(ErrorCode.E_DID_ORDER_FAIL, "the order lapsed before the provider answered")
        await _drop_hold(conn, uid)
        spendable = await lock_available(conn, [order.account_id], now)
        if install + rent > spendable.get(order.account_id, ZERO):  # only if the hold lapsed and was spent
            raise ApiError(ErrorCode.E_INSUFFICIENT_MONEY, "the hold lapsed and the money was spent")
        end = add_month(now)
        did_id = await place_did(conn, number, {"owner": order.owner, "cost": rent, "expiration": end,
                                                "pool_id": pool.id, "comment": f"{pool.country}/{pool.area}"[:256]})
        period = Period(did_id, number, order.owner, order.account_id, now, end, rent)
        charges = [period.charge()] if rent > ZERO else []
        if install > ZERO:
            charges.append(Charge(order.account_id, install, KIND_DID, f"did:{number}:install:{order.id}",
                                  f"DID {number} installation"))  # fmt: skip
        await post_charges(conn, charges, now)
        await conn.execute(did_periods.insert().values(**period.row("order", now)))
        await conn.execute(update(did_orders).where(did_orders.c.id == order.id).values(state=DONE, finished_at=now))


async def _pending(conn: AsyncConnection, uid: str) -> Any:
    return (
        await conn.execute(
            select(did_orders).where(did_orders.c.hold_uid == uid, did_orders.c.state == PENDING).with_for_update()
        )
    ).first()


async def _drop_hold(conn: AsyncConnection, uid: str) -> None:
    await conn.execute(delete(reservations).where(reservations.c.call_uid == uid, reservations.c.prior == 0))


async def _fail(services: LedgerContext, uid: str) -> None:
    async with services.db.begin() as conn:
        await _drop_hold(conn, uid)
        await conn.execute(
            update(did_orders)
            .where(did_orders.c.hold_uid == uid, did_orders.c.state == PENDING)
            .values(state=FAILED, finished_at=utcnow())
        )


async def close_stale_orders(services: LedgerContext, now: datetime) -> int:
    """Fail the orders still pending after their hold lapsed; give their numbers back."""
    cutoff = now - timedelta(seconds=services.settings.did_order_hold_s) - STALE_MARGIN
    async with services.db.begin() as conn:
        stale = (
            await conn.execute(
                select(did_orders, did_pools.c.id.label("pool_present"))
                .join(did_pools, did_pools.c.id == did_orders.c.pool_id, isouter=True)
                .where(did_orders.c.state == PENDING, did_orders.c.created_at <= cutoff)
                .with_for_update(of=did_orders, skip_locked=True)
            )
        ).all()
        for order in stale:
            await _drop_hold(conn, order.hold_uid)
        if stale:
            await conn.execute(
                update(did_orders)
                .where(did_orders.c.id.in_([o.id for o in stale]))
                .values(state=FAILED, finished_at=now)
            )
        owned = set(
            (
                await conn.execute(
                    select(dids.c.did).where(dids.c.did.in_({o.did for o in stale}), dids.c.deleted_at.is_(None))
                )
            ).scalars()
        )
        pools = {
            row.id: row
            for row in (await conn.execute(select(did_pools).where(did_pools.c.id.in_({o.pool_id for o in stale}))))
        }
    for order in stale:
        if order.did not in owned and order.pool_id in pools:
            await give_back(services, pools[order.pool_id], order.did)
    if stale:
        log.warning("dids.stale_orders_closed", count=len(stale))
    return len(stale)
