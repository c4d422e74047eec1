"""Where money comes from (docs/billing.md, "Where money comes from"): every method that
can move money, called by every role, on both backends. After each call the database must
show: Σ balances grown by exactly the new `refill` rows, refills only by the master
administrator, every balance explained by its transactions, and every reseller's granted
overdraft covered by its own money (an administrator's grant to a reseller's user counts
toward that reseller, which then may not send money away until it is covered)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from billing_core.api.dispatch import Dispatcher, Outcome
from billing_core.auth.secrets_store import md5_hex
from billing_core.clock import utcnow
from billing_core.container import Services
from billing_core.directory.tables import users
from billing_core.ledger.book import held
from billing_core.ledger.tables import accounts, transactions
from tests.factories import MadeUser, make_key, make_user
from tests.test_api_users import Keys, call, code, login, make_keys

LEVEL_NAMES = {44: "master", 33: "admin", 25: "partner", 22: "corporate", 11: "user", 10: "new user"}


@dataclass(frozen=True)
class Role:
    name: str
    key: str
    args: Callable[..., dict[str, str]]  # the role's credentials plus the method's arguments
    user: MadeUser | None  # None: the bootstrap master administrator


@dataclass(frozen=True)
class World:
    roles: list[Role]
    accounts: dict[str, int]  # user name -> account


async def build(services: Services, keys: Keys) -> World:
    ops = await make_user(services, "ops", accesslevel=33, balance=Decimal("100"))
    partner = await make_user(services, "partner", accesslevel=25, balance=Decimal("100"))
    corp = await make_user(services, "corp", accesslevel=22, balance=Decimal("50"))
    made = {
        "ops": ops,
        "partner": partner,
        "corp": corp,
        "pu": await make_user(services, "pu", manager="partner", balance=Decimal("10")),
        "cu": await make_user(services, "cu", manager="corp", balance=Decimal("10")),
        "user": await make_user(services, "user", balance=Decimal("20")),
        "newbie": await make_user(services, "newbie", accesslevel=10, balance=Decimal("20")),
    }
    # the partner's own server key, as in the report: login= without a password
    partner_key = await make_key(services, level=25, owner="partner", name="partner")

    def server(name: str, key: str) -> Callable[..., dict[str, str]]:
        return lambda **a: {"login": name, **a}

    roles = [
        Role("master", keys.server, server("admin", keys.server), None),
        Role("admin", keys.server, server("ops", keys.server), ops),
        Role("partner", partner_key, server("partner", partner_key), partner),
        Role("corporate", keys.client, lambda **a: login(corp, **a), corp),
        Role("user", keys.client, lambda **a: login(made["user"], **a), made["user"]),
        Role("new user", keys.client, lambda **a: login(made["newbie"], **a), made["newbie"]),
    ]
    async with services.db.begin() as conn:
        admin_account = (await conn.execute(select(users.c.account_id).where(users.c.username == "admin"))).scalar_one()
    return World(roles, {"admin": int(admin_account), **{n: u.account_id for n, u in made.items()}})


@dataclass(frozen=True)
class Books:
    total: Decimal  # Σ balances
    refilled: Decimal  # Σ refill rows
    refill_authors: frozenset[str]
    unexplained: list[int]  # accounts whose balance is not Σ of their transactions
    uncovered: list[str]  # non-administrators whose granted overdraft exceeds their money


async def books(services: Services) -> Books:
    async with services.db.begin() as conn:
        total = Decimal((await conn.execute(select(func.coalesce(func.sum(accounts.c.balance), 0)))).scalar_one())
        refills = (
            await conn.execute(select(transactions.c.amount, transactions.c.ref).where(transactions.c.kind == "refill"))
        ).all()
        by_account = dict(
            (
                await conn.execute(
                    select(transactions.c.account_id, func.sum(transactions.c.amount)).group_by(
                        transactions.c.account_id
                    )
                )
            ).all()
        )
        rows = (await conn.execute(select(accounts))).all()
        unexplained = [r.id for r in rows if Decimal(r.balance) != Decimal(by_account.get(r.id, 0))]
        people = (
            await conn.execute(select(users.c.username, users.c.manager, users.c.accesslevel, users.c.account_id))
        ).all()
        uncovered = []
        for person in people:
            if person.accesslevel >= 33:
                continue
            below = {p.account_id for p in people if p.manager == person.username} - {person.account_id}
            granted = sum((Decimal(r.overdraft) for r in rows if r.id in below), Decimal(0))
            own = next(r for r in rows if r.id == person.account_id)
            free = Decimal(own.balance) + Decimal(own.overdraft) - await held(conn, own.id, utcnow())
            if granted > 0 and free < granted:
                uncovered.append(person.username)
    return Books(
        total=total,
        refilled=sum((Decimal(a) for a, _ in refills), Decimal(0)),
        refill_authors=frozenset(ref for _, ref in refills),
        unexplained=unexplained,
        uncovered=uncovered,
    )


def attempts(world: World, role: Role, n: int) -> list[tuple[str, dict[str, str]]]:
    """Every money-moving call a role might try: on its own user, on another reseller's
    user, on itself, on the master; with a modest and with an absurd amount."""
    targets = ["pu", "cu", "user", "partner", "admin"]
    if role.user is not None:
        targets.append(role.user.username)
    out: list[tuple[str, dict[str, str]]] = []
    for amount in ("5", "1000000"):
        out.append(
            (
                "registerUser",
                {
                    "user": f"new{n}x{amount}",
                    "web_password": md5_hex("pw"),
                    "accesslevel": "11",
                    "sip_server": "127.0.0.1",
                    "sip_extension": f"7{n:03d}{len(amount)}",
                    "sip_password": "sip-secret",
                    "balance": amount,
                },
            )
        )
        for target in targets:
            out.append(("transferMoney", {"destination": target, "amount": amount, "comment": "walk"}))
            account = str(world.accounts[target])
            out.append(("updateAccount", {"account": account, "balance": amount}))
            out.append(("updateAccount", {"account": account, "overdraft": amount}))
            out.append(("updateAccount", {"account": account, "balance": f"-{amount}"}))
    return out


@pytest.mark.parametrize("role_name", list(LEVEL_NAMES.values()))
async def test_money_enters_only_by_a_master_refill(services: Services, dispatcher: Dispatcher, role_name: str) -> None:
    keys = await make_keys(services)
    world = await build(services, keys)
    role = next(r for r in world.roles if r.name == role_name)
    counter = itertools.count()
    before = await books(services)
    assert before.unexplained == [] and before.uncovered == []
    succeeded: list[str] = []
    for method, args in attempts(world, role, next(counter)):
        out = await call(dispatcher, role.key, method, role.args(**args))
        after = await books(services)
        what = f"{role.name} {method} {args}: {out.value if out.ok else code(out)}"
        assert after.total - before.total == after.refilled - before.refilled, what
        assert after.unexplained == [], what
        if role.name not in ("master", "admin"):  # an administrator's grant is the operator's credit
            assert after.uncovered == [], what
        if role.name != "master":
            assert after.refilled == before.refilled, what
        if out.ok:
            succeeded.append(f"{method} {args.get('destination', args.get('account', ''))}")
        before = after
    if role.name == "new user":  # "new user (limits - minimal first deposit)": sends nothing
        assert succeeded == []
    else:
        assert succeeded, "the walk must have moved some money"
    if role.name == "master":
        assert before.refill_authors == {"refill:admin"}
        assert before.refilled >= Decimal("1000000")


async def test_a_partner_with_its_own_key_creates_no_money(services: Services, dispatcher: Dispatcher) -> None:
    """The report's sequence, answer by answer."""
    keys = await make_keys(services)
    world = await build(services, keys)
    partner = next(r for r in world.roles if r.name == "partner")
    reg = {
        "user": "rich",
        "web_password": md5_hex("pw"),
        "accesslevel": "11",
        "sip_server": "127.0.0.1",
        "sip_extension": "70001",
        "sip_password": "sip-secret",
    }

    async def ask(method: str, **args: str) -> Outcome:
        return await call(dispatcher, partner.key, method, partner.args(**args))

    assert code(await ask("registerUser", **reg, balance="1000000")) == "E_INSUFFICIENT_MONEY"
    assert (await ask("registerUser", **reg, balance="40")).ok
    pu = str(world.accounts["pu"])
    assert code(await ask("updateAccount", account=pu, overdraft="1000000000")) == "E_INSUFFICIENT_MONEY"
    assert (await ask("updateAccount", account=pu, overdraft="60")).ok  # 100 − 40 given away = 60 covered
    assert code(await ask("updateAccount", account=pu, overdraft="60.0001")) == "E_INSUFFICIENT_MONEY"
    assert code(await ask("transferMoney", destination="cu", amount="0.0001", comment="x")) == "E_INSUFFICIENT_MONEY"
    assert (await ask("updateAccount", account=pu, overdraft="10")).ok  # lowering is always allowed
    assert (await ask("updateAccount", account=pu, balance="5000")).ok is False
    async with services.db.begin() as conn:
        rows = dict((await conn.execute(select(accounts.c.id, accounts.c.balance))).all())
        pu_overdraft = (await conn.execute(select(accounts.c.overdraft).where(accounts.c.id == int(pu)))).scalar_one()
    assert Decimal(rows[world.accounts["partner"]]) == Decimal("60.0000")
    assert Decimal(rows[int(pu)]) == Decimal("10.0000") and Decimal(pu_overdraft) == Decimal("10.0000")


