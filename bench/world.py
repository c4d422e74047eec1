"""The benchmark's data, written straight through the services (like tests/factories.py and
tests/rating_world.py): a direction set, two routes, one byminute tariff whose entries have a
failover route at priority 2, `users` users each with its own SIP extension and account, an
Asterisk server key (level 50, FastAGI) and an HTTP server key (level 95).

    world = await provision(settings, users=200)

On PostgreSQL the target database (`callgate_bench` by default) is dropped and created again
first, then migrated with billing_core.bootstrap; on SQLite the file is removed. Every run
starts from the same state, so runs are comparable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.bootstrap import ADMIN_USERNAME, bootstrap
from billing_core.cache.keys import NAMESPACES
from billing_core.clock import utcnow
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.directory.keys import add_key
from billing_core.directory.tables import sip_extensions, users
from billing_core.ledger.accounts import create_account, create_user
from billing_core.rating.tables import directions, routes, tariff_entries, tariffs

# A generous balance: each callPrepare holds up to CALLGATE_MAX_CALL_S (4 h) at the dearest
# price (0.25 EUR/min = 60 EUR); a channel holds at most one reservation at a time.
BALANCE: Final = Decimal("1000000")
FIRST_EXTENSION: Final = 70001  # five digits: never the prefix of an 11+ digit destination

# (code, name, min_len, max_len, price per minute on route 1, on the failover route)
DIRECTIONS: Final[tuple[tuple[str, str, int, int, str, str], ...]] = (
    ("1", "USA-Canada", 11, 11, "0.0100", "0.0150"),
    ("7", "Russia", 11, 11, "0.0500", "0.0600"),
    ("79", "Russia Mobile", 11, 11, "0.0800", "0.0900"),
    ("33", "France", 11, 11, "0.0300", "0.0400"),
    ("336", "France Mobile", 11, 11, "0.1200", "0.1400"),
    ("44", "United Kingdom", 12, 12, "0.0200", "0.0250"),
    ("447", "UK Mobile", 12, 12, "0.1000", "0.1100"),
    ("49", "Germany", 11, 13, "0.0200", "0.0300"),
    ("4915", "Germany Mobile", 12, 13, "0.2000", "0.2500"),
    ("86", "China", 12, 13, "0.0400", "0.0500"),
)


@dataclass(frozen=True)
class Direction:
    code: str
    min_len: int
    max_len: int

    def number(self, rng: random.Random) -> str:
        """A destination in this direction, of an allowed length (more specific codes may
        claim it, which is fine: every direction has entries)."""
        length = rng.randint(self.min_len, self.max_len)
        return self.code + "".join(rng.choice("0123456789") for _ in range(length - len(self.code)))


@dataclass(frozen=True)
class BenchWorld:
    asterisk_key: str  # level 50, source 127.0.0.1: FastAGI finds it by the peer address
    http_key: str  # level 95, auth_by sip_extension: the HTTP shim's key (plain text answers)
    extensions: tuple[str, ...]  # one per user, in user order
    directions: tuple[Direction, ...]
    tariff_id: int


def pg_names(database_url: str) -> tuple[str, str]:
    """(admin DSN for asyncpg on the same server, target database name)."""
    url = make_url(database_url)
    if not url.database:
        raise ValueError("the PostgreSQL URL names no database")
    admin = url.set(drivername="postgresql", database="postgres")
    return admin.render_as_string(hide_password=False), url.database


def _remove_sqlite(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


async def recreate_database(database_url: str, *, synchronous_commit: str | None = None) -> None:
    """Drop and create the target database (PostgreSQL), or remove the SQLite file.

    synchronous_commit (PostgreSQL: on, off, local …) is set on the new database when given;
    None keeps the server's setting (what production runs with)."""
    if database_url.startswith("sqlite"):
        path = make_url(database_url).database
        if path and path != ":memory:":
            _remove_sqlite(path)  # a few unlinks before anything runs: blocking is fine here
        return
    admin_dsn, name = pg_names(database_url)
    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
        if synchronous_commit is not None:
            if synchronous_commit not in ("on", "off", "local", "remote_write", "remote_apply"):
                raise ValueError(f"synchronous_commit {synchronous_commit!r}")
            await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = {synchronous_commit}')
    finally:
        await conn.close()


