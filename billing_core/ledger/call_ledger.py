"""The money side of call control, as four primitives every store implements the same way.

callPrepare and callFinish are the hot path: one per call attempt each. Their money
moves through a `CallLedger`, so that each store can do them in as few database round
trips as it can while the rules stay in one place (billing_core.calls.control):

- `try_hold`: hold `amount` for (call_uid, prior) if the account can afford it, atomically
  (Σ open holds ≤ balance + overdraft, decided under the account's row lock). When it
  cannot, it says how much is available so the caller can plan a shorter call and retry.
- `find_reservation` / `call_record`: what is already stored for a call attempt.
- `charge_at_hold`: callFinish's one round trip. The caller prices the call at the rating
  it would hold at now; the store writes the CDR, the debit, its transaction row and ends
  the hold in ONE transaction if the call's hold (if any) was priced the same way and
  long enough, and otherwise hands the hold back to be priced at (`reprice`, rare: a
  tariff edit mid-call, a call longer than its hold). Any worker can finish any call.
- `record_call`: the same write at a price the caller settled itself (after `reprice`).
  Both write once per (call_uid, prior); a duplicate gets the stored answer.

`SqlCallLedger` (here) runs them through SQLAlchemy and serves SQLite, the embedded
default. `billing_core.ledger.pg_call_ledger.PgCallLedger` runs each as one call of a
PL/pgSQL function over raw asyncpg connections (migrations 0002, 0004), which is what makes PostgreSQL
fast enough for the benchmark; the test suite runs the same call tests against both.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core import deadline
from billing_core.db.engine import Database
from billing_core.ledger import book as ledger
from billing_core.ledger.book import Hold, Reservation
from billing_core.ledger.tables import cdrs


class DuplicateCall(Exception):
    """Another request stored a hold for the same (call_uid, prior) at the same moment."""


@dataclass(frozen=True, slots=True)
class HoldAttempt:
    """`held` (`reservation` is the new hold); `short` (then `available` says what the
    account can still spend); `exists` (`reservation` is the one stored before);
    `finished` (the call was charged already: its hold ended with the charge)."""

    outcome: Literal["held", "short", "exists", "finished"]
    available: Decimal | None = None
    reservation: Reservation | None = None


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """The callFinish answer a CDR keeps, replayed to a repeated request."""

    text: str
    display_cost: Decimal
    display_currency: str


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One CDR row, with what it costs the account (system currency)."""

    call_uid: str
    prior: int
    user_id: int
    account_id: int
    sip_extension: str
    callerid: str
    destination: str
    direction_id: int | None
    direction: str
    route_id: int | None
    route: str
    length_s: int
    answered_ms: int | None
    billed_s: int
    status: str
    cause: str
    cost: Decimal
    display_cost: Decimal
    display_currency: str
    is_did: str
    answer: str
    created_at: datetime

    def stored(self) -> StoredAnswer:
        return StoredAnswer(self.answer, self.display_cost, self.display_currency)

    def columns(self) -> dict[str, Any]:
        """The CDR row: column name → value."""
        return {name: getattr(self, name) for name in _RECORD_FIELDS}


@dataclass(frozen=True, slots=True)
class FinishAttempt:
    """`written` (charged now); `stored` (charged before: `stored` is its answer); `reprice`
    (the call's hold was priced at another rating, for another account or for a shorter
    call: `reservation` is that hold, to price the call at)."""

    outcome: Literal["written", "stored", "reprice"]
    stored: StoredAnswer | None = None
    reservation: Reservation | None = None


def priced_as_held(held: Reservation, record: CallRecord, rating: dict[str, Any]) -> bool:
    """Whether `record`, priced at `rating`, is what the hold allows as it is."""
    return held.account_id == record.account_id and held.rating == rating and record.billed_s <= held.max_time_s


class CallLedger(Protocol):
    async def try_hold(self, hold: Hold) -> HoldAttempt: ...

    async def find_reservation(self, call_uid: str, prior: int) -> Reservation | None: ...

    async def call_record(self, call_uid: str, prior: int) -> tuple[StoredAnswer | None, Reservation | None]: ...

    async def charge_at_hold(self, record: CallRecord, *, rating: dict[str, Any]) -> FinishAttempt:
        """Write the call if its hold, if any, was priced at `rating` (see the module doc)."""
        ...

    async def record_call(self, record: CallRecord, *, reservation_id: int | None) -> StoredAnswer | None:
        """Write the call; None when written now, else the answer stored before."""
        ...

    async def warm_up(self) -> None:
        """Open what the first decisions would otherwise wait for (best effort)."""
        ...

    async def close(self) -> None: ...


