"""Routing methods through the dispatcher: addRoute, getRoutes, updateRouteState.

The world: the master admin `admin`, a second administrator `admin2` (33), two resellers
(`corp1` corporate user 22, `corp2` partner 25) managed by admin, `sub1` (22) managed by
corp1, and ordinary users u1 (under corp1) and u2 (under corp2). A server key (44) owned
by admin acts for whoever `login` names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from billing_core.api.dispatch import Credentials, Dispatcher, Outcome
from billing_core.container import Services
from billing_core.errors import ErrorCode
from billing_core.rating.tables import routes
from tests.factories import make_key, make_user

SPEC_ROUTE_FIELDS = {
    "id",
    "prefix",
    "cli",
    "route",
    "owner",
    "enabled",
    "type",
    "lastupdate",
    "clientlastupdate",
    "balance",
}


@dataclass
class World:
    services: Services
    dispatcher: Dispatcher
    key: str

    async def call(self, method: str, login: str | None = None, **args: Any) -> Outcome:
        raw = {name: str(value) for name, value in args.items()}
        if login is not None:
            raw["login"] = login
        return await self.dispatcher.call(
            method, raw, Credentials(peer_ip="127.0.0.1", transport="test", apikey=self.key)
        )

    async def ok(self, method: str, login: str | None = None, **args: Any) -> Any:
        outcome = await self.call(method, login, **args)
        assert outcome.ok, (method, args, outcome.error)
        return outcome.value

    async def fails(self, code: ErrorCode, method: str, login: str | None = None, **args: Any) -> str:
        outcome = await self.call(method, login, **args)
        assert outcome.error is not None, (method, args, outcome.value)
        assert outcome.error.code is code, (method, args, outcome.error)
        return outcome.error.detail


async def build_world(services: Services, dispatcher: Dispatcher) -> World:
    await make_user(services, "admin2", accesslevel=33, manager="admin")
    await make_user(services, "corp1", accesslevel=22, manager="admin")
    await make_user(services, "corp2", accesslevel=25, manager="admin")
    await make_user(services, "sub1", accesslevel=22, manager="corp1")
    await make_user(services, "u1", accesslevel=11, manager="corp1")
    await make_user(services, "u2", accesslevel=11, manager="corp2")
    key = await make_key(services, level=44, owner="admin")
    return World(services, dispatcher, key)


@pytest.fixture
async def world(services: Services, dispatcher: Dispatcher) -> World:
    return await build_world(services, dispatcher)


async def route_row(services: Services, owner: str, name: str) -> Any:
    async with services.db.begin() as conn:
        return (await conn.execute(select(routes).where(routes.c.owner == owner, routes.c.route == name))).one()


async def add_route(w: World, login: str, name: str, route_type: str = "sip", **extra: Any) -> int:
    assert await w.ok("addRoute", login, route=name, type=route_type, sip_server="sip.example.net",
                      prefix="81", **extra) is True  # fmt: skip
    return int((await route_row(w.services, login, name)).id)


def names(listing: list[dict[str, Any]]) -> set[str]:
    return {f"{r['owner']}/{r['route']}" for r in listing}


async def test_add_route_stores_it_with_encrypted_secrets(world: World) -> None:
    assert (
        await world.ok(
            "addRoute", "corp1", route="trunk-a", type="sip", sip_server="sip.carrier.net", prefix="81",
            host="10.0.0.7", user="acct77", fromuser="true", **{"pass": "Tr0ub4dor"}, callerid="99",
            balance_handler="carrierx", balance_username="acct77", balance_password="b4l-secret",
        )
        is True
    )  # fmt: skip
    row = await route_row(world.services, "corp1", "trunk-a")
    assert (row.type, row.sip_server, row.prefix, row.host, row.user) == (
        "sip", "sip.carrier.net", "81", "10.0.0.7", "acct77",
    )  # fmt: skip
    assert row.fromuser is True and row.enabled is True and row.callerid == 99
    assert row.pass_enc and "Tr0ub4dor" not in row.pass_enc
    assert world.services.box.decrypt(row.pass_enc) == "Tr0ub4dor"
    assert world.services.box.decrypt(row.balance_password_enc) == "b4l-secret"

    listing = await world.ok("getRoutes", "corp1")
    assert len(listing) == 1
    route = listing[0]
    assert SPEC_ROUTE_FIELDS <= set(route)
    assert route["id"] == row.id and route["route"] == "trunk-a" and route["owner"] == "corp1"
    assert (route["cli"], route["enabled"], route["type"], route["prefix"]) == (99, 1, "sip", "81")
    assert route["balance"] is None and route["lastupdate"] is None
    text = json.dumps(listing)
    assert "Tr0ub4dor" not in text and "b4l-secret" not in text
    assert "pass" not in route and "balance_password" not in route and "pass_enc" not in route


async def test_add_route_defaults(world: World) -> None:
    # the spec's own example: an SMS handler route
    assert await world.ok("addRoute", "corp1", route="test", type="sms", sip_server="sip.serv.er",
                          prefix="ourhandler") is True  # fmt: skip
    row = await route_row(world.services, "corp1", "test")
    assert (row.type, row.callerid, row.host, row.user, row.fromuser) == ("sms", 2, "", "", False)
    assert row.pass_enc is None and row.balance_password_enc is None


async def test_route_names_are_unique_per_owner(world: World) -> None:
    await add_route(world, "corp1", "trunk-a")
    await world.fails(ErrorCode.E_DATA_ABORT, "addRoute", "corp1", route="trunk-a", type="sms",
                      sip_server="other", prefix="7")  # fmt: skip
    await add_route(world, "corp2", "trunk-a")  # another owner may use the name
    async with world.services.db.begin() as conn:
        rows = (await conn.execute(select(routes.c.owner).where(routes.c.route == "trunk-a"))).scalars().all()
    assert sorted(rows) == ["corp1", "corp2"]


async def test_empty_sip_prefix_is_a_route_without_prefix(world: World) -> None:
    # `prefix=` present and empty: the number is dialled as it is (was E_MISSING_ARGUMENT)
    assert await world.ok("addRoute", "corp1", route="direct", type="sip", sip_server="sip.example.net",
                          prefix="") is True  # fmt: skip
    assert (await route_row(world.services, "corp1", "direct")).prefix == ""
    assert [r["prefix"] for r in await world.ok("getRoutes", "corp1")] == [""]
    # an SMS route's prefix names its handler: still required
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "addRoute", "corp1", route="sms1", type="sms",
                      sip_server="sip.example.net", prefix="")  # fmt: skip


async def test_add_route_argument_errors(world: World) -> None:
    base = {"route": "r1", "type": "sip", "sip_server": "sip.example.net", "prefix": "81"}
    for missing in ("route", "type", "sip_server", "prefix"):
        args = {k: v for k, v in base.items() if k != missing}
        await world.fails(ErrorCode.E_MISSING_ARGUMENT, "addRoute", "corp1", **args)
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "addRoute", "corp1", **{**base, "route": ""})
    bad_values = [
        {"type": "voice"},
        {"type": "default"},  # getRoutes may filter on it, addRoute only takes sip/sms
        {"callerid": "5"},
        {"callerid": "abc"},
        {"fromuser": "maybe"},
        {"route": "two words"},
        {"prefix": "outline 1/"},
        # a SIP prefix is dialled before the number: nothing that breaks a dial string
        {"prefix": "outline/"},
        {"prefix": "a@b"},
        {"prefix": "8,9"},
        {"prefix": "8&PJSIP/x"},
        {"prefix": "${EXTEN}"},
        {"prefix": "8^U(x)"},
        {"prefix": "9:1"},
        {"prefix": "8" * 33},
        {"sip_server": "sip server"},
        {"route": "x" * 65},
    ]
    for bad in bad_values:
        await world.fails(ErrorCode.E_INVALID_ARGUMENT, "addRoute", "corp1", **{**base, **bad})
    async with world.services.db.begin() as conn:
        assert (await conn.execute(select(routes))).first() is None


async def test_resellers_see_only_their_own_and_managed_routes(world: World) -> None:
    await add_route(world, "corp1", "c1-sip")
    await add_route(world, "corp1", "c1-sms", "sms")
    await add_route(world, "sub1", "s1-sip")
    await add_route(world, "corp2", "c2-sip")
    await add_route(world, "admin", "main-sip")
    await add_route(world, "admin2", "main-2")

    assert names(await world.ok("getRoutes", "corp1")) == {"corp1/c1-sip", "corp1/c1-sms"}
    assert names(await world.ok("getRoutes", "corp1", all="true")) == {"corp1/c1-sip", "corp1/c1-sms", "sub1/s1-sip"}
    assert names(await world.ok("getRoutes", "corp2", all="true")) == {"corp2/c2-sip"}
    assert names(await world.ok("getRoutes", "sub1", all="true")) == {"sub1/s1-sip"}
    # administrators: the administrators' (main) routes; all=true: every route
    assert names(await world.ok("getRoutes", "admin2")) == {"admin/main-sip", "admin2/main-2"}
    assert len(await world.ok("getRoutes", "admin", all="true")) == 6
    # type filter (spec enum) and the accepted-but-ignored update flag
    assert names(await world.ok("getRoutes", "corp1", type="sms")) == {"corp1/c1-sms"}
    assert names(await world.ok("getRoutes", "corp1", type="sip", update="true")) == {"corp1/c1-sip"}
    assert await world.ok("getRoutes", "corp1", type="default") == []
    await world.fails(ErrorCode.E_INVALID_ARGUMENT, "getRoutes", "corp1", type="voice")
    await world.fails(ErrorCode.E_INVALID_ARGUMENT, "getRoutes", "corp1", all="perhaps")
    # ordinary users have no access to routing at all
    await world.fails(ErrorCode.E_INSUFFICIENT_ACCESS, "getRoutes", "u1")
    await world.fails(ErrorCode.E_INSUFFICIENT_ACCESS, "addRoute", "u1", route="x", type="sip",
                      sip_server="s", prefix="5")  # fmt: skip


async def test_update_route_state_respects_ownership(world: World) -> None:
    mine = await add_route(world, "corp1", "c1-sip")
    managed = await add_route(world, "sub1", "s1-sip")
    foreign = await add_route(world, "corp2", "c2-sip")

    assert await world.ok("updateRouteState", "corp1", id=mine, state="false") is True
    assert (await route_row(world.services, "corp1", "c1-sip")).enabled is False
    listed = await world.ok("getRoutes", "corp1")
    assert [(r["id"], r["enabled"]) for r in listed] == [(mine, 0)]
    assert await world.ok("updateRouteState", "corp1", id=mine, state="true") is True
    assert (await route_row(world.services, "corp1", "c1-sip")).enabled is True

    # a reseller manages the routes of users below it, not the other way round
    assert await world.ok("updateRouteState", "corp1", id=managed, state="false") is True
    assert (await route_row(world.services, "sub1", "s1-sip")).enabled is False
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "updateRouteState", "sub1", id=mine, state="false")
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "updateRouteState", "corp1", id=foreign, state="false")
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "updateRouteState", "corp2", id=mine, state="false")
    assert (await route_row(world.services, "corp2", "c2-sip")).enabled is True
    assert (await route_row(world.services, "corp1", "c1-sip")).enabled is True
    # administrators change anyone's
    assert await world.ok("updateRouteState", "admin2", id=foreign, state="false") is True
    assert (await route_row(world.services, "corp2", "c2-sip")).enabled is False

    await world.fails(ErrorCode.E_NOT_EXIST, "updateRouteState", "corp1", id=999999, state="false")
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "updateRouteState", "corp1", id=mine)
    await world.fails(ErrorCode.E_MISSING_ARGUMENT, "updateRouteState", "corp1", state="true")
    await world.fails(ErrorCode.E_INVALID_ARGUMENT, "updateRouteState", "corp1", id="one", state="true")
    await world.fails(ErrorCode.E_INVALID_ARGUMENT, "updateRouteState", "corp1", id=mine, state="sometimes")


async def test_admin_acting_for_a_reseller_creates_the_route_for_it(world: World) -> None:
    assert await world.ok("addRoute", "admin", username="corp1", route="for-c1", type="sip",
                          sip_server="sip.example.net", prefix="82") is True  # fmt: skip
    assert (await route_row(world.services, "corp1", "for-c1")).owner == "corp1"
    assert names(await world.ok("getRoutes", "corp1")) == {"corp1/for-c1"}
    # a reseller cannot act for a user it does not manage
    await world.fails(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "getRoutes", "corp2", username="corp1")
