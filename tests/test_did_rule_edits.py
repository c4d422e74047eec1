"""getDIDActions, getFilters, updateDIDRule, deleteDIDRule through the real HTTP door, on
both backends: the spec's examples, the chain kept dense (rules 1..n) by moves and
deletions, concurrent moves (a real race on PostgreSQL) while resolveDIDRule and
getDIDRules read the chain, and bad input (E_* codes, never a 5xx). Assertions on the HTTP
bodies and on the rows of `did_rules`."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from billing_core.auth.secrets_store import md5_hex
from billing_core.container import Services
from billing_core.numbers.tables import did_rules, dids
from tests.factories import make_key, make_user
from tests.http_support import Api, LoggedInChecks, Reply, serve

DID = "78005555550"
OTHER_DID = "78005555551"
PASSWORDS = {"alice": "apw", "mallory": "mpw"}


@dataclass
class World(LoggedInChecks):
    services: Services
    api: Api
    key: str  # client key: login + md5 password
    gate: str  # level-50 server key (resolveDIDRule)

    async def get(self, login: str, method: str, **args: str) -> Reply:
        creds = {"login": login, "password": md5_hex(PASSWORDS[login])}
        return await self.api.get(self.key, method, {**creds, **args})

    async def add(self, destination: str, **rule: str) -> None:
        args = {"did": DID, "source": "number", "pattern": "%", "policy": "ACCEPT", "action": "call"}
        await self.ok("alice", "addDIDRule", **(args | {"destination": destination, "position": "end"} | rule))

    async def chain(self, did: str = DID) -> list[tuple[int, str]]:
        """(position, destination) of the DID's rules, from the table, in position order."""
        async with self.services.db.begin() as conn:
            did_id = (await conn.execute(select(dids.c.id).where(dids.c.did == did))).scalar_one()
            rows = await conn.execute(
                select(did_rules.c.position, did_rules.c.destination)
                .where(did_rules.c.did_id == did_id)
                .order_by(did_rules.c.position)
            )
            return [(r.position, r.destination) for r in rows]

    async def order(self) -> list[str]:
        return [destination for _, destination in await self.chain()]


@pytest.fixture
async def world(services: Services) -> AsyncIterator[World]:
    await make_user(services, "alice", password="apw", sip_extension="10000")
    await make_user(services, "mallory", password="mpw")
    key = await make_key(services, level=0, name="client")
    gate = await make_key(services, level=50, name="gate")
    async with services.db.begin() as conn:
        await conn.execute(dids.insert().values(did=DID, owner="alice"))
        await conn.execute(dids.insert().values(did=OTHER_DID, owner="mallory"))
    async with serve(services, test_methods=False) as api:
        w = World(services, api, key, gate)
        for destination in ("d1", "d2", "d3", "d4"):
            await w.add(destination)
        yield w


# --- getDIDActions / getFilters -------------------------------------------------------------


async def test_get_did_actions_is_voice_and_sms_actions_with_their_default_destinations(world: World) -> None:
    actions = await world.ok("alice", "getDIDActions")
    assert actions == {
        "voice": {"call": "10000", "playfile": "beep", "redirect": "", "forward": "", "disa": ""},
        "sms": {"internal": "10000"},
    }
    # a user without a SIP account is its own destination
    assert (await world.ok("mallory", "getDIDActions"))["voice"]["call"] == "mallory"


async def test_an_action_get_did_actions_does_not_list_is_refused(world: World) -> None:
    assert await world.code("alice", "updateDIDRule", did=DID, rule="1", action="teleport") == "E_INVALID_ARGUMENT"
    assert await world.code("alice", "updateDIDRule", did=DID, rule="1", sms_action="fax") == "E_INVALID_ARGUMENT"
    for action in (await world.ok("alice", "getDIDActions"))["voice"]:
        assert await world.ok("alice", "updateDIDRule", did=DID, rule="1", action=action) is True


async def test_get_filters_sources_and_patterns(world: World) -> None:
    every = await world.ok("alice", "getFilters")
    assert set(every) == {"number", "any", "all"}
    assert "%" in every["number"] and every["any"] == [] and every["all"] == []
    assert await world.ok("alice", "getFilters", resolver="number") == {"number": every["number"]}
    assert await world.ok("alice", "getFilters", sources="true") == ["number", "any", "all"]
    assert await world.ok("alice", "getFilters", resolver="any", sources="true") == ["any"]
    assert await world.code("alice", "getFilters", resolver="weather") == "E_NOT_EXIST"
    assert await world.code("alice", "getFilters", sources="maybe") == "E_INVALID_ARGUMENT"