async def _catalog(conn: AsyncConnection) -> tuple[int, tuple[Direction, ...]]:
    """Directions, two routes, the tariff and its entries (priority 1 and failover 2)."""
    primary = (await conn.execute(routes.insert().values(route="bench-primary", prefix="p/", owner=ADMIN_USERNAME)))
    backup = (await conn.execute(routes.insert().values(route="bench-backup", prefix="b/", owner=ADMIN_USERNAME)))
    primary_id, backup_id = primary.inserted_primary_key[0], backup.inserted_primary_key[0]  # type: ignore[index]
    tariff = await conn.execute(
        tariffs.insert().values(table_name="bench", name="bench", bill_type="byminute", owner=ADMIN_USERNAME)
    )
    tariff_id = int(tariff.inserted_primary_key[0])  # type: ignore[index]
    made: list[Direction] = []
    for code, name, min_len, max_len, price1, price2 in DIRECTIONS:
        row = await conn.execute(
            directions.insert().values(code=code, direction=name, min_len=min_len, max_len=max_len)
        )
        direction_id = row.inserted_primary_key[0]  # type: ignore[index]
        for priority, route_id, price in ((1, primary_id, price1), (2, backup_id, price2)):
            await conn.execute(
                tariff_entries.insert().values(
                    tariff_id=tariff_id, direction_id=direction_id, cost=Decimal(price), route_id=route_id,
                    priority=priority,
                )
            )
        made.append(Direction(code, min_len, max_len))
    return tariff_id, tuple(made)


async def _users(services: Services, conn: AsyncConnection, count: int, tariff_id: int) -> tuple[str, ...]:
    """`count` users under admin, each with its own account and SIP extension on the tariff."""
    extensions: list[str] = []
    sip_password = services.box.encrypt("bench-sip-password")  # one ciphertext is enough here
    for index in range(count):
        extension = str(FIRST_EXTENSION + index)
        account_id = await create_account(conn, balance=BALANCE)
        user_id = await create_user(
            conn,
            username=f"bench{index:05d}",
            password_hash=None,  # server keys never check user passwords
            accesslevel=11,
            manager=ADMIN_USERNAME,
            account_id=account_id,
        )
        await conn.execute(update(users).where(users.c.id == user_id).values(rates_id=tariff_id))
        await conn.execute(
            sip_extensions.insert().values(
                sip_extension=extension, user_id=user_id, sip_password_enc=sip_password, created_at=utcnow()
            )
        )
        extensions.append(extension)
    return tuple(extensions)


async def provision(settings: Settings, *, users: int, synchronous_commit: str | None = None) -> BenchWorld:
    """Recreate the target database and fill it; the caller's settings name it."""
    if users < 1:
        raise ValueError("users must be >= 1")
    await recreate_database(settings.database_url, synchronous_commit=synchronous_commit)
    services = Services.build(settings)
    try:
        await bootstrap(services.db)
        async with services.db.begin() as conn:
            tariff_id, made = await _catalog(conn)
            extensions = await _users(services, conn, users, tariff_id)
        # The Asterisk key first: FastAGI takes the first server key (by id) that admits the peer.
        asterisk_key = await add_key(
            services.db, services.box, name="bench-asterisk", access_level=50, source="127.0.0.1", owner=ADMIN_USERNAME,
            auth_by="sip_extension",
        )
        http_key = await add_key(
            services.db, services.box, name="bench-http", access_level=95, source="127.0.0.1", owner=ADMIN_USERNAME,
            auth_by="sip_extension",
        )
        # Generations live in Redis and outlive the dropped database: bump them all.
        await services.cache.invalidate(*NAMESPACES)
    finally:
        await services.close()
    return BenchWorld(asterisk_key, http_key, extensions, made, tariff_id)
