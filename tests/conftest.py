"""Test backends: every backend-dependent test runs on the embedded default (SQLite +
in-process cache) and on the server backend (real PostgreSQL + real Redis).

CALLGATE_TEST_BACKENDS picks them: `embedded`, `server`, `embedded,server` (the
default), or `auto` (what `make test` uses on a laptop: the server backend only when
PostgreSQL and Redis answer; with CI=true a server that does not answer is a failure).
When the server backend is selected explicitly and PostgreSQL or Redis cannot be
reached, tests FAIL: they are never skipped. CI selects both explicitly. The summary
line says which backends ran and how many tests each.

Names are this run's own, so that two runs on one machine (or a developer's data on the
same servers) never meet: a PostgreSQL database `callgate_test_<random>` created and dropped
by this run, and a Redis database index claimed for the run (an empty one, marked in db 0
with an expiring key) unless CALLGATE_TEST_PG_DB / CALLGATE_TEST_REDIS_URL name them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid

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
from billing_core.container import Services
from billing_core.db.schema import metadata
from tests.fake_ami import FakeAmi

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

PG_ADMIN_DSN = os.environ.get("CALLGATE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_HOST_PORT = PG_ADMIN_DSN.split("@", 1)[-1].split("/", 1)[0]  # "127.0.0.1:5432"
PG_TEST_DB = os.environ.get("CALLGATE_TEST_PG_DB") or f"callgate_test_{uuid.uuid4().hex[:12]}"
_REDIS_BASE = "redis://127.0.0.1:6379"
_REDIS_CLAIM_S = 3 * 3600  # a crashed run's claim lapses by itself
_PROBE_TRIES = 5


def _host_port(host_port: str) -> tuple[str, int]:
    host, _, port = host_port.rpartition(":")
    return host, int(port)


def _servers_answer() -> bool:
    """Both servers accept a connection; a few tries, since one missed probe on a busy
    machine used to drop the whole server backend without a word."""
    for address in (_host_port(PG_HOST_PORT), _host_port(_REDIS_BASE.removeprefix("redis://"))):
        for attempt in range(_PROBE_TRIES):
            try:
                socket.create_connection(address, timeout=2).close()
                break
            except OSError:
                if attempt == _PROBE_TRIES - 1:
                    return False
    return True


def _selected_backends() -> list[str]:
    wanted = os.environ.get("CALLGATE_TEST_BACKENDS", "embedded,server").strip()
    if wanted == "auto":
        if _servers_answer():
            return ["embedded", "server"]
        if os.environ.get("CI", "").lower() == "true":
            raise pytest.UsageError("CI=true: PostgreSQL or Redis does not answer on 127.0.0.1; not dropping a backend")
        return ["embedded"]
    return [b.strip() for b in wanted.split(",") if b.strip()]


BACKENDS = _selected_backends()


def _claim_redis_db() -> str:
    """An empty Redis database index of this run's own (1..15), marked in db 0 by an
    expiring key, so FLUSHDB never hits another run's or anybody's data."""
    if "server" not in BACKENDS:
        return f"{_REDIS_BASE}/15"  # never connected to
    claims = redis.Redis.from_url(f"{_REDIS_BASE}/0", socket_timeout=5)
    for index in range(15, 0, -1):
        key = f"callgate-test:claim:{index}"
        if not claims.set(key, PG_TEST_DB, nx=True, ex=_REDIS_CLAIM_S):
            continue
        if redis.Redis.from_url(f"{_REDIS_BASE}/{index}", socket_timeout=5).dbsize() == 0:
            return f"{_REDIS_BASE}/{index}"
        claims.delete(key)  # somebody's data: leave it alone
    raise pytest.UsageError("no empty Redis database index (1..15) is free for this test run")


try:
    REDIS_TEST_URL = os.environ.get("CALLGATE_TEST_REDIS_URL") or _claim_redis_db()
except redis.RedisError as exc:
    raise pytest.UsageError(f"Redis is not reachable at {_REDIS_BASE}: {exc}") from exc
_REDIS_CLAIMED = "CALLGATE_TEST_REDIS_URL" not in os.environ


def pytest_report_header() -> str:
    return f"callgate test backends: {', '.join(BACKENDS)} (PostgreSQL database {PG_TEST_DB}, Redis {REDIS_TEST_URL})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which backends ran, and how many tests on each."""
    counts = dict.fromkeys(("embedded", "server"), 0)
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call":
                continue
            for backend in counts:
                if f"[{backend}" in report.nodeid or f"-{backend}]" in report.nodeid or f"-{backend}-" in report.nodeid:
                    counts[backend] += 1
    ran = ", ".join(f"{name} ({counts[name]} tests)" for name in BACKENDS)
    terminalreporter.write_line(f"callgate test backends run: {ran}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop this run's database and release its Redis index (unless they were named)."""
    if "server" not in BACKENDS:
        return
    if _REDIS_CLAIMED:
        try:
            redis.Redis.from_url(REDIS_TEST_URL, socket_timeout=5).flushdb()
            redis.Redis.from_url(f"{_REDIS_BASE}/0", socket_timeout=5).delete(
                f"callgate-test:claim:{REDIS_TEST_URL.rsplit('/', 1)[-1]}"
            )
        except redis.RedisError:
            pass  # the claim expires by itself
    if "CALLGATE_TEST_PG_DB" not in os.environ:
        try:
            asyncio.run(_drop_pg_database(PG_TEST_DB))
        except (OSError, asyncpg.PostgresError):
            pass  # nothing to drop, or the server is gone


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


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
        # The store's time-out for what tests set up and read; the production default (2 s) was
        # passed by plain fixture writes when PostgreSQL or SQLite stalled on a loaded CI machine.
        # Tests of time-outs set their own (test_phantom_hold, test_outages, test_startup, …).
        "db_timeout_s": 10.0,
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


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    """A fake Asterisk Manager Interface (tests/fake_ami.py) on a free port."""
    server = await FakeAmi().start()
    yield server
    await server.close()
