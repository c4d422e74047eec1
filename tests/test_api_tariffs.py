"""Directions and tarification through the dispatcher: tariffs, their entries, prices,
directions and bill types. The world (users, server key) is the one of test_api_routes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from billing_core.api.dispatch import Credentials, Outcome
from billing_core.auth.secrets_store import md5_hex
from billing_core.cache.keys import NAMESPACES, NS_RATING
from billing_core.container import Services
from billing_core.errors import ErrorCode
from billing_core.rating.direction_import import import_directions
from billing_core.rating.tables import bill_types, currencies, directions, routes, tariff_entries, tariffs
from tests.factories import make_key, make_user
from tests.test_api_routes import World, add_route, build_world

SPEC_TARIFF_FIELDS = {
    "bill_type",
    "id",
    "is_public",
    "table name",
    "owner",
    "display_switch_price",
    "name",
    "switch_price",
    "did_multiplier",
    "is_option",
    "multiplier",
    "description",
}
CALLGATE_TARIFF_FIELDS = {"connect_fee"}  # callgate's own, beyond the spec (docs/billing.md)

DIRECTIONS = [
    ("7", "Russia", "11", "11"),
    ("79", "Russia Mobile", "11", "11"),
    ("7901", "Russia Mobile - Tele2", "11", "11"),
    ("49", "Germany", "8", "15"),
]


@pytest.fixture
async def world(services: Services, dispatcher: Any) -> World:
    built = await build_world(services, dispatcher)
    rows = [dict(zip(("code", "direction", "min_len", "max_len"), d, strict=True)) for d in DIRECTIONS]
    assert (await import_directions(services.db, rows)).applied
    async with services.db.begin() as conn:
        await conn.execute(currencies.insert().values(currency="USD", eur_course=Decimal("1.1"), displayname="$"))
    await services.cache.invalidate(NS_RATING)  # as the CLI does after an import
    return built


async def direction_id(services: Services, code: str) -> int:
    async with services.db.begin() as conn:
        return int((await conn.execute(select(directions.c.id).where(directions.c.code == code))).scalar_one())


async def tariff_row(services: Services, owner: str, name: str) -> Any:
    async with services.db.begin() as conn:
        return (await conn.execute(select(tariffs).where(tariffs.c.owner == owner, tariffs.c.name == name))).one()


async def add_tariff(w: World, login: str, name: str, **extra: Any) -> int:
    assert await w.ok("addRates", login, table=name.lower().replace(" ", "_"), name=name, **extra) is True
    return int((await tariff_row(w.services, login, name)).id)


async def entries(services: Services, tariff_id: int) -> list[tuple[str, Decimal, int, int]]:
    """(direction code, cost, route id, priority) of a tariff, sorted."""
    async with services.db.begin() as conn:
        rows = (
            await conn.execute(
                select(directions.c.code, tariff_entries.c.cost, tariff_entries.c.route_id, tariff_entries.c.priority)
                .join(directions, directions.c.id == tariff_entries.c.direction_id)
                .where(tariff_entries.c.tariff_id == tariff_id)
            )
        ).all()
    return sorted((r.code, Decimal(r.cost), r.route_id, r.priority) for r in rows)


def tariff_names(listing: list[dict[str, Any]]) -> set[str]:
    return {t["name"] for t in listing}


async def call_with(w: World, key: str, method: str, **raw: str) -> Outcome:
    return await w.dispatcher.call(method, raw, Credentials(peer_ip="127.0.0.1", transport="test", apikey=key))


# --- addRates / getRatesList -------------------------------------------------------------


async def test_add_rates_with_defaults_and_list_fields(world: World) -> None:
    # the spec's example: only table and name
    assert await world.ok("addRates", "corp1", table="test", name="test") is True
    row = await tariff_row(world.services, "corp1", "test")
    assert (row.table_name, row.bill_type, row.is_option, row.is_public, row.description) == (
        "test", "byminute", False, False, "",
    )  # fmt: skip
    assert (Decimal(row.switch_price), Decimal(row.multiplier), Decimal(row.did_multiplier)) == (
        Decimal(0), Decimal(1), Decimal(1),
    )  # fmt: skip

    tid = await add_tariff(world, "corp1", "Retail", bill_type="bysecond", is_public="true", switch_price="0.05",
                           multiplier="1.5", did_multiplier="0.5", description="Retail prices",
                           connect_fee="0.02")  # fmt: skip
    listing = await world.ok("getRatesList", "corp1")
    assert [t["name"] for t in listing] == ["test", "Retail"]
    retail = listing[1]
    assert set(retail) == SPEC_TARIFF_FIELDS | CALLGATE_TARIFF_FIELDS
    assert retail["connect_fee"] == Decimal("0.02") and listing[0]["connect_fee"] == Decimal("0")
    assert retail["id"] == tid and retail["table name"] == "retail" and retail["owner"] == "corp1"
    assert (retail["bill_type"], retail["is_public"], retail["is_option"]) == ("bysecond", True, False)
    assert retail["switch_price"] == Decimal("0.05") and retail["display_switch_price"] == Decimal("0.05")
    assert isinstance(retail["switch_price"], Decimal)
    assert (retail["multiplier"], retail["did_multiplier"]) == (Decimal("1.5"), Decimal("0.5"))
    assert retail["description"] == "Retail prices"

    # display_switch_price is in the acting user's currency
    await make_user(world.services, "usd1", accesslevel=22, manager="admin", currency="USD")
    await add_tariff(world, "usd1", "Dollar", switch_price="0.05")
    [dollar] = await world.ok("getRatesList", "usd1")
    assert dollar["switch_price"] == Decimal("0.05") and dollar["display_switch_price"] == Decimal("0.055")


async def test_add_rates_argument_errors(world: World) -> None:
    await add_tariff(world, "corp1", "Retail")
    await world.fails(ErrorCode.E_DATA_ABORT, "addRates", "corp1", table="other", name="Retail")
    await world.fails(ErrorCode.E_NOT_EXIST, "addRates", "corp1", table="t", name="n", bill_type="bymonth")
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "addRates", "corp1", name="n")
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "addRates", "corp1", table="t")
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "addRates", "corp1", table="t", name="")
    for bad in (
        {"switch_price": "-0.01"},
        {"switch_price": "abc"},
        {"switch_price": "0.00001"},  # finer than the ledger's 0.0001
        {"switch_price": "NaN"},
        {"multiplier": "-1"},
        {"did_multiplier": "x"},
        {"is_public": "perhaps"},
        {"is_option": "2"},
        {"table": "bad name"},
        {"table": "1table"},
    ):
        await world.fails(ErrorCode.E_INVALID_ARGUMENT, "addRates", "corp1", **{"table": "t", "name": "n", **bad})
    await world.fails(ErrorCode.E_INSUFFICIENT_ACCESS, "addRates", "u1", table="t", name="n")
    async with world.services.db.begin() as conn:
        assert (await conn.execute(select(tariffs.c.name))).scalars().all() == ["Retail"]
    # another owner may reuse the name
    await add_tariff(world, "corp2", "Retail")


async def test_rates_list_visibility_and_filters(world: World) -> None:
    retail = await add_tariff(world, "corp1", "Retail", is_public="true")
    private = await add_tariff(world, "corp1", "Private")
    await add_tariff(world, "corp1", "Night option", is_option="true", is_public="true")
    await add_tariff(world, "sub1", "Sub public", is_public="true")
    await add_tariff(world, "corp2", "C2 public", is_public="true")
    await add_tariff(world, "admin", "Main", is_public="true")
    await add_tariff(world, "admin2", "Admin private")

    async def listed(login: str, **args: str) -> set[str]:
        return tariff_names(await world.ok("getRatesList", login, **args))

    assert await listed("corp1") == {"Retail", "Private", "Night option"}
    assert await listed("corp1", all="true") == {"Retail", "Private", "Night option", "Sub public"}
    assert await listed("corp1", is_public="true") == {"Retail", "Night option"}
    assert await listed("corp1", is_option="true") == {"Night option"}
    assert await listed("corp1", is_option="false") == {"Retail", "Private"}
    assert await listed("corp2") == await listed("corp2", all="true") == {"C2 public"}
    assert await listed("sub1", all="true") == {"Sub public"}
    assert await listed("admin2") == {"Main", "Admin private"}
    assert len(await listed("admin", all="true")) == 7
    # ordinary users: their provider's public tariffs and the ones they are on
    assert await listed("u1") == {"Retail", "Night option"}
    assert await listed("u2") == {"C2 public"}
    await make_user(world.services, "u1b", manager="corp1", rates_id=private)
    assert await listed("u1b") == {"Retail", "Night option", "Private"}
    assert await listed("u1b", is_option="false") == {"Retail", "Private"}
    await make_user(world.services, "direct", manager="admin")
    assert await listed("direct") == {"Main"}
    await world.fails(ErrorCode.E_INVALID_ARGUMENT, "getRatesList", "corp1", is_option="sometimes")
    assert retail != private


# --- addDirection / updateDirection / deleteDirection ------------------------------------


@pytest.fixture
async def priced(world: World) -> dict[str, int]:
    """corp1's public Retail tariff (multiplier 1.5) with 7901 on two routes and 49 on one."""
    ids = {
        "retail": await add_tariff(world, "corp1", "Retail", is_public="true", multiplier="1.5"),
        "r1": await add_route(world, "corp1", "c1-main"),
        "r1b": await add_route(world, "corp1", "c1-backup"),
        "r2": await add_route(world, "corp2", "c2-main"),
        "tele2": await direction_id(world.services, "7901"),
        "de": await direction_id(world.services, "49"),
    }
    t, tele2, de = ids["retail"], ids["tele2"], ids["de"]
    assert await world.ok("addDirection", "corp1", rates=t, direction=tele2, route=ids["r1"], cost="0.15") is True
    assert await world.ok("addDirection", "corp1", rates=t, direction=tele2, route=ids["r1b"], cost="0.2",
                          priority="2") is True  # fmt: skip
    assert await world.ok("addDirection", "corp1", rates=t, direction=de, route=ids["r1"], cost="0.0125") is True
    return ids


