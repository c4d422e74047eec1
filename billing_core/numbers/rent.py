"""A DID's rent periods: what the next month is, and buying it once (docs/billing.md, "DID rent").

A rented number's `expiration` is the end of its paid rent. The next period starts at
the expiration, or at the moment of the renewal when the number lapsed more than
REANCHOR_AFTER ago (the days it was out of service are not charged), and lasts one
calendar month (the same day and time next month, the month's last day when it has none).

Each period bought is a `did_periods` row, unique per (DID, period start), written in the
transaction that charges it, after the DID row and then the owner's account are locked:
a retry or a concurrent run finds the expiration moved and buys nothing, and if two ever
computed the same period the unique key would refuse the second.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.clock import as_utc
from billing_core.directory.tables import users
from billing_core.ledger.charges import Charge
from billing_core.numbers.tables import did_periods

KIND_DID = "did"
REANCHOR_AFTER = timedelta(days=1)


def add_month(moment: datetime) -> datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def next_start(expiration: datetime, now: datetime) -> datetime:
    return expiration if expiration >= now - REANCHOR_AFTER else now


def period_ref(did: str, start: datetime) -> str:
    """The transactions row's ref of the period starting at `start` (the same key)."""
    return f"did:{did}:{start:%Y-%m-%dT%H:%M:%S}"


@dataclass(frozen=True, slots=True)
class Period:
    did_id: int
    did: str
    owner: str
    account_id: int
    start: datetime
    end: datetime
    amount: Decimal

    def charge(self) -> Charge:
        return Charge(self.account_id, self.amount, KIND_DID, period_ref(self.did, self.start),
                      f"DID {self.did} rent until {self.end:%Y-%m-%d %H:%M:%S}")  # fmt: skip

    def row(self, kind: str, now: datetime) -> dict[str, Any]:
        return {"did_id": self.did_id, "did": self.did, "period_start": self.start, "period_end": self.end,
                "owner": self.owner, "account_id": self.account_id, "amount": self.amount, "kind": kind,
                "created_at": now}  # fmt: skip


def next_period(row: Any, account_id: int, now: datetime) -> Period:
    """The period after a (locked) dids row's paid rent, at its own cost."""
    expiration = as_utc(row.expiration)
    assert expiration is not None
    start = next_start(expiration, now)
    return Period(row.id, row.did, row.owner, account_id, start, add_month(start), Decimal(row.cost))


async def owner_accounts(conn: AsyncConnection, owners: set[str]) -> dict[str, int]:
    """username → account id for the owners that still exist."""
    if not owners:
        return {}
    rows = (await conn.execute(select(users.c.username, users.c.account_id).where(users.c.username.in_(owners)))).all()
    return {row.username: int(row.account_id) for row in rows}


async def bought(conn: AsyncConnection, periods: list[Period]) -> set[tuple[int, datetime]]:
    """Which of these (DID, start) periods are paid already."""
    if not periods:
        return set()
    rows = (
        await conn.execute(
            select(did_periods.c.did_id, did_periods.c.period_start).where(
                did_periods.c.did_id.in_({p.did_id for p in periods}),
                did_periods.c.period_start.in_({p.start for p in periods}),
            )
        )
    ).all()
    found = set()
    for row in rows:
        start = as_utc(row.period_start)
        assert start is not None
        found.add((int(row.did_id), start))
    return found
