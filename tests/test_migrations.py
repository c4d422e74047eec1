"""Alembic's migrations build exactly the schema the subsystems' tables modules describe (billing_core.all_tables)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from billing_core.all_tables import metadata
from billing_core.container import Services
from tests.conftest import BACKENDS


async def test_migrated_schema_matches_the_tables(services: Services) -> None:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with services.db.engine.connect() as conn:
        diff = await conn.run_sync(differences)
    assert diff == []


# SQLite runs the call ledger through SQLAlchemy (SqlCallLedger): no functions there.
@pytest.mark.skipif("server" not in BACKENDS, reason="PostgreSQL only")
@pytest.mark.parametrize("settings", ["server"], indirect=True)
async def test_the_ledger_functions_exist_on_postgresql(services: Services) -> None:
    from sqlalchemy import text

    async with services.db.begin() as conn:
        names = set(
            (await conn.execute(text("SELECT proname FROM pg_proc WHERE proname LIKE 'callgate_%'"))).scalars()
        )
    assert names == {"callgate_hold", "callgate_charge", "callgate_finish", "callgate_batch"}


def test_a_url_with_percent_signs_reaches_alembic_unchanged() -> None:
    from billing_core.db.migrate import alembic_config

    url = "postgresql+asyncpg://postgres:p%40ss@/callgate?host=%2Fvar%2Frun%2Fpostgresql"
    assert alembic_config(url).get_main_option("sqlalchemy.url") == url


async def _alembic(url: str, action: str, target: str) -> None:
    from alembic import command
    from sqlalchemy.ext.asyncio import create_async_engine

    from billing_core.db.migrate import alembic_config

    engine = create_async_engine(url)
    cfg = alembic_config(url)

    def run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        getattr(command, action)(cfg, target)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


async def _foreign_keys_and_functions(url: str) -> tuple[set[str], set[str]]:
    from sqlalchemy import inspect, text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)

    def read(connection: Connection) -> tuple[set[str], set[str]]:
        found = inspect(connection)
        keys = {
            f"{table}.{fk['constrained_columns'][0]}"
            for table in ("reservations", "cdrs", "transactions")
            for fk in found.get_foreign_keys(table)
        }
        functions: set[str] = set()
        if connection.dialect.name == "postgresql":
            rows = connection.execute(text("SELECT proname FROM pg_proc WHERE proname LIKE 'callgate_%'"))
            functions = set(rows.scalars())
        return keys, functions

    try:
        async with engine.connect() as conn:
            return await conn.run_sync(read)
    finally:
        await engine.dispose()


@pytest.fixture
async def scratch_url(settings: Any, tmp_path: Any) -> Any:
    """An empty database of the test's backend, dropped afterwards."""
    if settings.database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}"
        return
    import asyncpg

    from tests.conftest import PG_ADMIN_DSN, _pg_url

    name = f"callgate_test_scratch_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _pg_url(name)
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


async def test_migration_0004_goes_down_and_up_again(scratch_url: str) -> None:
    await _alembic(scratch_url, "upgrade", "head")
    keys, functions = await _foreign_keys_and_functions(scratch_url)
    assert keys == set()
    await _alembic(scratch_url, "downgrade", "0003")
    keys, down_functions = await _foreign_keys_and_functions(scratch_url)
    assert keys == {
        "reservations.account_id", "reservations.user_id", "cdrs.account_id", "cdrs.user_id", "transactions.account_id"
    }  # fmt: skip
    await _alembic(scratch_url, "upgrade", "head")
    assert await _foreign_keys_and_functions(scratch_url) == (set(), functions)
    if "postgresql" in scratch_url:
        assert functions == {"callgate_hold", "callgate_charge", "callgate_finish", "callgate_batch"}
        assert down_functions == {"callgate_hold", "callgate_charge"}
