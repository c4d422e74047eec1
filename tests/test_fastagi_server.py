"""fastagi.server driven by the Asterisk simulator, recorded transcripts and raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
import uvloop

from fastagi import wire
from fastagi.contract import VAR_ANSWER, VAR_ERROR, VAR_RESULT
from fastagi.messages import AGIAnswer, AGIDispatcher, AGIRequest
from fastagi.server import FastAGIServer, ServerConfig, peer_ip_of, start_server
from tests.asterisk_sim import (
    NO_REPLY,
    CommandTooLongError,
    PipeliningError,
    build_env,
    load_transcript,
    replay_transcript,
    run_agi_session,
    session_transcripts,
    transcript_env,
)

HOST = "127.0.0.1"
BOUND_S = 10.0  # "finishes within a generous bound": 2-core CI machines are noisy
# Generous limits, except the one limit a test is about (0.3 s).
RELAXED = ServerConfig(env_timeout_s=BOUND_S / 2, reply_timeout_s=BOUND_S / 2, dispatch_timeout_s=BOUND_S / 2)
SHORT_DISPATCH = replace(RELAXED, dispatch_timeout_s=0.3)
SHORT_REPLY = replace(RELAXED, reply_timeout_s=0.3)
SHORT_ENV = replace(RELAXED, env_timeout_s=0.3)
CALL_TRANSCRIPTS = [p for p in session_transcripts() if load_transcript(p)["script"] in ("callPrepare", "callFinish")]

ServerFactory = Callable[..., Awaitable[FastAGIServer]]


class Echo:
    """A dispatcher that answers Allowed and echoes the script and args into variables."""

    def __init__(self, extra: dict[str, str] | None = None) -> None:
        self.requests: list[AGIRequest] = []
        self.extra = extra or {}

    async def __call__(self, request: AGIRequest) -> AGIAnswer:
        self.requests.append(request)
        variables = {VAR_RESULT: "Allowed", VAR_ERROR: "", VAR_ANSWER: f"echo {request.script}",
                     "ECHO_SCRIPT": request.script}
        variables |= {f"ECHO_{key.upper()}": value for key, value in request.args.items()}
        return AGIAnswer(variables | self.extra)


def answering(variables: dict[str, str]) -> AGIDispatcher:
    async def dispatch(request: AGIRequest) -> AGIAnswer:
        return AGIAnswer(dict(variables))

    return dispatch


async def raising(request: AGIRequest) -> AGIAnswer:
    raise RuntimeError("boom")


async def sleeping_forever(request: AGIRequest) -> AGIAnswer:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def declined(code: str) -> dict[str, str]:
    return {VAR_RESULT: "Declined", VAR_ERROR: code, VAR_ANSWER: f"Declined {code}"}


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    servers: list[FastAGIServer] = []

    async def factory(dispatch: AGIDispatcher, config: ServerConfig = RELAXED) -> FastAGIServer:
        server = FastAGIServer(dispatch, config)
        await server.start(HOST, 0)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.close()
        await asyncio.wait_for(server.wait_closed(), BOUND_S)
        assert server.open_sessions == 0


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(BOUND_S):
        while not condition():  # noqa: ASYNC110 - polls server state that has no event to wait on
            await asyncio.sleep(0.01)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    try:
        async with asyncio.timeout(BOUND_S):
            return await reader.read()
    except ConnectionResetError:
        return b""


# --- the env block ---------------------------------------------------------------------------


async def test_env_block_split_across_reads(make_server: ServerFactory) -> None:
    echo = Echo()
    server = await make_server(echo)
    result = await run_agi_session(HOST, server.port, "callPrepare", query="destination=1234502&callerid=&prior=1",
                                   split_env=True)
    assert echo.requests[0].args == {"destination": "1234502", "callerid": "", "prior": "1"}
    assert result.variables["ECHO_DESTINATION"] == "1234502"
    assert result.closed_by_server


async def test_env_block_one_byte_per_write(make_server: ServerFactory) -> None:
    echo = Echo()
    server = await make_server(echo)
    reader, writer = await asyncio.open_connection(HOST, server.port)
    env = "".join(f"{line}\n" for line in build_env("callFinish", query="status=BUSY")) + "\n"
    for byte in env.encode():
        writer.write(bytes([byte]))
        await writer.drain()
    command = await asyncio.wait_for(reader.readline(), BOUND_S)
    assert command.startswith(b"EXEC MSet ")
    writer.write(b"200 result=0\n")
    assert await read_to_eof(reader) == b""
    writer.close()
    assert echo.requests[0].args == {"status": "BUSY"}
    assert echo.requests[0].env["agi_accountcode"] == ""


@pytest.mark.parametrize("path", CALL_TRANSCRIPTS, ids=lambda p: p.name)
async def test_recorded_session_replays(make_server: ServerFactory, path: Path) -> None:
    echo = Echo()
    server = await make_server(echo)
    result = await replay_transcript(HOST, server.port, path)
    transcript = load_transcript(path)
    request = echo.requests[0]
    assert request.script == transcript["script"]
    assert request.env == transcript_env(transcript)
    assert request.peer_ip == HOST
    # File names say script, destination, priority and (callFinish) DIALSTATUS.
    _, script, destination, prior, *status = path.stem.split("-")
    assert request.args["destination"] == destination
    assert request.args["prior"] == prior.removeprefix("prior")
    # 001-014 were recorded without login (the key's owner pays); 015 on, the dialplan sends it
    # on every request, callFinish included.
    assert ("login" in request.args) is (int(path.name[:3]) >= 15)
    if script == "callFinish":
        assert request.args["status"] == status[0]
        assert set(request.args) - {"login"} == {
            "destination", "callerid", "prior", "length", "status", "answered_ms", "cause"
        }
        # Only an answered call has a positive answered_ms: Dial leaves ANSWEREDTIME_MS empty
        # (003, 009, 014), the failover branch sends 0 (025).
        answered_ms = request.args["answered_ms"]
        assert (answered_ms.isdigit() and int(answered_ms) > 0) is (status[0] == "ANSWER")
    assert result.variables == (await echo(request)).variables
    assert result.closed_by_server
    assert len(result.commands) == 1
    # Asterisk writes HANGUP after the server's half-close on every session (channel up or
    # not); a caller who hung up during the decision adds one before the first command (017).
    hangups = 2 if status == ["HANGUP"] else 1
    assert result.raw_sent.count(b"HANGUP\n") == hangups
    assert result.raw_sent.endswith(b"HANGUP\n")


async def test_answered_ms_from_a_recorded_answered_call(make_server: ServerFactory) -> None:
    echo = Echo()
    server = await make_server(echo)
    path = next(p for p in CALL_TRANSCRIPTS if p.name.startswith("011-"))
    result = await replay_transcript(HOST, server.port, path)
    args = echo.requests[0].args
    assert (args["length"], args["answered_ms"], args["status"], args["cause"]) == ("2", "2001", "ANSWER", "16")
    assert result.variables["ECHO_ANSWERED_MS"] == "2001"


async def test_unknown_script_is_passed_through(make_server: ServerFactory) -> None:
    echo = Echo()
    server = await make_server(echo)
    result = await run_agi_session(HOST, server.port, "noSuchScript", query="a=1", args=["b=2", "loose"])
    assert echo.requests[0].script == "noSuchScript"
    assert echo.requests[0].args == {"a": "1", "b": "2"}
    assert result.variables["ECHO_SCRIPT"] == "noSuchScript"


@pytest.mark.parametrize("name", ["006-explore-commands-and-hangup.json", "010-h-extension-after-hangup.json"])
async def test_recorded_sessions_of_other_scripts_reach_the_dispatcher(make_server: ServerFactory, name: str) -> None:
    echo = Echo()
    server = await make_server(echo)
    path = next(p for p in session_transcripts() if p.name == name)
    result = await replay_transcript(HOST, server.port, path)
    request = echo.requests[0]
    assert request.script == load_transcript(path)["script"]
    assert result.variables["ECHO_SCRIPT"] == request.script
    if name.startswith("006"):
        assert request.args == {"destination": "5551234", "prior": "1"}
        assert (request.env["agi_arg_1"], request.env["agi_arg_2"]) == ("first arg", "second")


async def test_malformed_env_line_is_declined(make_server: ServerFactory) -> None:
    echo = Echo()
    server = await make_server(echo)
    lines = [*build_env("callPrepare", query="destination=1"), "this line has no separator"]
    result = await run_agi_session(HOST, server.port, "", env_lines=lines)
    assert result.variables == declined("E_INVALID_ARGUMENT")
    assert echo.requests == []


async def test_missing_network_script_is_declined(make_server: ServerFactory) -> None:
    echo = Echo()
    server = await make_server(echo)
    result = await run_agi_session(HOST, server.port, "")  # AGI(agi://host): no script line at all
    assert result.variables == declined("E_MISSING_ARGUMENT")
    assert echo.requests == []


async def test_empty_script_is_declined(make_server: ServerFactory) -> None:
    server = await make_server(Echo())
    result = await run_agi_session(HOST, server.port, "", query="destination=1")
    assert result.variables == declined("E_INVALID_ARGUMENT")


@pytest.mark.parametrize("shape", ["one_long_line", "many_lines"])
async def test_oversized_env_is_declined(make_server: ServerFactory, shape: str) -> None:
    echo = Echo()
    server = await make_server(echo, replace(RELAXED, max_env_bytes=4096))
    extra = {"agi_big": "x" * 10000} if shape == "one_long_line" else {f"agi_x{i}": "y" * 100 for i in range(60)}
    result = await run_agi_session(HOST, server.port, "callPrepare", query="destination=1", extra_env=extra)
    assert result.variables == declined("E_INVALID_ARGUMENT")
    assert echo.requests == []


# --- the dispatcher --------------------------------------------------------------------------


async def test_dispatcher_exception_is_declined(make_server: ServerFactory) -> None:
    server = await make_server(raising)
    result = await run_agi_session(HOST, server.port, "callPrepare")
    assert result.variables == declined("E_LUA_EXCEPTION")


async def test_dispatcher_timeout_is_declined_in_bounded_time(make_server: ServerFactory) -> None:
    server = await make_server(sleeping_forever, SHORT_DISPATCH)
    started = time.monotonic()
    result = await run_agi_session(HOST, server.port, "callFinish", timeout_s=BOUND_S)
    assert result.variables == declined("E_SQL_ERROR")
    assert time.monotonic() - started < BOUND_S


@pytest.mark.parametrize(
    "bad", [{"CALLGATE_ERROR": ""}, {VAR_RESULT: "Allowed", "BAD NAME": "x"}, {VAR_RESULT: "Allowed", "N": 5}]
)
async def test_unusable_answer_is_declined(make_server: ServerFactory, bad: dict[str, Any]) -> None:
    server = await make_server(answering(bad))
    result = await run_agi_session(HOST, server.port, "callPrepare")
    assert result.variables == declined("E_LUA_EXCEPTION")


# --- commands and replies --------------------------------------------------------------------

THREE_LINES = {VAR_RESULT: "Allowed", "Q1": 'say "a"', "Q2": 'say "b"', "PLAIN": "x,y"}


@pytest.mark.parametrize("hangup_before", [1, 2, 3])
async def test_out_of_band_hangup_is_not_a_reply(make_server: ServerFactory, hangup_before: int) -> None:
    server = await make_server(answering(THREE_LINES))
    result = await run_agi_session(HOST, server.port, "callFinish", hangup_before_reply=hangup_before)
    # A server that took HANGUP for a reply would send the next command early: the sim raises.
    assert result.variables == THREE_LINES
    assert len(result.commands) == 3
    assert result.replies == ["200 result=1", "200 result=1", "200 result=0"]
    assert result.closed_by_server
    assert result.raw_sent.count(b"HANGUP\n") == 2  # the out-of-band one and the one at the end


async def test_hangup_at_end_is_harmless(make_server: ServerFactory) -> None:
    server = await make_server(Echo())
    for _ in range(3):
        result = await run_agi_session(HOST, server.port, "callPrepare", hangup_at_end=True)
        assert result.variables[VAR_RESULT] == "Allowed"
        assert result.raw_sent.endswith(b"200 result=0\nHANGUP\n")
    await wait_until(lambda: server.open_sessions == 0)


async def test_one_command_in_flight(make_server: ServerFactory) -> None:
    server = await make_server(answering(THREE_LINES))
    result = await run_agi_session(HOST, server.port, "callPrepare", pipeline_grace_s=0.02)
    assert result.pipelined == []
    assert len(result.commands) == len(result.replies) == 3


async def test_the_sim_catches_a_pipelining_server() -> None:
    async def pipelining(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline() not in (b"\n", b""):
            pass
        writer.write(b'SET VARIABLE A "1"\nSET VARIABLE B "2"\n')
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(pipelining, HOST, 0)
    try:
        with pytest.raises(PipeliningError) as caught:
            await run_agi_session(HOST, server.sockets[0].getsockname()[1], "callPrepare")
        assert caught.value.result.commands == ['SET VARIABLE A "1"']
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "refusal",
    [
        "510 Invalid or unknown command",
        "511 Command Not Permitted on a dead channel or intercept routine",
        "520-Invalid command syntax.  Proper usage follows:\n Usage: EXEC <app> <options>\n520 End of proper usage.",
        "failure",
    ],
)
async def test_refused_command_ends_the_session(make_server: ServerFactory, refusal: str) -> None:
    server = await make_server(answering(THREE_LINES))
    result = await run_agi_session(HOST, server.port, "callPrepare", responder=lambda command, variables: refusal)
    assert len(result.commands) == 1
    assert result.closed_by_server


async def test_silent_asterisk_is_closed_after_reply_timeout(make_server: ServerFactory) -> None:
    server = await make_server(Echo(), SHORT_REPLY)
    started = time.monotonic()
    result = await run_agi_session(HOST, server.port, "callPrepare",
                                   responder=lambda command, variables: NO_REPLY, timeout_s=BOUND_S)
    assert result.closed_by_server
    assert len(result.commands) == 1
    assert time.monotonic() - started < BOUND_S


@pytest.mark.parametrize("sent", [b"", b"agi_network: yes\nagi_network_script: callPrepare\n"])
async def test_client_without_a_complete_env_block_is_dropped(make_server: ServerFactory, sent: bytes) -> None:
    echo = Echo()
    server = await make_server(echo, SHORT_ENV)
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(sent)
    assert await read_to_eof(reader) == b""
    writer.close()
    await wait_until(lambda: server.open_sessions == 0)
    assert echo.requests == []


async def test_early_disconnect_leaves_the_server_serving(make_server: ServerFactory) -> None:
    echo = Echo()
    server = await make_server(echo, ServerConfig(env_timeout_s=30.0, reply_timeout_s=30.0))
    for count in (0, 1, 5, 12):
        result = await run_agi_session(HOST, server.port, "callPrepare", disconnect_after_env_lines=count)
        assert not result.closed_by_server
    await wait_until(lambda: server.open_sessions == 0)
    result = await run_agi_session(HOST, server.port, "callPrepare", query="destination=7")
    assert result.variables["ECHO_DESTINATION"] == "7"
    assert len(echo.requests) == 1


async def test_asterisk_leaving_during_dispatch_does_not_cancel_it(make_server: ServerFactory) -> None:
    # callFinish is the CDR: it must be written even if Asterisk has already gone.
    finished = asyncio.Event()

    async def finish(request: AGIRequest) -> AGIAnswer:
        await asyncio.sleep(0.1)
        finished.set()
        return AGIAnswer({VAR_RESULT: "Saved"})

    server = await make_server(finish)
    _, writer = await asyncio.open_connection(HOST, server.port)
    writer.write("".join(f"{line}\n" for line in build_env("callFinish")).encode() + b"\n")
    await writer.drain()
    writer.close()
    await asyncio.wait_for(finished.wait(), BOUND_S)
    await wait_until(lambda: server.open_sessions == 0)


async def test_reset_mid_env_is_quiet(make_server: ServerFactory) -> None:
    server = await make_server(Echo(), ServerConfig(env_timeout_s=30.0))
    _, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(b"agi_network: yes\nagi_netw")
    await writer.drain()
    writer.transport.abort()  # RST, not FIN
    await wait_until(lambda: server.open_sessions == 0)
    result = await run_agi_session(HOST, server.port, "callFinish")
    assert result.variables[VAR_RESULT] == "Allowed"


# --- values ----------------------------------------------------------------------------------

ROUND_TRIP = {
    VAR_RESULT: "Allowed",
    "COMMAS": "1,2,,3,",
    "SPACES": " two  words ",
    "EQUALS": "a=b=c",
    "UTF8": "Jürgen 电话 📞",
    "QUOTES": 'say "hi" \'there\'',
    "BACKSLASHES": "C:\\dir\\,\\",
    "EMPTY": "",
    "BRACKETS": "Saved RussiaMobile [7901/7902] via [r1 (x",
}


async def test_values_round_trip(make_server: ServerFactory) -> None:
    server = await make_server(answering(ROUND_TRIP))
    result = await run_agi_session(HOST, server.port, "callPrepare")
    assert result.variables == ROUND_TRIP
    assert len(result.commands) == 2  # QUOTES needs SET VARIABLE; the rest is one MSet


async def test_a_10_kb_answer_is_sent_as_several_lines(make_server: ServerFactory) -> None:
    answer = {VAR_RESULT: "Allowed"} | {f"CALLGATE_V{i:03d}": f"{i}," + "v" * 100 for i in range(100)}
    server = await make_server(answering(answer))
    result = await run_agi_session(HOST, server.port, "callPrepare")
    assert result.variables == answer
    assert len(result.commands) >= 2
    assert all(len(command.encode()) + 1 < 8192 for command in result.commands)


async def test_legacy_asterisk_with_a_2k_buffer(make_server: ServerFactory) -> None:
    answer = {VAR_RESULT: "Allowed"} | {f"V{i}": "w" * 200 for i in range(30)}
    legacy = ServerConfig(max_line_bytes=wire.LEGACY_MAX_LINE_BYTES)
    server = await make_server(answering(answer), legacy)
    result = await run_agi_session(HOST, server.port, "callPrepare", agi_buf_len=2048)
    assert result.variables == answer


async def test_too_long_lines_would_desynchronise_an_old_asterisk(make_server: ServerFactory) -> None:
    # Why max_line_bytes matters: res_agi.c runs the rest of an over-long line as a 2nd command.
    answer = {VAR_RESULT: "Allowed"} | {f"V{i}": "w" * 200 for i in range(30)}
    server = await make_server(answering(answer))
    with pytest.raises(CommandTooLongError):
        await run_agi_session(HOST, server.port, "callPrepare", agi_buf_len=2048)


@contextlib.contextmanager
def _captured_logs(level: int) -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event from `level` up, whatever level the suite configured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


@pytest.fixture
def debug_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with _captured_logs(logging.DEBUG) as logs:
        yield logs


async def test_secrets_are_not_logged(make_server: ServerFactory, debug_logs: list[MutableMapping[str, Any]]) -> None:
    server = await make_server(answering({VAR_RESULT: "Allowed", "CALLGATE_PIN": "4711", "SIP_PASSWORD": "hunter2"}))
    result = await run_agi_session(HOST, server.port, "authorizeCall", query="pin=8642&auth_token=s3cret")
    logs = list(debug_logs)
    assert result.variables["CALLGATE_PIN"] == "4711"
    assert {"agi_request", "agi_answer", "agi_session_done"} <= {event["event"] for event in logs}
    text = repr(logs)
    for secret in ("4711", "hunter2", "8642", "s3cret"):
        assert secret not in text


# --- load and shutdown -----------------------------------------------------------------------


async def test_200_concurrent_sessions(make_server: ServerFactory) -> None:
    echo = Echo()
    server = await make_server(echo, ServerConfig(env_timeout_s=20.0, reply_timeout_s=20.0, dispatch_timeout_s=20.0))
    sessions = [
        run_agi_session(HOST, server.port, "callPrepare", query=f"destination={i}&prior=1", uniqueid=f"u.{i}",
                        timeout_s=30.0)
        for i in range(200)
    ]
    results = await asyncio.gather(*sessions)
    for i, result in enumerate(results):
        assert result.variables["ECHO_DESTINATION"] == str(i)
        assert result.closed_by_server
    assert sorted(r.uniqueid for r in echo.requests) == sorted(f"u.{i}" for i in range(200))


async def test_close_is_prompt_with_idle_connections_open() -> None:
    server = FastAGIServer(Echo(), ServerConfig(env_timeout_s=60.0))
    await server.start(HOST, 0)
    clients = [await asyncio.open_connection(HOST, server.port) for _ in range(5)]
    clients[0][1].write(b"agi_network: yes\n")  # one is halfway through its env block
    await wait_until(lambda: server.open_sessions == 5)
    started = time.monotonic()
    server.close()
    await asyncio.wait_for(server.wait_closed(), BOUND_S)
    assert time.monotonic() - started < BOUND_S
    assert server.open_sessions == 0
    for reader, writer in clients:
        assert await read_to_eof(reader) == b""
        writer.close()


async def test_close_lets_a_dispatched_session_finish() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: AGIRequest) -> AGIAnswer:
        entered.set()
        await release.wait()
        return AGIAnswer({VAR_RESULT: "Saved"})

    server = FastAGIServer(slow, ServerConfig(dispatch_timeout_s=BOUND_S))
    await server.start(HOST, 0)
    session = asyncio.create_task(run_agi_session(HOST, server.port, "callFinish", timeout_s=BOUND_S))
    await asyncio.wait_for(entered.wait(), BOUND_S)
    server.close()
    release.set()
    await asyncio.wait_for(server.wait_closed(), BOUND_S)
    assert (await session).variables == {VAR_RESULT: "Saved"}


async def test_start_server_returns_a_plain_asyncio_server() -> None:
    server = await start_server(Echo(), HOST, 0, env_timeout_s=1.0)
    assert isinstance(server, asyncio.Server)
    port = server.sockets[0].getsockname()[1]
    result = await run_agi_session(HOST, port, "callPrepare", query="destination=5")
    assert result.variables["ECHO_DESTINATION"] == "5"
    reader, writer = await asyncio.open_connection(HOST, port)  # idle
    server.close()
    await asyncio.wait_for(server.wait_closed(), BOUND_S)
    assert await read_to_eof(reader) == b""  # dropped after env_timeout_s
    writer.close()


def test_runs_on_uvloop() -> None:
    async def scenario() -> dict[str, str]:
        async with FastAGIServer(Echo(), RELAXED) as server:
            await server.start(HOST, 0)
            results = await asyncio.gather(
                *(run_agi_session(HOST, server.port, "callPrepare", query=f"destination={i}") for i in range(20))
            )
            return {r.variables["ECHO_DESTINATION"]: r.variables[VAR_RESULT] for r in results}

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(scenario()) == {str(i): "Allowed" for i in range(20)}


class FakeWriter:
    def __init__(self, peer: Any) -> None:
        self.peer = peer

    def get_extra_info(self, name: str) -> Any:
        return self.peer if name == "peername" else None


@pytest.mark.parametrize(
    ("peer", "expected"),
    [(("10.1.2.3", 4573), "10.1.2.3"), (("::ffff:10.1.2.3", 4573, 0, 0), "10.1.2.3"),
     (("2001:db8::1", 4573, 0, 0), "2001:db8::1"), (None, "")],
)
def test_peer_ip(peer: Any, expected: str) -> None:
    assert peer_ip_of(FakeWriter(peer)) == expected  # type: ignore[arg-type]


def test_the_env_builder_matches_a_recorded_block() -> None:
    recorded = transcript_env(load_transcript(CALL_TRANSCRIPTS[0]))
    built = build_env("callPrepare", query="destination=1234502&callerid=&prior=1")
    assert [line.split(": ", 1)[0] for line in built] == list(recorded)
    assert re.fullmatch(r"agi_request: agi://127\.0\.0\.1:4573/callPrepare\?.*", built[2])


# --- the protocol's edges --------------------------------------------------------------------


def env_bytes(script: str = "callPrepare", *, query: str = "destination=1", newline: bytes = b"\n") -> bytes:
    lines = build_env(script, query=query)
    return b"".join(line.encode() + newline for line in lines) + newline


@pytest.mark.parametrize("chunk", [0, 1, 7], ids=["one_write", "byte_by_byte", "7_bytes"])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
async def test_env_block_in_any_chunks_and_line_ends(make_server: ServerFactory, chunk: int, newline: bytes) -> None:
    # A value with invalid UTF-8 and a "\r" of its own: decoded the same whole or line by line.
    echo = Echo()
    server = await make_server(echo)
    raw = env_bytes(newline=newline).replace(b"agi_callerid: unknown", b"agi_callerid: \xe2\x82\runknown\r")
    reader, writer = await asyncio.open_connection(HOST, server.port)
    for start in range(0, len(raw), chunk or len(raw)):
        writer.write(raw[start : start + (chunk or len(raw))])
        await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), BOUND_S)).startswith(b"EXEC MSet ")
    writer.write(b"200 result=0" + newline)
    assert await read_to_eof(reader) == b""
    writer.close()
    env = echo.requests[0].env
    assert echo.requests[0].args == {"destination": "1"}
    assert env["agi_callerid"] == "\ufffd\runknown" + ("\r" if newline == b"\r\n" else "")  # one "\r" goes
    assert env["agi_accountcode"] == ""


@pytest.mark.parametrize("split_env", [False, True])
async def test_a_large_env_block_within_the_limit_is_served(make_server: ServerFactory, split_env: bool) -> None:
    echo = Echo()
    server = await make_server(echo)
    result = await run_agi_session(HOST, server.port, "callPrepare", query="destination=3",
                                   extra_env={"agi_big": "b" * 30000}, split_env=split_env)
    assert result.variables["ECHO_DESTINATION"] == "3"
    assert echo.requests[0].env["agi_big"] == "b" * 30000


async def test_an_empty_env_block_is_declined(make_server: ServerFactory) -> None:
    server = await make_server(Echo())
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(b"\r\n")
    assert b"E_MISSING_ARGUMENT" in await asyncio.wait_for(reader.readline(), BOUND_S)
    writer.write(b"200 result=0\n")
    assert await read_to_eof(reader) == b""
    writer.close()


@pytest.fixture
def info_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with _captured_logs(logging.INFO) as logs:
        yield logs


def done_event(logs: list[MutableMapping[str, Any]]) -> MutableMapping[str, Any]:
    [done] = [event for event in logs if event["event"] == "agi_session_done"]
    return done


async def test_hangup_while_dispatching_is_out_of_band(make_server: ServerFactory,
                                                      info_logs: list[MutableMapping[str, Any]]) -> None:
    hung_up = asyncio.Event()

    async def waits_for_the_hangup(request: AGIRequest) -> AGIAnswer:
        await hung_up.wait()
        await asyncio.sleep(0.05)  # let the HANGUP line reach the server
        return AGIAnswer({VAR_RESULT: "Saved"})

    server = await make_server(waits_for_the_hangup)
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(env_bytes("callFinish"))
    writer.write(b"HANGUP\n")
    await writer.drain()
    hung_up.set()
    assert await asyncio.wait_for(reader.readline(), BOUND_S) == b'EXEC MSet "CALLGATE_RESULT=Saved"\n'
    writer.write(b"200 result=0\n")
    assert await read_to_eof(reader) == b""
    writer.close()
    await wait_until(lambda: server.open_sessions == 0)
    done = done_event(info_logs)
    assert (done["outcome"], done["commands"], done["hangups"]) == ("answered", 1, 1)


async def test_an_endless_usage_block_is_a_protocol_error(make_server: ServerFactory,
                                                          info_logs: list[MutableMapping[str, Any]]) -> None:
    server = await make_server(answering(THREE_LINES))
    endless = "\n".join(["520-Invalid command syntax.  Proper usage follows:"] + [" Usage: " + "u" * 100] * 1000)
    result = await run_agi_session(HOST, server.port, "callPrepare", responder=lambda command, variables: endless)
    assert result.closed_by_server
    await wait_until(lambda: server.open_sessions == 0)
    assert done_event(info_logs)["outcome"] == "protocol_error"


async def test_a_flood_while_dispatching_is_held_bounded(make_server: ServerFactory,
                                                         info_logs: list[MutableMapping[str, Any]]) -> None:
    release = asyncio.Event()

    async def slow(request: AGIRequest) -> AGIAnswer:
        await release.wait()
        return AGIAnswer({VAR_RESULT: "Allowed"})

    server = await make_server(slow)
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(env_bytes() + b"x" * 4_000_000 + b"\n")
    await asyncio.sleep(0.3)  # the server reads what it holds, then stops reading
    [session] = server._sessions
    assert len(session._buffer) <= 2 * 65536 + 262144
    release.set()
    assert (await asyncio.wait_for(reader.readline(), BOUND_S)).startswith(b"EXEC MSet ")
    assert await read_to_eof(reader) == b""
    writer.close()
    await wait_until(lambda: server.open_sessions == 0)
    assert done_event(info_logs)["outcome"] == "protocol_error"  # the flood, read as a reply, is too long


async def test_a_dispatcher_timeout_error_is_declined_as_a_backend_timeout(make_server: ServerFactory) -> None:
    async def times_out(request: AGIRequest) -> AGIAnswer:
        raise TimeoutError

    server = await make_server(times_out)
    result = await run_agi_session(HOST, server.port, "callPrepare")
    assert result.variables == declined("E_SQL_ERROR")


def _coro_name(task: asyncio.Task[Any]) -> str:
    return getattr(task.get_coro(), "__name__", "")


async def test_a_cancelled_dispatch_drops_the_session(make_server: ServerFactory,
                                                      info_logs: list[MutableMapping[str, Any]]) -> None:
    server = await make_server(sleeping_forever)
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(env_bytes())
    await writer.drain()
    await wait_until(lambda: any(_coro_name(t) == "_run_dispatch" for t in asyncio.all_tasks()))
    [task] = [t for t in asyncio.all_tasks() if _coro_name(t) == "_run_dispatch"]
    task.cancel()
    assert await read_to_eof(reader) == b""
    writer.close()
    await wait_until(lambda: server.open_sessions == 0)
    assert "agi_session_cancelled" in {event["event"] for event in info_logs}
    assert "agi_session_done" not in {event["event"] for event in info_logs}


async def test_debug_arguments_are_not_computed_without_debug(make_server: ServerFactory,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(values: Any) -> dict[str, str]:
        raise AssertionError("redacted() called with debug logging off")

    # The session logs the request and its base class the answer (fastagi.session_dispatch)
    monkeypatch.setattr("fastagi.session.redacted", boom)
    monkeypatch.setattr("fastagi.session_dispatch.redacted", boom)
    server = await make_server(Echo())
    result = await run_agi_session(HOST, server.port, "callPrepare", query="destination=9")
    assert result.variables["ECHO_DESTINATION"] == "9"


class FakeTransport:
    """Just enough of a transport to drive a session by hand."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (HOST, 4573) if name == "peername" else default


