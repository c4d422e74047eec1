"""Routing and tarification administration through the real HTTP door, on both backends:
getRouteInfo, updateRoute, deleteRoute, getRatesInfo, updateRates, deleteRates, getBillType,
updateBillType, deleteBillType. Each answers the spec's own example (its ids replaced by
real ones, the credentials it leaves out added); a reseller is refused another reseller's
route or tariff; bad input gets an E_* code, never a 5xx; deletes of what is in use are
refused. Assertions on the HTTP bodies and on the rows of the rating tables.
The batch methods (updateDirections, updateMarkup, copyDirections) and the effect of these
writes on callPrepare are in tests/test_api_rating_batches.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select, update

from billing_core.auth.secrets_store import md5_hex
from billing_core.cache.keys import NAMESPACES
from billing_core.container import Services
from billing_core.directory.tables import users
from billing_core.rating.direction_import import import_directions
from billing_core.rating.tables import bill_types, directions, routes, tariff_entries, tariffs
from tests.factories import make_key, make_user
from tests.http_support import Api, Reply, serve
from tests.shared_paths import spec_file

PASSWORDS = {"corp1": "c1pw", "corp2": "c2pw", "sub1": "s1pw", "u1": "u1pw", "boss": "bpw"}
SPEC_ROUTE_KEYS = ["id", "prefix", "cli", "route", "owner", "enabled", "type", "lastupdate", "clientlastupdate",
                   "balance"]  # fmt: skip
SPEC_TARIFF_KEYS = ["bill_type", "id", "is_public", "table name", "owner", "display_switch_price", "name",
                    "switch_price", "did_multiplier", "is_option", "multiplier", "description"]  # fmt: skip
DIRECTIONS = [("7", "Russia", "11", "11"), ("79", "Russia Mobile", "11", "11"), ("49", "Germany", "8", "15")]


@dataclass
class World:
    services: Services
    api: Api
    key: str  # a client key (level 0): every request logs in with login + md5 password

    def creds(self, login: str) -> dict[str, str]:
        return {"login": login, "password": md5_hex(PASSWORDS[login])}

    async def get(self, login: str, method: str, **args: str) -> Reply:
        return await self.api.get(self.key, method, {**self.creds(login), **args})

    async def ok(self, login: str, method: str, **args: str) -> Any:
        reply = await self.get(login, method, **args)
        assert reply.status == 200 and reply.json()["result"] is True, reply.text
        return reply.json()["response"]

    async def code(self, login: str, method: str, **args: str) -> str:
        reply = await self.get(login, method, **args)
        # query errors (E_MISSING_ARGUMENT, …) are 400, execution errors 200: never a 5xx
        assert reply.status in (200, 400) and reply.json()["result"] is False, (reply.status, reply.text)
        return str(reply.code)

    async def example(self, method: str, login: str, **real_ids: str) -> tuple[Reply, str]:
        """The spec's example request for `method` as printed, with the real key, the given
        real ids, the credentials it leaves out; and the spec's example answer."""
        entry = next(m for m in json.loads(spec_file().read_text())["methods"] if m["name"] == method)
        verb, path = entry["example_request"].split(" ", 1)
        assert path.startswith(f"/billing/api/2.2/{entry['example_key_segment']}/{method}")
        query = dict(p.split("=", 1) for p in path.partition("?")[2].split("&") if p)
        query |= real_ids | self.creds(login)
        reply = await self.api.request(verb, self.api.url(self.key, method, query=urlencode(query)))
        return reply, entry["example_response"]

    async def add_route(self, login: str, name: str, **extra: str) -> int:
        args = {"route": name, "type": "sip", "sip_server": "sip.example.net", "prefix": "81"} | extra
        assert await self.ok(login, "addRoute", **args) is True
        async with self.services.db.begin() as conn:
            found = select(routes.c.id).where(routes.c.owner == login, routes.c.route == name)
            return int((await conn.execute(found)).scalar_one())

    async def add_tariff(self, login: str, name: str, **extra: str) -> int:
        assert await self.ok(login, "addRates", table=name.lower(), name=name, **extra) is True
        async with self.services.db.begin() as conn:
            found = select(tariffs.c.id).where(tariffs.c.owner == login, tariffs.c.name == name)
            return int((await conn.execute(found)).scalar_one())

    async def add_entry(self, login: str, tariff: int, code: str, cost: str, route: int, priority: int = 1) -> None:
        direction = await direction_id(self.services, code)
        assert await self.ok(login, "addDirection", rates=str(tariff), direction=str(direction), cost=cost,
                             route=str(route), priority=str(priority)) is True  # fmt: skip