async def test_add_direction_stores_entries(world: World, priced: dict[str, int]) -> None:
    assert await entries(world.services, priced["retail"]) == [
        ("49", Decimal("0.0125"), priced["r1"], 1),
        ("7901", Decimal("0.15"), priced["r1"], 1),
        ("7901", Decimal("0.2"), priced["r1b"], 2),
    ]


async def test_add_direction_errors(world: World, priced: dict[str, int]) -> None:
    t, r1, r2, tele2 = priced["retail"], priced["r1"], priced["r2"], priced["tele2"]
    ru = await direction_id(world.services, "7")
    ok = {"rates": t, "direction": ru, "route": r1, "cost": "0.1"}

    def args(**change: Any) -> dict[str, Any]:
        return {k: v for k, v in {**ok, **change}.items() if v is not None}

    for bad in ({"cost": "-0.01"}, {"cost": "abc"}, {"cost": "0.12345"}, {"cost": "Infinity"},
                {"priority": "0"}, {"priority": "100"}, {"rates": "x"}, {"direction": "1.5"}):  # fmt: skip
        await world.fails(ErrorCode.E_INVALID_ARGUMENT, "addDirection", "corp1", **args(**bad))
    for missing in ("rates", "direction", "route", "cost"):
        await world.fails(ErrorCode.E_MISSING_ARGUMENT, "addDirection", "corp1", **args(**{missing: None}))
    await world.fails(ErrorCode.E_NOT_EXIST, "addDirection", "corp1", **args(direction=999999))
    await world.fails(ErrorCode.E_NOT_EXIST, "addDirection", "corp1", **args(rates=999999))
    await world.fails(ErrorCode.E_NOT_EXIST, "addDirection", "corp1", **args(route=999999))
    # another reseller's tariff, another reseller's route
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "addDirection", "corp2", **args(route=r2))
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "addDirection", "corp1", **args(route=r2))
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "addDirection", "sub1", **ok)
    # the slot (tariff, direction, priority) is taken
    await world.fails(ErrorCode.E_DATA_ABORT, "addDirection", "corp1", rates=t, direction=tele2, route=r1, cost="1")
    await world.fails(ErrorCode.E_INSUFFICIENT_ACCESS, "addDirection", "u1", **ok)
    assert len(await entries(world.services, t)) == 3

    # managers may price the tariffs of users below them with those users' routes
    sub_tariff = await add_tariff(world, "sub1", "Sub")
    sub_route = await add_route(world, "sub1", "s1-main")
    assert await world.ok("addDirection", "corp1", rates=sub_tariff, direction=ru, route=sub_route, cost="0") is True
    # administrators may use any route in any tariff
    assert await world.ok("addDirection", "admin2", **args(route=r2, priority="3")) is True
    assert await entries(world.services, sub_tariff) == [("7", Decimal(0), sub_route, 1)]
    assert ("7", Decimal("0.1"), r2, 3) in await entries(world.services, t)


