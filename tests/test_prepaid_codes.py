"""createPrepaidCode, activatePrepaidCode, getPrepaidCodes, deletePrepaidCode through the
real HTTP door, on both backends: where a code's money comes from (a master
administrator's code is a refill at activation, anybody else's is paid from its own
account at creation), balances to the cent, one code credits one account once (also when
activations race, for real on PostgreSQL), codes stored hashed, and bad input (E_* codes,
never a 5xx). Assertions on HTTP bodies and on the rows of accounts, transactions and
prepaid_codes."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, update

from billing_core.auth.secrets_store import md5_hex
from billing_core.clock import utcnow
from billing_core.container import Services
from billing_core.directory.tables import users
from billing_core.ledger.tables import accounts, transactions
from billing_core.provisioning.prepaid_codes import CODE_BITS, expire_codes
from billing_core.provisioning.tables import prepaid_codes
from tests.factories import MadeUser, balance_of, make_key, make_user
from tests.http_support import Api, LoggedInChecks, Reply, serve

CODE_RE = re.compile(r"^[A-HJ-NP-Z2-9]{4}(-[A-HJ-NP-Z2-9]{4}){5}$")
PASSWORDS = {"res": "rpw", "sub": "spw", "alice": "apw", "bob": "bpw", "carol": "cpw", "newbie": "npw"}


@dataclass
class World(LoggedInChecks):
    services: Services
    api: Api
    key: str  # client key (login + md5 password)
    master: str  # admin's server key (level 44, from 127.0.0.1 only)
    users: dict[str, MadeUser]

    async def get(self, login: str, method: str, **args: str) -> Reply:
        if login == "admin":
            return await self.api.get(self.master, method, {"login": "admin", **args})
        creds = {"login": login, "password": md5_hex(PASSWORDS[login])}
        return await self.api.get(self.key, method, {**creds, **args})

    async def balance(self, name: str) -> Decimal:
        return await balance_of(self.services, self.users[name].account_id)

    async def total(self) -> Decimal:
        """Σ of every account's balance plus the money resting on funded codes."""
        async with self.services.db.begin() as conn:
            held = (
                await conn.execute(
                    select(func.coalesce(func.sum(prepaid_codes.c.balance), 0)).where(
                        prepaid_codes.c.funded_account.is_not(None)
                    )
                )
            ).scalar_one()
            balances = (await conn.execute(select(func.coalesce(func.sum(accounts.c.balance), 0)))).scalar_one()
        return Decimal(balances) + Decimal(held)

    async def code_row(self, code: str) -> Any:
        digest = hashlib.sha256(code.replace("-", "").encode()).hexdigest()
        async with self.services.db.begin() as conn:
            return (await conn.execute(select(prepaid_codes).where(prepaid_codes.c.code_hash == digest))).one()


@pytest.fixture
async def world(services: Services) -> AsyncIterator[World]:
    """admin (44) ─┬─ res (22, 50.00, 3 invites) ── sub (11, 5.00)
    ├─ alice, bob, carol (11, 0.00)
    └─ newbie (10, 20.00, 2 invites)"""
    made = {
        "res": await make_user(services, "res", accesslevel=22, password="rpw", balance=Decimal("50")),
        "sub": await make_user(services, "sub", manager="res", password="spw", balance=Decimal("5")),
        "alice": await make_user(services, "alice", password="apw", balance=Decimal("0"), sip_extension="10000"),
        "bob": await make_user(services, "bob", password="bpw", balance=Decimal("0")),
        "carol": await make_user(services, "carol", password="cpw", balance=Decimal("0")),
        "newbie": await make_user(services, "newbie", accesslevel=10, password="npw", balance=Decimal("20")),
    }
    async with services.db.begin() as conn:
        await conn.execute(update(users).where(users.c.username.in_(["res", "newbie"])).values(invites=3))
        await conn.execute(update(users).where(users.c.username == "newbie").values(invites=2))
    key = await make_key(services, level=0, name="client", source="127.0.0.*")
    master = await make_key(services, level=44, name="master", source="127.0.0.1")
    async with serve(services, test_methods=False) as api:
        yield World(services, api, key, master, made)