@asynccontextmanager
async def running_world(services: Services) -> AsyncIterator[World]:
    """admin ─┬─ corp1 (22) ─┬─ sub1 (22)
    │              └─ u1 (11)
    ├─ corp2 (25)
    └─ boss (33, an administrator)"""
    for name, level, manager in (("corp1", 22, "admin"), ("corp2", 25, "admin"), ("sub1", 22, "corp1"),
                                 ("u1", 11, "corp1"), ("boss", 33, "admin")):  # fmt: skip
        await make_user(services, name, accesslevel=level, manager=manager, password=PASSWORDS[name])
    rows = [dict(zip(("code", "direction", "min_len", "max_len"), d, strict=True)) for d in DIRECTIONS]
    assert (await import_directions(services.db, rows)).applied
    await services.cache.invalidate(*NAMESPACES)  # as the CLI does after an import
    key = await make_key(services, level=0)
    async with serve(services, test_methods=False) as api:
        yield World(services, api, key)


@pytest.fixture
async def world(services: Services) -> AsyncIterator[World]:
    async with running_world(services) as running:
        yield running


async def direction_id(services: Services, code: str) -> int:
    async with services.db.begin() as conn:
        return int((await conn.execute(select(directions.c.id).where(directions.c.code == code))).scalar_one())


async def route_row(services: Services, route_id: int) -> Any:
    async with services.db.begin() as conn:
        return (await conn.execute(select(routes).where(routes.c.id == route_id))).first()


async def tariff_row(services: Services, tariff_id: int) -> Any:
    async with services.db.begin() as conn:
        return (await conn.execute(select(tariffs).where(tariffs.c.id == tariff_id))).first()


async def entry_count(services: Services, tariff_id: int) -> int:
    async with services.db.begin() as conn:
        found = select(tariff_entries.c.id).where(tariff_entries.c.tariff_id == tariff_id)
        return len((await conn.execute(found)).all())


async def bill_type_row(services: Services, name: str) -> tuple[int, int] | None:
    async with services.db.begin() as conn:
        row = (await conn.execute(select(bill_types).where(bill_types.c.type == name))).first()
    return None if row is None else (int(row.free_threshold), int(row.step))


# --------------------------------------------------------------- the spec's examples


async def test_get_route_info_answers_its_example(world: World) -> None:
    rid = await world.add_route("corp1", "trunk-a", callerid="99", **{"pass": "Tr0ub4dor"})
    reply, expected = await world.example("getRouteInfo", "corp1", id=str(rid))
    assert reply.status == 200
    assert list(json.loads(expected)) == SPEC_ROUTE_KEYS
    answer = reply.json()["response"]
    assert list(answer)[: len(SPEC_ROUTE_KEYS)] == SPEC_ROUTE_KEYS
    assert {k: answer[k] for k in SPEC_ROUTE_KEYS} == {
        "id": rid, "prefix": "81", "cli": 99, "route": "trunk-a", "owner": "corp1", "enabled": 1, "type": "sip",
        "lastupdate": None, "clientlastupdate": None, "balance": None,
    }  # fmt: skip
    assert "Tr0ub4dor" not in reply.text and "pass" not in answer and "pass_enc" not in answer
    # the same object as getRoutes lists
    assert await world.ok("corp1", "getRoutes") == [answer]