async def test_update_direction(world: World, priced: dict[str, int]) -> None:
    t, r1, r1b, tele2 = priced["retail"], priced["r1"], priced["r1b"], priced["tele2"]
    before = await entries(world.services, t)
    # the spec's example: a new route and cost for priority 1
    assert await world.ok("updateDirection", "corp1", rates=t, direction=tele2, route=r1b, cost="0.18") is True
    assert ("7901", Decimal("0.18"), r1b, 1) in await entries(world.services, t)
    # prior selects the entry, priority moves it
    assert await world.ok("updateDirection", "corp1", rates=t, direction=tele2, prior="2", priority="3") is True
    assert await world.ok("updateDirection", "corp1", rates=t, direction=tele2, prior="3", route=r1) is True
    assert ("7901", Decimal("0.2"), r1, 3) in await entries(world.services, t)

    await world.fails(ErrorCode.E_DATA_ABORT, "updateDirection", "corp1", rates=t, direction=tele2, prior="3",
                      priority="1")  # fmt: skip
    await world.fails(ErrorCode.E_NOT_EXIST, "updateDirection", "corp1", rates=t, direction=tele2, prior="2",
                      cost="1")  # fmt: skip
    await world.fails(ErrorCode.E_NOT_EXIST, "updateDirection", "corp1", rates=999999, direction=tele2, cost="1")
    await world.fails(ErrorCode.E_NOT_EXIST, "updateDirection", "corp1", rates=t, direction=tele2, route=999999)
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "updateDirection", "corp1", rates=t, direction=tele2)
    await world.fails(ErrorCode.E_INVALID_ARGUMENT, "updateDirection", "corp1", rates=t, direction=tele2, cost="-1")
    # an empty value is an absent one (billing_core.catalog.params): still nothing to change
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "updateDirection", "corp1", rates=t, direction=tele2, cost="")
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "updateDirection", "corp2", rates=t, direction=tele2,
                      cost="0.01")  # fmt: skip
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "updateDirection", "corp1", rates=t, direction=tele2,
                      route=priced["r2"])  # fmt: skip
    after = await entries(world.services, t)
    assert len(after) == len(before) == 3
    assert ("7901", Decimal("0.18"), r1b, 1) in after


