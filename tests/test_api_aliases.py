"""getAliases, getAlias, addAlias, updateAlias, deleteAlias through the real HTTP door, on
both backends: each method answers the spec's own example (its key slot, `aliases`, and
its ids replaced by real ones; the credentials it leaves out added), who may see and
change which alias, bad input (E_* codes, never a 5xx), and loops refused at write time.
Assertions on the HTTP bodies and on the rows of `aliases`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from billing_core.auth.secrets_store import md5_hex
from billing_core.clock import utcnow
from billing_core.container import Services
from billing_core.directory.tables import sip_extensions
from billing_core.numbers.tables import aliases
from tests.factories import make_key, make_user
from tests.http_support import Api, LoggedInChecks, Reply, serve
from tests.shared_paths import spec_file

PASSWORDS = {"boss": "bpw", "reseller": "rpw", "sub": "spw", "other": "opw", "stranger": "xpw"}
SPEC_KEYS = ["global", "id", "owner", "alias", "destination"]  # the spec's alias object, in its order


@dataclass
class World(LoggedInChecks):
    services: Services
    api: Api
    key: str  # a client key (level 0): every request logs in with login + md5 password

    async def get(self, login: str, method: str, **args: str) -> Reply:
        creds = {"login": login, "password": md5_hex(PASSWORDS[login])}
        return await self.api.get(self.key, method, {**creds, **args})

    async def example(self, method: str, login: str, **real_ids: str) -> tuple[Reply, str]:
        """The spec's example request for `method` as printed, with the real key, the given
        real ids and the login it leaves out; and the spec's example answer."""
        entry = next(m for m in json.loads(spec_file().read_text())["methods"] if m["name"] == method)
        path = entry["example_request"].split(" ", 1)[1]
        assert path.startswith(f"/billing/api/2.2/{entry['example_key_segment']}/{method}")
        query = dict(p.split("=", 1) for p in path.partition("?")[2].split("&") if p)
        query |= real_ids
        query |= {"login": login, "password": md5_hex(PASSWORDS[login])}
        reply = await self.api.request("GET", self.api.url(self.key, method, query=urlencode(query)))
        return reply, entry["example_response"]


@pytest.fixture
async def world(services: Services) -> AsyncIterator[World]:
    """admin ─┬─ reseller (22) ── sub (11, SIP 10000 and 10002)
              ├─ other (22) ── stranger (11, SIP 20000)
              └─ boss (33, an administrator)"""
    await make_user(services, "reseller", accesslevel=22, password="rpw")
    sub = await make_user(services, "sub", manager="reseller", password="spw", sip_extension="10000")
    async with services.db.begin() as conn:
        await conn.execute(
            sip_extensions.insert().values(
                sip_extension="10002", user_id=sub.id, sip_password_enc=services.box.encrypt("x"), created_at=utcnow()
            )
        )
    await make_user(services, "other", accesslevel=22, password="opw")
    await make_user(services, "stranger", manager="other", password="xpw", sip_extension="20000")
    await make_user(services, "boss", accesslevel=33, password="bpw")
    key = await make_key(services, level=0)
    async with serve(services, test_methods=False) as api:
        yield World(services, api, key)


async def rows(services: Services) -> list[tuple[str, str, str, str, str]]:
    async with services.db.begin() as conn:
        found = (await conn.execute(select(aliases).order_by(aliases.c.id))).all()
    return [(r.alias, r.destination, r.owner, r.sip_extension, r.scope) for r in found]


async def alias_id(services: Services, name: str) -> str:
    async with services.db.begin() as conn:
        return str((await conn.execute(select(aliases.c.id).where(aliases.c.alias == name))).scalar_one())


# --------------------------------------------------------------- the spec's examples


async def test_add_alias_answers_its_example(world: World) -> None:
    reply, expected = await world.example("addAlias", "sub")
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"
    assert await rows(world.services) == [("111", "79010000001", "sub", "", "user:sub")]