async def test_a_master_code_moves_no_money_until_activated_then_refills(world: World) -> None:
    before = await world.total()
    code = await world.ok("admin", "createPrepaidCode", balance="10.00")
    assert CODE_RE.match(code) and CODE_BITS >= 120
    row = await world.code_row(code)
    assert (row.balance, row.face_value, row.funded_account, row.accesslevel, row.owner) == (
        Decimal("10"), Decimal("10"), None, 10, "admin",
    )  # fmt: skip
    assert row.hint == code[-4:] and code.replace("-", "") not in repr(tuple(row))  # stored hashed
    assert await world.total() == before  # nothing moved yet

    assert await world.ok("alice", "activatePrepaidCode", code=code, amount="0") is True
    assert await world.balance("alice") == Decimal("10.00")
    assert await world.total() == before + Decimal("10")  # money entered: the master's refill
    async with world.services.db.begin() as conn:
        tx = (
            await conn.execute(select(transactions).where(transactions.c.account_id == world.users["alice"].account_id))
        ).all()
    assert [(t.kind, t.ref, Decimal(t.amount)) for t in tx] == [("refill", "refill:admin", Decimal("10"))]
    row = await world.code_row(code)
    assert (row.status, row.balance, row.activated_to, row.activated_account) == (
        "used", Decimal("0"), "alice", world.users["alice"].account_id,
    )  # fmt: skip
    assert await world.code("alice", "activatePrepaidCode", code=code, amount="0") == "E_CODE_HAS_NO_BALANCE"
    assert await world.balance("alice") == Decimal("10.00")


async def test_a_resellers_code_is_paid_from_its_own_account_at_creation(world: World) -> None:
    before = await world.total()
    code = await world.ok("res", "createPrepaidCode", balance="20.00", accesslevel="11")
    assert await world.balance("res") == Decimal("30.00")
    row = await world.code_row(code)
    assert row.funded_account == world.users["res"].account_id
    assert await world.total() == before  # the money rests on the code
    # part of it, the code lower-cased and without dashes
    assert await world.ok("alice", "activatePrepaidCode", code=code.replace("-", "").lower(), amount="5.5") is True
    assert await world.balance("alice") == Decimal("5.50")
    assert (await world.code_row(code)).balance == Decimal("14.5")
    assert await world.code("alice", "activatePrepaidCode", code=code, amount="14.51") == "E_CODE_HAS_NO_BALANCE"
    # bound to alice's account from its first activation
    assert await world.code("bob", "activatePrepaidCode", code=code, amount="0") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.ok("alice", "activatePrepaidCode", code=code, amount="0") is True
    assert (await world.balance("alice"), await world.balance("res"), await world.balance("bob")) == (
        Decimal("20.00"), Decimal("30.00"), Decimal("0"),
    )  # fmt: skip
    assert await world.total() == before  # a transfer, nothing entered
    async with world.services.db.begin() as conn:
        legs = (await conn.execute(select(transactions).where(transactions.c.ref == f"code:{row.id}"))).all()
    assert sorted(Decimal(t.amount) for t in legs) == [Decimal("-20"), Decimal("5.5"), Decimal("14.5")]
    assert {t.kind for t in legs} == {"transfer"}
    async with world.services.db.begin() as conn:
        invites = (await conn.execute(select(users.c.invites).where(users.c.username == "res"))).scalar_one()
    assert invites == 2  # one invitation used


@pytest.mark.parametrize(
    ("login", "args", "expected"),
    [
        ("res", {"balance": "50.01"}, "E_INSUFFICIENT_MONEY"),  # more than it has
        ("res", {"accesslevel": "25"}, "E_INSUFFICIENT_ACCESS"),  # above its own level
        ("res", {"accesslevel": "12"}, "E_INVALID_ARGUMENT"),  # not a spec level
        ("res", {"balance": "-1"}, "E_INVALID_ARGUMENT"),
        ("res", {"balance": "1.00001"}, "E_INVALID_ARGUMENT"),
        ("res", {"balance": "ten"}, "E_INVALID_ARGUMENT"),
        ("res", {"target": "nobody"}, "E_NOT_EXIST"),
        ("alice", {"balance": "0"}, "E_INVITE_LIMIT_REACHED"),  # no invitations
        ("newbie", {"balance": "1"}, "E_TRANSACTIONS_LIMITED"),  # a new user cannot send money away
    ],
)
async def test_create_prepaid_code_refusals_move_nothing(
    world: World, login: str, args: dict[str, str], expected: str
) -> None:
    before = await world.total()
    assert await world.code(login, "createPrepaidCode", **args) == expected
    assert await world.total() == before and await world.balance("res") == Decimal("50")
    async with world.services.db.begin() as conn:
        assert (await conn.execute(select(func.count()).select_from(prepaid_codes))).scalar_one() == 0
        invites = (await conn.execute(select(users.c.invites).where(users.c.username == "res"))).scalar_one()
    assert invites == 3  # a refused code uses no invitation


