"""getKey, updateKey, revokeKey through the real HTTP door, on both backends: the spec's
examples (TESTKEY1), whose keys a caller sees and changes, bad input, and a change that
stops a key working (revokeKey, updateKey enabled=0 / apikey / secure_only) refusing the
key's very next request: over HTTP, over FastAGI, and (server backend) on another worker
that had the key in its cache."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from billing_core.api.dispatch import Dispatcher
from billing_core.auth.secrets_store import api_key_hash, md5_hex
from billing_core.cache.backend import RedisBackend
from billing_core.container import Services
from billing_core.directory.tables import api_keys, users
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer, ServerConfig
from tests.asterisk_sim import run_agi_session
from tests.conftest import BACKENDS
from tests.factories import make_key, make_user
from tests.http_support import Api, Reply, serve
from tests.rating_world import standard_world
from tests.shared_paths import spec_file

SECRET = "T3stKey-0123456789abcdef"  # TESTKEY1's key
PORTAL = "127.0.0.5"  # where TESTKEY1's requests come from (a refused key bans its address)
RUSSIA = "74951234567"
LATE_S = 0.3  # how late the other worker's cache watcher applies a bump


@dataclass
class World:
    services: Services
    api: Api
    master: str  # level 44 server key of admin (a master administrator: sees every key)
    client: str  # level 0: boss (33) logs in with its password

    async def admin(self, method: str, **args: str) -> Reply:
        return await self.api.get(self.master, method, {"login": "admin", **args})

    async def boss(self, method: str, **args: str) -> Reply:
        return await self.api.get(self.client, method, {"login": "boss", "password": md5_hex("bpw"), **args})

    async def portal(self, method: str = "getInfo", key: str = SECRET) -> Reply:
        return await self.api.get(key, method, {}, source=PORTAL)


def ok(reply: Reply) -> Any:
    assert reply.status == 200 and reply.json()["result"] is True, reply.text
    return reply.json()["response"]


def code(reply: Reply) -> str:
    assert reply.status in (200, 400) and reply.json()["result"] is False, (reply.status, reply.text)
    return str(reply.code)


def spec_entry(method: str) -> dict[str, Any]:
    return next(m for m in json.loads(spec_file().read_text())["methods"] if m["name"] == method)


async def example(world: World, method: str) -> tuple[Reply, str | None]:
    """The spec's example request as printed, with the real master key and its login."""
    entry = spec_entry(method)
    path = entry["example_request"].split(" ", 1)[1]
    query = dict(p.split("=", 1) for p in path.partition("?")[2].split("&") if p) | {"login": "admin"}
    reply = await world.api.request("GET", world.api.url(world.master, method, query=urlencode(query)))
    return reply, entry["example_response"]


async def add_testkey1(world: World, **overrides: str) -> None:
    args = {"name": "TESTKEY1", "auth_by": "username", "source": PORTAL, "apikey": SECRET, "accessLevel": "0",
            "default_user": "alice", "secure_only": "0"} | overrides  # fmt: skip
    assert ok(await world.admin("addKey", **args)) is True


async def key_row(services: Services, name: str = "TESTKEY1") -> Any:
    async with services.db.begin() as conn:
        return (await conn.execute(select(api_keys).where(api_keys.c.name == name))).one()


@pytest.fixture
async def world(services: Services) -> AsyncIterator[World]:
    await make_user(services, "alice", balance=Decimal("3"))
    await make_user(services, "boss", accesslevel=33, password="bpw")
    await make_user(services, "res", accesslevel=22)
    await make_user(services, "carol", manager="res")
    master = await make_key(services, level=44, name="master")
    client = await make_key(services, level=0, name="client")
    async with serve(services, test_methods=False) as api:
        yield World(services, api, master, client)


# --------------------------------------------------------------- getKey


async def test_get_key_answers_its_example(world: World) -> None:
    await add_testkey1(world)
    reply, expected = await example(world, "getKey")
    found = ok(reply)
    assert expected is not None
    # the example's attributes (its answer wraps the one key in an array: one object here)
    assert [k for k in re.findall(r'"(\w+)"\s*:', expected) if k not in found] == []
    shown = (found["name"], found["auth_by"], found["source"], found["accessLevel"])
    assert shown == ("TESTKEY1", "username", PORTAL, 0)
    assert (found["secure_only"], found["enabled"], found["default_user"]) == (0, 1, "alice")
    assert found["key"] == "T3st…" and SECRET not in reply.text  # the hint, never the key