async def test_update_route_answers_its_example(world: World) -> None:
    rid = await world.add_route("corp1", "trunk-a")
    reply, expected = await world.example("updateRoute", "corp1", id=str(rid))
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"
    row = await route_row(world.services, rid)
    assert (row.route, row.prefix, row.callerid, row.owner) == ("changedName", "81", 2, "corp1")
    assert (await world.ok("corp1", "getRouteInfo", id=str(rid)))["route"] == "changedName"


async def test_delete_route_answers_its_example(world: World) -> None:
    keep = await world.add_route("corp1", "keep")
    rid = await world.add_route("corp1", "trunk-a")
    reply, expected = await world.example("deleteRoute", "corp1", id=str(rid))
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"
    assert await route_row(world.services, rid) is None
    assert [r["id"] for r in await world.ok("corp1", "getRoutes")] == [keep]
    assert await world.code("corp1", "getRouteInfo", id=str(rid)) == "E_NOT_EXIST"
    assert await world.code("corp1", "deleteRoute", id=str(rid)) == "E_NOT_EXIST"


async def test_get_rates_info_answers_its_example(world: World) -> None:
    tid = await world.add_tariff("corp1", "Retail", switch_price="0.05", multiplier="1.5", did_multiplier="0.5",
                                 description="Retail prices", is_public="true")  # fmt: skip
    reply, expected = await world.example("getRatesInfo", "corp1", id=str(tid))
    assert reply.status == 200
    assert expected.startswith('{"bill_type"') and all(f'"{key}"' in expected for key in SPEC_TARIFF_KEYS)
    answer = reply.json()["response"]
    assert list(answer)[: len(SPEC_TARIFF_KEYS)] == SPEC_TARIFF_KEYS
    assert answer == {
        "bill_type": "byminute", "id": tid, "is_public": True, "table name": "retail", "owner": "corp1",
        "display_switch_price": Decimal("0.05"), "name": "Retail", "switch_price": Decimal("0.05"),
        "did_multiplier": Decimal("0.5"), "is_option": False, "multiplier": Decimal("1.5"),
        "description": "Retail prices", "connect_fee": Decimal("0"),
    }  # fmt: skip
    assert [t for t in await world.ok("corp1", "getRatesList") if t["id"] == tid] == [answer]


async def test_update_rates_answers_its_example(world: World) -> None:
    tid = await world.add_tariff("corp1", "test")
    reply, expected = await world.example("updateRates", "corp1", id=str(tid))
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"
    assert (await tariff_row(world.services, tid)).name == "etst"


async def test_delete_rates_answers_its_example(world: World) -> None:
    tid = await world.add_tariff("corp1", "test")
    rid = await world.add_route("corp1", "trunk-a")
    await world.add_entry("corp1", tid, "79", "0.10", rid)
    reply, expected = await world.example("deleteRates", "corp1", id=str(tid))
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"
    assert await tariff_row(world.services, tid) is None and await entry_count(world.services, tid) == 0
    assert await world.ok("corp1", "getRatesList") == []
    assert await world.code("corp1", "getRatesInfo", id=str(tid)) == "E_NOT_EXIST"
    await world.ok("corp1", "deleteRoute", id=str(rid))  # the route is free again


async def test_get_bill_type_answers_its_example(world: World) -> None:
    await world.ok("boss", "addBillType", bill_type="by_second", free_threshold="3", step="1")
    reply, expected = await world.example("getBillType", "boss")
    assert reply.status == 200
    assert list(json.loads(expected.replace("non-tariffed threshold", "0").replace("tariffication step", "0"))) == [
        "type", "free_threshold", "step",
    ]  # fmt: skip
    assert reply.json()["response"] == {"type": "by_second", "free_threshold": 3, "step": 1}


async def test_update_bill_type_answers_its_example(world: World) -> None:
    await world.ok("boss", "addBillType", bill_type="custom", free_threshold="36", step="10")
    reply, expected = await world.example("updateBillType", "boss")
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"
    assert await bill_type_row(world.services, "custom") == (0, 10)  # step unchanged
    assert {"type": "custom", "free_threshold": 0, "step": 10} in await world.ok("boss", "getBillTypes")
    await world.ok("boss", "updateBillType", bill_type="custom", step="30")
    assert await world.ok("boss", "getBillType", bill_type="custom") == {
        "type": "custom", "free_threshold": 0, "step": 30,
    }  # fmt: skip