async def test_delete_direction(world: World, priced: dict[str, int]) -> None:
    t, tele2, de = priced["retail"], priced["tele2"], priced["de"]
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "deleteDirection", "corp2", rates=t, direction=tele2)
    assert await world.ok("deleteDirection", "corp1", rates=t, direction=tele2, prior="2") is True
    assert [(e[0], e[3]) for e in await entries(world.services, t)] == [("49", 1), ("7901", 1)]
    assert await world.ok("deleteDirection", "corp1", rates=t, direction=de) is True  # prior defaults to 1
    await world.fails(ErrorCode.E_NOT_EXIST, "deleteDirection", "corp1", rates=t, direction=de)
    await world.fails(ErrorCode.E_NOT_EXIST, "deleteDirection", "corp1", rates=999999, direction=de)
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "deleteDirection", "corp1", rates=t)
    assert await entries(world.services, t) == [("7901", Decimal("0.15"), priced["r1"], 1)]


# --- getRates / getCurrentRates ----------------------------------------------------------


async def test_get_rates_shape_and_prices(world: World, priced: dict[str, int]) -> None:
    t = priced["retail"]
    answer = await world.ok("getRates", "corp1", id=t)
    assert [d["code"] for d in answer] == ["49", "7901"]
    tele2 = answer[1]
    # the spec's "direction ID": "direction name" key, beside callgate's own fields
    assert set(tele2) == {str(priced["tele2"]), "id", "code", "direction", "routing"}
    assert tele2[str(priced["tele2"])] == tele2["direction"] == "Russia Mobile - Tele2"
    assert tele2["id"] == priced["tele2"]
    assert answer[0][str(priced["de"])] == answer[0]["direction"]
    assert tele2["routing"] == [
        # displaycost = cost × multiplier 1.5, in EUR for corp1
        {"routename": "c1-main", "route": priced["r1"], "displaycost": Decimal("0.225"), "priority": 1,
         "cost": Decimal("0.15")},
        {"routename": "c1-backup", "route": priced["r1b"], "displaycost": Decimal("0.3"), "priority": 2,
         "cost": Decimal("0.2")},
    ]  # fmt: skip
    assert answer[0]["routing"][0]["displaycost"] == Decimal("0.0188")  # 0.0125 × 1.5 = 0.01875, half up

    # writes through the API invalidate the cached prices at once
    assert await world.ok("updateDirection", "corp1", rates=t, direction=priced["tele2"], cost="0.16") is True
    again = await world.ok("getRates", "corp1", id=t)
    assert again[1]["routing"][0]["cost"] == Decimal("0.16")

    # a user on the tariff reads it in its own currency
    await make_user(world.services, "usd_user", manager="corp1", currency="USD", rates_id=t)
    usd = await world.ok("getRates", "usd_user", id=t)
    assert usd[1]["routing"][0]["displaycost"] == Decimal("0.264")  # 0.16 × 1.5 × 1.1


