"""What `callgate migrate` guarantees: the schema, the master administrator, base data."""

from __future__ import annotations

from decimal import Decimal

import structlog
from sqlalchemy import select, text

from billing_core.asterisk.servers import ensure_local_server
from billing_core.db.engine import Database
from billing_core.db.migrate import upgrade_to_head
from billing_core.directory.tables import users
from billing_core.ledger.accounts import create_account, create_user
from billing_core.rating.tables import bill_types, currencies

log = structlog.get_logger(__name__)

ADMIN_USERNAME = "admin"
MASTER_ADMIN_LEVEL = 44

BASE_CURRENCIES = (("EUR", Decimal(1), "€"),)
BASE_BILL_TYPES = (("byminute", 0, 60), ("bysecond", 0, 1))


# Every worker of `callgate serve` migrates on its own (the parent never touches the
# database, so it cannot crash on an outage): a session advisory lock on PostgreSQL makes
# them take turns; the second finds the schema at head. SQLite has one writer anyway.
MIGRATION_LOCK_KEY = 0x63616C6C67617465  # "callgate"


async def bootstrap(db: Database) -> None:
    if db.is_sqlite:
        await upgrade_to_head(db.engine)
        await seed_base_data(db)
        return
    async with db.engine.connect() as lock_conn:
        await lock_conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        try:
            await upgrade_to_head(db.engine)
            await seed_base_data(db)
        finally:
            await lock_conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})


async def seed_base_data(db: Database) -> None:
    """The master administrator, EUR, the base bill types and the Asterisk server `local`
    (when no server is registered), where missing."""
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
        await ensure_local_server(conn)