async def test_get_key_shows_only_the_callers_own_keys(world: World) -> None:
    await add_testkey1(world)  # admin's key
    assert code(await world.boss("getKey", name="TESTKEY1")) == "E_NOT_EXIST"
    boss_key = {"name": "BOSSKEY", "auth_by": "username", "source": PORTAL, "apikey": "B0ssKey-0123456789abcdef",
                "accessLevel": "0", "secure_only": "0"}  # fmt: skip
    assert ok(await world.boss("addKey", **boss_key)) is True
    assert ok(await world.boss("getKey", name="BOSSKEY"))["owner"] == "boss"
    assert ok(await world.admin("getKey", name="BOSSKEY"))["owner"] == "boss"  # a master administrator: all
    assert code(await world.boss("getKey")) == "E_MISSING_ARGUMENT"
    assert code(await world.boss("getKey", name="NOPE")) == "E_NOT_EXIST"
    res = await world.api.get(world.client, "getKey", {"login": "res", "password": md5_hex("secret"), "name": "x"})
    assert code(res) == "E_INSUFFICIENT_ACCESS"  # a reseller (22) never reaches the keys (33)


# --------------------------------------------------------------- updateKey


async def test_update_key_answers_its_example_and_applies_at_once(world: World) -> None:
    await add_testkey1(world)
    assert ok(await world.portal())["username"] == "alice"  # works, and is now cached
    reply, expected = await example(world, "updateKey")
    assert expected is None  # the spec shows no answer; a true/false method answers true
    assert ok(reply) is True
    assert (await key_row(world.services)).secure_only == 1
    refused = await world.portal()
    assert refused.status == 403 and "HTTPS" in refused.json()["description"]


async def test_update_key_changes_each_field_under_both_spellings(world: World) -> None:
    services = world.services
    await add_testkey1(world)
    assert ok(await world.admin("updateKey", name="TESTKEY1", accessLevel="11")) is True
    assert ok(await world.admin("updateKey", name="TESTKEY1", accesslevel="0", allowed_methods="getInfo")) is True
    assert ok(await world.admin("updateKey", name="TESTKEY1", **{"default user": "boss"})) is True
    row = await key_row(services)
    assert (row.access_level, row.allowed_methods, row.default_user) == (0, "getInfo", "boss")
    assert ok(await world.portal())["username"] == "boss"
    assert code(await world.portal("getLogs")) == "E_INSUFFICIENT_ACCESS"  # allowed_methods applies at once
    assert ok(await world.admin("updateKey", name="TESTKEY1", default_user="", allowed_methods="")) is True
    assert (await key_row(services)).default_user is None
    # a new secret: the old one stops, the new one works, both at once
    new_secret = "N3wKey-fedcba9876543210"
    assert ok(await world.admin("updateKey", name="TESTKEY1", apikey=new_secret, default_user="alice")) is True
    row = await key_row(services)
    assert row.key_hash == api_key_hash(new_secret) and row.key_hint == "N3wK"
    assert ok(await world.portal(key=new_secret))["username"] == "alice"
    assert (await world.portal()).status == 401


