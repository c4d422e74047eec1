"""createExtension, getExtensionInfo, updateExtension, switchRates through the dispatcher."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from billing_core.api.dispatch import Dispatcher, Outcome
from billing_core.cache.keys import NAMESPACES
from billing_core.catalog.registry import TextAnswer
from billing_core.container import Services
from billing_core.directory.tables import extension_options, sip_extensions
from billing_core.ledger.tables import transactions
from billing_core.rating.tables import tariffs
from tests.factories import MadeUser, balance_of, make_user
from tests.test_api_users import Keys, call, code, login, make_keys


@pytest.fixture
async def keys(services: Services) -> Keys:
    return await make_keys(services)


async def add_tariff(
    services: Services,
    name: str,
    *,
    owner: str = "admin",
    is_option: bool = False,
    is_public: bool = False,
    switch_price: str = "0",
) -> int:
    async with services.db.begin() as conn:
        result = await conn.execute(
            tariffs.insert().values(
                table_name=name,
                name=name,
                owner=owner,
                is_option=is_option,
                is_public=is_public,
                switch_price=Decimal(switch_price),
            )
        )
    await services.cache.invalidate(*NAMESPACES)
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


async def extension_row(services: Services, name: str) -> Any:
    async with services.db.begin() as conn:
        return (await conn.execute(select(sip_extensions).where(sip_extensions.c.sip_extension == name))).first()


async def options_of(services: Services, extension_id: int) -> list[int]:
    async with services.db.begin() as conn:
        rows = await conn.execute(
            select(extension_options.c.tariff_id).where(extension_options.c.extension_id == extension_id)
        )
        return sorted(rows.scalars())


async def ext_call(dispatcher: Dispatcher, keys: Keys, who: MadeUser, method: str, **args: str) -> Outcome:
    return await call(dispatcher, keys.client, method, login(who, **args))


# --- createExtension ------------------------------------------------------------------------


async def test_create_extension_stores_the_sip_password_encrypted(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    alice = await make_user(services, "alice")

    out = await ext_call(dispatcher, keys, alice, "createExtension", sip_extension="4000001", sip_password="password")

    assert out.ok and out.value is True, out.error
    row = await extension_row(services, "4000001")
    assert row.user_id == alice.id and row.sip_language == "en" and row.sip_srtp == 0
    assert row.sip_password_enc != "password" and services.box.decrypt(row.sip_password_enc) == "password"
    again = await ext_call(dispatcher, keys, alice, "createExtension", sip_extension="4000001", sip_password="x")
    assert code(again) == "E_DATA_ABORT"
    for bad in ("ab", "40 01", "4000/1", "x" * 33):
        out = await ext_call(dispatcher, keys, alice, "createExtension", sip_extension=bad, sip_password="p")
        assert code(out) == "E_WRONG_EXTENSION", bad
    empty = await ext_call(dispatcher, keys, alice, "createExtension", sip_extension="4000002", sip_password="")
    assert code(empty) == "E_INVALID_ARGUMENT"
    assert await extension_row(services, "4000002") is None


async def test_create_extension_for_an_owner_the_caller_manages(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    res = await make_user(services, "res", accesslevel=22)
    carol = await make_user(services, "carol", manager="res")
    await make_user(services, "stranger")

    mine = await ext_call(
        dispatcher,
        keys,
        res,
        "createExtension",
        owner="carol",
        sip_extension="50001",
        sip_password="pw",
        sip_srtp="true",
    )
    foreign = await ext_call(
        dispatcher, keys, res, "createExtension", owner="stranger", sip_extension="50002", sip_password="pw"
    )
    ghost = await ext_call(
        dispatcher, keys, res, "createExtension", owner="ghost", sip_extension="50003", sip_password="pw"
    )
    upward = await ext_call(
        dispatcher, keys, carol, "createExtension", owner="res", sip_extension="50004", sip_password="pw"
    )

    assert mine.ok, mine.error
    assert code(foreign) == "E_DOES_NOT_BELONG_TO_YOU" and code(ghost) == "E_NOT_EXIST"
    assert code(upward) == "E_DOES_NOT_BELONG_TO_YOU"
    row = await extension_row(services, "50001")
    assert row.user_id == carol.id and row.sip_srtp == 1
    assert await extension_row(services, "50002") is None and await extension_row(services, "50004") is None


# --- getExtensionInfo ---------------------------------------------------------------------


async def test_get_extension_info_answers_json_or_one_value_to_whoever_owns_it(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    res = await make_user(services, "res", accesslevel=22)
    basic = await add_tariff(services, "basic", owner="res")
    night = await add_tariff(services, "night", owner="res", is_option=True)
    carol = await make_user(
        services, "carol", manager="res", sip_extension="60001", sip_password="c-sip", sip_rates_id=basic
    )
    other = await make_user(services, "other", sip_extension="60002")
    row = await extension_row(services, "60001")
    async with services.db.begin() as conn:
        await conn.execute(extension_options.insert().values(extension_id=row.id, tariff_id=night))

    own = await ext_call(dispatcher, keys, carol, "getExtensionInfo", sip_extension="60001")
    managed = await ext_call(dispatcher, keys, res, "getExtensionInfo", sip_extension="60001")
    one = await ext_call(dispatcher, keys, carol, "getExtensionInfo", sip_extension="60001", property="rates_name")
    secret = await ext_call(dispatcher, keys, res, "getExtensionInfo", sip_extension="60001", property="sip_password")

    assert own.ok and managed.ok and one.ok and secret.ok
    assert own.value["owner"] == "carol" and own.value["sip_password"] == "c-sip"
    assert own.value["sip_rates_id"] == basic and own.value["rates_name"] == "basic"
    assert own.value["sip_rates_options"] == str(night)
    assert managed.value["sip_password"] == "" and managed.value["sip_extension"] == "60001"
    assert isinstance(one.value, TextAnswer) and one.value.text == "basic"
    assert isinstance(secret.value, TextAnswer) and secret.value.text == ""
    bad_prop = await ext_call(dispatcher, keys, carol, "getExtensionInfo", sip_extension="60001", property="nope")
    foreign = await ext_call(dispatcher, keys, other, "getExtensionInfo", sip_extension="60001")
    missing = await ext_call(dispatcher, keys, carol, "getExtensionInfo", sip_extension="69999")
    assert code(bad_prop) == "E_INVALID_ARGUMENT" and code(foreign) == "E_DOES_NOT_BELONG_TO_YOU"
    assert code(missing) == "E_NOT_EXIST"


# --- updateExtension ----------------------------------------------------------------------


async def test_update_extension_renames_and_reencrypts(services: Services, dispatcher: Dispatcher, keys: Keys) -> None:
    alice = await make_user(services, "alice", sip_extension="70001", disa_trusted_cli="79001112233")
    await make_user(services, "bob", sip_extension="70002", disa_trusted_cli="79009998877")

    out = await ext_call(
        dispatcher,
        keys,
        alice,
        "updateExtension",
        sip_extension="70001",
        extension="70011",
        sip_password="n3w",
        disa_pin="0042",
        sip_transport="udp,tcp",
        sip_reach="0",
        sip_srtp="1",
        sip_max_call_len="600",
    )

    assert out.ok, out.error
    assert await extension_row(services, "70001") is None
    row = await extension_row(services, "70011")
    assert row.user_id == alice.id and row.sip_transport == "udp,tcp" and row.sip_reach == 0
    assert (row.sip_srtp, row.sip_max_call_len) == (1, 600)
    assert row.sip_password_enc != "n3w" and services.box.decrypt(row.sip_password_enc) == "n3w"
    assert row.disa_pin_enc != "0042" and services.box.decrypt(row.disa_pin_enc) == "0042"
    cached = await services.profiles.extension(await services.cache.generations(), "70011")
    assert cached is not None and cached.sip_max_call_len == 600

    cases = {
        "E_DATA_ABORT": {"extension": "70002"},
        "E_WRONG_EXTENSION": {"extension": "7 0"},
        "E_INVALID_ARGUMENT": {"sip_transport": "sctp"},
        "E_MISSING_ARGUMENT": {},
    }
    for expected, args in cases.items():
        assert (
            code(await ext_call(dispatcher, keys, alice, "updateExtension", sip_extension="70011", **args)) == expected
        )
    for field, value in (("sip_reach", "1"), ("sip_srtp", "2"), ("disa_pin", "12a4"), ("sip_max_call_len", "-1")):
        out = await ext_call(dispatcher, keys, alice, "updateExtension", sip_extension="70011", **{field: value})
        assert code(out) == "E_INVALID_ARGUMENT", field
    taken_cli = await ext_call(
        dispatcher, keys, alice, "updateExtension", sip_extension="70011", disa_trusted_cli="79009998877"
    )
    assert code(taken_cli) == "E_DATA_ABORT"
    assert (await extension_row(services, "70011")).disa_trusted_cli == "79001112233"


async def test_update_extension_sets_only_tariffs_the_caller_may_use(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    res = await make_user(services, "res", accesslevel=22)
    await make_user(services, "res_b", accesslevel=22)
    carol = await make_user(services, "carol", manager="res", sip_extension="80001")
    own = await add_tariff(services, "res-private", owner="res")
    foreign = await add_tariff(services, "b-private", owner="res_b")
    foreign_public = await add_tariff(services, "b-public", owner="res_b", is_public=True)
    provider_public = await add_tariff(services, "admin-public", owner="admin", is_public=True)
    option = await add_tariff(services, "option", owner="res", is_option=True)

    async def set_rates(who: MadeUser, tariff_id: int) -> Outcome:
        return await ext_call(
            dispatcher, keys, who, "updateExtension", sip_extension="80001", sip_rates_id=str(tariff_id)
        )

    assert code(await set_rates(res, foreign)) == "E_NOT_EXIST"
    assert code(await set_rates(res, foreign_public)) == "E_NOT_EXIST"  # another reseller's offer
    assert code(await set_rates(res, 99999)) == "E_NOT_EXIST"
    assert code(await set_rates(res, option)) == "E_INVALID_ARGUMENT"
    assert code(await set_rates(carol, own)) == "E_INSUFFICIENT_ACCESS"  # an owner uses switchRates
    assert (await set_rates(res, provider_public)).ok  # res's provider is the administrators
    assert (await extension_row(services, "80001")).sip_rates_id == provider_public
    assert (await set_rates(res, own)).ok
    assert (await extension_row(services, "80001")).sip_rates_id == own
    by_admin = await call(
        dispatcher, keys.server, "updateExtension", {"login": "admin", "sip_extension": "80001", "sip_rates_id": "0"}
    )
    assert by_admin.ok and (await extension_row(services, "80001")).sip_rates_id is None


# --- switchRates ----------------------------------------------------------------------------


async def test_switch_rates_changes_the_tariff_and_charges_its_switch_price(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    await make_user(services, "res", accesslevel=22)
    basic = await add_tariff(services, "basic", owner="res", is_public=True)
    premium = await add_tariff(services, "premium", owner="res", is_public=True, switch_price="2.5")
    private = await add_tariff(services, "private", owner="res")
    carol = await make_user(
        services, "carol", manager="res", balance=Decimal("3"), sip_extension="90001", sip_rates_id=basic
    )

    out = await ext_call(dispatcher, keys, carol, "switchRates", id=str(premium), sip_extension="90001")
    again = await ext_call(dispatcher, keys, carol, "switchRates", id=str(premium), sip_extension="90001")
    back = await ext_call(dispatcher, keys, carol, "switchRates", id=str(basic), sip_extension="90001")

    assert out.ok, out.error
    assert code(again) == "E_ALREADY_ON_THIS_TARIFF"
    assert back.ok  # basic costs nothing
    not_offered = await ext_call(dispatcher, keys, carol, "switchRates", id=str(private), sip_extension="90001")
    assert code(not_offered) == "E_NOT_EXIST"  # her reseller's private tariff is not offered to her
    assert await balance_of(services, carol.account_id) == Decimal("0.5000")
    async with services.db.begin() as conn:
        ledger = (await conn.execute(select(transactions).where(transactions.c.account_id == carol.account_id))).all()
    assert [(t.kind, t.amount) for t in ledger if t.kind == "fee"] == [("fee", Decimal("-2.5000"))]
    poor = await ext_call(dispatcher, keys, carol, "switchRates", id=str(premium), sip_extension="90001")
    assert code(poor) == "E_INSUFFICIENT_MONEY"
    assert (await extension_row(services, "90001")).sip_rates_id == basic
    assert await balance_of(services, carol.account_id) == Decimal("0.5000")


async def test_switch_rates_connects_and_disconnects_an_option(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    await make_user(services, "res", accesslevel=22)
    night = await add_tariff(services, "night", owner="res", is_option=True, is_public=True)
    hidden = await add_tariff(services, "hidden", owner="someone-else", is_option=True)
    carol = await make_user(services, "carol", manager="res", sip_extension="91001")
    stranger = await make_user(services, "stranger", sip_extension="91002")
    ext_id = (await extension_row(services, "91001")).id

    async def switch(who: MadeUser, tariff_id: int, ext: str = "91001", **state: str) -> Outcome:
        return await ext_call(dispatcher, keys, who, "switchRates", id=str(tariff_id), sip_extension=ext, **state)

    assert code(await switch(carol, night)) == "E_MISSING_ARGUMENT"
    assert (await switch(carol, night, state="true")).ok
    assert await options_of(services, ext_id) == [night]
    cached = await services.profiles.extension(await services.cache.generations(), "91001")
    assert cached is not None and cached.option_ids == (night,)
    assert code(await switch(carol, night, state="true")) == "E_ALREADY_ON_THIS_TARIFF"
    assert code(await switch(carol, hidden, state="true")) == "E_NOT_EXIST"
    assert code(await switch(stranger, night, ext="91001", state="false")) == "E_DOES_NOT_BELONG_TO_YOU"
    assert await options_of(services, ext_id) == [night]
    assert (await switch(carol, night, state="false")).ok
    assert await options_of(services, ext_id) == []
    assert code(await switch(carol, night, state="false")) == "E_NOT_EXIST"