async def test_delete_bill_type_answers_its_example(world: World) -> None:
    await world.ok("boss", "addBillType", bill_type="custom", free_threshold="36", step="10")
    reply, expected = await world.example("deleteBillType", "boss")
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"
    assert await bill_type_row(world.services, "custom") is None
    assert "custom" not in {b["type"] for b in await world.ok("boss", "getBillTypes")}
    assert await world.code("boss", "getBillType", bill_type="custom") == "E_NOT_EXIST"


# --------------------------------------------------------------------- updating a route


async def test_update_route_changes_fields_and_keeps_secrets_encrypted(world: World) -> None:
    rid = await world.add_route("corp1", "trunk-a", host="10.0.0.7", user="acct", **{"pass": "old-secret"})
    assert await world.ok("corp1", "updateRoute", id=str(rid), prefix="99", host="sip.b.net", user="acct2",
                          callerid="1", balance_handler="carrierx", balance_username="bu",
                          balance_password="b4l-secret", **{"pass": "n3w-secret"}) is True  # fmt: skip
    row = await route_row(world.services, rid)
    assert (row.route, row.prefix, row.host, row.user, row.callerid) == ("trunk-a", "99", "sip.b.net", "acct2", 1)
    assert (row.balance_handler, row.balance_username) == ("carrierx", "bu")
    assert "n3w-secret" not in row.pass_enc and world.services.box.decrypt(row.pass_enc) == "n3w-secret"
    assert world.services.box.decrypt(row.balance_password_enc) == "b4l-secret"
    info = await world.get("corp1", "getRouteInfo", id=str(rid))
    assert "n3w-secret" not in info.text and "b4l-secret" not in info.text
    # a field left out stays; an empty pass removes the stored password
    assert await world.ok("corp1", "updateRoute", id=str(rid), **{"pass": ""}) is True
    row = await route_row(world.services, rid)
    assert row.pass_enc is None and row.prefix == "99" and row.balance_password_enc is not None


async def test_update_route_checks_what_add_route_checks(world: World) -> None:
    rid = await world.add_route("corp1", "trunk-a")
    await world.add_route("corp1", "trunk-b")
    sms = await world.add_route("corp1", "texts", type="sms", prefix="ourhandler")
    before = await route_row(world.services, rid)
    for args, code in (
        ({}, "E_MISSING_ARGUMENT"),  # nothing to change
        ({"route": "trunk-b"}, "E_DATA_ABORT"),  # the owner's name is taken
        ({"route": "two words"}, "E_INVALID_ARGUMENT"),
        ({"route": ""}, "E_MISSING_ARGUMENT"),
        ({"prefix": "outline/"}, "E_INVALID_ARGUMENT"),  # '/' cannot be dialled
        ({"callerid": "5"}, "E_INVALID_ARGUMENT"),
        ({"callerid": "abc"}, "E_INVALID_ARGUMENT"),
        ({"host": "a b"}, "E_INVALID_ARGUMENT"),
        ({"pass": "x" * 200}, "E_INVALID_ARGUMENT"),
    ):
        assert await world.code("corp1", "updateRoute", id=str(rid), **args) == code, args
    assert await route_row(world.services, rid) == before
    assert await world.code("corp1", "updateRoute", id="abc", route="x") == "E_INVALID_ARGUMENT"
    assert await world.code("corp1", "updateRoute", route="x") == "E_MISSING_ARGUMENT"
    assert await world.code("corp1", "updateRoute", id="999999", route="x") == "E_NOT_EXIST"
    # an SMS route's prefix names its handler: required, and '/' is allowed there
    assert await world.code("corp1", "updateRoute", id=str(sms), prefix="") == "E_MISSING_ARGUMENT"
    await world.ok("corp1", "updateRoute", id=str(sms), prefix="handlers/sms2")
    # renaming to its own name, and to a name another owner uses, is fine
    await world.add_route("corp2", "shared")
    await world.ok("corp1", "updateRoute", id=str(rid), route="trunk-a")
    await world.ok("corp1", "updateRoute", id=str(rid), route="shared")
    assert (await route_row(world.services, rid)).route == "shared"


