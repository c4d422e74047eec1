"""deleteUser, deleteExtension, deleteAccount, deleteLogs, getExtensions, getAvailExtension,
getAccounts through the real HTTP door, on both backends: each method answers the spec's
own example (real ids and the credentials it leaves out added), who may see and delete
what, bad input (E_* codes, never a 5xx), and the soft-delete invariants: the rows stay
in the database, every read and login stops seeing them, a deleted user's SIP accounts
place no calls, and a call log's deletion never lets a retried callFinish charge again."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from billing_core.auth.secrets_store import md5_hex
from billing_core.clock import utcnow
from billing_core.container import Services
from billing_core.directory.tables import api_keys, sip_extensions, users
from billing_core.ledger.tables import accounts, cdrs, reservations, transactions
from tests.factories import MadeUser, balance_of, make_key, make_user
from tests.http_support import Api, LoggedInChecks, Reply, serve
from tests.rating_world import standard_world
from tests.shared_paths import spec_file

PASSWORDS = {"reseller": "rpw", "sub": "spw", "other": "opw", "stranger": "xpw", "boss": "bpw", "newuser": "npw"}
RUSSIA = "74951234567"  # the standard world's base tariff: 0.10 EUR/min, by the minute


@dataclass
class World(LoggedInChecks):
    services: Services
    api: Api
    key: str  # a client key (level 0): every request logs in with login + md5 password
    sub: MadeUser
    stranger: MadeUser
    newuser: MadeUser

    async def get(self, login: str, method: str, **args: str) -> Reply:
        creds = {"login": login, "password": md5_hex(PASSWORDS[login])}
        return await self.api.get(self.key, method, {**creds, **args})

    async def example(self, method: str, login: str, **real_ids: str) -> tuple[Reply, str]:
        """The spec's example request as printed, with the real key, the given real ids and
        the login it leaves out; and the spec's example answer."""
        entry = spec_entry(method)
        path = entry["example_request"].split(" ", 1)[1]
        assert path.startswith(f"/billing/api/2.2/{entry['example_key_segment']}/{method}")
        query = dict(p.split("=", 1) for p in path.partition("?")[2].split("&") if p)
        query |= real_ids | {"login": login, "password": md5_hex(PASSWORDS[login])}
        reply = await self.api.request("GET", self.api.url(self.key, method, query=urlencode(query)))
        return reply, entry["example_response"]


def spec_entry(method: str) -> dict[str, Any]:
    return next(m for m in json.loads(spec_file().read_text())["methods"] if m["name"] == method)


def example_keys(method: str) -> list[str]:
    """The attribute names of the spec's example answer (its values are prose, not JSON)."""
    return re.findall(r'"(\w+)"\s*:', spec_entry(method)["example_response"])


async def add_extension(services: Services, owner: MadeUser, name: str) -> None:
    async with services.db.begin() as conn:
        await conn.execute(
            sip_extensions.insert().values(
                sip_extension=name, user_id=owner.id, sip_password_enc=services.box.encrypt("x"), created_at=utcnow()
            )
        )


@pytest.fixture
async def world(services: Services) -> AsyncIterator[World]:
    """admin ─┬─ reseller (22) ─┬─ sub (11, SIP 40000)
              │                 └─ newuser (11, SIP 40005)
              ├─ other (22) ── stranger (11, SIP 20000)
              └─ boss (33, an administrator)"""
    await make_user(services, "reseller", accesslevel=22, password="rpw")
    sub = await make_user(services, "sub", manager="reseller", password="spw", sip_extension="40000")
    newuser = await make_user(services, "newuser", manager="reseller", password="npw", sip_extension="40005")
    await make_user(services, "other", accesslevel=22, password="opw")
    stranger = await make_user(services, "stranger", manager="other", password="xpw", sip_extension="20000")
    await make_user(services, "boss", accesslevel=33, password="bpw")
    key = await make_key(services, level=0)
    async with serve(services, test_methods=False) as api:
        yield World(services, api, key, sub, stranger, newuser)


async def row_of(services: Services, table: Any, where: Any) -> Any:
    async with services.db.begin() as conn:
        return (await conn.execute(select(table).where(where))).one()


async def open_hold(services: Services, user: MadeUser) -> None:
    now = utcnow()
    async with services.db.begin() as conn:
        await conn.execute(
            reservations.insert().values(
                call_uid="in-progress", prior=1, account_id=user.account_id, user_id=user.id,
                amount=Decimal("0.10"), max_time_s=60, created_at=now, expires_at=now,
            )
        )  # fmt: skip