async def test_a_new_user_may_create_an_unfunded_invite(world: World) -> None:
    assert CODE_RE.match(await world.ok("newbie", "createPrepaidCode"))
    assert await world.balance("newbie") == Decimal("20")


async def test_a_targeted_code_is_for_its_target_only(world: World) -> None:
    code = await world.ok("admin", "createPrepaidCode", balance="3", target="bob")
    assert await world.code("alice", "activatePrepaidCode", code=code, amount="0") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.ok("bob", "activatePrepaidCode", code=code, amount="0") is True
    assert (await world.balance("alice"), await world.balance("bob")) == (Decimal("0"), Decimal("3"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"amount": "0"}, "E_MISSING_ARGUMENT"),
        ({"code": "", "amount": "0"}, "E_MISSING_ARGUMENT"),
        ({"code": "AAAA"}, "E_MISSING_ARGUMENT"),  # amount is obligatory
        ({"code": "AAAA", "amount": "-1"}, "E_INVALID_ARGUMENT"),
        ({"code": "AAAA", "amount": "x"}, "E_INVALID_ARGUMENT"),
        ({"code": "AAAA-BBBB", "amount": "0"}, "E_NOT_EXIST"),
        ({"code": "X" * 65, "amount": "0"}, "E_INVALID_ARGUMENT"),
    ],
)
async def test_activate_bad_input(world: World, args: dict[str, str], expected: str) -> None:
    assert await world.code("alice", "activatePrepaidCode", **args) == expected


async def test_a_zero_code_has_no_balance(world: World) -> None:
    code = await world.ok("admin", "createPrepaidCode")
    assert await world.code("alice", "activatePrepaidCode", code=code, amount="0") == "E_CODE_HAS_NO_BALANCE"


async def test_get_prepaid_codes_lists_without_giving_codes_away(world: World) -> None:
    mine = await world.ok("res", "createPrepaidCode", balance="2")
    used = await world.ok("res", "createPrepaidCode", balance="1")
    await world.ok("alice", "activatePrepaidCode", code=used, amount="0")
    async with world.services.db.begin() as conn:
        await conn.execute(update(users).where(users.c.username == "sub").values(invites=1))
    await world.ok("sub", "createPrepaidCode")
    listed = await world.ok("res", "getPrepaidCodes")
    spec_keys = ["created", "client_created", "balance", "display_balance", "code", "access_level", "owner",
                 "activated_to", "activated_date", "client_activated_date"]  # fmt: skip
    assert [c["owner"] for c in listed] == ["res", "res"] and all(set(spec_keys) <= set(c) for c in listed)
    assert [c["balance"] for c in listed] == [Decimal("2"), Decimal("0")]
    assert listed[0]["code"].endswith(mine[-4:]) and mine not in str(listed) and used not in str(listed)
    assert listed[1]["activated_to"] == "alice" and listed[1]["activated_date"]
    assert [c["balance"] for c in await world.ok("res", "getPrepaidCodes", active="true")] == [Decimal("2")]
    assert await world.ok("res", "getPrepaidCodes", count="true") == 2
    assert await world.ok("res", "getPrepaidCodes", all="true", count="true") == 3  # sub's too
    assert await world.ok("alice", "getPrepaidCodes", all="true") == []  # alice manages nobody
    assert await world.ok("admin", "getPrepaidCodes", all="true", count="true") == 3
    assert await world.code("res", "getPrepaidCodes", count="perhaps") == "E_INVALID_ARGUMENT"


async def test_delete_prepaid_code_gives_its_money_back(world: World) -> None:
    code = await world.ok("res", "createPrepaidCode", balance="12.34")
    assert await world.balance("res") == Decimal("37.66")
    assert await world.code("alice", "deletePrepaidCode", code=code) == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.ok("res", "deletePrepaidCode", code=code) is True
    assert await world.balance("res") == Decimal("50.00")
    row = await world.code_row(code)
    assert (row.status, row.balance) == ("deleted", Decimal("0")) and row.deleted_at is not None  # kept, hidden
    assert await world.ok("res", "getPrepaidCodes") == []
    assert await world.code("alice", "activatePrepaidCode", code=code, amount="0") == "E_NOT_EXIST"
    assert await world.code("res", "deletePrepaidCode", code=code) == "E_NOT_EXIST"
    # an activated code stays
    other = await world.ok("res", "createPrepaidCode", balance="1")
    await world.ok("alice", "activatePrepaidCode", code=other, amount="0.5")
    assert await world.code("res", "deletePrepaidCode", code=other) == "E_DATA_ABORT"
    assert await world.code("res", "deletePrepaidCode") == "E_MISSING_ARGUMENT"