# ------------------------------------------------------------------- who owns what


async def test_a_reseller_is_refused_another_resellers_route_and_tariff(world: World) -> None:
    rid = await world.add_route("corp1", "trunk-a")
    tid = await world.add_tariff("corp1", "Retail")
    route_before, tariff_before = await route_row(world.services, rid), await tariff_row(world.services, tid)
    refused = "E_DOES_NOT_BELONG_TO_YOU"
    for login in ("corp2", "sub1"):  # another reseller; a reseller managed by corp1 is not its manager
        assert await world.code(login, "getRouteInfo", id=str(rid)) == refused
        assert await world.code(login, "updateRoute", id=str(rid), route="mine") == refused
        assert await world.code(login, "deleteRoute", id=str(rid)) == refused
        assert await world.code(login, "getRatesInfo", id=str(tid)) == refused
        assert await world.code(login, "updateRates", id=str(tid), multiplier="0.5") == refused
        assert await world.code(login, "deleteRates", id=str(tid)) == refused
    assert await route_row(world.services, rid) == route_before
    assert await tariff_row(world.services, tid) == tariff_before
    # an ordinary user does not reach these methods at all (level 22)
    assert await world.code("u1", "getRouteInfo", id=str(rid)) == "E_INSUFFICIENT_ACCESS"
    assert await world.code("u1", "updateRates", id=str(tid), name="x") == "E_INSUFFICIENT_ACCESS"
    # bill types are the administrators' (level 33)
    assert await world.code("corp1", "getBillType", bill_type="byminute") == "E_INSUFFICIENT_ACCESS"
    assert await world.code("corp1", "updateBillType", bill_type="byminute", step="1") == "E_INSUFFICIENT_ACCESS"
    assert await world.code("corp1", "deleteBillType", bill_type="bysecond") == "E_INSUFFICIENT_ACCESS"
    assert await bill_type_row(world.services, "byminute") == (0, 60)


async def test_a_reseller_reaches_its_users_objects_and_an_administrator_everything(world: World) -> None:
    sub_route = await world.add_route("sub1", "sub-trunk")
    sub_tariff = await world.add_tariff("sub1", "Sub")
    assert (await world.ok("corp1", "getRouteInfo", id=str(sub_route)))["owner"] == "sub1"
    await world.ok("corp1", "updateRoute", id=str(sub_route), prefix="5")
    await world.ok("corp1", "updateRates", id=str(sub_tariff), description="set by corp1")
    assert (await world.ok("corp1", "getRatesInfo", id=str(sub_tariff)))["description"] == "set by corp1"
    await world.ok("boss", "updateRoute", id=str(sub_route), route="renamed")
    await world.ok("boss", "updateRates", id=str(sub_tariff), name="Renamed")
    assert (await route_row(world.services, sub_route)).route == "renamed"
    assert (await tariff_row(world.services, sub_tariff)).name == "Renamed"
    await world.ok("boss", "deleteRates", id=str(sub_tariff))
    await world.ok("corp1", "deleteRoute", id=str(sub_route))
    assert await tariff_row(world.services, sub_tariff) is None and await route_row(world.services, sub_route) is None


async def test_get_rates_info_reads_what_get_rates_reads(world: World) -> None:
    """A user may read the tariff it is on (tariff_access.may_read_tariff), as getRates."""
    tid = await world.add_tariff("corp1", "Retail")
    async with world.services.db.begin() as conn:
        await conn.execute(update(users).where(users.c.username == "corp2").values(rates_id=tid))
    await world.services.cache.invalidate(*NAMESPACES)
    assert (await world.ok("corp2", "getRatesInfo", id=str(tid)))["owner"] == "corp1"
    assert await world.code("corp2", "updateRates", id=str(tid), name="x") == "E_DOES_NOT_BELONG_TO_YOU"


