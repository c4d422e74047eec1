"""What `callgate migrate` guarantees: the schema, the master administrator, base data."""

from __future__ import annotations

from decimal import Decimal

import structlog
from sqlalchemy import select

from billing_core.db.engine import Database
from billing_core.db.migrate import upgrade_to_head
from billing_core.db.tables import bill_types, currencies, users
from billing_core.services.accounts import create_account, create_user

log = structlog.get_logger(__name__)

ADMIN_USERNAME = "admin"
MASTER_ADMIN_LEVEL = 44

BASE_CURRENCIES = (("EUR", Decimal(1), "€"),)
BASE_BILL_TYPES = (("byminute", 0, 60), ("bysecond", 0, 1))


async def bootstrap(db: Database) -> None:
    await upgrade_to_head(db.engine)
    await seed_base_data(db)


async def seed_base_data(db: Database) -> None:
    """The master administrator, EUR and the base bill types, where missing."""
    async with db.begin() as conn:
        if (await conn.execute(select(users.c.id).where(users.c.username == ADMIN_USERNAME))).first() is None:
            account = await create_account(conn)
            await create_user(
                conn,
                username=ADMIN_USERNAME,
                password_hash=None,
                accesslevel=MASTER_ADMIN_LEVEL,
                manager=None,
                account_id=account,
            )
            log.info("bootstrap.admin_created", username=ADMIN_USERNAME, account=account)
        for code, course, display in BASE_CURRENCIES:
            if (await conn.execute(select(currencies.c.currency).where(currencies.c.currency == code))).first() is None:
                await conn.execute(currencies.insert().values(currency=code, eur_course=course, displayname=display))
        for name, free, step in BASE_BILL_TYPES:
            if (await conn.execute(select(bill_types.c.id).where(bill_types.c.type == name))).first() is None:
                await conn.execute(bill_types.insert().values(type=name, free_threshold=free, step=step))