async def test_get_aliases_answers_its_example(world: World) -> None:
    await world.ok("sub", "addAlias", alias="111", destination="79010000001")
    reply, expected = await world.example("getAliases", "sub")
    assert reply.status == 200
    # The example shows the shape ("alias ID", …): the same keys, in its order, then sip_extension.
    template = json.loads(expected.replace(", ...]", "]"))
    assert list(template[0]) == SPEC_KEYS
    assert reply.json()["response"] == [
        {"global": 0, "id": 1, "owner": "sub", "alias": "111", "destination": "79010000001", "sip_extension": ""}
    ]
    assert list(reply.json()["response"][0])[:5] == SPEC_KEYS


async def test_get_alias_answers_its_example(world: World) -> None:
    await world.ok("sub", "addAlias", alias="111", destination="79010000001")
    real = await alias_id(world.services, "111")
    reply, expected = await world.example("getAlias", "sub", id=real)
    assert reply.status == 200
    assert list(json.loads(expected)) == SPEC_KEYS
    assert reply.json()["response"] == {
        "global": 0, "id": int(real), "owner": "sub", "alias": "111", "destination": "79010000001",
        "sip_extension": "",
    }  # fmt: skip


async def test_update_alias_answers_its_example(world: World) -> None:
    """The example names the alias by `alias=111` and passes no id: the caller's own 111."""
    await world.ok("sub", "addAlias", alias="111", destination="79010000001")
    reply, expected = await world.example("updateAlias", "sub")
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"
    assert await rows(world.services) == [("111", "79010000002", "sub", "", "user:sub")]


async def test_delete_alias_answers_its_example(world: World) -> None:
    await world.ok("sub", "addAlias", alias="111", destination="79010000001")
    await world.ok("sub", "addAlias", alias="112", destination="79010000002")
    reply, expected = await world.example("deleteAlias", "sub", id=await alias_id(world.services, "111"))
    assert reply.status == 200 and json.dumps(reply.json()["response"]) == expected == "true"
    assert await rows(world.services) == [("112", "79010000002", "sub", "", "user:sub")]


# ----------------------------------------------------------------------- who owns what


async def test_a_users_aliases_are_its_own(world: World) -> None:
    await world.ok("sub", "addAlias", alias="111", destination="79010000001")
    await world.ok("stranger", "addAlias", alias="111", destination="79020000002")  # its own 111
    own = await world.ok("sub", "getAliases")
    assert [(a["owner"], a["destination"]) for a in own] == [("sub", "79010000001")]
    sub_alias = str(own[0]["id"])
    assert await world.code("stranger", "getAlias", id=sub_alias) == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("stranger", "updateAlias", id=sub_alias, destination="1") == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("stranger", "deleteAlias", id=sub_alias) == "E_DOES_NOT_BELONG_TO_YOU"
    assert await world.code("other", "deleteAlias", id=sub_alias) == "E_DOES_NOT_BELONG_TO_YOU"
    assert [r[1] for r in await rows(world.services)] == ["79010000001", "79020000002"]


async def test_a_reseller_reaches_its_users_aliases(world: World) -> None:
    await world.ok("reseller", "addAlias", alias="5", destination="79010000005")  # its own
    await world.ok("reseller", "addAlias", username="sub", alias="111", destination="79010000001")
    await world.ok("reseller", "addAlias", alias="222", destination="79010000002", sip_extension="10000")
    await world.ok("stranger", "addAlias", alias="333", destination="79010000003")
    assert await rows(world.services) == [
        ("5", "79010000005", "reseller", "", "user:reseller"),
        ("111", "79010000001", "sub", "", "user:sub"),
        ("222", "79010000002", "sub", "10000", "ext:10000"),  # the SIP account's owner owns it
        ("333", "79010000003", "stranger", "", "user:stranger"),
    ]
    assert [a["alias"] for a in await world.ok("reseller", "getAliases")] == ["5"]
    assert [a["alias"] for a in await world.ok("reseller", "getAliases", all="true")] == ["5", "111", "222"]
    assert [a["alias"] for a in await world.ok("other", "getAliases", all="true")] == ["333"]
    assert [a["alias"] for a in await world.ok("boss", "getAliases", all="true")] == ["5", "111", "222", "333"]
    await world.ok("reseller", "updateAlias", id=await alias_id(world.services, "111"), destination="79010000009")
    await world.ok("reseller", "deleteAlias", id=await alias_id(world.services, "222"))
    assert [(r[0], r[1]) for r in await rows(world.services)][1:] == [("111", "79010000009"), ("333", "79010000003")]
    code = await world.code("stranger", "addAlias", alias="7", destination="7", sip_extension="10000")
    assert code == "E_DOES_NOT_BELONG_TO_YOU"


