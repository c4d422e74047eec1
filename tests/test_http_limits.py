"""The HTTP side cannot starve call control, and what aiohttp cannot parse is answered in
the API's envelope without echoing it. Real sockets on both backends.

Slow and partial connections (19,985 of them once held every file descriptor) are closed
after the idle time-out or refused past the cap, while a FastAGI callPrepare over a real
socket is answered. Deadlines are generous bounds for polling, not timing assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from billing_core.api.dispatch import Dispatcher
from billing_core.auth.secrets_store import md5_hex
from billing_core.container import Services
from billing_core.http import bound_port, start_http
from billing_core.http.connections import HttpLimits
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer
from tests.asterisk_sim import run_agi_session
from tests.factories import make_key
from tests.http_support import HOST, Api, raw_http, serve
from tests.test_agi_end_to_end import build_world

CAP = 40
SLOW = 300  # connections opened at once: far past the cap, well inside the test machine's limits
DEADLINE_S = 15.0
PASSWORD = md5_hex("hunter2-secret")


@pytest.fixture
async def api(services: Services) -> AsyncIterator[Api]:
    async with serve(services) as running:
        yield running


def envelope(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head, raw[:300]
    import json

    answer = json.loads(body)
    assert set(answer) == {"result", "response", "description"} and answer["result"] is False
    return status, str(answer["response"])


# --- what aiohttp cannot parse -------------------------------------------------------------


async def test_over_long_request_lines_and_headers_are_not_echoed(api: Api, services: Services) -> None:
    key = await make_key(services, level=0)
    path = f"/billing/api/2.2/{key}/userEcho?login=alice&password={PASSWORD}"
    cases = [
        f"GET {path}&pad={'x' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),  # request line > 8 KiB
        f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Pad: {'y' * 9000}\r\n\r\n".encode(),  # one header > 8 KiB
        f"GET {path} HTTP/1.1\r\nHost: x\r\nbroken header line {key}\r\n\r\n".encode(),  # not a header
    ]
    with capture_logs() as logs:
        for request in cases:
            raw = await raw_http(api.port, request)
            assert envelope(raw) == (400, "E_INVALID_ARGUMENT"), raw[:300]
            for secret in (key, PASSWORD, "xxxxxxxx", "yyyyyyyy"):
                assert secret.encode() not in raw
    assert not [entry for entry in logs if key in repr(entry) or PASSWORD in repr(entry)]
    assert api.calls == []


@pytest.mark.parametrize(
    "body",
    [
        b"--b\r\nBroken\r\n\r\n1\r\n--b--\r\n",  # a part header without a colon (was a 500)
        b"--b\r\nContent-Disposition: form-data; name=\"n\"\r\nX: " + b"z" * 9000 + b"\r\n\r\n1\r\n--b--\r\n",
        b"--b\r\n: nameless\r\n\r\n1\r\n--b--\r\n",
        b"--b\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n1",  # truncated
        b"garbage",
    ],
)
async def test_broken_multipart_bodies_are_400(api: Api, services: Services, body: bytes) -> None:
    key = await make_key(services, level=50)
    head = (
        f"POST /billing/api/2.2/{key}/userEcho HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    raw = await raw_http(api.port, head.encode() + body)
    assert envelope(raw) == (400, "E_INVALID_ARGUMENT"), raw[:300]
    assert api.calls == []


# --- slow connections and call control ------------------------------------------------------


@pytest.fixture
async def world(services: Services, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The HTTP shim with a small cap and short time-outs, and FastAGI, in one process."""
    import billing_core.api.methods  # noqa: F401 - registers every method

    await build_world(services)
    portal = await make_key(services, level=33, source=HOST, name="portal")
    dispatcher = Dispatcher(services)
    limits = HttpLimits(max_connections=CAP, idle_timeout_s=1.0, body_timeout_s=1.0)
    runner = await start_http(dispatcher, HOST, 0, limits=limits)
    agi = FastAGIServer(AGIBridge(dispatcher, Spool(tmp_path / "spool")))
    await agi.start(HOST, 0)
    try:
        yield {"http": bound_port(runner), "agi": agi.port, "portal": portal}
    finally:
        agi.close()
        await agi.wait_closed()
        await runner.cleanup()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed (a reset after its answer keeps the answer)."""
    received = b""
    async with asyncio.timeout(DEADLINE_S):
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except ConnectionResetError:
            return received or b"<reset>"
    return received


async def test_slow_connections_are_refused_past_the_cap_and_closed_while_fastagi_answers(
    world: dict[str, Any],
) -> None:
    port = world["http"]
    connections = [await asyncio.open_connection(HOST, port) for _ in range(SLOW)]
    # a partial request head on every connection, as the 19,985 did
    for _, writer in connections:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    answers = await asyncio.gather(*(read_until_closed(reader) for reader, _ in connections))

    refused = [raw for raw in answers if raw.startswith(b"HTTP/1.1 503 ")]
    assert len(refused) == SLOW - CAP, [raw[:60] for raw in answers[:3]]
    assert envelope(refused[0]) == (503, "E_UNDEFINED_INSTRUCTION")
    # the CAP admitted ones were held only until the idle time-out, and never answered
    assert [raw for raw in answers if not raw.startswith(b"HTTP/1.1 503 ")] == [b""] * CAP
    for _, writer in connections:
        writer.close()


async def test_fastagi_answers_while_http_connections_are_held(world: dict[str, Any]) -> None:
    port = world["http"]
    held = [await asyncio.open_connection(HOST, port) for _ in range(SLOW)]
    for _, writer in held:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    await asyncio.sleep(0)
    prepared = await run_agi_session(
        HOST, world["agi"], "callPrepare", query="login=10000&destination=79010000001&prior=1", uniqueid="h1"
    )
    assert prepared.variables["CALLGATE_RESULT"] == "Allowed"
    assert prepared.variables["CALLGATE_MAXTIME"] == "90"
    await asyncio.gather(*(read_until_closed(reader) for reader, _ in held))
    # all closed: the cap is free again and the API answers
    reply = await raw_http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    for _, writer in held:
        writer.close()


async def test_a_slow_body_is_408_and_an_idle_keep_alive_is_closed(world: dict[str, Any]) -> None:
    port, key = world["http"], world["portal"]
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(
        f"POST /billing/api/2.2/{key}/getCurrencies HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nlogin=ad".encode()
    )
    raw = await read_until_closed(reader)
    assert envelope(raw) == (408, "E_INVALID_ARGUMENT"), raw[:300]
    writer.close()

    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive by default in HTTP/1.1
    first = await asyncio.wait_for(reader.readuntil(b"ok"), timeout=DEADLINE_S)
    assert first.startswith(b"HTTP/1.1 200 ")
    assert await read_until_closed(reader) == b""  # then idle: closed by the server
    writer.close()
