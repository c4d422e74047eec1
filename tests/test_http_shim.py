"""The HTTP shim as a transport: argument decoding, answer forms, routes, health, metrics,
listening. Authentication and authorization paths are in test_auth_security.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import aiohttp
import pytest
from prometheus_client import REGISTRY

from billing_core.api.dispatch import Dispatcher
from billing_core.auth.secrets_store import md5_hex
from billing_core.container import Services
from billing_core.db.engine import Database, create_engine
from billing_core.directory.bans import Bans
from billing_core.directory.profiles import Profiles
from billing_core.http import bound_port, start_http
from tests.factories import make_key, make_user
from tests.http_support import HOST, Api, make_test_registry, serve, with_settings

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def api(services: Services) -> AsyncIterator[Api]:
    async with serve(services) as running:
        yield running


@pytest.fixture
async def key(services: Services) -> str:
    return await make_key(services, level=50)


# --- arguments ------------------------------------------------------------------------------


async def test_query_and_form_merge_body_wins_last_repeat_wins(api: Api, key: str) -> None:
    reply = await api.post(key, "userEcho", query="n=1&n=2&k=3&note=query", data={"k": "4", "mode": "slow"})
    assert reply.status == 200
    echo = reply.json()["response"]
    assert (echo["n"], echo["k"], echo["mode"], echo["note"]) == (2, 4, "slow", "query")

    reply = await api.post(key, "userEcho", query="n=1", data=b"n=5&n=6", headers=FORM)
    assert reply.json()["response"]["n"] == 6
    assert api.calls == ["userEcho", "userEcho"]


async def test_form_encodings_decode_exactly(api: Api, key: str) -> None:
    # '+' is a space, %2B a plus, UTF-8 percent-escapes and raw UTF-8 both arrive as text.
    reply = await api.get(key, "userEcho", {"n": "1", "note": "a b+é"})
    assert reply.json()["response"]["note"] == "a b+é"
    reply = await api.post(key, "userEcho", data="n=1&note=x+y%2B%C3%A9-ü".encode(), headers=FORM)
    assert reply.json()["response"]["note"] == "x y+é-ü"
    latin1 = {"Content-Type": "application/x-www-form-urlencoded; charset=iso-8859-1"}
    reply = await api.post(key, "userEcho", data=b"n=1&note=%E9t%E9", headers=latin1)
    assert reply.json()["response"]["note"] == "été"
    # Without a Content-Type a body is read as a form (what curl -d sends is a form).
    reply = await api.request("POST", api.url(key, "userEcho"), data=b"n=8", skip_auto_headers=["Content-Type"])
    assert reply.json()["response"]["n"] == 8


async def test_multipart_form(api: Api, key: str) -> None:
    form = aiohttp.FormData()
    form.add_field("n", "9")
    form.add_field("note", "multi part")
    form.add_field("mode", "slow")
    reply = await api.post(key, "userEcho", data=form())
    assert reply.status == 200
    echo = reply.json()["response"]
    assert (echo["n"], echo["note"], echo["mode"]) == (9, "multi part", "slow")

    upload = aiohttp.FormData()
    upload.add_field("n", "1")
    upload.add_field("note", b"file body", filename="x.txt", content_type="text/plain")
    refused = await api.post(key, "userEcho", data=upload())
    assert (refused.status, refused.code) == (400, "E_INVALID_ARGUMENT")
    garbage = {"Content-Type": "multipart/form-data; boundary=zzz"}
    refused = await api.post(key, "userEcho", data=b"\xff\x00 no boundary here", headers=garbage)
    assert (refused.status, refused.code) == (400, "E_INVALID_ARGUMENT")
    assert api.calls == ["userEcho"]


async def test_json_body_object_of_scalars(api: Api, key: str) -> None:
    reply = await api.post(key, "userEcho", json={"n": 5, "mode": "slow", "amount": 0.1, "note": True, "k": None})
    assert reply.status == 200
    echo = reply.json()["response"]
    assert (echo["n"], echo["k"], echo["mode"], echo["note"]) == (5, 7, "slow", "true")
    assert echo["amount"] == Decimal("0.1")
    # Numbers keep their exact text: no float on the way in either.
    reply = await api.post(
        key, "moneySum", data=b'{"a": 0.1, "b": 12345678901234.2}', headers={"Content-Type": "application/json"}
    )
    assert '"response": 12345678901234.3' in reply.text


# --- answers --------------------------------------------------------------------------------


async def test_json_envelope_and_exact_money(api: Api, key: str) -> None:
    reply = await api.get(key, "moneySum", {"a": "0.1", "b": "0.2"})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
    assert reply.text == '{"result": true, "response": 0.3, "description": ""}'
    reply = await api.get(key, "moneySum", {"a": "12345678901234.5678", "b": "0.0001"})
    assert reply.json()["response"] == Decimal("12345678901234.5679")
    assert "12345678901234.5679" in reply.text


async def test_answer_per_return_kind(api: Api, key: str) -> None:
    assert (await api.get(key, "resellerOp")).json() == {"result": True, "response": True, "description": ""}
    assert (await api.get(key, "callOp", {"n": "7"})).json() == {
        "result": True,
        "response": "Allowed 7",
        "description": "",
    }
    declined = await api.get(key, "callOp", {"n": "0"})
    assert declined.status == 200
    assert declined.json() == {
        "result": False,
        "response": "Declined E_INSUFFICIENT_MONEY",
        "description": "Insufficient money",
    }
    pdf = await api.get(key, "pdfOp")
    assert (pdf.status, pdf.content_type, pdf.body) == (200, "application/pdf", b"%PDF-1.4\n\x00\xff binary")
    assert api.calls == ["resellerOp", "callOp", "callOp", "pdfOp"]


async def test_plain_answers_for_sip_extension_and_id_keys(api: Api, services: Services) -> None:
    await make_user(services, "alice", sip_extension="10000")
    server = await make_key(services, level=50, auth_by="sip_extension")
    client = await make_key(services, level=0, auth_by="sip_extension")
    by_id = await make_key(services, level=50, auth_by="id")

    def plain(reply: object) -> tuple[int, str, str]:
        assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"  # type: ignore[attr-defined]
        return reply.status, reply.text, reply.content_type  # type: ignore[attr-defined]

    assert plain(await api.get(server, "callOp", {"n": "5"}))[:2] == (200, "Allowed 5")
    assert plain(await api.get(server, "callOp", {"n": "0"}))[:2] == (200, "Declined E_INSUFFICIENT_MONEY")
    assert plain(await api.get(server, "callOp"))[:2] == (400, "E_MISSING_ARGUMENT")
    assert plain(await api.get(by_id, "resellerOp"))[:2] == (200, "true")
    assert plain(await api.get(by_id, "moneySum", {"a": "1E+1", "b": "0.50"}))[:2] == (200, "10.50")
    creds = {"login": "10000", "password": md5_hex("secret")}
    status, body, _ = plain(await api.get(client, "userEcho", {**creds, "n": "3"}))
    assert status == 200 and '"user": "alice"' in body and '"n": 3' in body
    assert plain(await api.get(client, "userEcho", {"login": "10000", "password": "x", "n": "3"}))[:2] == (
        200,
        "E_AUTH_FAILED",
    )
    # Before a key is identified the answer cannot know its form: JSON.
    unknown = await api.get("0" * 32, "callOp", {"n": "1"}, source="127.0.0.9")
    assert (unknown.status, unknown.content_type, unknown.code) == (401, "application/json", "E_AUTH_FAILED")


async def test_plain_auth_by_is_configurable(services: Services) -> None:
    async with serve(with_settings(services, plain_auth_by=("username",))) as api:
        sip = await make_key(services, level=50, auth_by="sip_extension")
        by_name = await make_key(services, level=50, auth_by="username")
        assert (await api.get(sip, "callOp", {"n": "1"})).json()["response"] == "Allowed 1"
        reply = await api.get(by_name, "callOp", {"n": "1"})
        assert (reply.content_type, reply.text) == ("text/plain", "Allowed 1")


async def test_handler_bug_is_500_without_details(api: Api, key: str) -> None:
    reply = await api.get(key, "boomOp", {"n": "1", "note": "hunter2"})
    assert reply.status == 500
    assert reply.json() == {
        "result": False,
        "response": "E_LUA_EXCEPTION",
        "description": "Critical method execution error",
    }
    assert "hunter2" not in reply.text and "Traceback" not in reply.text
    # The server is still fine.
    assert (await api.get(key, "resellerOp")).status == 200


# --- routes ---------------------------------------------------------------------------------


async def test_unknown_paths_and_verbs(api: Api, key: str) -> None:
    base = f"http://{HOST}:{api.port}"
    for path in ("/", "/nope", "/billing/api/2.2/onlykey", f"/billing/api/2.2/{key}/callOp/extra"):
        reply = await api.request("GET", base + path)
        assert (reply.status, reply.content_type) == (404, "application/json"), path
        assert reply.json()["result"] is False and reply.code == "E_UNKNOWN_METHOD"
    for verb in ("PUT", "DELETE", "PATCH"):
        reply = await api.request(verb, api.url(key, "resellerOp"))
        assert (reply.status, reply.code) == (405, "E_UNKNOWN_METHOD")
        assert set(reply.headers["Allow"].split(",")) == {"GET", "POST"}
    head = await api.request("HEAD", api.url(key, "resellerOp"))
    assert head.status == 405
    assert api.calls == []  # none of them ran the method


async def test_healthz(api: Api) -> None:
    reply = await api.request("GET", f"http://{HOST}:{api.port}/healthz")
    assert (reply.status, reply.text) == (200, "ok")


async def test_healthz_is_503_when_the_database_does_not_answer(services: Services) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept and never answer, like a hung database host

    server = await asyncio.start_server(silent, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    hung = Database(create_engine(f"postgresql+asyncpg://postgres@{HOST}:{port}/none"), timeout_s=30)
    refused = Database(create_engine(f"postgresql+asyncpg://postgres@{HOST}:1/none"))
    try:
        for db in (hung, refused):
            async with serve(replace(services, db=db)) as api:
                reply = await api.request("GET", f"http://{HOST}:{api.port}/healthz")
                assert (reply.status, reply.text) == (503, "unavailable")
    finally:
        await hung.dispose()
        await refused.dispose()
        server.close()


async def test_database_outage_is_503_retry_later(services: Services, key: str) -> None:
    refused = Database(create_engine(f"postgresql+asyncpg://postgres@{HOST}:1/none"))
    try:
        down = replace(
            services,
            db=refused,
            profiles=Profiles(refused, services.cache),
            bans=Bans(refused, services.cache, services.settings),
        )
        async with serve(down) as api:
            reply = await api.get(key, "callOp", {"n": "1"})
            assert (reply.status, reply.code) == (503, "E_SQL_ERROR")
            assert api.calls == []
    finally:
        await refused.dispose()


def _count(method: str, result: str) -> float:
    return REGISTRY.get_sample_value("callgate_http_requests_total", {"method": method, "result": result}) or 0.0


async def test_metrics_count_requests_by_method_and_result(api: Api, key: str) -> None:
    before_ok, before_missing = _count("callOp", "ok"), _count("callOp", "E_MISSING_ARGUMENT")
    before_unknown, before_declined = _count("-", "E_UNKNOWN_METHOD"), _count("callOp", "E_INSUFFICIENT_MONEY")
    before_hist = REGISTRY.get_sample_value("callgate_http_request_duration_seconds_count", {"method": "callOp"}) or 0
    await api.get(key, "callOp", {"n": "1"})
    await api.get(key, "callOp", {"n": "2"})
    await api.get(key, "callOp")
    await api.get(key, "callOp", {"n": "0"})
    await api.get(key, "noSuchMethod")
    assert _count("callOp", "ok") == before_ok + 2
    assert _count("callOp", "E_MISSING_ARGUMENT") == before_missing + 1
    assert _count("callOp", "E_INSUFFICIENT_MONEY") == before_declined + 1
    assert _count("-", "E_UNKNOWN_METHOD") == before_unknown + 1
    hist = REGISTRY.get_sample_value("callgate_http_request_duration_seconds_count", {"method": "callOp"})
    assert hist == before_hist + 4

    exposition = await api.request("GET", f"http://{HOST}:{api.port}/metrics")
    assert exposition.status == 200 and exposition.content_type == "text/plain"
    assert f'callgate_http_requests_total{{method="callOp",result="ok"}} {before_ok + 2}' in exposition.text


# --- listening ------------------------------------------------------------------------------


async def test_start_http_on_port_zero_and_with_reuse_port(services: Services, key: str) -> None:
    registry, calls = make_test_registry()
    dispatcher = Dispatcher(services, registry=registry)
    first = await start_http(dispatcher, HOST, 0, reuse_port=True)
    try:
        port = bound_port(first)
        assert port > 0
        second = await start_http(dispatcher, HOST, port, reuse_port=True)  # SO_REUSEPORT: workers share it
        try:
            assert bound_port(second) == port
            with pytest.raises(OSError):
                await start_http(dispatcher, HOST, port)  # without it the port is taken
            async with aiohttp.ClientSession() as session:
                url = f"http://{HOST}:{port}/billing/api/2.2/{key}/callOp?n=4"
                async with session.get(url) as resp:
                    assert (resp.status, (await resp.json())["response"]) == (200, "Allowed 4")
        finally:
            await second.cleanup()
    finally:
        await first.cleanup()
    assert calls == ["callOp"]
