"""Issue 9, item 8: a declined callPrepare holds nothing, even after the database catches up.

Another connection locks the account (PostgreSQL: the row, FOR UPDATE; SQLite: the write
lock, BEGIN IMMEDIATE) for longer than the decision's time-out. callPrepare must answer
`Declined E_SQL_ERROR`, and once the lock is gone no hold may appear: the next call of the
same account queues behind whatever was still waiting, so by its answer a late commit
would have landed. Over a real socket, on both backends.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from billing_core.api.dispatch import Dispatcher
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.ledger.pg_call_ledger import asyncpg_dsn
from billing_core.ledger.tables import reservations
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer, ServerConfig
from tests.asterisk_sim import run_agi_session
from tests.factories import balance_of, make_user
from tests.test_agi_end_to_end import build_world

PREPARE = "login={login}&destination=79010000001&prior=1"
# The store's own time-out is longer than the decision's (the bridge's): the decision's
# deadline is what the database must keep, as when a decision spent time before its hold.
# Both are generous: a 2-core CI machine running the suite once stalled the embedded store
# past a 1.5 s decision; the lock is held until the test releases it, so only the wait grows.
DB_TIMEOUT_S = 6.0
DECISION_TIMEOUT_S = 3.0
WARM_TRIES = 5


@pytest.fixture
async def port_and_services(
    services: Services, settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[int, Services]]:
    """A callgate whose decisions time out after DECISION_TIMEOUT_S (the fixture's store and data)."""
    import billing_core.api.methods  # noqa: F401

    quick = Services.build(replace(settings, db_timeout_s=DB_TIMEOUT_S))
    server = FastAGIServer(AGIBridge(Dispatcher(quick), Spool(tmp_path / "spool"), timeout_s=DECISION_TIMEOUT_S),
                           ServerConfig(env_timeout_s=2.0, reply_timeout_s=2.0, dispatch_timeout_s=5.0))
    await server.start("127.0.0.1", 0)
    try:
        yield server.port, quick
    finally:
        server.close()
        await server.wait_closed()
        await quick.close()


async def _lock_account(settings: Settings, account_id: int) -> Callable[[], Awaitable[None]]:
    """Lock `account_id` from another connection; returns the release."""
    if settings.is_sqlite:
        path = make_url(settings.database_url).database
        assert path is not None
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # SQLite's write lock: a hold cannot be written
        other.execute("UPDATE accounts SET balance = balance WHERE id = ?", (account_id,))

        async def release_sqlite() -> None:
            other.execute("ROLLBACK")
            other.close()

        return release_sqlite
    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    transaction = conn.transaction()
    await transaction.start()
    await conn.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", account_id)

    async def release_pg() -> None:
        await transaction.rollback()
        await conn.close()

    return release_pg


async def _warm(port: int, services: Services) -> None:
    """One allowed decision before the test's own: a cold store (its first connections and
    statements) spends part of a decision's short time on a busy machine, which is not what
    these tests measure. It may take a few tries: a declined try holds nothing."""
    tariff = await _tariff_of(services, "10000")
    await make_user(services, "warm", balance=Decimal("1"), sip_extension="19999", sip_rates_id=tariff)
    answers: list[dict[str, str]] = []
    for attempt in range(WARM_TRIES):
        answers.append(await _prepare(port, "19999", f"warm{attempt}"))
        if answers[-1]["CALLGATE_RESULT"] == "Allowed":
            return
    raise AssertionError(f"the store never warmed: {answers}")


async def _holds(services: Services, call_uid: str) -> int:
    async with services.db.begin() as conn:
        query = select(func.count()).select_from(reservations).where(reservations.c.call_uid == call_uid)
        return int((await conn.execute(query)).scalar_one())


async def _prepare(port: int, login: str, uid: str) -> dict[str, str]:
    result = await run_agi_session("127.0.0.1", port, "callPrepare", query=PREPARE.format(login=login), uniqueid=uid,
                                  timeout_s=DECISION_TIMEOUT_S + 7.0)
    return result.variables


async def test_a_decline_on_a_locked_account_leaves_no_hold(
    port_and_services: tuple[int, Services], services: Services, settings: Settings
) -> None:
    port, _ = port_and_services
    world = await build_world(services)
    await _warm(port, services)
    release = await _lock_account(settings, world.account)
    try:
        declined = await _prepare(port, "10000", "ph1")
    finally:
        await release()
    assert (declined["CALLGATE_RESULT"], declined["CALLGATE_ERROR"]) == ("Declined", "E_SQL_ERROR"), declined
    # The same account again: it waits behind anything still in the database's queue.
    after = await _prepare(port, "10000", "ph2")
    assert after["CALLGATE_RESULT"] == "Allowed" and after["CALLGATE_MAXTIME"] == "90", after
    assert await _holds(services, "ph1") == 0
    assert await _holds(services, "ph2") == 1
    assert await balance_of(services, world.account) == Decimal("1.0000")


async def test_holds_sharing_a_statement_with_a_locked_account_are_not_its_victims(
    port_and_services: tuple[int, Services], services: Services, settings: Settings
) -> None:
    """Calls of a free account that arrive with calls of a locked one (PostgreSQL sends them
    in one statement) are allowed; the locked account's calls hold nothing."""
    port, _ = port_and_services
    world = await build_world(services)  # alice, 10000, 1.00 EUR
    await _warm(port, services)
    tariff = await _tariff_of(services, "10000")
    free = [await make_user(services, name, balance=Decimal("5"), sip_extension=f"1000{n + 2}", sip_rates_id=tariff)
            for n, name in enumerate(("carol", "dave", "erin"))]  # one call each: a call holds all it can
    release = await _lock_account(settings, world.account)
    try:
        answers = await asyncio.gather(
            *(_prepare(port, "10000", f"locked{n}") for n in range(3)),
            *(_prepare(port, f"1000{n + 2}", f"free{n}") for n in range(3)),
        )
    finally:
        await release()
    if settings.is_sqlite:  # one writer for the whole file: every hold waits for the lock
        assert all(a["CALLGATE_ERROR"] == "E_SQL_ERROR" for a in answers), answers
    else:
        assert [a["CALLGATE_RESULT"] for a in answers[3:]] == ["Allowed"] * 3, answers[3:]
        assert [await _holds(services, f"free{n}") for n in range(3)] == [1, 1, 1]
    assert [a["CALLGATE_ERROR"] for a in answers[:3]] == ["E_SQL_ERROR"] * 3, answers[:3]
    assert (await _prepare(port, "10000", "after"))["CALLGATE_RESULT"] == "Allowed"
    assert [await _holds(services, f"locked{n}") for n in range(3)] == [0, 0, 0]
    assert await balance_of(services, world.account) == Decimal("1.0000")
    assert [await balance_of(services, made.account_id) for made in free] == [Decimal("5.0000")] * 3


async def _tariff_of(services: Services, sip_extension: str) -> int:
    from billing_core.directory.tables import sip_extensions

    async with services.db.begin() as conn:
        query = select(sip_extensions.c.sip_rates_id).where(sip_extensions.c.sip_extension == sip_extension)
        return int((await conn.execute(query)).scalar_one())
