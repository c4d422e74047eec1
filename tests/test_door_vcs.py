"""The JeraSoft VCS JSON-RPC door (POST /jsonrpc/) through real clients: jsonrpclib-pelix
(ServerProxy, dotted names, MultiCall) and jsonrpcclient, over a served callgate on both
backends; the protocol faults through raw aiohttp requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import jsonrpcclient
import pytest
import requests
from jsonrpclib import MultiCall, ServerProxy  # type: ignore[import-untyped]
from sqlalchemy import select
from structlog.testing import capture_logs

from billing_core.auth.secrets_store import md5_hex
from billing_core.container import Services
from billing_core.rating.tables import routes
from tests.doors_support import PASSWORD, Doors, open_doors
from tests.factories import make_key
from tests.http_support import serve, with_settings

T = TypeVar("T")
AUTH = {"login": "corp1", "password": PASSWORD}


@pytest.fixture
async def doors(services: Services) -> AsyncIterator[Doors]:
    async with open_doors(services) as opened:
        yield opened


async def blocking(fn: Callable[[], T]) -> T:
    """A synchronous client call, off the event loop that serves it."""
    return await asyncio.to_thread(fn)


def proxy(doors: Doors) -> Any:
    return ServerProxy(doors.jsonrpc)


async def post(doors: Doors, body: bytes | str, content_type: str = "text/xml") -> tuple[int, Any]:
    data = body.encode() if isinstance(body, str) else body
    reply = await doors.api.request("POST", doors.jsonrpc, data=data, headers={"Content-Type": content_type})
    return reply.status, (json.loads(reply.body) if reply.body else None)


async def login(doors: Doors, auth: dict[str, str] = AUTH) -> str:
    result = await blocking(lambda: proxy(doors).getInfo(auth=auth))
    assert result["code"] is True, result
    session: str = result["session_id"]
    return session


async def test_login_with_auth_then_the_sid_with_a_dotted_alias(doors: Doors) -> None:
    result = await blocking(lambda: proxy(doors).getInfo(auth=AUTH))
    assert result["code"] is True and result["errors"] == [] and result["messages"] == []
    assert result["return"]["username"] == "corp1"
    sid = result["session_id"]
    assert isinstance(sid, str) and len(sid) >= 32
    again = await blocking(lambda: proxy(doors).clients.editForm(SID=sid))
    assert again["code"] is True and again["return"]["username"] == "corp1"
    assert again["session_id"] == sid


async def test_alias_creates_a_route_and_a_list_travels_under_a_name(doors: Doors) -> None:
    sid = await login(doors)
    route = {"SID": sid, "route": "carrier-v", "type": "sip", "sip_server": "sip.v.example", "prefix": "7"}
    added = await blocking(lambda: proxy(doors).routes.add(route))  # positional: an array of one object
    assert added["code"] is True and added["return"] == {"result": True}
    async with doors.services.db.begin() as conn:
        row = (await conn.execute(select(routes).where(routes.c.route == "carrier-v"))).one()
    assert row.owner == "corp1" and row.prefix == "7"
    listed = await blocking(lambda: proxy(doors).routes.list(SID=sid))
    assert [r["route"] for r in listed["return"]["routes"]] == ["carrier-v"]


async def test_missing_argument_is_code_false_and_nothing_is_written(doors: Doors) -> None:
    sid = await login(doors)
    result = await blocking(lambda: proxy(doors).routes.add({"SID": sid, "route": "half"}))
    assert result["code"] is False and result["return"] == {}
    assert result["errors"][0]["code"] == "E_MISSING_ARGUMENT"
    assert "type" in result["errors"][0]["message"]
    assert result["session_id"] == sid
    async with doors.services.db.begin() as conn:
        assert (await conn.execute(select(routes.c.id))).first() is None


async def test_a_reseller_is_refused_on_another_resellers_user(doors: Doors) -> None:
    sid = await login(doors)
    other = await blocking(lambda: proxy(doors).clients.editForm(SID=sid, username="u2"))
    assert other["code"] is False and other["errors"][0]["code"] == "E_DOES_NOT_BELONG_TO_YOU"
    own = await blocking(lambda: proxy(doors).clients.editForm(SID=sid, username="u1"))
    assert own["code"] is True and own["return"]["username"] == "u1"
    logs = await blocking(lambda: proxy(doors).xdrs.list(SID=sid, user="u2"))
    assert logs["code"] is False and logs["errors"][0]["code"] in ("E_DOES_NOT_BELONG_TO_YOU", "E_NOT_EXIST")


async def test_multicall_is_one_batch_answered_in_order(doors: Doors) -> None:
    sid = await login(doors)

    def calls() -> list[Any]:
        batch = MultiCall(proxy(doors))
        batch.getInfo(SID=sid)
        batch.routes.list(SID=sid)
        batch.clients.editForm(SID=sid, username="u2")
        return list(batch())

    info, listed, refused = await blocking(calls)
    assert info["return"]["username"] == "corp1"
    assert listed["code"] is True and listed["return"] == {"routes": []}
    assert refused["errors"][0]["code"] == "E_DOES_NOT_BELONG_TO_YOU"


async def test_jsonrpcclient_requests_keep_their_id_and_its_type(doors: Doors) -> None:
    for request_id in (7, "seven"):
        body = jsonrpcclient.request("getInfo", params={"auth": AUTH}, id=request_id)
        reply = await blocking(lambda body=body: requests.post(doors.jsonrpc, json=body, timeout=10))  # type: ignore[misc]
        assert reply.status_code == 200
        assert reply.json()["id"] == request_id
        parsed = jsonrpcclient.parse(reply.json())
        assert isinstance(parsed, jsonrpcclient.Ok)
        assert parsed.result["code"] is True and parsed.result["return"]["username"] == "corp1"


async def test_the_seeds_own_request_without_jsonrpc_member(doors: Doors) -> None:
    sid = await login(doors)
    status, body = await post(doors, json.dumps({"method": "clients.editForm", "params": {"SID": sid}, "id": 1}))
    assert status == 200
    assert body["jsonrpc"] == "2.0" and body["id"] == 1
    assert set(body["result"]) == {"code", "return", "session_id", "messages", "errors"}
    assert body["result"]["return"]["username"] == "corp1"


async def test_the_session_ends_after_the_idle_time_and_each_use_restarts_it(services: Services) -> None:
    async with open_doors(services, session_idle_s=2) as doors:
        sid = await login(doors)
        for _ in range(2):
            await asyncio.sleep(1.3)  # 2.6 s in all: past 2 s unless each use restarted the clock
            kept = await blocking(lambda: proxy(doors).getInfo(SID=sid))
            assert kept["code"] is True, kept
        await asyncio.sleep(2.3)
        expired = await blocking(lambda: proxy(doors).getInfo(SID=sid))
        assert expired["code"] is False and expired["errors"][0]["code"] == "E_AUTH_FAILED"
        assert "expired" in expired["errors"][0]["message"]


async def test_logout_ends_the_session(doors: Doors) -> None:
    sid = await login(doors)
    out = await blocking(lambda: proxy(doors).logout(SID=sid))
    assert out["code"] is True and out["return"] == {"logged_out": True}
    after = await blocking(lambda: proxy(doors).getInfo(SID=sid))
    assert after["code"] is False and after["errors"][0]["code"] == "E_AUTH_FAILED"


async def test_another_worker_accepts_the_session_on_the_server_backend(doors: Doors) -> None:
    """A second process has its own Services; a session lives where the cache lives."""
    sid = await login(doors)
    other = Services.build(doors.services.settings)
    try:
        async with serve(other, test_methods=False) as api:
            body = {"method": "getInfo", "params": {"SID": sid}, "id": 1}
            reply = await api.request("POST", f"http://127.0.0.1:{api.port}/jsonrpc/", json=body)
        result = json.loads(reply.body)["result"]
    finally:
        await other.close()
    if doors.services.settings.redis_url:
        assert result["code"] is True and result["return"]["username"] == "corp1"
    else:  # embedded: one serving process, sessions in its memory
        assert result["code"] is False and result["errors"][0]["code"] == "E_AUTH_FAILED"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", -32700),
        (b"\xff\xfe", -32700),
        (b'{"id": 1}', -32600),
        (b'{"method": 5, "id": 1}', -32600),
        (b'{"jsonrpc": "1.5", "method": "getInfo", "id": 1}', -32600),
        (b"[]", -32600),
        (b'{"method": "clients.noSuchThing", "id": 1}', -32601),
        (b'{"method": "getInfo", "params": [1, 2], "id": 1}', -32602),
        (b"[" + b"[" * 100_000 + b"]" * 100_000 + b"]", -32600),  # over 64 KiB
    ],
)
async def test_protocol_faults_are_json_rpc_errors_never_5xx(doors: Doors, body: bytes, code: int) -> None:
    status, answer = await post(doors, body)
    assert status in (200, 413)
    assert status == 413 or len(body) < 65536
    error = answer["error"] if isinstance(answer, dict) else answer[0]["error"]
    assert error["code"] == code and error["message"]


async def test_a_batch_mixes_answers_and_faults_and_skips_notifications(doors: Doors) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "getInfo", "params": {"auth": AUTH}, "id": "a"},
        {"jsonrpc": "2.0", "method": "nope", "id": "b"},
        {"jsonrpc": "2.0", "method": "getCurrencies"},  # a notification: run, not answered
        5,
    ]
    status, answer = await post(doors, json.dumps(batch), "application/json")
    assert status == 200
    assert [item.get("id") for item in answer] == ["a", "b", None]
    assert answer[0]["result"]["code"] is True
    assert answer[1]["error"]["code"] == -32601 and answer[2]["error"]["code"] == -32600


async def test_wrong_password_then_lock_out_and_no_password_in_the_logs(doors: Doors) -> None:
    wrong = {"login": "u1", "password": "guess-123"}
    with capture_logs() as events:
        for _ in range(doors.services.settings.login_max_failures):
            failed = await blocking(lambda: proxy(doors).getInfo(auth=wrong))
            assert failed["code"] is False and failed["errors"][0]["code"] == "E_AUTH_FAILED"
            assert failed["session_id"] is None
        locked = await blocking(lambda: proxy(doors).getInfo(auth={"login": "u1", "password": PASSWORD}))
    assert locked["code"] is False and locked["errors"][0]["code"] == "E_USER_LOCKED"
    logged = json.dumps(events, default=str)
    for secret in ("guess-123", md5_hex("guess-123"), PASSWORD, md5_hex(PASSWORD)):
        assert secret not in logged


async def test_the_keys_ip_mask_applies(doors: Doors) -> None:
    body = {"method": "getInfo", "params": {"auth": AUTH}, "id": 1}
    reply = await doors.api.request("POST", doors.jsonrpc, json=body, source="127.0.0.2")
    result = json.loads(reply.body)["result"]
    assert reply.status == 200
    assert result["code"] is False and result["errors"][0]["code"] == "E_AUTH_FAILED"
    assert "IP" in result["errors"][0]["message"]


async def test_bad_argument_values_are_code_false(doors: Doors) -> None:
    sid = await login(doors)
    nested = await blocking(lambda: proxy(doors).routes.add(SID=sid, route={"deep": 1}))
    assert nested["code"] is False and nested["errors"][0]["code"] == "E_INVALID_ARGUMENT"
    bad_auth = await blocking(lambda: proxy(doors).getInfo(auth="corp1:secret"))
    assert bad_auth["code"] is False and bad_auth["errors"][0]["code"] == "E_INVALID_ARGUMENT"


async def test_a_closed_door_and_a_door_on_a_server_key(services: Services) -> None:
    async with serve(services, test_methods=False) as api:  # no CALLGATE_VCS_APIKEY
        reply = await api.request("POST", f"http://127.0.0.1:{api.port}/jsonrpc/", json={"method": "getInfo", "id": 1})
        assert json.loads(reply.body)["result"]["errors"][0]["code"] == "E_UNDEFINED_INSTRUCTION"
    server_key = await make_key(services, level=44, owner="admin", name="wrong-door")
    async with serve(with_settings(services, vcs_apikey=server_key), test_methods=False) as api:
        body = {"method": "getInfo", "params": {"auth": {"login": "admin", "password": "anything"}}, "id": 1}
        reply = await api.request("POST", f"http://127.0.0.1:{api.port}/jsonrpc/", json=body)
        result = json.loads(reply.body)["result"]
    assert result["code"] is False and result["errors"][0]["code"] == "E_UNDEFINED_INSTRUCTION"
    assert result["session_id"] is None