def names(found: list[dict[str, Any]]) -> list[str]:
    return [e["sip_extension"] for e in found]


def listed(found: list[dict[str, Any]]) -> list[str]:
    return sorted(u for a in found for u in a["users"])


# --------------------------------------------------------------- deleteUser


async def test_delete_user_answers_its_example_and_keeps_the_rows(world: World) -> None:
    services = world.services
    owned_key = await make_key(services, level=0, owner="newuser", name="newusers-key")
    reply, expected = await world.example("deleteUser", "reseller")
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"

    row = await row_of(services, users, users.c.username == "newuser")
    assert row.deleted_at is not None and row.active == -1 and row.account_id == world.newuser.account_id
    ext = await row_of(services, sip_extensions, sip_extensions.c.sip_extension == "40005")
    assert ext.deleted_at is not None and ext.user_id == world.newuser.id
    key = await row_of(services, api_keys, api_keys.c.name == "newusers-key")
    assert key.revoked_at is not None and key.enabled == 0
    account = await row_of(services, accounts, accounts.c.id == world.newuser.account_id)
    assert account.deleted_at is None and Decimal(account.balance) == Decimal("10")  # the money stays

    # hidden from every read and from login
    assert [u["username"] for u in await world.ok("reseller", "getUsers")] == ["sub"]
    assert await world.code("newuser", "getInfo") == "E_AUTH_FAILED"
    assert await world.code("reseller", "getInfo", username="newuser") == "E_NOT_EXIST"
    assert await world.code("reseller", "getLogs", user="newuser") == "E_NOT_EXIST"
    assert await world.code("reseller", "transferMoney", destination="newuser", amount="1", comment="x") == (
        "E_NOT_EXIST"
    )
    assert await world.code("reseller", "getExtensionInfo", sip_extension="40005") == "E_NOT_EXIST"
    assert await world.code("reseller", "deleteUser", user="newuser") == "E_NOT_EXIST"  # once only
    # its name and SIP login stay taken: the books know them
    again = {"user": "newuser", "web_password": md5_hex("x"), "accesslevel": "11", "sip_server": "",
             "sip_extension": "40099", "sip_password": "p"}  # fmt: skip
    assert await world.code("reseller", "registerUser", **again) == "E_DATA_ABORT"
    # the keys it owned stopped working (an inactive key: 401, and its address is banned)
    assert (await world.api.get(owned_key, "getInfo", {})).status == 401


async def test_a_deleted_users_sip_accounts_place_no_calls(world: World) -> None:
    services = world.services
    std = await standard_world(services)
    asterisk = await make_key(services, level=50, auth_by="sip_extension", name="asterisk-ext")
    async with services.db.begin() as conn:
        await conn.execute(users.update().where(users.c.id == world.newuser.id).values(rates_id=std.base))
    await services.cache.invalidate("profiles")
    # a key that finds users by SIP login answers in plain text (the spec's config.api_plain_answer)
    before = await world.api.get(asterisk, "callPrepare", {"login": "40005", "destination": RUSSIA, "call_id": "b"})
    assert before.status == 200 and before.text.startswith("Allowed"), before.text
    async with services.db.begin() as conn:
        await conn.execute(reservations.delete())  # the call ended without a finish; no hold left

    assert await world.ok("reseller", "deleteUser", user="newuser") is True

    by_extension = await world.api.get(asterisk, "callPrepare", {"login": "40005", "destination": RUSSIA})
    by_name = await world.api.get(std.key, "callPrepare", {"login": "newuser", "destination": RUSSIA})
    assert (by_extension.status, by_extension.text) == (200, "E_AUTH_FAILED"), by_extension.text
    assert by_name.json()["result"] is False and by_name.code == "E_AUTH_FAILED", by_name.text
    async with services.db.begin() as conn:
        assert (await conn.execute(select(reservations))).first() is None
    assert await balance_of(services, world.newuser.account_id) == Decimal("10")