async def test_get_rates_access(world: World, priced: dict[str, int]) -> None:
    t = priced["retail"]  # public, owned by corp1
    private = await add_tariff(world, "corp1", "Private")
    assert len(await world.ok("getRates", "u1", id=t)) == 2  # corp1's customer: public tariff of its provider
    assert len(await world.ok("getRates", "admin2", id=t)) == 2
    assert await world.ok("getRates", "corp1", id=private) == []
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "getRates", "u1", id=private)
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "getRates", "corp2", id=t)
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "getRates", "u2", id=t)
    await world.fails(ErrorCode.E_NOT_EXIST, "getRates", "corp1", id=999999)
    await world.fails(ErrorCode.E_INVALID_ARGUMENT, "getRates", "corp1", id="abc")
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "getRates", "corp1")


async def test_get_current_rates(world: World, priced: dict[str, int]) -> None:
    t, tele2 = priced["retail"], priced["tele2"]
    cheap = await add_tariff(world, "corp1", "Cheap")
    assert await world.ok("addDirection", "corp1", rates=cheap, direction=tele2, route=priced["r1"],
                          cost="0.01") is True  # fmt: skip
    await make_user(world.services, "caller", manager="corp1", rates_id=t, sip_extension="100100", sip_rates_id=cheap)
    await make_user(world.services, "plain", manager="corp1", rates_id=t, currency="USD")
    await make_user(world.services, "nobody", manager="corp1")

    # the extension's tariff wins over the user's, whichever way the user logs in
    ext_key = await make_key(world.services, level=0, auth_by="sip_extension", name="sip")
    by_ext = await call_with(world, ext_key, "getCurrentRates", login="100100", password=md5_hex("secret"))
    assert by_ext.ok, by_ext.error
    assert [(d["code"], [r["cost"] for r in d["routing"]]) for d in by_ext.value] == [("7901", [Decimal("0.01")])]
    assert await world.ok("getCurrentRates", "caller") == by_ext.value

    # no extension: the user's rates_id; displaycost in the requested currency, not the user's
    eur = await world.ok("getCurrentRates", "plain")
    assert eur == await world.ok("getRates", "corp1", id=t)
    usd = await world.ok("getCurrentRates", "plain", currency="usd")
    assert usd[1]["routing"][0]["displaycost"] == Decimal("0.2475")  # 0.15 × 1.5 × 1.1
    assert usd[1]["routing"][0]["cost"] == Decimal("0.15")

    # entries on a disabled route serve no call, so they are not current prices
    assert await world.ok("updateRouteState", "corp1", id=priced["r1b"], state="false") is True
    current = await world.ok("getCurrentRates", "plain")
    assert [r["route"] for r in current[1]["routing"]] == [priced["r1"]]
    assert len((await world.ok("getRates", "corp1", id=t))[1]["routing"]) == 2

    await world.fails(ErrorCode.E_NOT_EXIST, "getCurrentRates", "plain", currency="XXX")
    await world.fails(ErrorCode.E_INVALID_ARGUMENT, "getCurrentRates", "plain", currency="1$")
    await world.fails(ErrorCode.E_NOT_EXIST, "getCurrentRates", "nobody")

    # anonymous: the administrators' first public tariff, once there is one
    anonymous_key = await make_key(world.services, level=0, name="web")
    first = await call_with(world, anonymous_key, "getCurrentRates")
    assert first.error is not None and first.error.code is ErrorCode.E_NOT_EXIST
    main = await add_tariff(world, "admin", "Main", is_public="true")
    admin_route = await add_route(world, "admin", "main-route")
    assert await world.ok("addDirection", "admin", rates=main, direction=priced["de"], route=admin_route,
                          cost="0.02") is True  # fmt: skip
    public = await call_with(world, anonymous_key, "getCurrentRates")
    assert public.ok, public.error
    assert [(d["code"], d["routing"][0]["cost"]) for d in public.value] == [("49", Decimal("0.02"))]