async def test_global_aliases_are_the_administrators(world: World) -> None:
    assert await world.code("reseller", "addAlias", alias="112", destination="79010000112", **{"global": "true"}) == (
        "E_INSUFFICIENT_ACCESS"
    )
    await world.ok("boss", "addAlias", alias="112", destination="79010000112", **{"global": "true"})
    assert await rows(world.services) == [("112", "79010000112", "boss", "", "global")]
    real = await alias_id(world.services, "112")
    seen = await world.ok("stranger", "getAlias", id=real)  # anybody may read what applies to its calls
    assert (seen["global"], seen["owner"]) == (1, "boss")
    assert [a["alias"] for a in await world.ok("stranger", "getAliases", all="true")] == ["112"]
    assert await world.ok("stranger", "getAliases") == []  # not its own
    assert await world.code("stranger", "deleteAlias", id=real) == "E_INSUFFICIENT_ACCESS"
    assert await world.code("reseller", "updateAlias", id=real, destination="1") == "E_INSUFFICIENT_ACCESS"
    assert await world.code("boss", "updateAlias", id=real, sip_extension="10000") == "E_INVALID_ARGUMENT"
    await world.ok("boss", "deleteAlias", id=real)
    assert await rows(world.services) == []


async def test_update_moves_an_alias_between_its_owners_extensions(world: World) -> None:
    await world.ok("sub", "addAlias", alias="111", destination="79010000001")
    real = await alias_id(world.services, "111")
    await world.ok("sub", "updateAlias", id=real, sip_extension="10002")
    assert await rows(world.services) == [("111", "79010000001", "sub", "10002", "ext:10002")]
    await world.ok("sub", "updateAlias", id=real, sip_extension="")  # back to all of sub's extensions
    assert await rows(world.services) == [("111", "79010000001", "sub", "", "user:sub")]
    assert await world.code("sub", "updateAlias", id=real, sip_extension="20000") == "E_DOES_NOT_BELONG_TO_YOU"


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("method", "args", "code"),
    [
        ("addAlias", {"destination": "79010000001"}, "E_MISSING_ARGUMENT"),
        ("addAlias", {"alias": "111"}, "E_MISSING_ARGUMENT"),
        ("addAlias", {"alias": "abc", "destination": "79010000001"}, "E_INVALID_ARGUMENT"),
        ("addAlias", {"alias": "١١١", "destination": "79010000001"}, "E_INVALID_ARGUMENT"),  # Arabic-Indic digits
        ("addAlias", {"alias": "111", "destination": "7901-000"}, "E_INVALID_ARGUMENT"),
        ("addAlias", {"alias": "1" * 33, "destination": "79010000001"}, "E_INVALID_ARGUMENT"),
        ("addAlias", {"alias": "111", "destination": "1", "global": "maybe"}, "E_INVALID_ARGUMENT"),
        ("addAlias", {"alias": "111", "destination": "1", "sip_extension": "99999"}, "E_NOT_EXIST"),
        ("getAlias", {}, "E_MISSING_ARGUMENT"),
        ("getAlias", {"id": "abc"}, "E_INVALID_ARGUMENT"),
        ("getAlias", {"id": "0"}, "E_INVALID_ARGUMENT"),
        ("getAlias", {"id": "99"}, "E_NOT_EXIST"),
        ("getAlias", {"id": "99999999999"}, "E_INVALID_ARGUMENT"),
        ("deleteAlias", {"id": "99"}, "E_NOT_EXIST"),
        ("updateAlias", {"destination": "1"}, "E_MISSING_ARGUMENT"),
        ("updateAlias", {"id": "99", "destination": "1"}, "E_NOT_EXIST"),
        ("updateAlias", {"alias": "999", "destination": "1"}, "E_NOT_EXIST"),
        ("getAliases", {"all": "sometimes"}, "E_INVALID_ARGUMENT"),
    ],
)
async def test_bad_input_gets_its_code(world: World, method: str, args: dict[str, str], code: str) -> None:
    assert await world.code("sub", method, **args) == code
    assert await rows(world.services) == []