# --------------------------------------------------------------------- updating a tariff


async def test_update_rates_changes_the_tariffs_own_fields(world: World) -> None:
    tid = await world.add_tariff("corp1", "Retail")
    await world.ok("boss", "addBillType", bill_type="per10", free_threshold="0", step="10")
    assert await world.ok("corp1", "updateRates", id=str(tid), name="Retail 2", bill_type="per10",
                          is_public="true", switch_price="0.25", multiplier="1.75", did_multiplier="0.5",
                          description="two\nlines", connect_fee="0.01") is True  # fmt: skip
    info = await world.ok("corp1", "getRatesInfo", id=str(tid))
    assert {k: info[k] for k in ("name", "bill_type", "is_public", "switch_price", "multiplier", "did_multiplier",
                                 "description", "connect_fee", "is_option")} == {
        "name": "Retail 2", "bill_type": "per10", "is_public": True, "switch_price": Decimal("0.25"),
        "multiplier": Decimal("1.75"), "did_multiplier": Decimal("0.5"), "description": "two\nlines",
        "connect_fee": Decimal("0.01"), "is_option": False,
    }  # fmt: skip
    row = await tariff_row(world.services, tid)
    assert (Decimal(row.multiplier), Decimal(row.switch_price)) == (Decimal("1.75"), Decimal("0.25"))
    # an empty description clears it; other fields stay
    await world.ok("corp1", "updateRates", id=str(tid), description="")
    row = await tariff_row(world.services, tid)
    assert (row.description, row.name) == ("", "Retail 2")


async def test_update_rates_argument_errors(world: World) -> None:
    tid = await world.add_tariff("corp1", "Retail")
    await world.add_tariff("corp1", "Other")
    before = await tariff_row(world.services, tid)
    for args, code in (
        ({}, "E_MISSING_ARGUMENT"),
        ({"name": ""}, "E_MISSING_ARGUMENT"),
        ({"name": "Other"}, "E_DATA_ABORT"),  # the owner's name is taken
        ({"bill_type": "bymonth"}, "E_NOT_EXIST"),
        ({"multiplier": "-1"}, "E_INVALID_ARGUMENT"),
        ({"multiplier": "abc"}, "E_INVALID_ARGUMENT"),
        ({"multiplier": "1.0000001"}, "E_INVALID_ARGUMENT"),  # finer than NUMERIC(12,6)
        ({"switch_price": "0.00001"}, "E_INVALID_ARGUMENT"),
        ({"switch_price": "-1"}, "E_INVALID_ARGUMENT"),
        ({"did_multiplier": "NaN"}, "E_INVALID_ARGUMENT"),
        ({"is_public": "maybe"}, "E_INVALID_ARGUMENT"),
        ({"description": "x" * 600}, "E_INVALID_ARGUMENT"),
    ):
        assert await world.code("corp1", "updateRates", id=str(tid), **args) == code, args
    assert await tariff_row(world.services, tid) == before
    assert await world.code("corp1", "updateRates", name="x") == "E_MISSING_ARGUMENT"
    assert await world.code("corp1", "updateRates", id="1.5", name="x") == "E_INVALID_ARGUMENT"
    assert await world.code("corp1", "updateRates", id="999999", name="x") == "E_NOT_EXIST"
    assert await world.code("corp1", "getRatesInfo") == "E_MISSING_ARGUMENT"
    assert await world.code("corp1", "getRatesInfo", id="x") == "E_INVALID_ARGUMENT"
    assert await world.code("corp1", "deleteRates", id="") == "E_MISSING_ARGUMENT"