async def test_delete_user_ownership_and_bad_input(world: World) -> None:
    services = world.services
    assert await world.code("reseller", "deleteUser", user="stranger") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("sub", "deleteUser", user="newuser") == "E_INSUFFICIENT_ACCESS"
    assert await world.code("reseller", "deleteUser", user="ghost") == "E_NOT_EXIST"
    assert await world.code("reseller", "deleteUser") == "E_MISSING_ARGUMENT"
    assert await world.code("reseller", "deleteUser", user="reseller") == "E_DATA_ABORT"  # itself
    assert await world.code("boss", "deleteUser", user="other") == "E_DATA_ABORT"  # still manages stranger
    assert await world.code("boss", "deleteUser", user="admin") == "E_DOES_NOT_BELONG_TO_YOU"  # level 44 > 33
    await open_hold(services, world.sub)
    assert await world.code("reseller", "deleteUser", user="sub") == "E_DATA_ABORT"  # a call in progress
    async with services.db.begin() as conn:
        live = (await conn.execute(select(users.c.username).where(users.c.deleted_at.is_not(None)))).all()
    assert live == []  # nothing was deleted
    assert await world.ok("boss", "deleteUser", user="stranger") is True  # an administrator reaches everyone
    assert await world.ok("boss", "deleteUser", user="other") is True  # now it manages nobody


# --------------------------------------------------------------- SIP accounts


async def test_get_extensions_answers_its_example(world: World) -> None:
    reply, _ = await world.example("getExtensions", "sub")
    assert reply.status == 200, reply.text
    found = reply.json()["response"]
    assert [e["sip_extension"] for e in found] == ["40000"]
    assert [k for k in example_keys("getExtensions") if k not in found[0]] == []
    assert found[0]["owner"] == "sub" and found[0]["sip_password"] == "sippass"  # the owner sees its secrets


async def test_get_extensions_own_all_owner_and_ownership(world: World) -> None:
    await add_extension(world.services, world.sub, "4000001")
    assert names(await world.ok("reseller", "getExtensions")) == []  # own, and the reseller has none
    assert names(await world.ok("reseller", "getExtensions", own="false")) == ["40000", "4000001", "40005"]
    assert names(await world.ok("reseller", "getExtensions", all="true")) == ["40000", "4000001", "40005"]
    assert names(await world.ok("reseller", "getExtensions", owner="sub")) == ["40000", "4000001"]
    assert names(await world.ok("boss", "getExtensions", all="true")) == ["20000", "40000", "4000001", "40005"]
    assert names(await world.ok("sub", "getExtensions", all="true")) == ["40000", "4000001"]
    hidden = await world.ok("reseller", "getExtensions", owner="sub")
    assert hidden[0]["sip_password"] == ""  # a reseller is not shown its users' SIP passwords
    assert await world.code("reseller", "getExtensions", owner="stranger") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("sub", "getExtensions", owner="reseller") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("reseller", "getExtensions", owner="ghost") == "E_NOT_EXIST"
    assert await world.code("reseller", "getExtensions", own="maybe") == "E_INVALID_ARGUMENT"


async def test_get_avail_extension_answers_its_example(world: World) -> None:
    reply, expected = await world.example("getAvailExtension", "sub")
    assert reply.status == 200 and reply.json()["response"] == expected == "4000001"
    await add_extension(world.services, world.sub, "4000001")
    assert await world.ok("sub", "getAvailExtension", own="true") == "4000002"
    # own=false: the next XXXXX after the highest taken (40005), deleted ones still taken
    assert await world.ok("sub", "getAvailExtension") == "40006"
    await add_extension(world.services, world.sub, "40006")
    assert await world.ok("sub", "deleteExtension", sip_extension="40006") is True
    assert await world.ok("sub", "getAvailExtension") == "40007"
    assert await world.code("reseller", "getAvailExtension", own="true") == "E_NOT_EXIST"  # no SIP account
    assert await world.code("sub", "getAvailExtension", own="2") == "E_INVALID_ARGUMENT"


async def test_delete_extension_answers_its_example_and_keeps_the_row(world: World) -> None:
    services = world.services
    await add_extension(services, world.sub, "4000001")
    reply, expected = await world.example("deleteExtension", "sub")
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"

    row = await row_of(services, sip_extensions, sip_extensions.c.sip_extension == "40000")
    assert row.deleted_at is not None and row.user_id == world.sub.id
    assert [e["sip_extension"] for e in await world.ok("sub", "getExtensions")] == ["4000001"]
    info = await world.ok("sub", "getInfo")
    assert [e["sip_extension"] for e in info["sip_extensions"]] == ["4000001"]
    assert await world.code("sub", "getExtensionInfo", sip_extension="40000") == "E_NOT_EXIST"
    assert await world.code("sub", "updateExtension", sip_extension="40000", sip_callerid="1") == "E_NOT_EXIST"
    assert await world.code("sub", "deleteExtension", sip_extension="40000") == "E_NOT_EXIST"
    # the login stays taken, and a call from it is refused
    assert await world.code("sub", "createExtension", sip_extension="40000", sip_password="p") == "E_DATA_ABORT"
    asterisk = await make_key(services, level=50, auth_by="sip_extension", name="asterisk-ext")
    call = await world.api.get(asterisk, "callPrepare", {"login": "40000", "destination": RUSSIA})
    assert (call.status, call.text) == (200, "E_AUTH_FAILED"), call.text


