"""Charges of many accounts at once (the monthly DID rents of the maintenance run).

Same rules as billing_core.ledger.transfers.post, for a batch: the caller locks the
accounts first (`lock_available`, ascending id order, so two batches cannot deadlock),
decides against what each may spend, then `post_charges` writes one balance update per
account and one `transactions` row per charge, in the caller's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.ledger.book import OPEN
from billing_core.ledger.tables import accounts, reservations, transactions
from billing_core.money import ZERO


@dataclass(frozen=True, slots=True)
class Charge:
    account_id: int
    amount: Decimal  # > 0, taken from the balance
    kind: str
    ref: str
    comment: str


async def lock_available(conn: AsyncConnection, account_ids: Iterable[int], now: datetime) -> dict[int, Decimal]:
    """Lock the accounts (ascending id) and answer what each may spend at `now`:
    balance + overdraft − its live holds (the ledger's `available`)."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    rows = (
        await conn.execute(
            select(accounts.c.id, accounts.c.balance, accounts.c.overdraft)
            .where(accounts.c.id.in_(ids))
            .order_by(accounts.c.id)
            .with_for_update()
        )
    ).all()
    held = dict(
        (
            await conn.execute(
                select(reservations.c.account_id, func.sum(reservations.c.amount))
                .where(
                    reservations.c.account_id.in_(ids),
                    reservations.c.state == OPEN,
                    reservations.c.expires_at > now,
                )
                .group_by(reservations.c.account_id)
            )
        ).all()
    )
    return {
        row.id: Decimal(row.balance) + Decimal(row.overdraft) - Decimal(held.get(row.id) or 0) for row in rows
    }


async def post_charges(conn: AsyncConnection, charges: Sequence[Charge], now: datetime) -> None:
    """Debit every charge (accounts locked and checked by the caller) and record each one."""
    if not charges:
        return
    if any(charge.amount <= ZERO for charge in charges):
        raise ValueError("a charge is positive")
    totals: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for charge in charges:
        totals[charge.account_id] += charge.amount
    await conn.execute(
        update(accounts)
        .where(accounts.c.id == bindparam("target"))
        .values(balance=accounts.c.balance - bindparam("total", type_=accounts.c.balance.type)),
        [{"target": account, "total": total} for account, total in sorted(totals.items())],
    )
    await conn.execute(
        transactions.insert(),
        [
            {"account_id": c.account_id, "amount": -c.amount, "kind": c.kind, "ref": c.ref[:128],
             "comment": c.comment[:256], "created_at": now}
            for c in charges
        ],
    )  # fmt: skip
