"""How long the maintenance run (doMaintenance, `callgate maintenance`) takes over N rented
numbers whose month is over: every one renewed and charged (run 1), then the same run again
with nothing left to do (run 2), then N numbers whose owners cannot pay (run 3: disabled).

    .venv/bin/python -m bench.did_maintenance --numbers 100000 --users 1000
    .venv/bin/python -m bench.did_maintenance --database-url postgresql+asyncpg://postgres@127.0.0.1/callgate_bench_dids

The target database is made anew each time (bench/world.py: PostgreSQL dropped and
created, SQLite removed). The numbers are written straight to the tables (as addDID would
leave them, with an expiration an hour ago and a rent of 1.00), spread evenly over the users.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select, update

from bench.world import recreate_database
from billing_core.auth.secrets_store import hash_password, md5_hex
from billing_core.bootstrap import bootstrap
from billing_core.clock import utcnow
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.directory.tables import users
from billing_core.ledger.tables import accounts, transactions
from billing_core.numbers.maintenance_api import run_maintenance
from billing_core.numbers.tables import did_periods, dids

FIRST_ACCOUNT = 300000001
BATCH = 5000


async def populate(services: Services, numbers: int, user_count: int, balance: Decimal) -> None:
    now = utcnow()
    password = hash_password(md5_hex("bench"))
    async with services.db.begin() as conn:
        ids = [FIRST_ACCOUNT + i for i in range(user_count)]
        await conn.execute(accounts.insert(), [{"id": a, "balance": balance, "created_at": now} for a in ids])
        await conn.execute(users.insert(), [
            {"username": f"renter{i}", "password_hash": password, "accesslevel": 11, "manager": "admin",
             "account_id": a, "created_at": now}
            for i, a in enumerate(ids)
        ])  # fmt: skip
    expired = now - timedelta(hours=1)
    for start in range(0, numbers, BATCH):
        rows = [
            {"did": f"49{n:010d}", "owner": f"renter{n % user_count}", "cost": Decimal("1.00"),
             "expiration": expired, "auto_renew": True}
            for n in range(start, min(start + BATCH, numbers))
        ]  # fmt: skip
        async with services.db.begin() as conn:
            await conn.execute(dids.insert(), rows)


async def timed(services: Services) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    report = await run_maintenance(services)
    return time.perf_counter() - started, report["dids"]


async def bench(settings: Settings, numbers: int, user_count: int) -> None:
    await recreate_database(settings.database_url)
    services = Services.build(settings)
    try:
        await bootstrap(services.db)
        await populate(services, numbers, user_count, Decimal("1000000"))
        seconds, report = await timed(services)
        async with services.db.begin() as conn:
            periods = (await conn.execute(select(func.count()).select_from(did_periods))).scalar_one()
            charges = (await conn.execute(select(func.count()).select_from(transactions))).scalar_one()
        print(f"run 1 (renew {numbers}): {seconds:.2f} s, {numbers / seconds:,.0f} numbers/s; {report}; "
              f"periods={periods} transactions={charges}")  # fmt: skip
        seconds, report = await timed(services)
        print(f"run 2 (nothing due): {seconds:.3f} s; {report}")
        async with services.db.begin() as conn:
            await conn.execute(update(dids).values(expiration=utcnow() - timedelta(hours=1)))
            await conn.execute(update(accounts).values(balance=Decimal("0")))
        seconds, report = await timed(services)
        print(f"run 3 (owners cannot pay, {numbers}): {seconds:.2f} s; {report}")
    finally:
        await services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="sqlite+aiosqlite:///./bench-dids.db")
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    settings = replace(Settings.from_env(), database_url=args.database_url, redis_url=None, db_timeout_s=600.0)
    asyncio.run(bench(settings, args.numbers, args.users))


if __name__ == "__main__":
    main()