# --- updateDIDRule ------------------------------------------------------------------------


async def test_update_did_rule_spec_example_moves_rule_1_to_position_2(world: World) -> None:
    assert await world.ok("alice", "updateDIDRule", did=DID, rule="1", pos="2") is True
    assert await world.chain() == [(1, "d2"), (2, "d1"), (3, "d3"), (4, "d4")]


@pytest.mark.parametrize(
    ("rule", "pos", "expected"),
    [
        ("4", "1", ["d4", "d1", "d2", "d3"]),
        ("1", "4", ["d2", "d3", "d4", "d1"]),
        ("2", "3", ["d1", "d3", "d2", "d4"]),
        ("3", "3", ["d1", "d2", "d3", "d4"]),
    ],
)
async def test_moves_keep_the_chain_dense(world: World, rule: str, pos: str, expected: list[str]) -> None:
    assert await world.ok("alice", "updateDIDRule", did=DID, rule=rule, pos=pos) is True
    assert await world.chain() == list(enumerate(expected, start=1))
    listed = await world.ok("alice", "getDIDRules", did=DID)  # the cache saw the move
    assert [(r["rule"], r["destination"]) for r in listed] == list(enumerate(expected, start=1))


async def test_update_did_rule_changes_only_the_fields_given(world: World) -> None:
    await world.ok("alice", "updateDIDRule", did=DID, rule="2", destination="10009", policy="reject", timeout="15")
    [rule] = await world.ok("alice", "getDIDRules", did=DID, rule="2")
    assert (rule["destination"], rule["policy"], rule["timeout"], rule["action"], rule["pattern"]) == (
        "10009", "REJECT", 15, "call", "%",
    )  # fmt: skip
    # resolveDIDRule walks the changed chain at once
    reply = await world.api.get(world.gate, "resolveDIDRule", {"did": DID, "rule": "2", "callerid": "1", "status": ""})
    assert reply.json()["response"].startswith("OK REJECT 10000 call - 10009")
    # a field and a move in one request
    await world.ok("alice", "updateDIDRule", did=DID, rule="2", pos="4", pattern="7901%")
    assert await world.order() == ["d1", "d3", "d4", "10009"]
    assert (await world.ok("alice", "getDIDRules", did=DID, rule="4"))[0]["pattern"] == "7901%"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"rule": "1"}, "E_MISSING_ARGUMENT"),  # nothing to change
        ({"pos": "2"}, "E_MISSING_ARGUMENT"),  # which rule?
        ({"rule": "9", "pos": "1"}, "E_NOT_EXIST"),
        ({"rule": "1", "pos": "5"}, "E_INVALID_ARGUMENT"),  # beyond the chain
        ({"rule": "1", "pos": "0"}, "E_INVALID_ARGUMENT"),
        ({"rule": "1", "pos": "-1"}, "E_INVALID_ARGUMENT"),
        ({"rule": "0", "pos": "1"}, "E_INVALID_ARGUMENT"),
        ({"rule": "x", "pos": "1"}, "E_INVALID_ARGUMENT"),
        ({"rule": "1", "policy": "MAYBE"}, "E_INVALID_ARGUMENT"),
        ({"rule": "1", "source": "weather"}, "E_INVALID_ARGUMENT"),
        ({"rule": "1", "condition": "INPUT"}, "E_MISSING_ARGUMENT"),  # INPUT needs input
        ({"rule": "1", "destination": "two words"}, "E_INVALID_ARGUMENT"),
        ({"rule": "1", "timeout": "-5"}, "E_INVALID_ARGUMENT"),
    ],
)
async def test_update_did_rule_bad_input(world: World, args: dict[str, str], expected: str) -> None:
    assert await world.code("alice", "updateDIDRule", did=DID, **args) == expected
    assert await world.order() == ["d1", "d2", "d3", "d4"]  # nothing changed


async def test_nobody_edits_another_users_chain(world: World) -> None:
    assert await world.code("mallory", "updateDIDRule", did=DID, rule="1", pos="2") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("mallory", "deleteDIDRule", did=DID, rule="1") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("alice", "updateDIDRule", did="70000000000", rule="1", pos="2") == "E_NOT_EXIST"
    assert await world.order() == ["d1", "d2", "d3", "d4"]


# --- deleteDIDRule ------------------------------------------------------------------------


async def test_delete_did_rule_spec_example_deletes_by_pattern(world: World) -> None:
    await world.ok("alice", "updateDIDRule", did=DID, rule="2", pattern="74955555550")
    await world.ok("alice", "updateDIDRule", did=DID, rule="4", pattern="74955555550")
    assert await world.ok("alice", "deleteDIDRule", did=DID, rule="-1", pattern="74955555550") is True
    assert await world.chain() == [(1, "d1"), (2, "d3")]
    assert await world.code("alice", "deleteDIDRule", did=DID, rule="-1", pattern="74955555550") == "E_NOT_EXIST"


