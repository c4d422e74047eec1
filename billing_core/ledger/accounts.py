"""Accounts and users creation primitives shared by provisioning and bootstrap."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.clock import utcnow
from billing_core.directory.tables import users
from billing_core.ledger.tables import accounts, transactions

FIRST_ACCOUNT = 100000001


async def create_account(conn: AsyncConnection, *, balance: Decimal = Decimal(0)) -> int:
    """A new account numbered after the highest one; its opening balance is a transaction."""
    highest = (await conn.execute(select(func.max(accounts.c.id)))).scalar()
    number = max(int(highest or 0) + 1, FIRST_ACCOUNT)
    now = utcnow()
    await conn.execute(accounts.insert().values(id=number, balance=balance, overdraft=0, created_at=now))
    if balance:
        await conn.execute(
            transactions.insert().values(
                account_id=number, amount=balance, kind="initial", comment="opening balance", created_at=now
            )
        )
    return number


async def create_user(
    conn: AsyncConnection,
    *,
    username: str,
    password_hash: str | None,
    accesslevel: int,
    manager: str | None,
    account_id: int,
    currency: str = "EUR",
    language: str = "en",
) -> int:
    result = await conn.execute(
        users.insert().values(
            username=username,
            password_hash=password_hash,
            accesslevel=accesslevel,
            manager=manager,
            account_id=account_id,
            currency=currency,
            language=language,
            created_at=utcnow(),
        )
    )
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])
