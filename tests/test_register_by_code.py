"""registerRequest and registerByCode through the real HTTP door, on both backends: the
spec's examples, the simulation (register=false) that changes nothing, a registration that
never grants more than the code's access level, the code's money on the new account,
concurrent registrations with one code, and abuse: rate limits per source address, wrong
codes counted with failed logins until the address is banned, activation lock-out per user.
Clients come from their own loopback addresses (127.0.0.0/8)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from billing_core.auth.secrets_store import md5_hex, verify_password
from billing_core.clock import utcnow
from billing_core.container import Services
from billing_core.directory.tables import users
from billing_core.ledger.tables import transactions
from billing_core.provisioning.prepaid_codes import expire_codes
from billing_core.provisioning.tables import prepaid_codes
from tests.factories import balance_of, make_key, make_user
from tests.http_support import Api, Reply, serve, with_settings

CODE_RE = re.compile(r"^[A-HJ-NP-Z2-9]{4}(-[A-HJ-NP-Z2-9]{4}){5}$")
WEB = md5_hex("test")  # the spec example's web_password, 098f6bcd4621d373cade4e832627b4f6
LIMITS = {"register_ip_max_requests": 4, "login_ip_max_failures": 3, "login_max_failures": 2}


@dataclass
class World:
    services: Services
    api: Api
    key: str  # client key of the registration portal, owned by `res`, for 127.0.0.*
    admin_key: str  # admin's client-level server key, from 127.0.0.1 only

    async def anon(self, method: str, source: str = "127.0.0.2", **args: str) -> Reply:
        return await self.api.get(self.key, method, args, source=source)

    async def admin(self, method: str, **args: str) -> Any:
        reply = await self.api.get(self.admin_key, method, {"login": "admin", **args})
        assert reply.json()["result"] is True, reply.text
        return reply.json()["response"]

    async def user(self, login: str, password: str, method: str, source: str = "127.0.0.2", **args: str) -> Reply:
        creds = {"login": login, "password": md5_hex(password)}
        return await self.api.get(self.key, method, {**creds, **args}, source=source)

    async def request_code(self, signature: str = "test", source: str = "127.0.0.2") -> str:
        reply = await self.anon("registerRequest", source=source, signature=signature)
        assert reply.json()["result"] is True, reply.text
        code = str(reply.json()["response"])
        assert CODE_RE.match(code)
        return code

    async def register(self, code: str, user: str, *, register: str = "true", source: str = "127.0.0.2",
                       **extra: str) -> Reply:  # fmt: skip
        args = {"code": code, "register": register, "user": user, "web_password": WEB, "language": "english"}
        return await self.anon("registerByCode", source=source, **(args | extra))

    async def user_row(self, username: str) -> Any:
        async with self.services.db.begin() as conn:
            return (await conn.execute(select(users).where(users.c.username == username))).first()


def ok(reply: Reply) -> Any:
    assert reply.status == 200 and reply.json()["result"] is True, reply.text
    return reply.json()["response"]


def failed(reply: Reply) -> str:
    assert reply.status in (200, 400) and reply.json()["result"] is False, (reply.status, reply.text)
    return str(reply.code)


@pytest.fixture
async def world(services: Services) -> AsyncIterator[World]:
    await make_user(services, "res", accesslevel=22, password="rpw", balance=Decimal("50"))
    await make_user(services, "alice", password="apw", balance=Decimal("0"))
    async with services.db.begin() as conn:
        await conn.execute(update(users).where(users.c.username == "res").values(invites=5))
    key = await make_key(services, level=0, name="portal", source="127.0.0.*", owner="res")
    admin_key = await make_key(services, level=44, name="master", source="127.0.0.1")
    limited = with_settings(services, **LIMITS)
    async with serve(limited, test_methods=False) as api:
        yield World(limited, api, key, admin_key)


async def test_register_request_then_register_by_code_spec_examples(world: World) -> None:
    code = await world.request_code("test")
    async with world.services.db.begin() as conn:
        row = (await conn.execute(select(prepaid_codes))).one()
    assert (row.owner, row.accesslevel, row.balance, row.signature, row.status) == ("res", 10, Decimal("0"), "test",
                                                                                     "active")  # fmt: skip
    assert row.expires_at is not None
    # the simulation answers true and creates nobody
    assert ok(await world.register(code, "test", register="false")) is True
    assert ok(await world.register(code, "test", register="")) is True  # the default: simulate
    assert await world.user_row("test") is None
    assert ok(await world.register(code, "test", language="nenglish")) is True
    created = await world.user_row("test")
    assert (created.accesslevel, created.manager, created.language) == (10, "res", "nenglish")
    assert verify_password(WEB, created.password_hash)
    assert await balance_of(world.services, created.account_id) == Decimal("0")
    async with world.services.db.begin() as conn:
        row = (await conn.execute(select(prepaid_codes))).one()
    assert (row.status, row.activated_to, row.activated_account) == ("used", "test", created.account_id)
    # the code is spent: again (simulated or not) it registers nobody
    assert failed(await world.register(code, "test2", source="127.0.0.3")) == "E_DATA_ABORT"
    assert failed(await world.register(code, "test2", register="false", source="127.0.0.3")) == "E_DATA_ABORT"
    # and the new user logs in with the password it chose
    me = ok(await world.user("test", "test", "getInfo", source="127.0.0.3"))
    assert me["username"] == "test" and me["accesslevel"] == 10


async def test_registration_never_grants_more_than_the_codes_level(world: World) -> None:
    code = await world.request_code()
    assert ok(await world.register(code, "climber", accesslevel="44", manager="admin")) is True
    row = await world.user_row("climber")
    assert (row.accesslevel, row.manager) == (10, "res")
    # a reseller's funded level-11 code: level 11, its money on the new account
    reply = await world.user("res", "rpw", "createPrepaidCode", accesslevel="11", balance="15.25")
    funded = ok(reply)
    assert ok(await world.register(funded, "paid", source="127.0.0.4")) is True
    row = await world.user_row("paid")
    assert (row.accesslevel, row.manager) == (11, "res")
    assert await balance_of(world.services, row.account_id) == Decimal("15.25")
    res = await world.user_row("res")
    assert await balance_of(world.services, res.account_id) == Decimal("34.75")
    async with world.services.db.begin() as conn:
        legs = (await conn.execute(select(transactions.c.amount, transactions.c.kind).where(
            transactions.c.account_id.in_([row.account_id, res.account_id])))).all()  # fmt: skip
    assert sorted((Decimal(a), k) for a, k in legs) == [
        (Decimal("-15.25"), "transfer"), (Decimal("15.25"), "transfer"), (Decimal("50"), "initial"),
    ]  # fmt: skip
    # a code whose creator has been demoted below the code's level registers nobody
    high = ok(await world.user("res", "rpw", "createPrepaidCode", accesslevel="22"))
    async with world.services.db.begin() as conn:
        await conn.execute(update(users).where(users.c.username == "res").values(accesslevel=11))
    await world.services.cache.invalidate("profiles")
    assert failed(await world.register(high, "boss", source="127.0.0.4")) == "E_INSUFFICIENT_ACCESS"
    assert await world.user_row("boss") is None


async def test_a_master_code_registration_is_a_refill(world: World) -> None:
    code = await world.admin("createPrepaidCode", balance="7", accesslevel="11")
    assert ok(await world.register(code, "gift")) is True
    row = await world.user_row("gift")
    assert (row.manager, row.accesslevel) == ("admin", 11)
    async with world.services.db.begin() as conn:
        tx = (await conn.execute(select(transactions).where(transactions.c.account_id == row.account_id))).one()
    assert (tx.kind, tx.ref, Decimal(tx.amount)) == ("refill", "refill:admin", Decimal("7"))


async def test_a_second_request_with_the_same_signature_replaces_the_first_code(world: World) -> None:
    first = await world.request_code("client-1")
    second = await world.request_code("client-1")
    other = await world.request_code("client-2")
    assert len({first, second, other}) == 3
    assert failed(await world.register(first, "one", source="127.0.0.3")) == "E_NOT_EXIST"
    assert ok(await world.register(second, "one", source="127.0.0.3")) is True
    assert ok(await world.register(other, "two", source="127.0.0.3")) is True


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"user": ""}, "E_MISSING_ARGUMENT"),
        ({"user": "no spaces"}, "E_INVALID_ARGUMENT"),
        ({"user": "x"}, "E_INVALID_ARGUMENT"),  # 2 characters at least
        ({"web_password": "test"}, "E_INVALID_ARGUMENT"),  # not an md5
        ({"language": "l" * 21}, "E_INVALID_ARGUMENT"),
        ({"register": "maybe"}, "E_INVALID_ARGUMENT"),
        ({"code": ""}, "E_MISSING_ARGUMENT"),
        ({"user": "alice"}, "E_DATA_ABORT"),  # taken
    ],
)
async def test_register_by_code_bad_input(world: World, args: dict[str, str], expected: str) -> None:
    code = await world.request_code()
    given = {"code": code, "user": "newcomer"} | args
    assert failed(await world.register(given.pop("code"), given.pop("user"), **given)) == expected
    assert ok(await world.register(code, "newcomer")) is True  # the code is still good


async def test_register_by_code_refuses_a_targeted_or_expired_code(world: World) -> None:
    targeted = await world.admin("createPrepaidCode", target="alice")
    assert failed(await world.register(targeted, "someone")) == "E_DOES_NOT_BELONG_TO_YOU"
    code = await world.request_code()
    async with world.services.db.begin() as conn:
        await conn.execute(update(prepaid_codes).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert failed(await world.register(code, "late")) == "E_NOT_EXIST"
    assert await expire_codes(world.services.db) == 2  # both codes now carry a past expiry
    assert failed(await world.anon("registerRequest", signature="")) == "E_MISSING_ARGUMENT"
    assert failed(await world.anon("registerRequest")) == "E_MISSING_ARGUMENT"
    assert failed(await world.anon("registerRequest", signature="s" * 129)) == "E_INVALID_ARGUMENT"


async def test_concurrent_registrations_with_one_code_make_one_user(world: World) -> None:
    code = ok(await world.user("res", "rpw", "createPrepaidCode", balance="10"))
    names = [f"racer{i}" for i in range(4)]
    replies = await asyncio.gather(
        *(world.register(code, name, source=f"127.0.0.{10 + i}") for i, name in enumerate(names))
    )
    assert sum(r.json()["result"] is True for r in replies) == 1, [r.text for r in replies]
    assert {failed(r) for r in replies if r.json()["result"] is False} <= {"E_DATA_ABORT"}
    made = [row for row in [await world.user_row(n) for n in names] if row is not None]
    assert len(made) == 1 and await balance_of(world.services, made[0].account_id) == Decimal("10")


# --- abuse --------------------------------------------------------------------------------


async def test_registration_is_rate_limited_per_source_address(world: World) -> None:
    for n in range(LIMITS["register_ip_max_requests"]):
        await world.request_code(f"sig-{n}", source="127.0.0.20")
    assert failed(await world.anon("registerRequest", source="127.0.0.20", signature="one-more")) == (
        "E_INVITE_LIMIT_REACHED"
    )
    code = await world.request_code("elsewhere", source="127.0.0.21")  # another address is not held back
    # registerByCode counts on the same limit
    assert failed(await world.register(code, "blocked", source="127.0.0.20")) == "E_INVITE_LIMIT_REACHED"
    assert ok(await world.register(code, "fine", source="127.0.0.21")) is True
    async with world.services.db.begin() as conn:
        count = len((await conn.execute(select(prepaid_codes.c.id))).all())
    assert count == LIMITS["register_ip_max_requests"] + 1


async def test_wrong_codes_ban_the_address_like_wrong_passwords(world: World) -> None:
    good = await world.request_code(source="127.0.0.30")
    wrong = "ABCD-EFGH-JKLM-NPQR-STUV-WXYZ"
    assert failed(await world.register(wrong, "guess", register="false", source="127.0.0.31")) == "E_NOT_EXIST"
    # a wrong password from the same address counts on the same counter
    assert failed(await world.user("alice", "nope", "getInfo", source="127.0.0.31")) == "E_AUTH_FAILED"
    assert failed(await world.register("garbage", "guess", source="127.0.0.31")) == "E_NOT_EXIST"
    banned = await world.register(good, "guess", source="127.0.0.31")
    assert banned.status == 403  # the third failure banned the address, the good code is not judged
    assert await world.user_row("guess") is None
    assert ok(await world.register(good, "honest", source="127.0.0.32")) is True


async def test_wrong_codes_lock_a_users_activations(world: World) -> None:
    good = await world.admin("createPrepaidCode", balance="1")
    for n in range(LIMITS["login_max_failures"]):
        reply = await world.user("alice", "apw", "activatePrepaidCode", source=f"127.0.0.{40 + n}",
                                 code=f"AAAA-AAAA-AAAA-AAAA-AAAA-AAA{n + 2}", amount="0")  # fmt: skip
        assert failed(reply) == "E_NOT_EXIST"
    locked = await world.user("alice", "apw", "activatePrepaidCode", source="127.0.0.45", code=good, amount="0")
    assert failed(locked) == "E_USER_LOCKED"
    alice = await world.user_row("alice")
    assert await balance_of(world.services, alice.account_id) == Decimal("0")


async def test_a_whitelisted_portal_is_not_rate_limited(world: World, services: Services) -> None:
    portal = replace(world, services=with_settings(world.services, ban_whitelist=("127.0.0.50",)))
    async with serve(portal.services, test_methods=False) as api:
        portal.api = api
        codes = [await portal.request_code(f"w{n}", source="127.0.0.50") for n in range(6)]
    assert len(set(codes)) == 6
