"""Money is exact on every backend, and amounts that cannot be exact are refused.

- Amounts of 19 significant digits (1e14-scale + 0.0001) keep every 0.0001 through
  refills, transfers, balances, SQL sums and the API's answers (SQLite stored floats).
- Amounts past NUMERIC(18,4), with more than 4 decimals, with an exponent or with
  non-ASCII digits answer HTTP 400 E_INVALID_ARGUMENT over HTTP and move nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

import billing_core.api.methods  # noqa: F401 - registers every method
from billing_core.api.dispatch import Dispatcher
from billing_core.container import Services
from billing_core.ledger.tables import accounts, transactions
from tests.factories import balance_of, make_key, make_user
from tests.http_support import Api, serve
from tests.test_api_users import call, code, login, make_keys
from tests.test_migrations import _alembic


@pytest.fixture
async def api(services: Services) -> AsyncIterator[Api]:
    async with serve(services, test_methods=False) as running:
        yield running


async def ledger_sum(services: Services, account_id: int) -> Decimal:
    async with services.db.begin() as conn:
        total = (
            await conn.execute(
                select(func.coalesce(func.sum(transactions.c.amount), 0)).where(transactions.c.account_id == account_id)
            )
        ).scalar_one()
    return Decimal(total)


async def test_19_digit_amounts_keep_every_ten_thousandth(services: Services, dispatcher: Dispatcher) -> None:
    keys = await make_keys(services)
    pu = await make_user(services, "pu", balance=Decimal("10"))
    other = await make_user(services, "other", balance=Decimal("20"))

    refill = await call(
        dispatcher,
        keys.server,
        "transferMoney",
        {"login": "admin", "destination": "pu", "amount": "99999999999900.0001", "comment": "big"},
    )
    assert refill.ok, refill.error
    there = await call(
        dispatcher,
        keys.client,
        "transferMoney",
        login(pu, destination="other", amount="99999999999909.9999", comment="x"),
    )
    assert there.ok, there.error
    back = await call(
        dispatcher, keys.client, "transferMoney", login(other, destination="pu", amount="0.0001", comment="x")
    )
    assert back.ok, back.error

    assert await balance_of(services, pu.account_id) == Decimal("0.0003")
    assert await balance_of(services, other.account_id) == Decimal("99999999999929.9998")
    assert await ledger_sum(services, pu.account_id) == Decimal("0.0003")
    assert await ledger_sum(services, other.account_id) == Decimal("99999999999929.9998")
    async with services.db.begin() as conn:
        total = (await conn.execute(select(func.sum(accounts.c.balance)))).scalar_one()
        amounts = (
            (
                await conn.execute(
                    select(transactions.c.amount)
                    .where(transactions.c.account_id == other.account_id)
                    .order_by(transactions.c.id)
                )
            )
            .scalars()
            .all()
        )
    assert Decimal(total) == Decimal("99999999999930.0001")  # 10 + 20 + the refill, to the 0.0001
    assert [Decimal(a) for a in amounts] == [Decimal("20"), Decimal("99999999999909.9999"), Decimal("-0.0001")]
    info = await call(dispatcher, keys.client, "getAccountInfo", login(other, account=str(other.account_id)))
    assert code(info) == "E_INSUFFICIENT_ACCESS"  # level 22 method; the manager reads it instead
    seen = await call(dispatcher, keys.server, "getAccountInfo", {"login": "admin", "account": str(other.account_id)})
    assert seen.ok and seen.value["balance"] == Decimal("99999999999929.9998")


async def test_a_balance_past_the_ledger_is_refused_not_a_500(services: Services, dispatcher: Dispatcher) -> None:
    keys = await make_keys(services)
    await make_user(services, "pu", balance=Decimal("99999999999999"))
    out = await call(
        dispatcher, keys.server, "transferMoney", {"login": "admin", "destination": "pu", "amount": "1", "comment": "x"}
    )
    assert code(out) == "E_INVALID_ARGUMENT"


BAD_AMOUNTS = [
    "1e20",
    "1E+2",
    "100000000000000",
    "0.00001",
    "1.23456",
    "\u0661\u0660",
    "12\u0663",
    "NaN",
    "Infinity",
    " 1 0",
]


@pytest.mark.parametrize("bad", BAD_AMOUNTS)
async def test_amounts_that_cannot_be_exact_are_a_400_on_every_money_method(
    services: Services, api: Api, bad: str
) -> None:
    key = await make_key(services, level=44, name="master")
    carol = await make_user(services, "carol", accesslevel=11, balance=Decimal("10"))
    tries = {
        "updateAccount": {"login": "admin", "account": str(carol.account_id), "overdraft": bad},
        "transferMoney": {"login": "admin", "destination": "carol", "amount": bad, "comment": "x"},
        "registerUser": {
            "login": "admin",
            "user": "neo",
            "web_password": "5f4dcc3b5aa765d61d8327deb882cf99",
            "accesslevel": "11",
            "sip_server": "s",
            "sip_extension": "40000",
            "sip_password": "p",
            "balance": bad,
        },
        "addRates": {"login": "admin", "table": "t", "name": "t", "switch_price": bad},
    }
    for method, args in tries.items():
        reply = await api.get(key, method, args)
        assert (reply.status, reply.json()["response"]) == (400, "E_INVALID_ARGUMENT"), (method, reply.text)
    assert await balance_of(services, carol.account_id) == Decimal("10.0000")
    async with services.db.begin() as conn:
        row = (await conn.execute(select(accounts.c.overdraft).where(accounts.c.id == carol.account_id))).scalar_one()
    assert Decimal(row) == Decimal("0")


async def test_the_largest_exact_amounts_are_accepted(services: Services, api: Api) -> None:
    key = await make_key(services, level=44, name="master")
    carol = await make_user(services, "carol", accesslevel=11, balance=Decimal("0"))
    reply = await api.get(
        key, "updateAccount", {"login": "admin", "account": str(carol.account_id), "overdraft": "99999999999999.9999"}
    )
    assert reply.status == 200 and reply.json()["result"] is True, reply.text
    async with services.db.begin() as conn:
        row = (await conn.execute(select(accounts.c.overdraft).where(accounts.c.id == carol.account_id))).scalar_one()
    assert Decimal(row) == Decimal("99999999999999.9999")


async def test_migration_0007_turns_stored_sqlite_floats_into_exact_amounts(tmp_path: Path) -> None:
    """A database written before 0007 (floats) reads back the same amounts after it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await _alembic(url, "upgrade", "0005")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO accounts (id, balance, overdraft, created_at) VALUES (1, 12.3456, 0.5, '2026-01-01')")
            )
        await _alembic(url, "upgrade", "head")
        async with engine.begin() as conn:
            raw = (await conn.execute(text("SELECT balance, typeof(balance), overdraft FROM accounts"))).one()
            row = (await conn.execute(select(accounts.c.balance, accounts.c.overdraft))).one()
        assert tuple(raw) == (123456, "integer", 5000)
        assert (row.balance, row.overdraft) == (Decimal("12.3456"), Decimal("0.5000"))
        await _alembic(url, "downgrade", "0005")
        async with engine.begin() as conn:
            back = (await conn.execute(text("SELECT balance FROM accounts"))).scalar_one()
        assert back == pytest.approx(12.3456)
    finally:
        await engine.dispose()