async def test_delete_did_rule_by_number_closes_the_gap(world: World) -> None:
    assert await world.ok("alice", "deleteDIDRule", did=DID, rule="2") is True
    assert await world.chain() == [(1, "d1"), (2, "d3"), (3, "d4")]
    assert [r["rule"] for r in await world.ok("alice", "getDIDRules", did=DID)] == [1, 2, 3]
    await world.ok("alice", "deleteDIDRule", did=DID, rule="1")
    await world.ok("alice", "deleteDIDRule", did=DID, rule="2")
    assert await world.chain() == [(1, "d3")]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"rule": "-1"}, "E_MISSING_ARGUMENT"),  # by pattern, but which?
        ({}, "E_MISSING_ARGUMENT"),
        ({"rule": "0"}, "E_INVALID_ARGUMENT"),
        ({"rule": "-2", "pattern": "%"}, "E_INVALID_ARGUMENT"),
        ({"rule": "one"}, "E_INVALID_ARGUMENT"),
        ({"rule": "5"}, "E_NOT_EXIST"),
        ({"rule": "-1", "pattern": "7901%"}, "E_NOT_EXIST"),
    ],
)
async def test_delete_did_rule_bad_input(world: World, args: dict[str, str], expected: str) -> None:
    assert await world.code("alice", "deleteDIDRule", did=DID, **args) == expected
    assert await world.order() == ["d1", "d2", "d3", "d4"]


# --- concurrency ----------------------------------------------------------------------------


async def test_concurrent_moves_keep_the_chain_dense_while_it_is_walked(world: World) -> None:
    """40 moves at once over an 8-rule chain (on PostgreSQL they race for real), while
    resolveDIDRule walks and getDIDRules lists the chain: every reader sees rules 1..8 with
    8 distinct rules, and afterwards the chain is a permutation of the same rules, 1..8."""
    for destination in ("d5", "d6", "d7", "d8"):
        await world.add(destination)
    rng = random.Random(13)
    moves = [(rng.randint(1, 8), rng.randint(1, 8)) for _ in range(40)]
    seen: list[list[int]] = []
    walks: list[str] = []
    stop = asyncio.Event()

    async def move(rule: int, pos: int) -> None:
        reply = await world.get("alice", "updateDIDRule", did=DID, rule=str(rule), pos=str(pos))
        assert reply.status == 200 and reply.json()["result"] is True, reply.text

    async def read() -> None:
        while not stop.is_set():
            listed = await world.ok("alice", "getDIDRules", did=DID)
            seen.append([r["rule"] for r in listed])
            assert len({r["destination"] for r in listed}) == 8
            args = {"did": DID, "rule": str(rng.randint(1, 8)), "callerid": "1", "status": ""}
            walked = await world.api.get(world.gate, "resolveDIDRule", args)
            walks.append(walked.json()["response"])

    readers = [asyncio.create_task(read()) for _ in range(2)]
    await asyncio.gather(*(move(rule, pos) for rule, pos in moves))
    stop.set()
    await asyncio.gather(*readers)
    chain = await world.chain()
    assert [position for position, _ in chain] == list(range(1, 9))
    assert sorted(destination for _, destination in chain) == [f"d{i}" for i in range(1, 9)]
    assert seen and all(positions == list(range(1, 9)) for positions in seen)
    assert walks and all(w.startswith("OK ACCEPT 10000 call") for w in walks)


async def test_concurrent_deletions_and_moves_leave_a_dense_chain(world: World) -> None:
    for destination in ("d5", "d6", "d7", "d8"):
        await world.add(destination)

    async def attempt(method: str, **args: str) -> None:
        reply = await world.get("alice", method, did=DID, **args)
        # a rule or position gone by the time the request runs is a clean refusal
        assert reply.status in (200, 400), reply.text
        assert reply.json()["result"] is True or reply.code in ("E_NOT_EXIST", "E_INVALID_ARGUMENT"), reply.text

    jobs = [attempt("deleteDIDRule", rule="1") for _ in range(3)]
    jobs += [attempt("updateDIDRule", rule=str(r), pos=str(p)) for r, p in ((8, 1), (2, 7), (5, 3), (6, 2))]
    await asyncio.gather(*jobs)
    chain = await world.chain()
    assert [position for position, _ in chain] == list(range(1, 6))  # three deleted
    assert len({destination for _, destination in chain}) == 5
