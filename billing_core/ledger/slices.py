"""Holds that grow while their call goes on (holds in slices; billing_core.calls.supervision).

A supervised call holds only a slice of its longest call at callPrepare; the supervisor
asks for more as the call goes on. Both primitives act on one open hold, under the
account's row lock like every hold (book.lock_account), so Σ open holds ≤ balance +
overdraft keeps holding with the account's other calls, transfers and refills. They move
no money: a hold is a promise, the charge is callFinish's. The ledger never prices: what
an amount buys is for the caller to say (`trim` takes the amount and time it computed).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update

from billing_core.db.engine import Database
from billing_core.ledger.book import OPEN, AccountState, Reservation, available, lock_account
from billing_core.ledger.tables import accounts, reservations
from billing_core.money import ZERO


async def grow(db: Database, reservation_id: int, want: Decimal, now: datetime) -> Reservation | None:
    """Raise the open hold's amount towards `want`, by at most what the account can still
    spend; the hold as it is now (None: it is no longer open — its call was charged)."""
    async with db.begin() as conn:
        row = (await conn.execute(select(reservations).where(reservations.c.id == reservation_id))).first()
        if row is None or row.state != OPEN:
            return None
        account = await lock_account(conn, row.account_id)
        current = (  # read again under the lock: a callFinish may have charged it meanwhile
            await conn.execute(select(reservations).where(reservations.c.id == reservation_id))
        ).first()
        if current is None or current.state != OPEN:
            return None
        hold = Reservation.from_row(current)
        spare = await available(conn, account, now)
        extra = min(want - hold.amount, max(spare, ZERO))
        if extra <= ZERO:
            return hold
        await conn.execute(
            update(reservations).where(reservations.c.id == reservation_id).values(amount=hold.amount + extra)
        )
    return Reservation(
        hold.id, hold.call_uid, hold.prior, hold.account_id, hold.amount + extra, hold.max_time_s, hold.state,
        hold.rating,
    )  # fmt: skip


async def trim(db: Database, reservation_id: int, *, amount: Decimal, max_time_s: int) -> bool:
    """The call's last slice: its hold keeps `amount` (never more than it has) and its call
    may be billed for at most `max_time_s` (never longer than before), so the charge stays
    within what is held. False when the hold is no longer open."""
    async with db.begin() as conn:
        result = await conn.execute(
            update(reservations)
            .where(
                reservations.c.id == reservation_id,
                reservations.c.state == OPEN,
                reservations.c.amount >= amount,
                reservations.c.max_time_s >= max_time_s,
            )
            .values(amount=amount, max_time_s=max_time_s)
        )
    return bool(result.rowcount)


async def spendable(db: Database, account_id: int, now: datetime) -> Decimal:
    """What the account could spend now (balance + overdraft − open holds), read without a
    lock: how long a sliced call may last is planned on it, its slice is held atomically."""
    async with db.begin() as conn:
        row = (
            await conn.execute(
                select(accounts.c.id, accounts.c.balance, accounts.c.overdraft).where(accounts.c.id == account_id)
            )
        ).first()
        if row is None:
            return ZERO
        return await available(conn, AccountState(row.id, Decimal(row.balance), Decimal(row.overdraft)), now)