class SqlCallLedger:
    """The primitives through SQLAlchemy (the embedded default; any SQL store works)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _within_deadline(self, conn: AsyncConnection) -> None:
        """SQLite waits for another process's write lock up to busy_timeout; this
        transaction's wait ends with its decision's deadline (issue 9, item 8), so SQLite
        gives up by itself (rolled back, E_SQL_ERROR) instead of being cancelled mid-write."""
        if self.db.is_sqlite:
            left_s = deadline.until(self.db.timeout_s) - asyncio.get_running_loop().time()
            await conn.exec_driver_sql(f"PRAGMA busy_timeout = {max(1, int(left_s * 1000))}")

    async def try_hold(self, hold: Hold) -> HoldAttempt:
        try:
            async with self.db.begin() as conn:
                await self._within_deadline(conn)
                account = await ledger.lock_account(conn, hold.account_id)
                existing = await ledger.find_reservation(conn, hold.call_uid, hold.prior)
                if existing is not None:
                    return HoldAttempt("exists", reservation=existing)
                if await _stored_answer(conn, hold.call_uid, hold.prior) is not None:
                    return HoldAttempt("finished")
                available = await ledger.available(conn, account, hold.now)
                if available < hold.amount:
                    return HoldAttempt("short", available=available)
                reservation_id = await ledger.reserve(conn, hold)
                return HoldAttempt(
                    "held", available=available - hold.amount, reservation=hold.reservation(reservation_id)
                )
        except IntegrityError as exc:
            raise DuplicateCall() from exc

    async def find_reservation(self, call_uid: str, prior: int) -> Reservation | None:
        async with self.db.begin() as conn:
            return await ledger.find_reservation(conn, call_uid, prior)

    async def call_record(self, call_uid: str, prior: int) -> tuple[StoredAnswer | None, Reservation | None]:
        async with self.db.begin() as conn:
            return await _stored_answer(conn, call_uid, prior), await ledger.find_reservation(conn, call_uid, prior)

    async def charge_at_hold(self, record: CallRecord, *, rating: dict[str, Any]) -> FinishAttempt:
        try:
            async with self.db.begin() as conn:
                await self._within_deadline(conn)
                await ledger.lock_account(conn, record.account_id)
                stored = await _stored_answer(conn, record.call_uid, record.prior)
                if stored is not None:
                    return FinishAttempt("stored", stored=stored)
                held = await ledger.find_reservation(conn, record.call_uid, record.prior)
                if held is not None and not priced_as_held(held, record, rating):
                    return FinishAttempt("reprice", reservation=held)
                await _write_call(conn, record, None if held is None else held.id)
                return FinishAttempt("written")
        except IntegrityError as exc:
            return FinishAttempt("stored", stored=await self._written_meanwhile(record, exc))

    async def record_call(self, record: CallRecord, *, reservation_id: int | None) -> StoredAnswer | None:
        try:
            async with self.db.begin() as conn:
                await self._within_deadline(conn)
                await ledger.lock_account(conn, record.account_id)
                stored = await _stored_answer(conn, record.call_uid, record.prior)
                if stored is not None:
                    return stored
                await _write_call(conn, record, reservation_id)
                return None
        except IntegrityError as exc:
            return await self._written_meanwhile(record, exc)

    async def _written_meanwhile(self, record: CallRecord, exc: IntegrityError) -> StoredAnswer:
        """After a unique violation: a concurrent duplicate wrote the CDR first (a store
        without row locks). Any other violation is raised again."""
        async with self.db.begin() as conn:
            stored = await _stored_answer(conn, record.call_uid, record.prior)
        if stored is None:
            raise exc
        return stored

    async def warm_up(self) -> None:
        """SQLite has one connection, opened with the first transaction."""

    async def close(self) -> None:
        """The engine belongs to Services.db, which closes it."""


async def _write_call(conn: AsyncConnection, record: CallRecord, reservation_id: int | None) -> None:
    """The CDR, the debit and its transaction row, and the end of the hold: one transaction."""
    await conn.execute(cdrs.insert().values(**record.columns()))
    await ledger.charge(
        conn, account_id=record.account_id, amount=record.cost, ref=ledger.call_ref(record.call_uid, record.prior),
        now=record.created_at,
    )  # fmt: skip
    if reservation_id is not None:
        await ledger.settle(conn, reservation_id)


_RECORD_FIELDS: tuple[str, ...] = tuple(field.name for field in fields(CallRecord))


async def _stored_answer(conn: AsyncConnection, call_uid: str, prior: int) -> StoredAnswer | None:
    row = (
        await conn.execute(
            select(cdrs.c.answer, cdrs.c.display_cost, cdrs.c.display_currency).where(
                cdrs.c.call_uid == call_uid, cdrs.c.prior == prior
            )
        )
    ).first()
    return None if row is None else StoredAnswer(row.answer, Decimal(row.display_cost), row.display_currency)
