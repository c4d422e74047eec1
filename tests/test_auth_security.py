"""Authentication and authorization end to end through real HTTP, on both backends.

The shim runs on 127.0.0.1 over a private registry (tests/http_support.py) with one
method per access level; the client picks its source address in 127.0.0.0/8, so key
masks and IP lock-outs are exercised with real peer addresses. Status codes follow
billing_core.http.answers: 401 bad key, 403 banned or unlisted IP, 400 query errors,
200 with result=false for user-level refusals (E_AUTH_FAILED, E_INSUFFICIENT_ACCESS,
E_DOES_NOT_BELONG_TO_YOU).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from sqlalchemy import select, update
from structlog.testing import capture_logs

from billing_core.auth.secrets_store import md5_hex
from billing_core.cache.keys import NS_BANS, NS_PROFILES
from billing_core.container import Services
from billing_core.directory.tables import api_keys, bans
from tests.factories import make_key, make_user
from tests.http_support import HOST, Api, Reply, raw_http, serve, with_settings

OTHER = "127.0.0.2"  # a second loopback source address
THIRD = "127.0.0.3"
UNKNOWN_KEY = "feedfacefeedfacefeedfacefeedface"


@pytest.fixture
async def api(services: Services) -> AsyncIterator[Api]:
    async with serve(services) as running:
        yield running


async def ban_rows(services: Services) -> list[tuple[str, datetime | None]]:
    async with services.db.begin() as conn:
        rows = (await conn.execute(select(bans.c.ip, bans.c.expires_at).order_by(bans.c.id))).all()
    return [(row.ip, row.expires_at) for row in rows]


def login(user: str, password: str = "secret") -> dict[str, str]:
    return {"login": user, "password": md5_hex(password)}


def assert_refused(reply: Reply, code: str, status: int = 200) -> None:
    assert reply.status == status, reply.text
    body = reply.json()
    assert body["result"] is False
    assert body["response"] == code
    assert body["description"]


async def resellers(services: Services) -> None:
    """Two resellers under admin: resA manages a1, a1 manages a2; resB manages b1."""
    await make_user(services, "resA", accesslevel=22)
    await make_user(services, "resB", accesslevel=22)
    await make_user(services, "a1", accesslevel=11, manager="resA")
    await make_user(services, "a2", accesslevel=11, manager="a1")
    await make_user(services, "b1", accesslevel=11, manager="resB")


# --- allowed source addresses -------------------------------------------------------------


async def test_key_masks_admit_only_listed_addresses(api: Api, services: Services) -> None:
    wildcard = await make_key(services, level=50, source="178.1.1.*,127.0.0.*")
    exact = await make_key(services, level=50, source=OTHER)
    several = await make_key(services, level=50, source="87.1.1.2, 10.0.0.*, 127.0.0.3")
    only_ten = await make_key(services, level=50, source="10.0.0.*")

    for key, source in ((wildcard, HOST), (wildcard, OTHER), (exact, OTHER), (several, THIRD)):
        reply = await api.get(key, "callOp", {"n": "5"}, source=source)
        assert reply.status == 200, (source, reply.text)
        assert reply.json() == {"result": True, "response": "Allowed 5", "description": ""}

    assert_refused(await api.get(exact, "callOp", {"n": "5"}), "E_AUTH_FAILED", 403)
    assert_refused(await api.get(several, "callOp", {"n": "5"}, source=OTHER), "E_AUTH_FAILED", 403)
    assert_refused(await api.get(only_ten, "callOp", {"n": "5"}), "E_AUTH_FAILED", 403)
    assert api.calls == ["callOp"] * 4
    # A good key from an unlisted address is refused, not locked out.
    assert await ban_rows(services) == []
    assert (await api.get(wildcard, "callOp", {"n": "1"})).status == 200


# --- access levels ------------------------------------------------------------------------


async def test_user_level_must_reach_the_method_level(api: Api, services: Services) -> None:
    await make_user(services, "alice", accesslevel=11)
    await make_user(services, "corp", accesslevel=22)
    await make_user(services, "boss", accesslevel=44)
    key = await make_key(services, level=0)

    assert_refused(await api.get(key, "resellerOp", login("alice")), "E_INSUFFICIENT_ACCESS")
    assert_refused(await api.get(key, "adminOp", login("corp")), "E_INSUFFICIENT_ACCESS")
    # Levels >= 50 are beyond every user: even a master administrator needs a server key.
    assert_refused(await api.get(key, "callOp", {**login("boss"), "n": "1"}), "E_INSUFFICIENT_ACCESS")
    assert api.calls == []

    ok = await api.get(key, "resellerOp", login("corp"))
    assert ok.status == 200 and ok.json() == {"result": True, "response": True, "description": ""}
    echo = (await api.get(key, "userEcho", {**login("alice"), "n": "1"})).json()["response"]
    assert (echo["user"], echo["actor"], echo["transport"], echo["peer"]) == ("alice", "alice", "http", HOST)
    assert api.calls == ["resellerOp", "userEcho"]


async def test_server_key_level_caps_what_it_may_call(api: Api, services: Services) -> None:
    low = await make_key(services, level=1)
    mid = await make_key(services, level=22)
    call = await make_key(services, level=50)

    assert_refused(await api.get(low, "callOp", {"n": "1"}), "E_INSUFFICIENT_ACCESS")
    # Without `login` a server key acts as its owner (admin, 44), but the key's 22 caps it.
    assert_refused(await api.get(mid, "adminOp"), "E_INSUFFICIENT_ACCESS")
    assert api.calls == []

    assert (await api.get(mid, "resellerOp")).json()["result"] is True
    assert (await api.get(call, "callOp", {"n": "3"})).json()["response"] == "Allowed 3"
    assert (await api.get(low, "userEcho", {"n": "1"})).json()["response"]["user"] == "admin"
    assert api.calls == ["resellerOp", "callOp", "userEcho"]


# --- ownership ------------------------------------------------------------------------------


async def test_server_key_acts_only_for_users_of_its_owner(api: Api, services: Services) -> None:
    await resellers(services)
    key = await make_key(services, level=22, owner="resA")

    assert_refused(await api.get(key, "userEcho", {"login": "b1", "n": "1"}), "E_DOES_NOT_BELONG_TO_YOU")
    assert_refused(await api.get(key, "userEcho", {"login": "resB", "n": "1"}), "E_DOES_NOT_BELONG_TO_YOU")
    assert_refused(await api.get(key, "userEcho", {"login": "ghost", "n": "1"}), "E_AUTH_FAILED")
    assert api.calls == []

    for who in ("resA", "a1", "a2"):  # the owner and everyone down its manager chain
        reply = await api.get(key, "userEcho", {"login": who, "n": "1"})
        assert reply.json()["response"]["user"] == who, reply.text
    assert (await api.get(key, "userEcho", {"n": "1"})).json()["response"]["user"] == "resA"


async def test_username_acts_only_for_managed_users(api: Api, services: Services) -> None:
    await resellers(services)
    client = await make_key(services, level=0)
    server = await make_key(services, level=22, owner="resA")

    def as_(user: str, target: str) -> dict[str, str]:
        return {**login(user), "username": target, "n": "1"}

    assert_refused(await api.get(client, "userEcho", as_("resA", "b1")), "E_DOES_NOT_BELONG_TO_YOU")
    assert_refused(await api.get(client, "userEcho", as_("a1", "resA")), "E_DOES_NOT_BELONG_TO_YOU")
    assert_refused(await api.get(client, "userEcho", as_("a1", "b1")), "E_DOES_NOT_BELONG_TO_YOU")
    assert_refused(await api.get(client, "userEcho", as_("resA", "ghost")), "E_NOT_EXIST")
    refused = await api.get(server, "userEcho", {"login": "a1", "username": "b1", "n": "1"})
    assert_refused(refused, "E_DOES_NOT_BELONG_TO_YOU")
    assert api.calls == []

    echo = (await api.get(client, "userEcho", as_("resA", "a2"))).json()["response"]
    assert (echo["user"], echo["actor"]) == ("resA", "a2")
    echo = (await api.get(server, "userEcho", {"login": "a1", "username": "a2", "n": "1"})).json()["response"]
    assert (echo["user"], echo["actor"]) == ("a1", "a2")


async def test_master_admin_key_acts_for_everyone(api: Api, services: Services) -> None:
    await resellers(services)
    key = await make_key(services, level=50, owner="admin")

    echo = (await api.get(key, "userEcho", {"login": "b1", "n": "1"})).json()["response"]
    assert (echo["user"], echo["actor"]) == ("b1", "b1")
    echo = (await api.get(key, "userEcho", {"login": "admin", "username": "a2", "n": "1"})).json()["response"]
    assert (echo["user"], echo["actor"]) == ("admin", "a2")
    assert (await api.get(key, "adminOp", {"login": "admin"})).json()["result"] is True
    assert api.calls == ["userEcho", "userEcho", "adminOp"]


# --- client keys ------------------------------------------------------------------------------


async def test_dynamic_client_key_needs_the_md5_password(api: Api, services: Services) -> None:
    await make_user(services, "alice", password="s3cret-pass")
    key = await make_key(services, level=0)

    refusals = [
        {"login": "alice", "password": md5_hex("wrong")},
        {"login": "alice", "password": "s3cret-pass"},  # the clear password is not accepted
        {"login": "alice"},
        {"login": "ghost", "password": md5_hex("s3cret-pass")},
        {},
    ]
    for creds in refusals:
        assert_refused(await api.get(key, "userEcho", {**creds, "n": "1"}), "E_AUTH_FAILED")
    assert api.calls == []

    good = await api.get(key, "userEcho", {**login("alice", "s3cret-pass"), "n": "1"})
    assert good.json()["response"]["user"] == "alice"
    upper = await api.get(key, "userEcho", {"login": "alice", "password": md5_hex("s3cret-pass").upper(), "n": "2"})
    assert upper.json()["response"]["n"] == 2  # hex digits are case-insensitive
    # Anonymous methods need no user; a wrong password is not a reason to lock the IP out.
    assert (await api.get(key, "anonEcho")).json()["response"]["user"] is None
    assert await ban_rows(services) == []
    assert api.calls == ["userEcho", "userEcho", "anonEcho"]


async def test_static_client_key_ignores_login_and_password(api: Api, services: Services) -> None:
    await make_user(services, "alice")
    await make_user(services, "bob")
    key = await make_key(services, level=0, default_user="alice")

    echo = (await api.get(key, "userEcho", {"login": "bob", "password": "garbage", "n": "1"})).json()["response"]
    assert (echo["user"], echo["actor"]) == ("alice", "alice")
    assert_refused(await api.get(key, "userEcho", {"username": "bob", "n": "1"}), "E_DOES_NOT_BELONG_TO_YOU")
    assert api.calls == ["userEcho"]


async def test_allowed_methods_limit_the_key(api: Api, services: Services) -> None:
    key = await make_key(services, level=50, allowed_methods="callOp,anonEcho")

    assert_refused(await api.get(key, "userEcho", {"n": "1"}), "E_INSUFFICIENT_ACCESS")
    assert_refused(await api.get(key, "adminOp"), "E_INSUFFICIENT_ACCESS")
    assert (await api.get(key, "callOp", {"n": "1"})).json()["response"] == "Allowed 1"
    assert (await api.get(key, "anonEcho")).json()["result"] is True
    assert api.calls == ["callOp", "anonEcho"]


# --- IP lock-out ------------------------------------------------------------------------------


async def test_unknown_key_locks_out_the_source_ip(api: Api, services: Services) -> None:
    # a mask this broad (65,536 addresses) does not put its addresses on the whitelist
    good = await make_key(services, level=50, source="127.0.0.0/16")

    assert_refused(await api.get(UNKNOWN_KEY, "callOp", {"n": "1"}), "E_AUTH_FAILED", 401)
    [(ip, expires_at)] = await ban_rows(services)
    assert ip == HOST and expires_at is not None  # for CALLGATE_BAN_SECONDS, an hour by default
    expires = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert_refused(await api.get(good, "callOp", {"n": "1"}), "E_AUTH_FAILED", 403)
    assert_refused(await api.get(good, "anonEcho"), "E_AUTH_FAILED", 403)
    # Only the offending address is locked out.
    assert (await api.get(good, "callOp", {"n": "2"}, source=OTHER)).json()["response"] == "Allowed 2"
    assert api.calls == ["callOp"]


async def test_disabled_key_is_rejected_and_locks_out(api: Api, services: Services) -> None:
    key = await make_key(services, level=50)
    assert (await api.get(key, "callOp", {"n": "1"})).status == 200
    async with services.db.begin() as conn:
        await conn.execute(update(api_keys).values(enabled=0))
    await services.cache.invalidate(NS_PROFILES)

    assert_refused(await api.get(key, "callOp", {"n": "1"}), "E_AUTH_FAILED", 401)
    assert [ip for ip, _ in await ban_rows(services)] == [HOST]
    assert api.calls == ["callOp"]


async def test_whitelisted_ip_is_never_locked_out(services: Services) -> None:
    async with serve(with_settings(services, ban_whitelist=("127.0.0.1",))) as api:
        good = await make_key(services, level=50)
        assert_refused(await api.get(UNKNOWN_KEY, "callOp", {"n": "1"}), "E_AUTH_FAILED", 401)
        assert await ban_rows(services) == []
        assert (await api.get(good, "callOp", {"n": "1"})).json()["response"] == "Allowed 1"
        # The whitelist is per address: 127.0.0.2 is not on it.
        assert_refused(await api.get(UNKNOWN_KEY, "callOp", {"n": "1"}, source=OTHER), "E_AUTH_FAILED", 401)
        assert [ip for ip, _ in await ban_rows(services)] == [OTHER]


async def test_ban_seconds_zero_is_the_specs_indefinite_term(services: Services) -> None:
    async with serve(with_settings(services, ban_seconds=0)) as api:
        assert_refused(await api.get(UNKNOWN_KEY, "anonEcho"), "E_AUTH_FAILED", 401)
        assert await ban_rows(services) == [(HOST, None)]


async def test_bounded_ban_expires(services: Services) -> None:
    async with serve(with_settings(services, ban_seconds=3600)) as api:
        good = await make_key(services, level=50, source="127.0.0.0/16")
        assert_refused(await api.get(UNKNOWN_KEY, "callOp", {"n": "1"}), "E_AUTH_FAILED", 401)
        [(ip, expires_at)] = await ban_rows(services)
        assert ip == HOST and expires_at is not None
        assert_refused(await api.get(good, "callOp", {"n": "1"}), "E_AUTH_FAILED", 403)

        async with services.db.begin() as conn:
            await conn.execute(update(bans).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        await services.cache.invalidate(NS_BANS)
        assert (await api.get(good, "callOp", {"n": "1"})).json()["response"] == "Allowed 1"
        assert api.calls == ["callOp"]


# --- malformed queries ------------------------------------------------------------------------


async def test_query_errors_answer_400_without_running_anything(api: Api, services: Services) -> None:
    key = await make_key(services, level=50)

    assert_refused(await api.get(key, "noSuchMethod"), "E_UNKNOWN_METHOD", 400)
    assert_refused(await api.get(key, "callOp", {"n": "1"}, version="2.1"), "E_INCORRECT_API_VERSION", 400)
    assert_refused(await api.get(key, "userEcho"), "E_MISSING_ARGUMENT", 400)
    assert "n" in (await api.get(key, "userEcho")).json()["description"]
    assert_refused(await api.get(key, "userEcho", {"n": "twelve"}), "E_INVALID_ARGUMENT", 400)
    assert_refused(await api.get(key, "userEcho", {"n": "1", "mode": "warp"}), "E_INVALID_ARGUMENT", 400)
    assert_refused(await api.get(key, "userEcho", {"n": "1", "amount": "NaN"}), "E_INVALID_ARGUMENT", 400)
    assert_refused(await api.get(key, "userEcho", {"n": str(2**40)}), "E_INVALID_ARGUMENT", 400)
    assert api.calls == []
    # A wrong version is refused before the key is looked at: no lock-out for it.
    assert_refused(await api.get(UNKNOWN_KEY, "callOp", version="3.0"), "E_INCORRECT_API_VERSION", 400)
    assert await ban_rows(services) == []


async def test_hostile_bodies_are_refused_with_400_or_413(api: Api, services: Services) -> None:
    key = await make_key(services, level=50)
    json_type = {"Content-Type": "application/json"}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    deep = "[" * 2000 + "]" * 2000

    cases: list[tuple[dict[str, Any], int]] = [
        ({"data": b'{"n": 1,', "headers": json_type}, 400),  # truncated JSON
        ({"data": b"\xff\xfe\x00garbage", "headers": json_type}, 400),
        ({"data": deep.encode(), "headers": json_type}, 400),
        ({"data": ('{"n": ' + deep + "}").encode(), "headers": json_type}, 400),
        ({"data": b'{"n": {"nested": 1}}', "headers": json_type}, 400),
        ({"data": b'["n", 1]', "headers": json_type}, 400),
        ({"data": os.urandom(512) + b"\xff", "headers": form}, 400),  # binary garbage as a form
        ({"data": b"n=1&x=%00", "headers": form}, 400),  # NUL smuggled by percent-encoding
        ({"data": b"n=1&note=%FF%FE", "headers": form}, 400),  # not UTF-8
        ({"data": b"n=1&note=\xe9t\xe9", "headers": form}, 400),  # raw Latin-1 declared as UTF-8
        ({"data": b"\x00\x01\x02", "headers": {"Content-Type": "application/octet-stream"}}, 400),
        ({"data": b"n=1&note=" + b"x" * (64 * 1024), "headers": form}, 413),
        ({"data": b"n=1&" + b"&".join(b"f%d=1" % i for i in range(150)), "headers": form}, 400),  # too many fields
        ({"data": b"n=1&note=" + b"x" * 5000, "headers": form}, 400),  # one value too long
    ]
    for kwargs, status in cases:
        reply = await api.post(key, "userEcho", **kwargs)
        assert reply.status == status, (kwargs, reply.text)
        assert reply.json()["response"] == "E_INVALID_ARGUMENT"
        assert "Traceback" not in reply.text

    many = "&".join(f"f{i}=1" for i in range(120))
    for query in ("n=1&note=%C3", "n=1&note=%00", f"n=1&{many}", "n=1&note=" + "q" * 4097):
        reply = await api.request("GET", api.url(key, "userEcho", query=query))
        assert (reply.status, reply.code) == (400, "E_INVALID_ARGUMENT"), query

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b"n=1&note="
        for _ in range(80):
            yield b"y" * 1024

    assert_refused(await api.post(key, "userEcho", data=chunks(), headers=form), "E_INVALID_ARGUMENT", 413)
    assert api.calls == []
    assert await ban_rows(services) == []  # a bad body with a good key is not a lock-out reason
    assert (await api.post(key, "userEcho", data={"n": "4"})).json()["response"]["n"] == 4
    # A '%' that is not an escape is not hostile: it is a '%' (as browsers and PHP read it).
    lone = await api.request("GET", api.url(key, "userEcho", query="n=5&note=%zz%"))
    assert (lone.status, lone.json()["response"]["note"]) == (200, "%zz%")
    lone = await api.post(key, "userEcho", data=b"n=6&note=100%", headers=form)
    assert (lone.status, lone.json()["response"]["note"]) == (200, "100%")


async def test_binary_garbage_in_the_path(api: Api, services: Services) -> None:
    key = await make_key(services, level=33)

    # Undecodable bytes in the method slot: just an unknown method.
    assert_refused(await api.get(key, "%FF%00%C0"), "E_UNKNOWN_METHOD", 400)
    # Raw non-ASCII bytes never reach the application: aiohttp's parser answers 400.
    raw = await raw_http(api.port, b"GET /billing/api/2.2/\xff\xfe\x00/callOp HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.") and b" 400 " in raw.split(b"\r\n", 1)[0]
    assert b"Traceback" not in raw
    assert await ban_rows(services) == []
    # Garbage in the key slot is an incorrect key: 401 and a lock-out.
    assert_refused(await api.get("%FF%FE%00%01", "callOp"), "E_AUTH_FAILED", 401)
    assert [ip for ip, _ in await ban_rows(services)] == [HOST]
    assert api.calls == []


# --- secrets and logs -------------------------------------------------------------------------


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[Any]]:
    """Every structlog event (tracebacks rendered as in production) at every level."""
    previous = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    caplog.set_level(logging.DEBUG)
    try:
        with capture_logs(processors=[structlog.processors.format_exc_info]) as events:
            yield events
    finally:
        structlog.configure(wrapper_class=previous)


async def test_passwords_and_keys_never_reach_the_logs(
    api: Api, services: Services, all_logs: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    await make_user(services, "alice", password="clear-Pa55")
    key = await make_key(services, level=0, source="127.0.0.*")
    good, wrong = md5_hex("clear-Pa55"), md5_hex("wrong-Pa55")

    for password in (wrong, "clear-Pa55"):
        refused = await api.get(key, "userEcho", {"login": "alice", "password": password, "n": "1"})
        assert_refused(refused, "E_AUTH_FAILED")
    ok = await api.post(key, "userEcho", data={"login": "alice", "password": good, "n": "1"})
    assert ok.json()["response"]["user"] == "alice"
    # Unparseable request line quoting the key and the password (aiohttp logs those itself).
    await raw_http(api.port, f"GET /billing/api/2.2/{key}/userEcho?password={good}&x=\x01 HTTP/1.1\r\n\r\n".encode())
    # An unknown key (logged as a lock-out), then the source is banned.
    assert (await api.get(UNKNOWN_KEY, "userEcho", {"password": good}, source=OTHER)).status == 401
    assert (await api.get(key, "userEcho", {"password": good}, source=OTHER)).status == 403

    requests = [e for e in all_logs if e.get("event") == "http.request"]
    assert len(requests) == 5 and {e["status"] for e in requests} == {200, 401, 403}
    assert all(set(e) >= {"method", "status", "peer", "duration_ms"} for e in requests)
    assert any(e.get("event") == "bans.banned" for e in all_logs)
    logged = [repr(e) for e in all_logs] + [caplog.text]
    for secret in (good, wrong, "clear-Pa55", key, UNKNOWN_KEY):
        assert not [line for line in logged if secret in line], secret


# --- gaps found in billing_core/api/dispatch.py, now closed ------------------------------------


async def test_locked_user_cannot_log_in(api: Api, services: Services) -> None:
    await make_user(services, "alice", active=-1)
    key = await make_key(services, level=0)
    assert_refused(await api.get(key, "userEcho", {**login("alice"), "n": "1"}), "E_USER_LOCKED")
    assert api.calls == []


async def test_username_cannot_act_for_a_higher_level(api: Api, services: Services) -> None:
    await make_user(services, "sysadmin", accesslevel=33)
    key = await make_key(services, level=0)
    reply = await api.get(key, "userEcho", {**login("sysadmin"), "username": "admin", "n": "1"})
    assert_refused(reply, "E_DOES_NOT_BELONG_TO_YOU")


async def test_secure_only_key_is_refused_over_plain_http(api: Api, services: Services) -> None:
    key = await make_key(services, level=50)
    async with services.db.begin() as conn:
        await conn.execute(update(api_keys).values(secure_only=1))
    await services.cache.invalidate(NS_PROFILES)
    reply = await api.get(key, "callOp", {"n": "1"})
    assert reply.json()["result"] is False
    assert api.calls == []


async def test_handler_exception_messages_stay_out_of_the_logs(
    api: Api, services: Services, all_logs: list[Any]
) -> None:
    key = await make_key(services, level=50)
    assert (await api.get(key, "boomOp", {"n": "1", "note": "hunter2"})).status == 500
    assert any(e.get("event") == "api.unexpected_error" for e in all_logs)
    assert not [e for e in all_logs if "hunter2" in repr(e)]
