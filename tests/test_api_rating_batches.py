"""updateDirections, updateMarkup and copyDirections through the real HTTP door, on both
backends: the spec's examples with real ids, all or nothing, ownership, bad input; and
what the rating administration writes reaching the very next callPrepare and getRates
(the NS_RATING cache is invalidated by every one of these writes). Assertions on HTTP
bodies, the rows of tariff_entries and callPrepare's answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from billing_core.container import Services
from billing_core.rating.tables import directions, tariff_entries
from tests.http_support import Reply
from tests.rating_world import server_key
from tests.shared_paths import spec_file
from tests.test_api_rating_admin import World, direction_id, running_world

MOBILE = "79161234567"  # direction 79, Russia Mobile


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


async def post_directions(w: World, login: str, rates: int, changes: Any, *, as_json: bool = False) -> Reply:
    """updateDirections as the spec's example sends it: POST, `rates` in the query string,
    `directions` (a JSON array) in the body (a form, or a JSON object of arguments)."""
    text = changes if isinstance(changes, str) else json.dumps(changes)
    query = urlencode({"rates": str(rates), **w.creds(login)})
    if as_json:
        return await w.api.post(w.key, "updateDirections", query=query, json={"directions": text})
    return await w.api.post(w.key, "updateDirections", query=query, data={"directions": text})


async def code_of(reply: Reply) -> str:
    assert reply.status in (200, 400) and reply.json()["result"] is False, (reply.status, reply.text)
    return str(reply.code)


@pytest.fixture
async def world(services: Services) -> AsyncIterator[World]:
    async with running_world(services) as running:
        yield running


@pytest.fixture
async def deck(world: World) -> dict[str, int]:
    """corp1's tariff Retail: 79 at priorities 1 (0.10, trunk-a) and 2 (0.15, trunk-b),
    7 at 0.05 (trunk-a), 49 at 0.2000 (trunk-b); u1 is on it."""
    a = await world.add_route("corp1", "trunk-a", prefix="81")
    b = await world.add_route("corp1", "trunk-b", prefix="82")
    tid = await world.add_tariff("corp1", "Retail")
    await world.add_entry("corp1", tid, "79", "0.10", a, 1)
    await world.add_entry("corp1", tid, "79", "0.15", b, 2)
    await world.add_entry("corp1", tid, "7", "0.05", a)
    await world.add_entry("corp1", tid, "49", "0.2", b)
    await world.ok("corp1", "updateUser", username="u1", rates=str(tid))
    return {"tariff": tid, "a": a, "b": b, "79": await direction_id(world.services, "79"),
            "7": await direction_id(world.services, "7"), "49": await direction_id(world.services, "49")}  # fmt: skip


async def prepare(w: World, key: str, login: str = "u1") -> list[str]:
    reply = await w.api.get(key, "callPrepare", {"login": login, "destination": MOBILE})
    assert reply.status == 200, reply.text
    words = str(reply.json()["response"]).split()
    assert words[0] == "Allowed", words
    # a call that never connected: its hold is released, the balance is whole for the next one
    done = await w.api.get(key, "callFinish", {"login": login, "destination": MOBILE, "length": "0",
                                                "status": "CANCEL"})  # fmt: skip
    assert done.status == 200 and str(done.json()["response"]).startswith("Saved"), done.text
    return words


# ------------------------------------------------------------------------ the examples


async def test_update_directions_answers_its_example(world: World, deck: dict[str, int]) -> None:
    entry = next(m for m in json.loads(spec_file().read_text())["methods"] if m["name"] == "updateDirections")
    assert entry["example_request"].startswith("POST /billing/api/2.2/ffffffff/updateDirections?rates=")
    changes = [
        {"direction": deck["79"], "route": deck["b"], "cost": 0.18},  # updateDirection's own example, prior 1
        {"direction": deck["49"], "prior": 1, "cost": "0.25", "priority": 3},
    ]
    reply = await post_directions(world, "corp1", deck["tariff"], changes)
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == entry["example_response"] == "true"
    assert await entries(world.services, deck["tariff"]) == [
        ("49", Decimal("0.25"), deck["b"], 3),
        ("7", Decimal("0.05"), deck["a"], 1),
        ("79", Decimal("0.15"), deck["b"], 2),
        ("79", Decimal("0.18"), deck["b"], 1),
    ]
    # a JSON body carries the same arguments
    reply = await post_directions(world, "corp1", deck["tariff"], [{"direction": deck["7"], "cost": "0.07"}],
                                  as_json=True)  # fmt: skip
    assert reply.status == 200 and reply.json()["response"] is True
    assert ("7", Decimal("0.07"), deck["a"], 1) in await entries(world.services, deck["tariff"])


async def test_update_markup_answers_its_example(world: World, deck: dict[str, int]) -> None:
    reply, expected = await world.example("updateMarkup", "corp1", rates=str(deck["tariff"]))
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"
    assert await entries(world.services, deck["tariff"]) == [  # × 1.2, once
        ("49", Decimal("0.24"), deck["b"], 1),
        ("7", Decimal("0.06"), deck["a"], 1),
        ("79", Decimal("0.12"), deck["a"], 1),
        ("79", Decimal("0.18"), deck["b"], 2),
    ]
    info = await world.ok("corp1", "getRatesInfo", id=str(deck["tariff"]))
    assert info["multiplier"] == Decimal("1")  # the tariff's own multiplier is updateRates'


async def test_copy_directions_answers_its_example(world: World, deck: dict[str, int]) -> None:
    """sub1, a reseller under corp1 and on corp1's tariff, copies it into its own tariff."""
    await world.ok("corp1", "updateUser", username="sub1", rates=str(deck["tariff"]))
    own = await world.add_tariff("sub1", "Resold", multiplier="1.3")
    other = await world.add_route("sub1", "own-route")
    await world.add_entry("sub1", own, "49", "0.90", other)  # replaced by the copy
    reply, expected = await world.example("copyDirections", "sub1", rates=str(own))
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"
    assert await entries(world.services, own) == await entries(world.services, deck["tariff"])
    assert len(await entries(world.services, own)) == 4
    assert (await world.ok("sub1", "getRatesInfo", id=str(own)))["multiplier"] == Decimal("1.3")  # stays
    # the copy is its own: a markup of it leaves the source as it was
    await world.ok("sub1", "updateMarkup", rates=str(own), markup="2")
    assert [e[1] for e in await entries(world.services, deck["tariff"])] == [
        Decimal("0.2"), Decimal("0.05"), Decimal("0.1"), Decimal("0.15"),
    ]  # fmt: skip
    assert [e[1] for e in await entries(world.services, own)] == [
        Decimal("0.4"), Decimal("0.1"), Decimal("0.2"), Decimal("0.3"),
    ]  # fmt: skip


