"""The ledger: balances, holds (reservations) and charges. It never computes a price.

Every function here except `expire_reservations` runs inside a transaction the caller
opened with `Database.begin()`, after `lock_account`: the account row lock (SELECT … FOR
UPDATE on PostgreSQL; SQLite runs one transaction at a time) serializes every money
decision of one account, which is what makes "available" exact under concurrency.

available = balance + overdraft − Σ amount of the account's reservations that are
`open` and not yet past `expires_at`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.clock import utcnow
from billing_core.db.engine import Database
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.tables import accounts, reservations, transactions
from billing_core.money import ZERO

if TYPE_CHECKING:
    from billing_core.context import Context

log = structlog.get_logger(__name__)

OPEN = "open"
EXPIRED = "expired"
KIND_CALL = "call"


_encode_json = msgspec.json.Encoder().encode


def rating_text(rating: dict[str, Any]) -> str:
    """How a locked-in rating is stored with its hold, and compared at callFinish."""
    return _encode_json(rating).decode()


def call_ref(call_uid: str, prior: int) -> str:
    """The reference a call's transaction row carries."""
    return f"{call_uid}:{prior}"


@dataclass(frozen=True, slots=True)
class AccountState:
    id: int
    balance: Decimal
    overdraft: Decimal


@dataclass(frozen=True, slots=True)
class Reservation:
    id: int
    call_uid: str
    prior: int
    account_id: int
    amount: Decimal
    max_time_s: int
    state: str
    rating: dict[str, Any] | None  # the JSON of the rating locked in at callPrepare

    @classmethod
    def from_row(cls, row: Any) -> Reservation:
        rating = json.loads(row.rating) if row.rating else None
        return cls(
            row.id, row.call_uid, row.prior, row.account_id, Decimal(row.amount), row.max_time_s, row.state, rating
        )


@dataclass(frozen=True, slots=True)
class Hold:
    """One hold to place: `amount` for a call of at most `max_time_s`."""

    call_uid: str
    prior: int
    account_id: int
    user_id: int
    amount: Decimal
    max_time_s: int
    now: datetime
    expires_at: datetime
    rating: dict[str, Any]  # Rating.to_json(): what callFinish will charge at

    def reservation(self, reservation_id: int) -> Reservation:
        """The reservation this hold became."""
        return Reservation(
            reservation_id, self.call_uid, self.prior, self.account_id, self.amount, self.max_time_s, OPEN,
            self.rating,
        )  # fmt: skip


async def lock_account(conn: AsyncConnection, account_id: int) -> AccountState:
    """Lock the account row for the rest of the transaction and read its money."""
    row = (
        await conn.execute(
            select(accounts.c.id, accounts.c.balance, accounts.c.overdraft)
            .where(accounts.c.id == account_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such account")
    return AccountState(row.id, Decimal(row.balance), Decimal(row.overdraft))


async def held(conn: AsyncConnection, account_id: int, now: datetime) -> Decimal:
    """Σ of the account's open reservations that have not expired at `now`."""
    total = (
        await conn.execute(
            select(func.coalesce(func.sum(reservations.c.amount), 0)).where(
                reservations.c.account_id == account_id,
                reservations.c.state == OPEN,
                reservations.c.expires_at > now,
            )
        )
    ).scalar_one()
    return Decimal(total)


async def available(conn: AsyncConnection, account: AccountState, now: datetime) -> Decimal:
    """What the account may still spend: balance + overdraft − what is held. Lock first."""
    return account.balance + account.overdraft - await held(conn, account.id, now)


async def find_reservation(conn: AsyncConnection, call_uid: str, prior: int) -> Reservation | None:
    row = (
        await conn.execute(
            select(reservations).where(reservations.c.call_uid == call_uid, reservations.c.prior == prior)
        )
    ).first()
    return None if row is None else Reservation.from_row(row)


async def reserve(conn: AsyncConnection, hold: Hold) -> int:
    """Hold `hold.amount` for a call attempt (unique per call_uid and prior); the new id. Lock first."""
    result = await conn.execute(
        reservations.insert().values(
            call_uid=hold.call_uid,
            prior=hold.prior,
            account_id=hold.account_id,
            user_id=hold.user_id,
            amount=hold.amount,
            max_time_s=hold.max_time_s,
            state=OPEN,
            created_at=hold.now,
            expires_at=hold.expires_at,
            rating=rating_text(hold.rating),
        )
        .returning(reservations.c.id)
    )
    return int(result.scalar_one())


async def settle(conn: AsyncConnection, reservation_id: int) -> None:
    """End a hold (open or already expired) in the transaction that charges its call: the
    hold is deleted (migration 0004), its money now lives in the CDR and the debit."""
    await conn.execute(delete(reservations).where(reservations.c.id == reservation_id))


async def charge(conn: AsyncConnection, *, account_id: int, amount: Decimal, ref: str, now: datetime) -> None:
    """Debit `amount` (≥ 0) and record it as a transaction; a zero charge writes nothing."""
    if amount < ZERO:
        raise ValueError("a charge is never negative")
    if amount == ZERO:
        return
    await conn.execute(update(accounts).where(accounts.c.id == account_id).values(balance=accounts.c.balance - amount))
    await conn.execute(
        transactions.insert().values(account_id=account_id, amount=-amount, kind=KIND_CALL, ref=ref, created_at=now)
    )


async def expire_reservations(db: Database, now: datetime | None = None) -> int:
    """Mark every open reservation past its `expires_at` as expired; returns how many.

    Only bookkeeping: `held` already ignores them from that moment on.
    """
    moment = now or utcnow()
    async with db.begin() as conn:
        result = await conn.execute(
            update(reservations)
            .where(reservations.c.state == OPEN, reservations.c.expires_at <= moment)
            .values(state=EXPIRED)
        )
    count = int(result.rowcount or 0)
    if count:
        log.info("ledger.reservations_expired", count=count)
    return count


async def run_expiry_loop(services: Context, interval_s: float) -> None:
    """Expire reservations every `interval_s` until cancelled (run it inside a TaskGroup).

    A database outage is logged and retried at the next tick; it never ends the loop.
    """
    while True:
        try:
            await expire_reservations(services.db)
        except ApiError as exc:
            log.warning("ledger.expiry_failed", error=exc.code.value)
        await asyncio.sleep(interval_s)


def expiry_for(now: datetime, *, ring_s: int, max_time_s: int, grace_s: int) -> datetime:
    """When a hold placed at `now` stops counting: after its call may have rung (`ring_s`,
    Dial's time-out), then talked its max time (L() from the answer), plus a grace for the
    hangup handler's callFinish. Counting from callPrepare without the ring time let a call
    that rang long lose its hold while it rang, and other calls take the money."""
    return now + timedelta(seconds=ring_s + max_time_s + grace_s)