async def test_delete_extension_ownership_and_calls_in_progress(world: World) -> None:
    assert await world.code("sub", "deleteExtension", sip_extension="20000") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("reseller", "deleteExtension", sip_extension="20000") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("sub", "deleteExtension", sip_extension="99999") == "E_NOT_EXIST"
    assert await world.code("sub", "deleteExtension") == "E_MISSING_ARGUMENT"
    await open_hold(world.services, world.sub)
    assert await world.code("reseller", "deleteExtension", sip_extension="40000") == "E_CANT_DELETE_EXTENSION"
    row = await row_of(world.services, sip_extensions, sip_extensions.c.sip_extension == "40000")
    assert row.deleted_at is None
    assert await world.ok("reseller", "deleteExtension", sip_extension="40005") is True  # its manager may
    assert await world.ok("boss", "deleteExtension", sip_extension="20000") is True


# --------------------------------------------------------------- accounts


async def test_get_accounts_answers_its_example(world: World) -> None:
    reply, _ = await world.example("getAccounts", "reseller")
    assert reply.status == 200, reply.text
    found = reply.json()["response"]
    assert [(a["account"], a["users"]) for a in found] == [
        (world.sub.account_id, ["sub"]),
        (world.newuser.account_id, ["newuser"]),
    ]
    assert list(found[0]) == example_keys("getAccounts")
    assert (found[0]["balance"], found[0]["displaybalance"], found[0]["displaycurrency"]) == (
        Decimal("10.00"), Decimal("10.00"), "€",
    )  # fmt: skip


async def test_get_accounts_all_and_ownership(world: World) -> None:
    assert listed(await world.ok("reseller", "getAccounts", all="true")) == ["newuser", "sub"]
    assert listed(await world.ok("other", "getAccounts")) == ["stranger"]
    every = ["admin", "boss", "newuser", "other", "reseller", "stranger", "sub"]
    assert listed(await world.ok("boss", "getAccounts")) == []  # boss manages nobody
    assert listed(await world.ok("boss", "getAccounts", all="true")) == every
    assert await world.code("reseller", "getAccounts", username="boss") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("sub", "getAccounts") == "E_INSUFFICIENT_ACCESS"
    assert await world.code("reseller", "getAccounts", all="maybe") == "E_INVALID_ARGUMENT"
    assert await world.ok("reseller", "deleteUser", user="newuser") is True
    assert listed(await world.ok("reseller", "getAccounts")) == ["sub"]  # a deleted user's account: not listed


async def test_delete_account_answers_its_example_and_keeps_the_row(world: World) -> None:
    services = world.services
    assert await world.ok("reseller", "deleteUser", user="newuser") is True
    number = str(world.newuser.account_id)
    reply, expected = await world.example("deleteAccount", "reseller", account=number)
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"

    row = await row_of(services, accounts, accounts.c.id == world.newuser.account_id)
    assert row.deleted_at is not None and Decimal(row.balance) == Decimal("10")
    async with services.db.begin() as conn:
        kept = (await conn.execute(select(transactions).where(transactions.c.account_id == row.id))).all()
    assert [Decimal(t.amount) for t in kept] == [Decimal("10")]  # the opening balance stays in the books
    assert await world.code("boss", "getAccountInfo", account=number) == "E_NOT_EXIST"
    assert await world.code("sub", "transferMoney", destination=number, amount="1", comment="x") == "E_NOT_EXIST"
    assert await world.code("reseller", "deleteAccount", account=number) == "E_NOT_EXIST"
    assert await balance_of(services, world.sub.account_id) == Decimal("10")