# --- getDirections / resolveDirection ----------------------------------------------------


async def test_get_directions_and_resolve(world: World) -> None:
    web = await make_key(world.services, level=0, name="web")  # anonymous: both are level 0
    listed = await call_with(world, web, "getDirections")
    assert listed.ok, listed.error
    assert [(d["code"], d["direction"], d["min_len"], d["max_len"]) for d in listed.value] == [
        ("49", "Germany", 8, 15),
        ("7", "Russia", 11, 11),
        ("79", "Russia Mobile", 11, 11),
        ("7901", "Russia Mobile - Tele2", 11, 11),
    ]
    assert all(set(d) == {"code", "id", "direction", "min_len", "max_len"} for d in listed.value)
    assert (await call_with(world, web, "getDirections", distinct="false")).value == listed.value

    async def resolve(number: str, **extra: str) -> Outcome:
        return await call_with(world, web, "resolveDirection", number=number, **extra)

    tele2_id = await direction_id(world.services, "7901")
    assert (await resolve("79011234567")).value.text == "Russia Mobile - Tele2"
    assert (await resolve("+79011234567", select="id")).value.text == str(tele2_id)
    assert (await resolve("79991234567", select="code")).value.text == "79"
    found = (await resolve("4930123456")).value
    assert (found.text, found.fields["code"], found.fields["id"]) == (
        "Germany", "49", str(await direction_id(world.services, "49")),
    )  # fmt: skip
    for number, code in (("7901123456", ErrorCode.E_UNROUTABLE), ("3312345678", ErrorCode.E_UNROUTABLE),
                         ("79x", ErrorCode.E_INVALID_ARGUMENT), ("", ErrorCode.E_INVALID_ARGUMENT)):  # fmt: skip
        outcome = await resolve(number)
        assert outcome.error is not None and outcome.error.code is code, number
    bad_select = await resolve("79011234567", select="name")
    assert bad_select.error is not None and bad_select.error.code is ErrorCode.E_INVALID_ARGUMENT
    missing = await call_with(world, web, "resolveDirection")
    assert missing.error is not None and missing.error.code is ErrorCode.E_MISSING_ARGUMENT

    # a new import is visible once the caller invalidates NS_RATING
    rows = [{"code": "4930", "direction": "Germany - Berlin", "min_len": "9", "max_len": "13"}]
    assert (await import_directions(world.services.db, rows)).inserted == 1
    await world.services.cache.invalidate(NS_RATING)
    assert (await resolve("4930123456")).value.text == "Germany - Berlin"