async def test_the_master_refill_is_not_limited_by_its_balance_and_names_its_author(
    services: Services, dispatcher: Dispatcher
) -> None:
    keys = await make_keys(services)
    world = await build(services, keys)
    out = await call(
        dispatcher,
        keys.server,
        "transferMoney",
        {"login": "admin", "destination": "pu", "amount": "250000.0001", "comment": "wire 42"},
    )
    by_ops = await call(
        dispatcher,
        keys.server,
        "updateAccount",
        {"login": "ops", "account": str(world.accounts["pu"]), "balance": "-50"},
    )
    by_master = await call(
        dispatcher,
        keys.server,
        "updateAccount",
        {"login": "admin", "account": str(world.accounts["pu"]), "balance": "1"},
    )

    assert out.ok, out.error
    assert code(by_ops) == "E_INSUFFICIENT_ACCESS" and code(by_master) == "E_INSUFFICIENT_ACCESS"
    async with services.db.begin() as conn:
        rows = (
            await conn.execute(
                select(
                    transactions.c.account_id,
                    transactions.c.kind,
                    transactions.c.amount,
                    transactions.c.ref,
                    transactions.c.comment,
                ).where(transactions.c.kind == "refill")
            )
        ).all()
        master_balance = (
            await conn.execute(select(accounts.c.balance).where(accounts.c.id == world.accounts["admin"]))
        ).scalar_one()
        pu_balance = (
            await conn.execute(select(accounts.c.balance).where(accounts.c.id == world.accounts["pu"]))
        ).scalar_one()
    assert [(r.account_id, Decimal(r.amount), r.ref, r.comment) for r in rows] == [
        (world.accounts["pu"], Decimal("250000.0001"), "refill:admin", "wire 42")
    ]
    assert Decimal(master_balance) == Decimal("0") and Decimal(pu_balance) == Decimal("250010.0001")
