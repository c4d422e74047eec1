"""getInfo, getValue, updateUser, registerUser, getUsers through the dispatcher, on both backends."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from billing_core.api.dispatch import Credentials, Dispatcher, Outcome
from billing_core.auth.secrets_store import md5_hex, verify_password
from billing_core.cache.keys import NAMESPACES
from billing_core.container import Services
from billing_core.directory.tables import sip_extensions, users
from billing_core.ledger.tables import accounts, transactions
from billing_core.numbers.tables import dids
from billing_core.rating.tables import currencies, tariffs
from tests.factories import MadeUser, balance_of, make_key, make_user
from tests.test_spec_registry import spec


@dataclass(frozen=True)
class Keys:
    client: str  # level 0: login + md5 password
    server: str  # level 44, owned by admin: login without password


async def make_keys(services: Services) -> Keys:
    return Keys(await make_key(services, level=0, name="client"), await make_key(services, level=44, name="server"))


@pytest.fixture
async def keys(services: Services) -> Keys:
    return await make_keys(services)


async def call(dispatcher: Dispatcher, key: str, method: str, args: dict[str, str]) -> Outcome:
    return await dispatcher.call(method, args, Credentials(peer_ip="127.0.0.1", transport="test", apikey=key))


def login(who: MadeUser, **args: str) -> dict[str, str]:
    return {"login": who.username, "password": md5_hex(who.password), **args}


def code(outcome: Outcome) -> str | None:
    return None if outcome.error is None else outcome.error.code.value


async def add_rub(services: Services) -> None:
    async with services.db.begin() as conn:
        await conn.execute(currencies.insert().values(currency="RUB", eur_course=Decimal(100), displayname="rub."))
    await services.cache.invalidate(*NAMESPACES)


async def user_row(services: Services, username: str) -> Any:
    async with services.db.begin() as conn:
        return (await conn.execute(select(users).where(users.c.username == username))).one()


async def count(services: Services, table: Any) -> int:
    async with services.db.begin() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def spec_attributes(*groups: str) -> list[str]:
    return [a["name"] for a in spec()["user_object"]["attributes"] if a["group"] in groups]


# --- getInfo / getValue -------------------------------------------------------------


async def test_get_info_returns_every_user_object_attribute(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    await add_rub(services)
    alice = await make_user(
        services,
        "alice",
        balance=Decimal("12.5"),
        overdraft=Decimal("2"),
        currency="RUB",
        sip_extension="10001",
        sip_password="sippass",
        disa_pin="0123",
    )
    async with services.db.begin() as conn:
        await conn.execute(dids.insert().values(did="74950000001", owner="alice", cost=Decimal("1.5")))

    out = await call(dispatcher, keys.client, "getInfo", login(alice))

    assert out.ok, out.error
    info = out.value
    missing = [a for a in spec_attributes("User", "Account", "Virtual parameters") if a not in info]
    assert missing == []
    ext = info["sip_extensions"][0]
    assert [a for a in spec_attributes("SIP & DISA account") if a not in ext] == []
    assert (info["id"], info["username"], info["account"]) == (alice.id, "alice", alice.account_id)
    assert info["balance"] == Decimal("12.5") and info["overdraft"] == Decimal("2")
    assert info["actualbalance"] == Decimal("14.5")
    assert info["displaybalance"] == Decimal("1250") and info["displayoverdraft"] == Decimal("200")
    assert info["displaycurrency"] == "rub."
    assert info["password"] == ""
    assert ext["sip_extension"] == "10001" and ext["owner"] == "alice"
    assert ext["sip_password"] == "sippass" and ext["disa_pin"] == "0123"  # the owner sees its secrets
    assert [d["did"] for d in info["did_numbers"]] == ["74950000001"]
    assert info["sim_cards"] == [] and info["broadcasts"] == []
    dumped = json.dumps(info, default=str)
    row = await user_row(services, "alice")
    assert row.password_hash not in dumped and md5_hex("secret") not in dumped and "password_hash" not in dumped


async def test_get_info_shows_sip_secrets_to_administrators_but_not_to_a_reseller(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    reseller = await make_user(services, "res", accesslevel=22)
    await make_user(services, "carol", manager="res", sip_extension="20001", sip_password="carolsip", disa_pin="999")

    by_reseller = await call(dispatcher, keys.client, "getInfo", login(reseller, username="carol"))
    by_admin = await call(dispatcher, keys.server, "getInfo", {"login": "admin", "username": "carol"})

    assert by_reseller.ok and by_admin.ok
    assert by_reseller.value["username"] == "carol"
    assert by_reseller.value["sip_extensions"][0]["sip_password"] == ""
    assert by_reseller.value["sip_extensions"][0]["disa_pin"] == ""
    assert "carolsip" not in json.dumps(by_reseller.value, default=str)
    assert by_admin.value["sip_extensions"][0]["sip_password"] == "carolsip"


async def test_get_value_answers_one_attribute_as_text(services: Services, dispatcher: Dispatcher, keys: Keys) -> None:
    await add_rub(services)
    alice = await make_user(services, "alice", balance=Decimal("1"), currency="RUB", sip_extension="10001")
    bob = await make_user(services, "bob")

    async def value(user: MadeUser, prop: str) -> Outcome:
        return await call(dispatcher, keys.client, "getValue", login(user, property=prop))

    assert (await value(alice, "balance")).value.text == "1.00"  # the spec's example
    assert (await value(alice, "displaybalance")).value.text == "100.00"
    assert (await value(alice, "username")).value.text == "alice"
    assert (await value(alice, "account")).value.text == str(alice.account_id)
    assert (await value(alice, "sip_extension")).value.text == "10001"
    assert (await value(alice, "password")).value.text == ""
    assert code(await value(alice, "no_such_thing")) == "E_INVALID_ARGUMENT"
    assert code(await value(alice, "sip_extensions")) == "E_INVALID_ARGUMENT"
    assert code(await value(bob, "sip_extension")) == "E_NOT_EXIST"
    assert code(await call(dispatcher, keys.client, "getValue", login(alice))) == "E_MISSING_ARGUMENT"


# --- updateUser ------------------------------------------------------------------------


async def test_update_user_changes_own_password_to_a_salted_hash(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    alice = await make_user(services, "alice")
    new_md5 = md5_hex("n3w-pass")

    out = await call(dispatcher, keys.client, "updateUser", login(alice, web_password=new_md5.upper()))

    assert out.ok, out.error
    row = await user_row(services, "alice")
    assert row.password_hash != new_md5 and new_md5 not in row.password_hash
    assert verify_password(new_md5, row.password_hash)
    old = await call(dispatcher, keys.client, "getInfo", login(alice))
    fresh = await call(dispatcher, keys.client, "getInfo", {"login": "alice", "password": new_md5})
    assert code(old) == "E_AUTH_FAILED" and fresh.ok
    bad = await call(
        dispatcher, keys.client, "updateUser", {"login": "alice", "password": new_md5, "web_password": "x"}
    )
    assert code(bad) == "E_INVALID_ARGUMENT"


async def test_update_user_refuses_manager_fields_on_yourself(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    alice = await make_user(services, "alice", accesslevel=22)

    for field, value in (("accesslevel", "33"), ("accesslevel", "11"), ("active", "1"), ("invites", "5")):
        out = await call(dispatcher, keys.client, "updateUser", login(alice, **{field: value}))
        assert code(out) == "E_INSUFFICIENT_ACCESS", field
    comment = await call(dispatcher, keys.client, "updateUser", login(alice, comment="vip"))
    nothing = await call(dispatcher, keys.client, "updateUser", login(alice))
    assert code(comment) == "E_INSUFFICIENT_ACCESS" and code(nothing) == "E_MISSING_ARGUMENT"
    row = await user_row(services, "alice")
    assert (row.accesslevel, row.active, row.invites, row.comment) == (22, 1, 0, "")


async def test_a_reseller_updates_its_users_within_its_own_level(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    await add_rub(services)
    res = await make_user(services, "res", accesslevel=22)
    await make_user(services, "carol", manager="res")
    await make_user(services, "other", manager="admin")

    spec_example = await call(dispatcher, keys.client, "updateUser", login(res, username="carol", active="0"))
    by_user_arg = await call(
        dispatcher, keys.client, "updateUser", login(res, user="carol", accesslevel="22", currency="rub")
    )
    too_high = await call(dispatcher, keys.client, "updateUser", login(res, user="carol", accesslevel="33"))
    not_a_level = await call(dispatcher, keys.client, "updateUser", login(res, user="carol", accesslevel="15"))
    foreign = await call(dispatcher, keys.client, "updateUser", login(res, user="other", active="0"))
    unknown = await call(dispatcher, keys.client, "updateUser", login(res, user="nobody", active="0"))
    bad_currency = await call(dispatcher, keys.client, "updateUser", login(res, user="carol", currency="XXX"))

    assert spec_example.ok and by_user_arg.ok, (spec_example.error, by_user_arg.error)
    assert code(too_high) == "E_INSUFFICIENT_ACCESS" and code(not_a_level) == "E_INVALID_ARGUMENT"
    assert code(foreign) == "E_DOES_NOT_BELONG_TO_YOU" and code(unknown) == "E_NOT_EXIST"
    assert code(bad_currency) == "E_NOT_EXIST"
    carol, other = await user_row(services, "carol"), await user_row(services, "other")
    assert (carol.active, carol.accesslevel, carol.currency) == (0, 22, "RUB")
    assert other.active == 1
    async with services.db.begin() as conn:
        mine = (
            await conn.execute(tariffs.insert().values(table_name="t", name="mine", owner="res"))
        ).inserted_primary_key
        theirs = (
            await conn.execute(tariffs.insert().values(table_name="t", name="x", owner="other"))
        ).inserted_primary_key
    assert mine is not None and theirs is not None
    ok = await call(dispatcher, keys.client, "updateUser", login(res, user="carol", rates=str(mine[0])))
    hidden = await call(dispatcher, keys.client, "updateUser", login(res, user="carol", rates=str(theirs[0])))
    assert ok.ok and code(hidden) == "E_NOT_EXIST"
    assert (await user_row(services, "carol")).rates_id == mine[0]


async def test_update_user_moves_a_user_to_an_account_the_caller_controls(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    res = await make_user(services, "res", accesslevel=22)
    carol = await make_user(services, "carol", manager="res")
    dave = await make_user(services, "dave", manager="res")
    stranger = await make_user(services, "stranger", manager="admin")

    to_foreign = await call(
        dispatcher, keys.client, "updateUser", login(res, user="carol", account=str(stranger.account_id))
    )
    to_missing = await call(dispatcher, keys.client, "updateUser", login(res, user="carol", account="999999999"))
    to_dave = await call(dispatcher, keys.client, "updateUser", login(res, user="carol", account=str(dave.account_id)))
    by_admin = await call(
        dispatcher, keys.server, "updateUser", {"login": "admin", "user": "dave", "account": str(stranger.account_id)}
    )

    assert code(to_foreign) == "E_DOES_NOT_BELONG_TO_YOU" and code(to_missing) == "E_NOT_EXIST"
    assert to_dave.ok and by_admin.ok, (to_dave.error, by_admin.error)
    assert (await user_row(services, "carol")).account_id == dave.account_id != carol.account_id
    assert (await user_row(services, "dave")).account_id == stranger.account_id
    admin_comment = await call(
        dispatcher, keys.server, "updateUser", {"login": "admin", "user": "dave", "comment": "vip"}
    )
    assert admin_comment.ok and (await user_row(services, "dave")).comment == "vip"


# --- registerUser ----------------------------------------------------------------------


def registration(**overrides: str) -> dict[str, str]:
    args = {
        "user": "newuser",
        "web_password": md5_hex("password"),
        "accesslevel": "11",
        "sip_server": "127.0.0.1",  # a name of the server `local` (callgate migrate)
        "sip_extension": "40000",
        "sip_password": "verysecretpassword",
        "balance": "1000.00",
    }
    return {**args, **overrides}


async def test_register_user_creates_user_account_and_sip_account(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    await add_rub(services)
    res = await make_user(services, "res", accesslevel=22, currency="RUB")

    out = await call(dispatcher, keys.client, "registerUser", login(res, **registration()))

    assert out.ok and out.value is True, out.error
    row = await user_row(services, "newuser")
    assert (row.manager, row.accesslevel, row.currency) == ("res", 11, "EUR")
    assert row.password_hash != md5_hex("password") and verify_password(md5_hex("password"), row.password_hash)
    async with services.db.begin() as conn:
        account = (await conn.execute(select(accounts).where(accounts.c.id == row.account_id))).one()
        ledger = (await conn.execute(select(transactions).where(transactions.c.account_id == row.account_id))).all()
        ext = (await conn.execute(select(sip_extensions).where(sip_extensions.c.user_id == row.id))).one()
    # 1000 RUB of the registering reseller at 100 RUB/EUR, taken from the reseller's account
    assert account.balance == Decimal("10.0000")
    assert [(t.kind, t.amount) for t in ledger] == [("transfer", Decimal("10.0000"))]
    assert await balance_of(services, res.account_id) == Decimal("0.0000")
    assert ext.sip_extension == "40000" and ext.sip_server == "127.0.0.1"
    assert ext.sip_password_enc != "verysecretpassword" and services.box.decrypt(ext.sip_password_enc) == (
        "verysecretpassword"
    )
    fresh = await call(dispatcher, keys.client, "getInfo", {"login": "newuser", "password": md5_hex("password")})
    assert fresh.ok and fresh.value["manager"] == "res"


async def test_register_user_refuses_taken_names_and_bad_input_without_writing(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    res = await make_user(services, "res", accesslevel=22, sip_extension="30000")
    await make_user(services, "taken")
    user = await make_user(services, "plain", accesslevel=11)
    before = (await count(services, users), await count(services, sip_extensions), await count(services, accounts))

    cases = {
        "E_DATA_ABORT": registration(user="taken"),
        "E_CANT_CREATE_ASTERISK_EXTENSION": registration(sip_extension="30000"),
        "E_INSUFFICIENT_ACCESS": registration(accesslevel="33"),
        "E_INVALID_ARGUMENT": registration(web_password="5f4dcc3b5aa765d61d8327deb882cf996"),  # the doc's 33 digits
        "E_WRONG_EXTENSION": registration(sip_extension="4 0"),
        "E_NOT_EXIST": registration(currency="XXX"),
    }
    for expected, args in cases.items():
        assert code(await call(dispatcher, keys.client, "registerUser", login(res, **args))) == expected, args
    missing = {k: v for k, v in registration().items() if k != "sip_password"}
    assert code(await call(dispatcher, keys.client, "registerUser", login(res, **missing))) == "E_MISSING_ARGUMENT"
    as_user = await call(dispatcher, keys.client, "registerUser", login(user, **registration()))
    assert code(as_user) == "E_INSUFFICIENT_ACCESS"
    after = (await count(services, users), await count(services, sip_extensions), await count(services, accounts))
    assert after == before


async def test_register_user_joins_only_an_account_the_reseller_controls(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    res = await make_user(services, "res", accesslevel=22)
    stranger = await make_user(services, "stranger")

    foreign = await call(
        dispatcher,
        keys.client,
        "registerUser",
        login(res, **registration(account=str(stranger.account_id), balance="0")),
    )
    with_money = await call(
        dispatcher, keys.client, "registerUser", login(res, **registration(account=str(res.account_id)))
    )
    joined = await call(
        dispatcher, keys.client, "registerUser", login(res, **registration(account=str(res.account_id), balance="0"))
    )

    assert code(foreign) == "E_DOES_NOT_BELONG_TO_YOU" and code(with_money) == "E_INVALID_ARGUMENT"
    assert joined.ok, joined.error
    assert (await user_row(services, "newuser")).account_id == res.account_id


# --- getUsers ---------------------------------------------------------------------------


async def test_get_users_shows_a_reseller_only_its_own_tree(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    res_a = await make_user(services, "res_a", accesslevel=22)
    res_b = await make_user(services, "res_b", accesslevel=22)
    await make_user(services, "a1", manager="res_a", accesslevel=22, sip_extension="11111", sip_password="a1sip")
    await make_user(services, "a2", manager="a1")
    await make_user(services, "b1", manager="res_b")
    plain = await make_user(services, "plain")

    seen_a = await call(dispatcher, keys.client, "getUsers", login(res_a))
    seen_b = await call(dispatcher, keys.client, "getUsers", login(res_b, all="true"))
    seen_admin = await call(dispatcher, keys.server, "getUsers", {"login": "admin", "all": "true"})

    assert seen_a.ok and seen_b.ok and seen_admin.ok
    assert sorted(u["username"] for u in seen_a.value) == ["a1", "a2"]
    assert sorted(u["username"] for u in seen_b.value) == ["b1"]
    assert {"admin", "res_a", "a1", "a2", "b1", "plain"} <= {u["username"] for u in seen_admin.value}
    a1 = next(u for u in seen_a.value if u["username"] == "a1")
    assert a1["sip_extensions"][0]["sip_extension"] == "11111" and a1["sip_extensions"][0]["sip_password"] == ""
    assert code(await call(dispatcher, keys.client, "getUsers", login(plain))) == "E_INSUFFICIENT_ACCESS"