# ------------------------------------------------------------------- all or nothing


async def test_update_directions_is_all_or_nothing(world: World, deck: dict[str, int]) -> None:
    before = await entries(world.services, deck["tariff"])
    good = {"direction": deck["7"], "cost": "0.99"}
    await world.add_route("corp2", "foreign")
    foreign = await world.add_route("corp2", "foreign2")
    for bad, code in (
        ({"direction": deck["49"], "prior": 2, "cost": "0.3"}, "E_NOT_EXIST"),  # no such entry
        ({"direction": 999999, "cost": "0.3"}, "E_NOT_EXIST"),
        ({"direction": deck["49"], "route": foreign}, "E_DOES_NOT_BELONG_TO_YOU"),  # corp2's route
        ({"direction": deck["49"], "route": 999999}, "E_NOT_EXIST"),
        ({"direction": deck["79"], "prior": 1, "priority": 2}, "E_DATA_ABORT"),  # priority 2 is taken
        ({"direction": deck["7"], "cost": "0.5"}, "E_DATA_ABORT"),  # the same entry twice
        ({"direction": deck["49"], "cost": "-0.1"}, "E_INVALID_ARGUMENT"),
        ({"direction": deck["49"], "cost": "0.00001"}, "E_INVALID_ARGUMENT"),
        ({"direction": deck["49"], "cost": "abc"}, "E_INVALID_ARGUMENT"),
        ({"direction": deck["49"], "priority": 0}, "E_INVALID_ARGUMENT"),
        ({"direction": "x", "cost": "0.3"}, "E_INVALID_ARGUMENT"),
        ({"direction": deck["49"], "cost": [1]}, "E_INVALID_ARGUMENT"),
        ({"direction": deck["49"], "costs": "0.3"}, "E_INVALID_ARGUMENT"),  # unknown field
        ({"direction": deck["49"], "rates": deck["tariff"] + 1, "cost": "0.3"}, "E_INVALID_ARGUMENT"),
        ({"cost": "0.3"}, "E_MISSING_ARGUMENT"),
        ({"direction": deck["49"]}, "E_MISSING_ARGUMENT"),  # nothing to change
        ("not an object", "E_INVALID_ARGUMENT"),
    ):
        reply = await post_directions(world, "corp1", deck["tariff"], [good, bad])
        assert await code_of(reply) == code, bad
        assert await entries(world.services, deck["tariff"]) == before, bad
    for text, code in (("not json", "E_INVALID_ARGUMENT"), ('{"direction": 1}', "E_INVALID_ARGUMENT"),
                       ("[]", "E_MISSING_ARGUMENT"), ("", "E_MISSING_ARGUMENT")):  # fmt: skip
        assert await code_of(await post_directions(world, "corp1", deck["tariff"], text)) == code, text
    query = urlencode(world.creds("corp1"))
    reply = await world.api.post(world.key, "updateDirections", query=query, data={"directions": "[]"})
    assert await code_of(reply) == "E_MISSING_ARGUMENT"  # no rates
    assert await entries(world.services, deck["tariff"]) == before