async def test_delete_account_refuses_accounts_with_users_and_others_accounts(world: World) -> None:
    services = world.services
    sub_account = str(world.sub.account_id)
    assert await world.code("reseller", "deleteAccount", account=sub_account) == "E_ACCOUNT_HAS_USERS"
    assert await world.code("boss", "deleteAccount", account=sub_account) == "E_ACCOUNT_HAS_USERS"
    assert await world.code("other", "deleteAccount", account=sub_account) == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.ok("boss", "deleteUser", user="stranger") is True
    stranger_account = str(world.stranger.account_id)
    assert await world.code("reseller", "deleteAccount", account=stranger_account) == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("sub", "deleteAccount", account=stranger_account) == "E_INSUFFICIENT_ACCESS"
    assert await world.code("reseller", "deleteAccount", account="999999999") == "E_NOT_EXIST"
    assert await world.code("reseller", "deleteAccount", account="abc") == "E_INVALID_ARGUMENT"
    assert await world.code("reseller", "deleteAccount") == "E_MISSING_ARGUMENT"
    async with services.db.begin() as conn:
        gone = (await conn.execute(select(accounts.c.id).where(accounts.c.deleted_at.is_not(None)))).all()
    assert gone == []
    assert await world.ok("other", "deleteAccount", account=stranger_account) is True  # its manager's


# --------------------------------------------------------------- deleteLogs


async def test_delete_logs_answers_its_example_and_a_retried_finish_is_not_charged_again(world: World) -> None:
    services = world.services
    std = await standard_world(services)
    async with services.db.begin() as conn:
        await conn.execute(users.update().where(users.c.id == world.sub.id).values(rates_id=std.base))
    await services.cache.invalidate("profiles")
    leg = {"login": "sub", "destination": RUSSIA, "call_id": "call-1"}
    prepared = await world.api.get(std.key, "callPrepare", leg)
    assert prepared.json()["response"].startswith("Allowed"), prepared.text
    finished = await world.api.get(std.key, "callFinish", {**leg, "length": "61", "status": "ANSWER"})
    assert finished.json()["response"] == "Saved Russia [sub/74951234567] via [route1-cli] 120 0.20 EUR ANSWER"
    assert await balance_of(services, world.sub.account_id) == Decimal("9.80")
    assert len(await world.ok("sub", "getLogs")) == 1

    reply, expected = await world.example("deleteLogs", "sub")
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"

    assert await world.ok("sub", "getLogs") == []
    async with services.db.begin() as conn:
        rows = (await conn.execute(select(cdrs).where(cdrs.c.call_uid == "call-1"))).all()
    assert len(rows) == 1 and rows[0].deleted_at is not None and Decimal(rows[0].cost) == Decimal("0.20")
    # Asterisk retries the same callFinish (same call_id, same prior): replayed, not charged
    retried = await world.api.get(std.key, "callFinish", {**leg, "length": "61", "status": "ANSWER"})
    assert retried.json()["response"] == finished.json()["response"]
    assert await balance_of(services, world.sub.account_id) == Decimal("9.80")
    async with services.db.begin() as conn:
        charges = (await conn.execute(select(transactions).where(transactions.c.ref == "call-1:1"))).all()
    assert [Decimal(t.amount) for t in charges] == [Decimal("-0.20")]
    assert await world.ok("sub", "getLogs") == []  # the replay did not bring the row back


async def test_delete_logs_of_another_user_needs_to_manage_it(world: World) -> None:
    services = world.services
    now = utcnow()
    async with services.db.begin() as conn:
        for n, user in enumerate((world.sub, world.stranger)):
            await conn.execute(
                cdrs.insert().values(
                    call_uid=f"c{n}", prior=1, user_id=user.id, account_id=user.account_id, destination=RUSSIA,
                    length_s=60, billed_s=60, status="ANSWER", cost=Decimal("0.10"), display_cost=Decimal("0.10"),
                    display_currency="EUR", answer="Saved", created_at=now,
                )
            )  # fmt: skip
    assert await world.code("reseller", "deleteLogs", user="stranger") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("sub", "deleteLogs", user="reseller") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("reseller", "deleteLogs", user="ghost") == "E_NOT_EXIST"
    assert len(await world.ok("reseller", "getLogs", user="sub")) == 1
    assert await world.ok("reseller", "deleteLogs", user="sub") is True
    assert await world.ok("reseller", "getLogs", user="sub") == []
    assert len(await world.ok("stranger", "getLogs")) == 1  # another user's log is untouched
    async with services.db.begin() as conn:
        assert len((await conn.execute(select(cdrs))).all()) == 2  # nothing removed