async def test_update_key_refuses_bad_input_and_others_keys(world: World) -> None:
    await add_testkey1(world)

    async def update(**args: str) -> Reply:
        return await world.admin("updateKey", name="TESTKEY1", **args)

    assert code(await update()) == "E_MISSING_ARGUMENT"
    assert code(await world.admin("updateKey", secure_only="1")) == "E_MISSING_ARGUMENT"
    assert code(await update(auth_by="msisdn")) == "E_UNDEFINED_INSTRUCTION"
    assert code(await update(auth_by="email")) == "E_INVALID_ARGUMENT"
    assert code(await update(source="300.1.1.1")) == "E_INVALID_ARGUMENT"
    assert code(await update(apikey="c" * 32)) == "E_INVALID_ARGUMENT"  # too weak
    assert code(await update(secure_only="2")) == "E_INVALID_ARGUMENT"
    assert code(await update(enabled="yes")) == "E_INVALID_ARGUMENT"
    assert code(await update(accesslevel="100")) == "E_INVALID_ARGUMENT"
    assert code(await update(default_user="ghost")) == "E_NOT_EXIST"
    assert code(await world.admin("updateKey", name="NOPE", enabled="0")) == "E_NOT_EXIST"
    assert code(await world.boss("updateKey", name="TESTKEY1", enabled="0")) == "E_NOT_EXIST"  # admin's key
    boss_key = {"name": "BOSSKEY", "auth_by": "username", "source": PORTAL, "apikey": "B0ssKey-0123456789abcdef",
                "accessLevel": "0", "secure_only": "0"}  # fmt: skip
    assert ok(await world.boss("addKey", **boss_key)) is True
    assert code(await world.boss("updateKey", name="BOSSKEY", accesslevel="44")) == "E_INSUFFICIENT_ACCESS"
    assert code(await world.boss("updateKey", name="BOSSKEY", apikey=SECRET)) == "E_DATA_ABORT"  # TESTKEY1's
    row = await key_row(world.services)
    assert (row.enabled, row.secure_only, row.source, row.key_hash) == (1, 0, PORTAL, api_key_hash(SECRET))


async def test_update_key_disabling_refuses_the_next_request(world: World) -> None:
    await add_testkey1(world)
    assert ok(await world.portal())["username"] == "alice"
    assert ok(await world.admin("updateKey", name="TESTKEY1", enabled="0")) is True
    assert (await world.portal()).status == 401


# --------------------------------------------------------------- revokeKey


async def test_revoke_key_answers_its_example_and_the_key_is_refused_at_once(world: World) -> None:
    services = world.services
    await add_testkey1(world)
    assert ok(await world.portal())["username"] == "alice"  # cached on this worker now
    reply, expected = await example(world, "revokeKey")
    assert reply.status == 200 and json.dumps(ok(reply)) == expected == "true"

    refused = await world.portal()
    assert refused.status == 401 and refused.code == "E_AUTH_FAILED"
    row = await key_row(services)  # kept, revoked
    assert row.revoked_at is not None and row.enabled == 0 and row.key_hash == api_key_hash(SECRET)
    assert "TESTKEY1" not in [k["name"] for k in ok(await world.admin("getKeys"))]
    assert code(await world.admin("getKey", name="TESTKEY1")) == "E_NOT_EXIST"
    assert code(await world.admin("updateKey", name="TESTKEY1", enabled="1")) == "E_NOT_EXIST"  # never back
    assert code(await world.admin("revokeKey", name="TESTKEY1")) == "E_NOT_EXIST"
    assert code(await world.admin("revokeKey")) == "E_MISSING_ARGUMENT"
    # the same secret cannot come back under a new name
    again = {"name": "TESTKEY2", "auth_by": "username", "source": PORTAL, "apikey": SECRET, "accessLevel": "0",
             "secure_only": "0"}  # fmt: skip
    assert code(await world.admin("addKey", **again)) == "E_DATA_ABORT"
    # a new key of the old name is a new key
    assert ok(await world.admin("addKey", **{**again, "name": "TESTKEY1", "apikey": "Fr3shKey-0123456789ab"})) is True
    assert ok(await world.admin("getKey", name="TESTKEY1"))["key"] == "Fr3s…"


async def test_revoke_key_of_another_owner_is_refused(world: World) -> None:
    await add_testkey1(world)
    assert code(await world.boss("revokeKey", name="TESTKEY1")) == "E_NOT_EXIST"
    assert (await key_row(world.services)).revoked_at is None
    assert ok(await world.portal())["username"] == "alice"


@dataclass
class Gate:
    port: int

    async def prepare(self, uniqueid: str) -> dict[str, str]:
        result = await run_agi_session(
            "127.0.0.1", self.port, "callPrepare", query=f"login=alice&destination={RUSSIA}", uniqueid=uniqueid
        )
        return result.variables