async def test_a_tariff_in_use_is_not_deleted_nor_turned_into_an_option(world: World) -> None:
    tid = await world.add_tariff("corp1", "Retail")
    option = await world.add_tariff("corp1", "Night", is_option="true")
    rid = await world.add_route("corp1", "trunk-a")
    await world.add_entry("corp1", tid, "79", "0.10", rid)
    await world.ok("corp1", "updateUser", username="u1", rates=str(tid))
    assert await world.code("corp1", "deleteRates", id=str(tid)) == "E_DATA_ABORT"
    assert await world.code("corp1", "updateRates", id=str(tid), is_option="true") == "E_DATA_ABORT"
    assert await tariff_row(world.services, tid) is not None and await entry_count(world.services, tid) == 1
    assert not (await tariff_row(world.services, tid)).is_option
    # the route its entry uses is not deleted either
    assert await world.code("corp1", "deleteRoute", id=str(rid)) == "E_DATA_ABORT"
    assert await route_row(world.services, rid) is not None
    # nobody on the option: it may become a tariff and back
    await world.ok("corp1", "updateRates", id=str(option), is_option="false")
    await world.ok("corp1", "updateRates", id=str(option), is_option="true")
    # once its user moves off, the tariff goes (with its entries), then the route
    await world.ok("corp1", "updateUser", username="u1", rates="0")
    await world.ok("corp1", "deleteRates", id=str(tid))
    assert await tariff_row(world.services, tid) is None and await entry_count(world.services, tid) == 0
    await world.ok("corp1", "deleteRoute", id=str(rid))
    assert await route_row(world.services, rid) is None


async def test_a_route_used_by_a_tariff_entry_is_not_deleted(world: World) -> None:
    tid = await world.add_tariff("corp1", "Retail")
    rid = await world.add_route("corp1", "trunk-a")
    await world.add_entry("corp1", tid, "79", "0.10", rid)
    reply = await world.get("corp1", "deleteRoute", id=str(rid))
    assert reply.status == 200 and reply.code == "E_DATA_ABORT" and f"tariffs {tid}" in reply.json()["description"]
    assert await route_row(world.services, rid) is not None
    await world.ok("corp1", "deleteDirection", rates=str(tid), direction=str(await direction_id(world.services, "79")))
    await world.ok("corp1", "deleteRoute", id=str(rid))
    assert await route_row(world.services, rid) is None


# --------------------------------------------------------------------------- bill types


async def test_bill_type_errors_and_a_bill_type_in_use(world: World) -> None:
    await world.ok("boss", "addBillType", bill_type="custom", free_threshold="36", step="10")
    for args, code in (
        ({"bill_type": "custom"}, "E_MISSING_ARGUMENT"),  # nothing to change
        ({"bill_type": "custom", "step": "0"}, "E_INVALID_ARGUMENT"),
        ({"bill_type": "custom", "step": "ten"}, "E_INVALID_ARGUMENT"),
        ({"bill_type": "custom", "free_threshold": "-1"}, "E_INVALID_ARGUMENT"),
        ({"bill_type": "custom", "step": "86401"}, "E_INVALID_ARGUMENT"),
        ({"bill_type": "nosuch", "step": "5"}, "E_NOT_EXIST"),
        ({"step": "5"}, "E_MISSING_ARGUMENT"),
        ({"bill_type": "", "step": "5"}, "E_MISSING_ARGUMENT"),
        ({"bill_type": "bad name", "step": "5"}, "E_INVALID_ARGUMENT"),
    ):
        assert await world.code("boss", "updateBillType", **args) == code, args
    assert await bill_type_row(world.services, "custom") == (36, 10)
    assert await world.code("boss", "getBillType") == "E_MISSING_ARGUMENT"
    assert await world.code("boss", "getBillType", bill_type="nosuch") == "E_NOT_EXIST"
    assert await world.code("boss", "deleteBillType", bill_type="nosuch") == "E_NOT_EXIST"
    # a tariff names it: not deleted
    tid = await world.add_tariff("corp1", "Retail", bill_type="custom")
    assert await world.code("boss", "deleteBillType", bill_type="custom") == "E_DATA_ABORT"
    assert await bill_type_row(world.services, "custom") == (36, 10)
    await world.ok("corp1", "updateRates", id=str(tid), bill_type="bysecond")
    await world.ok("boss", "deleteBillType", bill_type="custom")
    assert await bill_type_row(world.services, "custom") is None
