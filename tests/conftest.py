"""Test backends: every backend-dependent test runs on the embedded default (SQLite +
in-process cache) and on the server backend (real PostgreSQL + real Redis).

CALLGATE_TEST_BACKENDS picks them: `embedded`, `server`, `embedded,server` (the
default), or `auto` (what `make test` uses on a laptop: the server backend only when
PostgreSQL and Redis answer). When the server backend is selected explicitly and
PostgreSQL or Redis cannot be reached, tests FAIL: they are never skipped. CI selects
both explicitly.
"""

from __future__ import annotations

import asyncio
import os
import shutil

# Tests hash many passwords; production cost stays the default (see secrets_store).
os.environ.setdefault("CALLGATE_PASSWORD_HASH_COST", "16")
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis
import structlog
from sqlalchemy import text

from billing_core.api.dispatch import Dispatcher
from billing_core.bootstrap import bootstrap, seed_base_data
from billing_core.config import Settings
from billing_core.db.tables import metadata
from billing_core.services.container import Services

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

PG_ADMIN_DSN = os.environ.get("CALLGATE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_TEST_DB = os.environ.get("CALLGATE_TEST_PG_DB", "callgate_test")
REDIS_TEST_URL = os.environ.get("CALLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def _servers_answer() -> bool:
    import socket

    for port in (5432, 6379):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
    return True


def _selected_backends() -> list[str]:
    wanted = os.environ.get("CALLGATE_TEST_BACKENDS", "embedded,server").strip()
    if wanted == "auto":
        return ["embedded", "server"] if _servers_answer() else ["embedded"]
    return [b.strip() for b in wanted.split(",") if b.strip()]


BACKENDS = _selected_backends()


def pytest_report_header() -> str:
    return f"callgate test backends: {', '.join(BACKENDS)}"


def _pg_url(db: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{db}"


async def _recreate_pg_database() -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", PG_TEST_DB
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{PG_TEST_DB}"')
        await conn.execute(f'CREATE DATABASE "{PG_TEST_DB}"')
        # A scratch database: no need to wait for the disk on every commit.
        await conn.execute(f'ALTER DATABASE "{PG_TEST_DB}" SET synchronous_commit = off')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def server_backend_ready() -> Iterator[None]:
    """Create a fresh test database once; fail loudly if the servers are not there."""
    try:
        asyncio.run(_recreate_pg_database())
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {exc}")
    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL}: {exc}")
    asyncio.run(_migrate(_pg_url(PG_TEST_DB)))
    yield


async def _migrate(url: str) -> None:
    built = Services.build(Settings(database_url=url))
    try:
        await bootstrap(built.db)
    finally:
        await built.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database, copied for each test (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("template") / "callgate.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    common = {
        "secret_file": str(tmp_path / "secret"),
        "spool_dir": str(tmp_path / "spool"),
        "agi_port": 0,
        "http_port": 0,
    }
    if request.param == "embedded":
        shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp_path / "callgate.db")
        return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'callgate.db'}", **common)  # type: ignore[arg-type]
    if request.param == "server":
        request.getfixturevalue("server_backend_ready")
        redis.Redis.from_url(REDIS_TEST_URL).flushdb()
        return Settings(database_url=_pg_url(PG_TEST_DB), redis_url=REDIS_TEST_URL, **common)  # type: ignore[arg-type]
    raise ValueError(f"unknown backend {request.param}")


async def _truncate_all(services: Services) -> None:
    if services.db.is_sqlite:
        return
    async with services.db.engine.begin() as conn:
        exists = (await conn.execute(text("SELECT to_regclass('public.users')"))).scalar()
        if exists is None:
            return
        # DELETE is much cheaper than TRUNCATE on tables this small.
        for table in reversed(metadata.sorted_tables):
            await conn.execute(table.delete())
        sequences = (await conn.execute(text("SELECT sequencename FROM pg_sequences"))).scalars().all()
        for name in sequences:
            await conn.execute(text(f'ALTER SEQUENCE "{name}" RESTART'))


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    built = Services.build(settings)
    await _truncate_all(built)
    await seed_base_data(built.db)  # the schema is migrated once per session
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
def dispatcher(services: Services) -> Dispatcher:
    import billing_core.api.methods  # noqa: F401 - registers every method

    return Dispatcher(services)