async def test_update_directions_may_swap_priorities_in_one_call(world: World, deck: dict[str, int]) -> None:
    swap = [
        {"direction": deck["79"], "prior": 1, "priority": 2},
        {"direction": deck["79"], "prior": 2, "priority": 1, "cost": "0.11"},
    ]
    reply = await post_directions(world, "corp1", deck["tariff"], swap)
    assert reply.status == 200 and reply.json()["response"] is True, reply.text
    mobile = [e for e in await entries(world.services, deck["tariff"]) if e[0] == "79"]
    assert mobile == [("79", Decimal("0.10"), deck["a"], 2), ("79", Decimal("0.11"), deck["b"], 1)]


async def test_batches_refuse_another_resellers_tariff(world: World, deck: dict[str, int]) -> None:
    before = await entries(world.services, deck["tariff"])
    theirs = await world.add_tariff("corp2", "Theirs")
    reply = await post_directions(world, "corp2", deck["tariff"], [{"direction": deck["7"], "cost": "0"}])
    assert await code_of(reply) == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("corp2", "updateMarkup", rates=str(deck["tariff"]), markup="0.5") == (
        "E_DOES_NOT_BELONG_TO_YOU"
    )
    assert await world.code("corp2", "updateDirections", rates="999999", directions="[]") == "E_MISSING_ARGUMENT"
    # sub1, on corp1's tariff, may not copy it into corp2's
    await world.ok("corp1", "updateUser", username="sub1", rates=str(deck["tariff"]))
    assert await world.code("sub1", "copyDirections", rates=str(theirs)) == "E_DOES_NOT_BELONG_TO_YOU"
    assert await entries(world.services, theirs) == []
    assert await entries(world.services, deck["tariff"]) == before
    assert await world.code("u1", "updateMarkup", rates=str(deck["tariff"]), markup="2") == "E_INSUFFICIENT_ACCESS"


async def test_markup_and_copy_argument_errors(world: World, deck: dict[str, int]) -> None:
    before = await entries(world.services, deck["tariff"])
    for markup in ("0", "-1.2", "abc", "1.0000001", "1000", "NaN", "1e400"):
        code = await world.code("corp1", "updateMarkup", rates=str(deck["tariff"]), markup=markup)
        assert code == "E_INVALID_ARGUMENT", markup
    assert await world.code("corp1", "updateMarkup", rates=str(deck["tariff"])) == "E_MISSING_ARGUMENT"
    assert await world.code("corp1", "updateMarkup", markup="1.2") == "E_MISSING_ARGUMENT"
    assert await world.code("corp1", "updateMarkup", rates="999999", markup="1.2") == "E_NOT_EXIST"
    assert await entries(world.services, deck["tariff"]) == before
    # a markup that would take one price past what a price may be (1,000,000): nothing rewritten
    dear = await world.add_tariff("corp1", "Dear")
    await world.add_entry("corp1", dear, "7", "0.01", deck["a"])
    await world.add_entry("corp1", dear, "49", "5000", deck["a"])
    assert await world.code("corp1", "updateMarkup", rates=str(dear), markup="200") == "E_INVALID_ARGUMENT"
    assert [e[1] for e in await entries(world.services, dear)] == [Decimal("5000"), Decimal("0.01")]
    await world.ok("corp1", "updateMarkup", rates=str(dear), markup="199.5")
    assert [e[1] for e in await entries(world.services, dear)] == [Decimal("997500"), Decimal("1.995")]
    # copyDirections: the source is the caller's current tariff
    assert await world.code("corp1", "copyDirections", rates=str(deck["tariff"])) == "E_NOT_EXIST"  # corp1 has none
    assert await world.code("u1", "copyDirections", rates=str(deck["tariff"])) == "E_INSUFFICIENT_ACCESS"
    await world.ok("corp1", "updateUser", username="sub1", rates=str(deck["tariff"]))
    assert await world.code("sub1", "copyDirections", rates=str(deck["tariff"])) == "E_DOES_NOT_BELONG_TO_YOU"
    own = await world.add_tariff("sub1", "Own")
    await world.ok("corp1", "updateUser", username="sub1", rates=str(own))
    assert await world.code("sub1", "copyDirections", rates=str(own)) == "E_DATA_ABORT"  # onto itself
    assert await world.code("sub1", "copyDirections") == "E_MISSING_ARGUMENT"
    assert await world.code("sub1", "copyDirections", rates="x") == "E_INVALID_ARGUMENT"
    assert await entries(world.services, deck["tariff"]) == before