async def test_concurrent_activations_credit_one_account_once(world: World) -> None:
    """Ten activations of one 10.00 code at once from four accounts: one account gets
    exactly 10.00, nobody else anything, one credit row."""
    code = await world.ok("res", "createPrepaidCode", balance="10")
    before = await world.total()
    logins = ["alice", "bob", "carol", "sub"] * 2 + ["alice", "bob"]
    replies = await asyncio.gather(*(world.get(who, "activatePrepaidCode", code=code, amount="0") for who in logins))
    wins = [who for who, r in zip(logins, replies, strict=True) if r.json()["result"] is True]
    assert len(wins) == 1, [r.text for r in replies]
    assert {r.code for r in replies if r.json()["result"] is False} <= {
        "E_CODE_HAS_NO_BALANCE",
        "E_DOES_NOT_BELONG_TO_YOU",
    }
    expected = {"alice": Decimal("0"), "bob": Decimal("0"), "carol": Decimal("0"), "sub": Decimal("5")}
    expected[wins[0]] += Decimal("10")
    assert {who: await world.balance(who) for who in expected} == expected
    assert await world.total() == before
    row = await world.code_row(code)
    async with world.services.db.begin() as conn:
        credits = (await conn.execute(select(transactions).where(transactions.c.ref == f"code:{row.id}",
                                                                  transactions.c.amount > 0))).all()  # fmt: skip
    assert len(credits) == 1 and Decimal(credits[0].amount) == Decimal("10")


async def test_concurrent_partial_activations_never_take_more_than_the_code_holds(world: World) -> None:
    code = await world.ok("admin", "createPrepaidCode", balance="10")
    replies = await asyncio.gather(
        *(world.get("alice", "activatePrepaidCode", code=code, amount="3") for _ in range(6))
    )
    assert sum(r.json()["result"] is True for r in replies) == 3
    assert {r.code for r in replies if r.json()["result"] is False} == {"E_CODE_HAS_NO_BALANCE"}
    assert await world.balance("alice") == Decimal("9.00")
    assert (await world.code_row(code)).balance == Decimal("1")


async def test_expire_codes_returns_what_is_left_to_the_payer(world: World) -> None:
    code = await world.ok("res", "createPrepaidCode", balance="4")
    row = await world.code_row(code)
    async with world.services.db.begin() as conn:
        await conn.execute(update(prepaid_codes).where(prepaid_codes.c.id == row.id).values(expires_at=utcnow()))
    assert await world.code("alice", "activatePrepaidCode", code=code, amount="0") == "E_NOT_EXIST"
    assert await world.ok("res", "getPrepaidCodes", active="true", count="true") == 0  # expired, not yet marked
    assert [c["status"] for c in await world.ok("res", "getPrepaidCodes")] == ["expired"]
    assert await expire_codes(world.services.db, utcnow() + timedelta(seconds=1)) == 1
    assert await expire_codes(world.services.db, utcnow() + timedelta(seconds=1)) == 0  # idempotent
    assert await world.balance("res") == Decimal("50.00")
    assert (await world.code_row(code)).status == "expired"


async def test_the_maintenance_run_expires_codes_and_returns_their_money(world: World) -> None:
    from billing_core.api import methods  # noqa: F401 - every subsystem's maintenance task
    from billing_core.catalog.maintenance import MAINTENANCE

    code = await world.ok("res", "createPrepaidCode", balance="4")
    assert await world.balance("res") == Decimal("46.00")
    row = await world.code_row(code)
    async with world.services.db.begin() as conn:
        await conn.execute(update(prepaid_codes).where(prepaid_codes.c.id == row.id).values(expires_at=utcnow()))
    later = utcnow() + timedelta(seconds=1)
    assert (await MAINTENANCE.run(world.services, later))["prepaid_codes"] == {"expired": 1}
    assert (await MAINTENANCE.run(world.services, later))["prepaid_codes"] == {"expired": 0}  # twice: once
    assert await world.balance("res") == Decimal("50.00")
