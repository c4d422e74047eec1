"""transferMoney, updateAccount, getAccountInfo through the dispatcher: balances to the
hundredth of a cent and the `transactions` rows that explain them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from billing_core.api.dispatch import Dispatcher, Outcome
from billing_core.cache.keys import NAMESPACES
from billing_core.clock import utcnow
from billing_core.container import Services
from billing_core.ledger.tables import accounts, reservations, transactions
from billing_core.rating.tables import currencies
from tests.factories import MadeUser, balance_of, make_user
from tests.test_api_users import Keys, call, code, login, make_keys


@pytest.fixture
async def keys(services: Services) -> Keys:
    return await make_keys(services)


async def add_rub(services: Services, *, transfer_fee: str = "0") -> None:
    """100 RUB per EUR; the fee is in RUB."""
    async with services.db.begin() as conn:
        await conn.execute(
            currencies.insert().values(
                currency="RUB", eur_course=Decimal(100), displayname="rub.", transfer_fee=Decimal(transfer_fee)
            )
        )
    await services.cache.invalidate(*NAMESPACES)


async def ledger(services: Services, account_id: int) -> list[tuple[str, Decimal]]:
    async with services.db.begin() as conn:
        rows = await conn.execute(
            select(transactions.c.kind, transactions.c.amount)
            .where(transactions.c.account_id == account_id)
            .order_by(transactions.c.id)
        )
        return [(kind, Decimal(amount)) for kind, amount in rows.all()]


async def transfer(dispatcher: Dispatcher, keys: Keys, sender: MadeUser, destination: str, amount: str) -> Outcome:
    args = login(sender, destination=destination, amount=amount, comment="Enjoy")
    return await call(dispatcher, keys.client, "transferMoney", args)


async def reserve(services: Services, user: MadeUser, amount: str, *, expired: bool = False) -> None:
    now = utcnow()
    async with services.db.begin() as conn:
        await conn.execute(
            reservations.insert().values(
                call_uid=f"call-{amount}-{expired}",
                prior=1,
                account_id=user.account_id,
                user_id=user.id,
                amount=Decimal(amount),
                max_time_s=60,
                state="open",
                created_at=now,
                expires_at=now + timedelta(minutes=-5 if expired else 5),
            )
        )


# --- transferMoney ----------------------------------------------------------------------


async def test_transfer_money_converts_from_the_senders_currency_and_charges_the_fee(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    await add_rub(services, transfer_fee="50")
    alice = await make_user(services, "alice", balance=Decimal("10"), currency="RUB")
    bob = await make_user(services, "bob", balance=Decimal("1"))

    by_name = await transfer(dispatcher, keys, alice, "bob", "300")  # 3 EUR + 0.50 EUR fee
    by_account = await transfer(dispatcher, keys, alice, str(bob.account_id), "0.01")  # 0.0001 EUR

    assert by_name.ok and by_account.ok, (by_name.error, by_account.error)
    assert await balance_of(services, alice.account_id) == Decimal("5.9999")
    assert await balance_of(services, bob.account_id) == Decimal("4.0001")
    assert await ledger(services, alice.account_id) == [
        ("initial", Decimal("10")),
        ("transfer", Decimal("-3")),
        ("fee", Decimal("-0.5")),
        ("transfer", Decimal("-0.0001")),
        ("fee", Decimal("-0.5")),
    ]
    assert await ledger(services, bob.account_id) == [
        ("initial", Decimal("1")),
        ("transfer", Decimal("3")),
        ("transfer", Decimal("0.0001")),
    ]
    async with services.db.begin() as conn:
        comments = (
            await conn.execute(select(transactions.c.comment).where(transactions.c.kind == "transfer"))
        ).scalars()
        assert set(comments) == {"Enjoy"}


async def test_transfer_money_spends_at_most_balance_plus_overdraft_minus_reservations(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    alice = await make_user(services, "alice", balance=Decimal("10"), overdraft=Decimal("2"))
    bob = await make_user(services, "bob", balance=Decimal("0"))
    await reserve(services, alice, "3")
    await reserve(services, alice, "100", expired=True)  # an expired hold no longer counts

    too_much = await transfer(dispatcher, keys, alice, "bob", "9.0001")
    exact = await transfer(dispatcher, keys, alice, "bob", "9")

    assert code(too_much) == "E_INSUFFICIENT_MONEY"
    assert exact.ok, exact.error
    assert await balance_of(services, alice.account_id) == Decimal("1.0000")
    assert await balance_of(services, bob.account_id) == Decimal("9.0000")
    assert code(await transfer(dispatcher, keys, alice, "bob", "0.0001")) == "E_INSUFFICIENT_MONEY"


async def test_transfer_money_refuses_bad_requests_without_moving_money(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    alice = await make_user(services, "alice", balance=Decimal("10"))
    newbie = await make_user(services, "newbie", balance=Decimal("10"), accesslevel=10)
    locked = await make_user(services, "locked", balance=Decimal("0"))
    async with services.db.begin() as conn:
        await conn.execute(update(accounts).where(accounts.c.id == locked.account_id).values(refill_allowed=0))

    cases = {
        ("bob-nobody", "1"): "E_NOT_EXIST",
        ("alice", "1"): "E_INVALID_ARGUMENT",  # to yourself
        ("locked", "1"): "E_TRANSACTIONS_LOCKED",
        ("locked", "0"): "E_INVALID_ARGUMENT",
        ("locked", "-5"): "E_INVALID_ARGUMENT",
        ("locked", "ten"): "E_INVALID_ARGUMENT",
        ("locked", "0.00001"): "E_INVALID_ARGUMENT",  # below 0.0001 EUR
    }
    for (destination, amount), expected in cases.items():
        assert code(await transfer(dispatcher, keys, alice, destination, amount)) == expected, (destination, amount)
    assert code(await transfer(dispatcher, keys, newbie, "alice", "1")) == "E_TRANSACTIONS_LIMITED"
    no_comment = await call(dispatcher, keys.client, "transferMoney", login(alice, destination="newbie", amount="1"))
    assert code(no_comment) == "E_MISSING_ARGUMENT"
    assert await balance_of(services, alice.account_id) == Decimal("10.0000")
    assert await ledger(services, alice.account_id) == [("initial", Decimal("10"))]
    assert await ledger(services, locked.account_id) == []


async def test_opposite_transfers_at_once_neither_deadlock_nor_lose_money(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    alice = await make_user(services, "alice", balance=Decimal("50"))
    bob = await make_user(services, "bob", balance=Decimal("50"))

    def send(sender: str, destination: str, amount: str) -> Awaitable[Outcome]:
        # the server key: no scrypt per call, so the calls really meet in the database
        args = {"login": sender, "destination": destination, "amount": amount, "comment": "race"}
        return call(dispatcher, keys.server, "transferMoney", args)

    outcomes = await asyncio.gather(
        *(send("alice", "bob", "1.25") for _ in range(8)),
        *(send("bob", str(alice.account_id), "0.75") for _ in range(8)),
    )

    assert [code(o) for o in outcomes] == [None] * 16
    assert await balance_of(services, alice.account_id) == Decimal("46.0000")
    assert await balance_of(services, bob.account_id) == Decimal("54.0000")
    for user in (alice, bob):
        assert sum(amount for _, amount in await ledger(services, user.account_id)) == await balance_of(
            services, user.account_id
        )


# --- updateAccount ----------------------------------------------------------------------


async def test_a_managers_balance_change_moves_money_from_its_own_account(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    await add_rub(services)
    res = await make_user(services, "res", accesslevel=22, currency="RUB", balance=Decimal("30"))
    carol = await make_user(services, "carol", manager="res", balance=Decimal("10"))
    account = str(carol.account_id)

    out = await call(
        dispatcher, keys.client, "updateAccount", login(res, account=account, balance="2000", overdraft="550.5")
    )

    assert out.ok, out.error
    assert await balance_of(services, carol.account_id) == Decimal("20.0000")
    assert await ledger(services, carol.account_id) == [("initial", Decimal("10")), ("transfer", Decimal("10"))]
    assert await balance_of(services, res.account_id) == Decimal("20.0000")
    assert await ledger(services, res.account_id) == [("initial", Decimal("30")), ("transfer", Decimal("-10"))]
    async with services.db.begin() as conn:
        row = (await conn.execute(select(accounts).where(accounts.c.id == carol.account_id))).one()
    assert row.overdraft == Decimal("5.5050")
    same = await call(dispatcher, keys.client, "updateAccount", login(res, account=account, balance="2000"))
    assert same.ok and len(await ledger(services, carol.account_id)) == 2  # no change, no row
    back = await call(dispatcher, keys.client, "updateAccount", login(res, account=account, balance="500"))
    assert back.ok, back.error  # lowering a balance moves the difference back to the manager
    assert await balance_of(services, carol.account_id) == Decimal("5.0000")
    assert await balance_of(services, res.account_id) == Decimal("35.0000")
    too_low = await call(dispatcher, keys.client, "updateAccount", login(res, account=account, balance="-600"))
    assert code(too_low) == "E_INSUFFICIENT_MONEY"  # below −overdraft (−5.505 EUR)
    too_much = await call(dispatcher, keys.client, "updateAccount", login(res, account=account, balance="4000"))
    assert code(too_much) == "E_INSUFFICIENT_MONEY"  # 35 EUR more than 35 EUR − the 5.505 EUR granted
    assert await balance_of(services, carol.account_id) == Decimal("5.0000")
    assert await balance_of(services, res.account_id) == Decimal("35.0000")


async def test_a_user_cannot_top_up_itself_but_edits_its_billing_details(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    res = await make_user(services, "res", accesslevel=22)
    carol = await make_user(services, "carol", manager="res", balance=Decimal("1"))
    stranger = await make_user(services, "stranger", accesslevel=22)
    account = str(carol.account_id)

    async def update_as(who: MadeUser, **args: str) -> Outcome:
        return await call(dispatcher, keys.client, "updateAccount", login(who, account=account, **args))

    assert code(await update_as(carol, balance="1000")) == "E_INSUFFICIENT_ACCESS"
    assert code(await update_as(carol, overdraft="1000")) == "E_INSUFFICIENT_ACCESS"
    assert code(await update_as(carol, refill_allowed="2")) == "E_INSUFFICIENT_ACCESS"
    assert code(await update_as(stranger, balance="1000")) == "E_DOES_NOT_BELONG_TO_YOU"
    assert code(await update_as(res, overdraft="-1")) == "E_INVALID_ARGUMENT"
    assert code(await update_as(res, refill_allowed="7")) == "E_INVALID_ARGUMENT"
    assert code(await update_as(res)) == "E_MISSING_ARGUMENT"
    missing = await call(dispatcher, keys.client, "updateAccount", login(res, account="999999999", postpaid="1"))
    assert code(missing) == "E_NOT_EXIST"
    assert (await update_as(carol, billing_name="Carol Ltd", billing_email="c@example.com")).ok
    assert (await update_as(res, postpaid="1", refill_allowed="1")).ok
    async with services.db.begin() as conn:
        row = (await conn.execute(select(accounts).where(accounts.c.id == carol.account_id))).one()
        adjusts = (await conn.execute(select(func.count()).where(transactions.c.kind == "adjust"))).scalar_one()
    assert (row.billing_name, row.billing_email, row.postpaid, row.refill_allowed) == (
        "Carol Ltd",
        "c@example.com",
        1,
        1,
    )
    assert row.balance == Decimal("1.0000") and adjusts == 0


async def test_a_reseller_cannot_top_up_an_account_it_shares_with_its_users(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    res = await make_user(services, "res", accesslevel=22, balance=Decimal("5"))
    await make_user(services, "carol", manager="res", account_id=res.account_id)

    by_res = await call(dispatcher, keys.client, "updateAccount", login(res, account=str(res.account_id), balance="99"))
    by_admin = await call(
        dispatcher, keys.server, "updateAccount", {"login": "admin", "account": str(res.account_id), "balance": "7.5"}
    )

    assert code(by_res) == "E_INSUFFICIENT_ACCESS"
    # the spec's NB: administrators cannot change a balance, they use transferMoney
    assert code(by_admin) == "E_INSUFFICIENT_ACCESS"
    assert await balance_of(services, res.account_id) == Decimal("5.0000")
    assert await ledger(services, res.account_id) == [("initial", Decimal("5"))]


# --- getAccountInfo ---------------------------------------------------------------------


async def test_get_account_info_shows_the_account_to_its_manager_in_the_requesters_currency(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    await add_rub(services)
    res = await make_user(services, "res", accesslevel=22, currency="RUB")
    carol = await make_user(services, "carol", manager="res", balance=Decimal("1.2345"), overdraft=Decimal("1"))
    await make_user(services, "dave", manager="res", account_id=carol.account_id)
    other = await make_user(services, "other", accesslevel=22)

    out = await call(dispatcher, keys.client, "getAccountInfo", login(res, account=str(carol.account_id)))

    assert out.ok, out.error
    info = out.value
    assert info["account"] == carol.account_id and info["users"] == ["carol", "dave"]
    assert info["balance"] == Decimal("1.2345") and info["displaybalance"] == Decimal("123.45")
    assert info["overdraft"] == Decimal("1") and info["displayoverdraft"] == Decimal("100")
    assert (info["displaycurrency"], info["refill_allowed"], info["postpaid"]) == ("rub.", 2, 0)
    foreign = await call(dispatcher, keys.client, "getAccountInfo", login(other, account=str(carol.account_id)))
    as_user = await call(dispatcher, keys.client, "getAccountInfo", login(carol, account=str(carol.account_id)))
    missing = await call(dispatcher, keys.client, "getAccountInfo", login(res, account="999999999"))
    assert code(foreign) == "E_DOES_NOT_BELONG_TO_YOU" and code(as_user) == "E_INSUFFICIENT_ACCESS"
    assert code(missing) == "E_NOT_EXIST"
