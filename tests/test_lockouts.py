"""Lock-outs as a real operator meets them, through real HTTP on both backends: wrong
passwords lock the login and then ban the address (they were judged forever), the
addresses of call-control keys (the Asterisk hosts) are on the whitelist and never
banned, and FastAGI is never stopped by a ban."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.cache.keys import NS_BANS
from billing_core.catalog.registry import TextAnswer
from billing_core.clock import utcnow
from billing_core.container import Services
from billing_core.directory.login_guard import login_counter
from billing_core.directory.tables import bans, disa_failures
from tests.factories import make_key, make_user
from tests.http_support import HOST, Api, make_test_registry, serve
from tests.test_auth_security import OTHER, THIRD, UNKNOWN_KEY, assert_refused, ban_rows, login


@pytest.fixture
async def api(services: Services) -> AsyncIterator[Api]:
    async with serve(services) as running:
        yield running


async def test_wrong_passwords_lock_the_login(api: Api, services: Services) -> None:
    await make_user(services, "alice", password="right")
    await make_user(services, "bob", password="right")
    key = await make_key(services, level=0, source="127.0.0.*")
    limit = services.settings.login_max_failures

    for _ in range(limit):
        assert_refused(await api.get(key, "userEcho", {**login("alice", "wrong"), "n": "1"}), "E_AUTH_FAILED")
    # locked: the right password too, from any address; nothing ran
    for source in (HOST, OTHER):
        reply = await api.get(key, "userEcho", {**login("alice", "right"), "n": "1"}, source=source)
        assert_refused(reply, "E_USER_LOCKED")
    assert api.calls == []
    # another login is not affected, and the address is not banned (yet)
    assert (await api.get(key, "userEcho", {**login("bob", "right"), "n": "1"})).json()["response"]["user"] == "bob"
    assert await ban_rows(services) == []

    async with services.db.begin() as conn:  # the lock-out is over
        await conn.execute(
            update(disa_failures)
            .where(disa_failures.c.callerid == login_counter("username", "alice"))
            .values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert (await api.get(key, "userEcho", {**login("alice", "right"), "n": "1"})).json()["response"]["user"] == "alice"


async def test_parallel_guesses_cannot_exceed_the_login_limit(api: Api, services: Services) -> None:
    """Wrong passwords at once (30 took 1.1 s and were all judged): `limit` of them are
    judged, the rest meet the lock-out, and then the right one does too. (15: fewer than
    the address's own limit, which would ban it.)"""
    await make_user(services, "alice", password="right")
    key = await make_key(services, level=0, source="127.0.0.*")
    limit = services.settings.login_max_failures

    replies = await asyncio.gather(
        *(api.get(key, "userEcho", {**login("alice", f"guess{n}"), "n": "1"}) for n in range(15))
    )
    codes = sorted(reply.code for reply in replies)
    assert codes == ["E_AUTH_FAILED"] * limit + ["E_USER_LOCKED"] * (15 - limit)
    assert_refused(await api.get(key, "userEcho", {**login("alice", "right"), "n": "1"}), "E_USER_LOCKED")


async def test_many_logins_guessed_from_one_address_ban_it(api: Api, services: Services) -> None:
    key = await make_key(services, level=0, source="127.0.0.*")
    await make_user(services, "alice", password="right")
    limit = services.settings.login_ip_max_failures
    assert limit > services.settings.login_max_failures

    for n in range(limit):  # unknown logins count too: a lock-out tells nothing about who exists
        reply = await api.get(key, "userEcho", {**login(f"user{n}", "x"), "n": "1"}, source=OTHER)
        assert_refused(reply, "E_AUTH_FAILED")
    assert [ip for ip, _ in await ban_rows(services)] == [OTHER]
    reply = await api.get(key, "userEcho", {**login("alice", "right"), "n": "1"}, source=OTHER)
    assert_refused(reply, "E_AUTH_FAILED", 403)
    # only that address
    assert (await api.get(key, "userEcho", {**login("alice", "right"), "n": "1"})).json()["response"]["user"] == "alice"


async def test_an_empty_password_is_no_guess(api: Api, services: Services) -> None:
    await make_user(services, "alice", password="right")
    key = await make_key(services, level=0)
    for _ in range(services.settings.login_max_failures + 1):
        assert_refused(await api.get(key, "userEcho", {"login": "alice", "n": "1"}), "E_AUTH_FAILED")
    assert (await api.get(key, "userEcho", {**login("alice", "right"), "n": "1"})).json()["response"]["user"] == "alice"


async def test_call_control_key_addresses_are_never_banned(api: Api, services: Services) -> None:
    """One bad key from the Asterisk host banned it, and every call with it."""
    asterisk = await make_key(services, level=50, source=HOST)
    await make_key(services, level=50, source="127.0.0.*", name="lan")  # a /24: whitelisted too
    await make_key(services, level=50, source="127.0.0.0/16", name="wide")  # too broad to whitelist
    await make_key(services, level=33, source="127.0.0.*", name="portal")  # not call control

    for source in (HOST, OTHER):
        assert_refused(await api.get(UNKNOWN_KEY, "callOp", {"n": "1"}, source=source), "E_AUTH_FAILED", 401)
    assert await ban_rows(services) == []
    assert (await api.get(asterisk, "callOp", {"n": "2"})).json()["response"] == "Allowed 2"


async def test_a_narrow_mask_is_what_whitelists(api: Api, services: Services) -> None:
    await make_key(services, level=50, source="127.0.0.0/16", name="wide")
    await make_key(services, level=22, source=THIRD, name="reseller")  # below call control
    for source in (OTHER, THIRD):
        assert_refused(await api.get(UNKNOWN_KEY, "callOp", {"n": "1"}, source=source), "E_AUTH_FAILED", 401)
    assert sorted(ip for ip, _ in await ban_rows(services)) == [OTHER, THIRD]


async def test_a_ban_recorded_on_an_asterisk_host_no_longer_applies(api: Api, services: Services) -> None:
    async with services.db.begin() as conn:
        await conn.execute(bans.insert().values(ip=HOST, source="auto", reason="before", created_at=utcnow()))
    await services.cache.invalidate(NS_BANS)
    portal = await make_key(services, level=33, source=HOST, name="portal")
    assert_refused(await api.get(portal, "anonEcho"), "E_AUTH_FAILED", 403)
    asterisk = await make_key(services, level=50, source=HOST)
    assert (await api.get(asterisk, "callOp", {"n": "3"})).json()["response"] == "Allowed 3"
    assert (await api.get(portal, "anonEcho")).status == 200


async def test_fastagi_is_never_stopped_by_a_ban(services: Services) -> None:
    registry, calls = make_test_registry()
    dispatcher = Dispatcher(services, registry=registry)
    await make_key(services, level=50, source="127.0.0.0/16")  # broad: its addresses can be banned
    assert await services.bans.ban(HOST, reason="a bad key over HTTP")
    http = await dispatcher.call("anonEcho", {}, Credentials(HOST, "http", apikey=UNKNOWN_KEY))
    assert http.error is not None and http.error.code.value == "E_AUTH_FAILED"

    agi = await dispatcher.call("callOp", {"n": "4"}, Credentials(HOST, "agi", call_uid="c1"))
    assert isinstance(agi.value, TextAnswer) and agi.value.text == "Allowed 4"
    assert calls == ["callOp"]