@pytest.fixture
async def gate(world: World, tmp_path: Path) -> AsyncIterator[Gate]:
    server = FastAGIServer(AGIBridge(Dispatcher(world.services), Spool(tmp_path / "spool")), ServerConfig())
    await server.start("127.0.0.1", 0)
    try:
        yield Gate(server.port)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_revoked_asterisk_key_refuses_the_next_fastagi_call(world: World, gate: Gate) -> None:
    """standard_world's Asterisk key (level 50, admin's, 127.0.0.1): revoked over HTTP,
    the next FastAGI session from that address finds no key."""
    std = await standard_world(world.services)
    async with world.services.db.begin() as conn:
        await conn.execute(
            api_keys.update().where(api_keys.c.key_hash == api_key_hash(std.key)).values(name="ASTERISK1")
        )
    async with world.services.db.begin() as conn:
        await conn.execute(users.update().where(users.c.username == "alice").values(rates_id=std.base))
    await world.services.cache.invalidate("profiles")
    assert (await gate.prepare("before"))["CALLGATE_RESULT"] == "Allowed"

    assert ok(await world.admin("revokeKey", name="ASTERISK1")) is True

    after = await gate.prepare("after")
    assert (after["CALLGATE_RESULT"], after["CALLGATE_ERROR"]) == ("Declined", "E_AUTH_FAILED")
    http = await world.api.get(std.key, "callPrepare", {"login": "alice", "destination": RUSSIA})
    assert http.status == 401


@pytest.mark.skipif("server" not in BACKENDS, reason="several workers need PostgreSQL and Redis")
@pytest.mark.parametrize("settings", ["server"], indirect=True)
async def test_revoke_key_reaches_every_worker_before_it_answers(world: World, tmp_path: Path) -> None:
    """Worker B holds TESTKEY1 and the Asterisk key in its cache; revokeKey answered by
    worker A; B's next HTTP request and FastAGI session are refused, without any wait.
    B's watcher is made late (its every read of the counters waits LATE_S first, as on a
    busy worker), so only revokeKey waiting for B to confirm the bump can pass this."""
    await add_testkey1(world)
    std = await standard_world(world.services)
    async with world.services.db.begin() as conn:
        await conn.execute(
            api_keys.update().where(api_keys.c.key_hash == api_key_hash(std.key)).values(name="ASTERISK1")
        )
    async with world.services.db.begin() as conn:
        await conn.execute(users.update().where(users.c.username == "alice").values(rates_id=std.base))
    await world.services.cache.invalidate("profiles")
    other = Services.build(world.services.settings)
    backend = other.cache.backend
    assert isinstance(backend, RedisBackend)
    on_time = backend._sync

    async def late_sync() -> None:
        await asyncio.sleep(LATE_S)
        await on_time()

    backend._sync = late_sync  # type: ignore[method-assign]
    agi = FastAGIServer(AGIBridge(Dispatcher(other), Spool(tmp_path / "spool-b")), ServerConfig())
    await agi.start("127.0.0.1", 0)
    gate_b = Gate(agi.port)
    try:
        async with serve(other, test_methods=False) as api_b:

            async def portal_b() -> Reply:
                return await api_b.get(SECRET, "getInfo", {}, source=PORTAL)

            for _ in range(3):  # B's cache holds both keys
                assert ok(await portal_b())["username"] == "alice"
                assert (await gate_b.prepare("b-warm"))["CALLGATE_RESULT"] == "Allowed"
            for _ in range(100):  # and B takes generations from its watcher, not from Redis
                if backend.pushed:
                    break
                await asyncio.sleep(0.05)
            assert backend.pushed
            assert ok(await world.admin("revokeKey", name="TESTKEY1")) is True
            refused = await portal_b()  # at once: no sleep between the answer and this request
            assert refused.status == 401, refused.text
            assert ok(await world.admin("revokeKey", name="ASTERISK1")) is True
            after = await gate_b.prepare("b-after")
            assert (after["CALLGATE_RESULT"], after["CALLGATE_ERROR"]) == ("Declined", "E_AUTH_FAILED")
    finally:
        agi.close()
        await agi.wait_closed()
        await other.close()
