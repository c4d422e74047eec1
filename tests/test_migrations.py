"""Alembic's migrations build exactly the schema billing_core/db/tables.py describes."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from billing_core.db.tables import metadata
from billing_core.services.container import Services
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
async def test_hold_and_charge_functions_exist_on_postgresql(services: Services) -> None:
    from sqlalchemy import text

    async with services.db.begin() as conn:
        names = set(
            (await conn.execute(text("SELECT proname FROM pg_proc WHERE proname LIKE 'callgate_%'"))).scalars()
        )
    assert names == {"callgate_hold", "callgate_charge"}


def test_a_url_with_percent_signs_reaches_alembic_unchanged() -> None:
    from billing_core.db.migrate import alembic_config

    url = "postgresql+asyncpg://postgres:p%40ss@/callgate?host=%2Fvar%2Frun%2Fpostgresql"
    assert alembic_config(url).get_main_option("sqlalchemy.url") == url