# ----------------------------------------------------------- the next call sees it


async def test_rating_writes_reach_the_next_call_prepare(world: World, deck: dict[str, int]) -> None:
    """u1 has 10.00 EUR and is on Retail (79: 0.10 EUR/min on trunk-a, prefix 81)."""
    key = await server_key(world.services)
    first = await prepare(world, key)
    assert first[5:7] == ["81", "trunk-a"], first
    allowed = int(first[1])
    assert allowed == 6000  # 10.00 EUR at 0.10 EUR/min

    await world.ok("corp1", "updateMarkup", rates=str(deck["tariff"]), markup="2")  # 0.20 EUR/min
    assert int((await prepare(world, key))[1]) == allowed // 2
    [mobile] = [d for d in await world.ok("u1", "getRates", id=str(deck["tariff"])) if d["code"] == "79"]
    assert [(r["cost"], r["displaycost"]) for r in mobile["routing"]] == [
        (Decimal("0.20"), Decimal("0.20")), (Decimal("0.30"), Decimal("0.30")),
    ]  # fmt: skip

    await world.ok("corp1", "updateRates", id=str(deck["tariff"]), multiplier="2")  # 0.40 EUR/min charged
    assert int((await prepare(world, key))[1]) == allowed // 4
    [mobile] = [d for d in await world.ok("u1", "getRates", id=str(deck["tariff"])) if d["code"] == "79"]
    assert mobile["routing"][0]["displaycost"] == Decimal("0.40")

    changes = [{"direction": deck["79"], "cost": "0.05"}]  # × 2 = 0.10 EUR/min again
    assert (await post_directions(world, "corp1", deck["tariff"], changes)).json()["response"] is True
    assert int((await prepare(world, key))[1]) == allowed

    await world.ok("corp1", "updateRoute", id=str(deck["a"]), prefix="777", route="trunk-z")
    assert (await prepare(world, key))[5:7] == ["777", "trunk-z"]


async def test_a_copied_tariff_rates_the_next_call(world: World, deck: dict[str, int]) -> None:
    key = await server_key(world.services)
    await world.ok("corp1", "updateUser", username="sub1", rates=str(deck["tariff"]))
    own = await world.add_tariff("sub1", "Resold")
    await world.ok("corp1", "updateUser", username="u1", rates=str(own))
    reply = await world.api.get(key, "callPrepare", {"login": "u1", "destination": MOBILE})
    assert reply.json()["response"] == "Declined E_UNROUTABLE"  # an empty tariff serves nothing
    await world.ok("sub1", "copyDirections", rates=str(own))
    words = await prepare(world, key)
    assert words[5:7] == ["81", "trunk-a"]


async def test_a_batch_as_large_as_the_door_takes(world: World, deck: dict[str, int]) -> None:
    """Many entries in one call (every 49… code of a fresh tariff), and a `directions` longer
    than the door's 4,096 characters per argument answered 400 with an E_* code."""
    big = await world.add_tariff("corp1", "Big")
    for priority in range(1, 41):
        await world.add_entry("corp1", big, "49", "0.01", deck["a"], priority)
    changes = [{"direction": deck["49"], "prior": p, "cost": f"0.{p:02d}"} for p in range(1, 41)]
    assert len(json.dumps(changes)) <= 4096
    reply = await post_directions(world, "corp1", big, changes)
    assert reply.status == 200 and reply.json()["response"] is True, reply.text
    assert [e[1] for e in await entries(world.services, big)] == [Decimal(f"0.{p:02d}") for p in range(1, 41)]
    too_long = changes * 3
    assert len(json.dumps(too_long)) > 4096
    reply = await post_directions(world, "corp1", big, too_long)
    assert reply.status == 400 and reply.code == "E_INVALID_ARGUMENT"  # refused at the door: nothing written
    assert [e[1] for e in await entries(world.services, big)] == [Decimal(f"0.{p:02d}") for p in range(1, 41)]