# --- bill types --------------------------------------------------------------------------


async def test_bill_types(world: World) -> None:
    assert await world.ok("getBillTypes", "corp1") == [
        {"type": "byminute", "free_threshold": 0, "step": 60},
        {"type": "bysecond", "free_threshold": 0, "step": 1},
    ]
    # the spec's example
    assert await world.ok("addBillType", "admin2", bill_type="custom_type", free_threshold="36", step="10") is True
    async with world.services.db.begin() as conn:
        row = (await conn.execute(select(bill_types).where(bill_types.c.type == "custom_type"))).one()
    assert (row.free_threshold, row.step) == (36, 10)
    assert {"type": "custom_type", "free_threshold": 36, "step": 10} in await world.ok("getBillTypes", "corp2")
    await add_tariff(world, "corp1", "Custom", bill_type="custom_type")

    await world.fails(ErrorCode.E_DATA_ABORT, "addBillType", "admin", bill_type="custom_type", free_threshold=0,
                      step=1)  # fmt: skip
    for bad in ({"step": "0"}, {"step": "-5"}, {"free_threshold": "-1"}, {"step": "1.5"}, {"step": "ten"},
                {"bill_type": "two words"}):  # fmt: skip
        args = {"bill_type": "t2", "free_threshold": "0", "step": "6", **bad}
        await world.fails(ErrorCode.E_INVALID_ARGUMENT, "addBillType", "admin", **args)
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "addBillType", "admin", bill_type="t2", free_threshold="0")
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "addBillType", "admin", bill_type="", free_threshold="0", step="6")
    await world.fails(ErrorCode.E_INSUFFICIENT_ACCESS, "addBillType", "corp2", bill_type="t3", free_threshold="0",
                      step="6")  # fmt: skip
    await world.fails(ErrorCode.E_INSUFFICIENT_ACCESS, "getBillTypes", "u1")
    async with world.services.db.begin() as conn:
        assert sorted((await conn.execute(select(bill_types.c.type))).scalars().all()) == [
            "byminute", "bysecond", "custom_type",
        ]  # fmt: skip


async def test_direct_store_changes_need_an_invalidation(world: World, priced: dict[str, int]) -> None:
    """The cached price list is what the API answers until NS_RATING is bumped (the CLI
    import and every registry write do it)."""
    t = priced["retail"]
    first = await world.ok("getRates", "corp1", id=t)
    async with world.services.db.begin() as conn:
        await conn.execute(update(routes).where(routes.c.id == priced["r1"]).values(route="renamed"))
    assert await world.ok("getRates", "corp1", id=t) == first
    await world.services.cache.invalidate(*NAMESPACES)
    renamed = await world.ok("getRates", "corp1", id=t)
    assert renamed[1]["routing"][0]["routename"] == "renamed"