async def test_refusals_of_an_existing_alias(world: World) -> None:
    await world.ok("sub", "addAlias", alias="+111", destination="+79010000001")  # '+' dropped, as callPrepare does
    real = await alias_id(world.services, "111")
    assert await world.code("sub", "addAlias", alias="111", destination="2") == "E_DATA_ABORT"  # taken here
    assert await world.code("sub", "updateAlias", id=real) == "E_MISSING_ARGUMENT"  # nothing to change
    assert await world.code("sub", "updateAlias", id=real, destination="x") == "E_INVALID_ARGUMENT"
    await world.ok("sub", "addAlias", alias="111", destination="79010000003", sip_extension="10000")  # another scope
    # two aliases named 111 now: the example's form cannot tell which one
    assert await world.code("sub", "updateAlias", alias="111", destination="5") == "E_DATA_ABORT"
    ext_alias = await alias_id_in(world.services, "ext:10000")
    assert await world.code("sub", "updateAlias", id=ext_alias, sip_extension="") == "E_DATA_ABORT"  # 111 is taken
    assert await rows(world.services) == [
        ("111", "79010000001", "sub", "", "user:sub"),
        ("111", "79010000003", "sub", "10000", "ext:10000"),
    ]


async def alias_id_in(services: Services, scope: str) -> str:
    async with services.db.begin() as conn:
        return str((await conn.execute(select(aliases.c.id).where(aliases.c.scope == scope))).scalar_one())


# ---------------------------------------------------------------------------- loops


LOOP = "E_HAS_NO_ONE_TOLD_YOU_SHE_IS_NOT_BREATHING"


async def test_a_cycle_is_refused_at_write_time(world: World) -> None:
    assert await world.code("sub", "addAlias", alias="111", destination="111") == LOOP
    await world.ok("sub", "addAlias", alias="111", destination="222")
    await world.ok("sub", "addAlias", alias="222", destination="333")
    assert await world.code("sub", "addAlias", alias="333", destination="111") == LOOP
    await world.ok("sub", "addAlias", alias="333", destination="79010000001")
    assert await world.code("sub", "updateAlias", id=await alias_id(world.services, "333"), destination="222") == LOOP
    # another user's aliases are not the same caller's: its 222 -> 111 is no loop
    await world.ok("stranger", "addAlias", alias="222", destination="111")
    assert [(r[0], r[1], r[2]) for r in await rows(world.services)] == [
        ("111", "222", "sub"), ("222", "333", "sub"), ("333", "79010000001", "sub"), ("222", "111", "stranger"),
    ]  # fmt: skip


async def test_a_cycle_through_an_extension_or_a_global_alias_is_refused(world: World) -> None:
    await world.ok("sub", "addAlias", alias="111", destination="222")
    # for SIP 10000's calls 222 -> 111 -> 222
    assert await world.code("sub", "addAlias", alias="222", destination="111", sip_extension="10000") == LOOP
    # for every caller with sub's aliases: global 222 -> 111 -> 222
    assert await world.code("boss", "addAlias", alias="222", destination="111", **{"global": "true"}) == LOOP
    await world.ok("boss", "addAlias", alias="222", destination="79010000002", **{"global": "true"})
    # a user alias that loops through the global one
    assert await world.code("stranger", "addAlias", alias="79010000002", destination="222") == LOOP
    assert len(await rows(world.services)) == 2


async def test_a_chain_resolves_up_to_four_aliases(world: World) -> None:
    for name, target in (("1", "2"), ("2", "3"), ("3", "4"), ("4", "79010000001")):
        await world.ok("sub", "addAlias", alias=name, destination=target)
    # 0 -> 1 -> 2 -> 3 -> 4 -> number: five aliases in a row
    reply = await world.get("sub", "addAlias", alias="0", destination="1")
    assert reply.code == "E_DATA_ABORT"
    assert "0 -> 1 -> 2 -> 3 -> 4" in reply.json()["description"]
    await world.ok("sub", "updateAlias", id=await alias_id(world.services, "4"), destination="5")  # 5: no alias
    assert await world.code("sub", "addAlias", alias="5", destination="79010000001") == "E_DATA_ABORT"
    assert [(r[0], r[1]) for r in await rows(world.services)] == [("1", "2"), ("2", "3"), ("3", "4"), ("4", "5")]