async def test_a_full_write_buffer_holds_the_next_command() -> None:
    from fastagi.server import _Session

    server = FastAGIServer(answering(THREE_LINES), RELAXED)
    session = _Session(server, asyncio.get_running_loop())
    transport = FakeTransport()
    session.connection_made(transport)  # type: ignore[arg-type]
    session.pause_writing()
    session.data_received(env_bytes())
    await asyncio.sleep(0.01)  # the dispatch
    assert transport.written == []
    session.resume_writing()
    assert len(transport.written) == 1
    session.pause_writing()
    session.data_received(b"200 result=1\n")
    assert len(transport.written) == 1
    session.resume_writing()
    assert len(transport.written) == 2
    session.data_received(b"200 result=1\n200 result=0\n")
    assert len(transport.written) == 3 and transport.closed
    session.connection_lost(None)
    assert server.open_sessions == 0


async def test_a_connection_accepted_after_close_is_aborted() -> None:
    from fastagi.server import _Session

    server = FastAGIServer(Echo(), RELAXED)
    server.close()
    transport = FakeTransport()
    session = _Session(server, asyncio.get_running_loop())
    session.connection_made(transport)  # type: ignore[arg-type]
    assert transport.aborted
    assert server.open_sessions == 0
    session.connection_lost(None)
    await asyncio.wait_for(server.wait_closed(), BOUND_S)


@pytest.mark.parametrize(
    ("replies", "outcome", "commands"),
    [(b"", "peer_gone", 1), (b"200 result=1\n", "peer_gone", 2),
     (b"200 result=1\n200 result=1\n200 result=0\n", "answered", 3)],
)
async def test_a_peer_half_closed_during_dispatch_still_gets_the_answer(
    make_server: ServerFactory, info_logs: list[MutableMapping[str, Any]], replies: bytes, outcome: str, commands: int
) -> None:
    async def slow(request: AGIRequest) -> AGIAnswer:
        await asyncio.sleep(0.1)
        return AGIAnswer(dict(THREE_LINES))

    server = await make_server(slow)
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(env_bytes() + replies)  # replies sent ahead are read as the replies, in turn
    writer.write_eof()
    received = await read_to_eof(reader)
    writer.close()
    await wait_until(lambda: server.open_sessions == 0)
    done = done_event(info_logs)
    assert (done["outcome"], done["commands"]) == (outcome, commands)
    assert received.count(b"\n") == commands
