"""The AMI client against a fake Asterisk that speaks the real protocol (tests/fake_ami.py):
login, the registry rebuilt after every reconnect, the ping watchdog, action time-outs,
guarded handlers, and a server that is down failing only what needs it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from billing_core.asterisk.connection import AmiConnection, AmiTimings, Handlers, State
from billing_core.asterisk.errors import AsteriskRefused, AsteriskTimeout, AsteriskUnavailable
from billing_core.asterisk.servers import AmiTarget
from billing_core.asterisk.service import AmiService
from billing_core.asterisk.wire import WIRE_LOG, build_action
from billing_core.errors import ApiError
from tests.fake_ami import SECRET, USER, FakeAmi, encode, hangup, newchannel, transcript_events

# Quick pings, but 1.5 s of silence before a session is dropped: a loaded 2-core CI machine
# can starve the event loop for longer than 0.3 s, and a dropped session loses the events a
# test emits meanwhile.
FAST = AmiTimings(
    connect_timeout_s=1.0, action_timeout_s=2.0, ping_interval_s=0.05, ping_timeout_s=1.5,
    reconnect_first_s=0.01, reconnect_max_s=0.1, handler_timeout_s=0.2,
)  # fmt: skip
PATIENT = 10.0  # a bound on waiting for what must happen, never a measurement


def target(fake: FakeAmi | int, name: str = "pbx1", secret: str = SECRET) -> AmiTarget:
    port = fake.port if isinstance(fake, FakeAmi) else fake
    return AmiTarget(name, "127.0.0.1", port, USER, secret, (f"{name}.example.net",))


@pytest.fixture
async def connected(fake: FakeAmi) -> AsyncIterator[AmiConnection]:
    conn = AmiConnection(target(fake), FAST)
    conn.start()
    assert await conn.wait_up(PATIENT)
    yield conn
    await conn.close()


async def until(condition: Any, what: str) -> None:
    try:
        async with asyncio.timeout(PATIENT):
            while not condition():  # noqa: ASYNC110 - polls client state that has no event to wait on
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


def code(exc: pytest.ExceptionInfo[ApiError]) -> str:
    return exc.value.code.value


async def test_login_asks_for_the_channels_and_the_events_it_reads(fake: FakeAmi) -> None:
    fake.add_channel("1795416507.0", "PJSIP/alice-00000001")
    fake.add_channel("1795416507.1", "PJSIP/carrier-a-00000002", linkedid="1795416507.0")
    conn = AmiConnection(target(fake), FAST)
    conn.start()
    try:
        assert await conn.wait_up(PATIENT)
        assert [a["Action"] for a in fake.actions[:2]] == ["Login", "CoreShowChannels"]
        assert (fake.actions[0]["Username"], fake.actions[0]["Events"]) == (USER, "system,call,cdr,dialplan")
        assert fake.actions[0]["ActionID"] != fake.actions[1]["ActionID"]
        assert conn.registry.synced
        assert {c.uniqueid: c.linkedid for c in conn.registry.channels()} == {
            "1795416507.0": "1795416507.0", "1795416507.1": "1795416507.0"
        }  # fmt: skip
    finally:
        await conn.close()
    assert conn.state is State.CLOSED
    await until(lambda: not fake.sessions, "the client closed its socket")


async def test_a_refused_login_is_retried_and_methods_fail_at_once(fake: FakeAmi) -> None:
    conn = AmiConnection(target(fake, secret="wrong"), FAST)
    conn.start()
    try:
        await fake.wait_for("connections", 3, PATIENT)  # it keeps trying, with back-off
        assert fake.logins == 0 and conn.state is not State.UP
        assert conn.last_error == "login refused: Authentication failed"
        with pytest.raises(AsteriskUnavailable) as down:
            await conn.action("Ping")
        assert code(down) == "E_ASTERISK_QUERY_ERROR" and "login refused" in down.value.detail
    finally:
        await conn.close()


async def test_events_and_answers_interleave_matched_by_action_id(fake: FakeAmi, connected: AmiConnection) -> None:
    """The whole recorded session's events, while actions are answered in between."""
    events = transcript_events()
    answers: list[Any] = []

    async def ask() -> None:
        for _ in range(20):
            answers.append(await connected.action("Ping"))
            answers.append(await connected.action("CoreShowChannels", as_list=True))
            await asyncio.sleep(0)

    asker = asyncio.create_task(ask())
    for at in range(0, len(events), 25):
        fake.emit(*events[at : at + 25])
        await asyncio.sleep(0)
    await asker
    await until(lambda: connected.events >= len(events) + 1, "every event reached the client")  # + FullyBooted
    assert [a["Ping"] for a in answers[0::2]] == ["Pong"] * 20
    assert all(a[-1]["Event"] == "CoreShowChannelsComplete" for a in answers[1::2])
    assert len(connected.registry) == 0 and connected.registry.ended("1795416507.1") is not None
    assert connected.pending_actions == 0


async def test_a_connection_killed_mid_event_reconnects_and_rebuilds(fake: FakeAmi, connected: AmiConnection) -> None:
    fake.emit(newchannel("a.1", "PJSIP/a-1"), newchannel("b.1", "PJSIP/b-1"))
    await until(lambda: len(connected.registry) == 2, "both channels seen")
    # while the connection is away: a.1 hangs up, c.1 starts, and nobody hears of either
    fake.forget_channel("a.1")
    fake.add_channel("c.1", "PJSIP/c-1")
    fake.kill(partial=b"Event: Newchannel\r\nChannel: PJSIP/d-1\r\nUniqueid: d.1\r\n")  # half an event
    await fake.wait_for("logins", 2, PATIENT)
    assert await connected.wait_up(PATIENT)
    await until(lambda: connected.registry.synced, "the registry rebuilt")
    assert sorted(c.uniqueid for c in connected.registry.channels()) == ["b.1", "c.1"]
    vanished = connected.registry.ended("a.1")
    assert vanished is not None and vanished.vanished
    assert connected.registry.channel("d.1") is None  # the half event was never applied
    # and the stream goes on
    fake.emit(hangup("b.1", "PJSIP/b-1"))
    await until(lambda: connected.registry.channel("b.1") is None, "b.1 hung up")


async def test_events_right_after_the_list_apply_on_top_of_it(fake: FakeAmi) -> None:
    fake.add_channel("a.1", "PJSIP/a-1")
    fake.add_channel("b.1", "PJSIP/b-1")
    fake.after_list = [hangup("a.1", "PJSIP/a-1")]  # in the same TCP write as the list's end
    conn = AmiConnection(target(fake), FAST)
    conn.start()
    try:
        assert await conn.wait_up(PATIENT)
        await until(lambda: conn.registry.ended("a.1") is not None, "a.1's Hangup applied")
        assert [c.uniqueid for c in conn.registry.channels()] == ["b.1"]
    finally:
        await conn.close()


async def test_an_action_in_flight_fails_with_its_connection_and_is_never_sent_again(
    fake: FakeAmi, connected: AmiConnection
) -> None:
    fake.silent = {"originate"}
    pending = asyncio.create_task(connected.action("Originate", {"Channel": "Local/1@x"}, timeout_s=PATIENT))
    await until(lambda: any(a["Action"] == "Originate" for a in fake.actions), "the Originate sent")
    fake.kill()
    with pytest.raises(AsteriskUnavailable):  # not AsteriskTimeout: it failed when the socket did
        await pending
    await fake.wait_for("logins", 2, PATIENT)
    assert await connected.wait_up(PATIENT)
    await connected.action("Ping")  # a round trip on the new connection
    assert [a["Action"] for a in fake.actions].count("Originate") == 1


async def test_a_server_that_stops_answering_pings_is_dropped_and_reconnected(
    fake: FakeAmi, connected: AmiConnection
) -> None:
    fake.stop_pings()
    await fake.wait_for("logins", 2, PATIENT)
    assert fake.closed_by_client >= 1  # the silent session was closed by the client
    assert await connected.wait_up(PATIENT)
    assert connected.logins == 2 and (await connected.action("Ping"))["Ping"] == "Pong"


async def test_a_character_split_between_two_reads_survives(fake: FakeAmi) -> None:
    # No pings here: Asterisk never writes inside one of its messages, but the fake would put
    # a Pong between the two halves written by hand (it did, one run in four).
    conn = AmiConnection(target(fake), replace(FAST, ping_interval_s=600.0))
    conn.start()
    try:
        assert await conn.wait_up(PATIENT)
        data = encode(newchannel("m.1", "PJSIP/müller-1"))
        cut = data.index("ü".encode()) + 1  # inside the two bytes of ü
        fake.emit_raw(data[:cut])
        await asyncio.sleep(0.05)  # a read of its own
        fake.emit_raw(data[cut:])
        await until(lambda: conn.registry.channel("m.1") is not None, "the channel seen")
        assert conn.registry.channel("m.1").name == "PJSIP/müller-1"  # type: ignore[union-attr]
    finally:
        await conn.close()


async def test_a_slow_pong_behind_a_stream_of_events_is_not_a_dead_server(
    fake: FakeAmi, connected: AmiConnection
) -> None:
    fake.delays = {"ping": 1.0}  # more than three ping time-outs, while events keep coming
    for n in range(40):
        fake.emit(newchannel(f"e.{n}", f"PJSIP/e-{n}"))
        await asyncio.sleep(0.05)
    assert connected.logins == 1 and connected.state is State.UP
    assert len(connected.registry) == 40


async def test_an_action_that_times_out_fails_alone(fake: FakeAmi, connected: AmiConnection) -> None:
    fake.silent = {"status"}
    with pytest.raises(AsteriskTimeout) as silent:
        await connected.action("Status", timeout_s=0.1)
    assert code(silent) == "E_ASTERISK_QUERY_ERROR" and "did not answer Status" in silent.value.detail
    fake.silent, fake.delays = set(), {"status": 0.3}
    with pytest.raises(AsteriskTimeout):
        await connected.action("Status", timeout_s=0.05)
    await asyncio.sleep(0.4)  # the late answer arrives, matched by nobody
    assert (await connected.action("Ping"))["Ping"] == "Pong"
    assert connected.state is State.UP and connected.logins == 1 and connected.pending_actions == 0


async def test_an_error_answer_is_refused_with_asterisks_message(fake: FakeAmi, connected: AmiConnection) -> None:
    with pytest.raises(AsteriskRefused) as refused:
        await connected.action("NoSuchAction")
    assert refused.value.message.startswith("Invalid/unknown command: NoSuchAction.")
    with pytest.raises(AsteriskRefused) as no_channel:
        await connected.action("Hangup", {"Channel": "PJSIP/nobody-1"})
    assert no_channel.value.message == "No such channel"


async def test_command_output_in_both_forms(fake: FakeAmi, connected: AmiConnection) -> None:
    fake.command_output = ["Asterisk 22.10.1", "second line"]
    assert await connected.command("core show version") == ["Asterisk 22.10.1", "second line"]
    fake.legacy_command = True  # `Response: Follows`, older Asterisk
    assert await connected.command("core show version") == ["Asterisk 22.10.1", "second line"]


async def test_a_failing_handler_never_stops_the_stream(fake: FakeAmi) -> None:
    handlers = Handlers()
    hangups: list[str] = []

    def broken(server: str, event: Any) -> None:
        raise RuntimeError("a bug in a handler")

    async def broken_async(server: str, event: Any) -> None:
        raise RuntimeError("a bug in an async handler")

    async def stuck(server: str, event: Any) -> None:
        await asyncio.sleep(3600)  # cut by the handler time-out

    handlers.on("Newchannel", broken)
    handlers.on_async("Newchannel", broken_async)
    handlers.on_async("Newchannel", stuck)
    handlers.on("Hangup", lambda server, event: hangups.append(event["Uniqueid"]))
    conn = AmiConnection(target(fake), FAST, handlers)
    conn.start()
    try:
        assert await conn.wait_up(PATIENT)
        for n in range(3):
            fake.emit(newchannel(f"x.{n}", f"PJSIP/x-{n}"), hangup(f"x.{n}", f"PJSIP/x-{n}"))
        await until(lambda: conn.handler_failures == 9, "3 × (broken, broken_async, stuck)")
        assert hangups == ["x.0", "x.1", "x.2"]
        assert conn.registry.ended("x.2") is not None and len(conn.registry) == 0
        assert conn.logins == 1 and conn.state is State.UP
    finally:
        await conn.close()


async def test_a_down_server_fails_only_what_needs_it(fake: FakeAmi) -> None:
    refused_port = await _closed_port()
    accepted: list[asyncio.BaseTransport] = []
    loop = asyncio.get_running_loop()
    black_hole = await loop.create_server(lambda: Mute(accepted), "127.0.0.1", 0)  # accepts, never speaks
    hole_port = black_hole.sockets[0].getsockname()[1]
    service = AmiService(db=None, box=None, timings=FAST)  # type: ignore[arg-type]  # no database needed here
    try:
        await service.use([target(fake), target(refused_port, "dead"), target(hole_port, "mute")])
        assert await service.connection("pbx1").wait_up(PATIENT)
        fake.emit(newchannel("y.1", "PJSIP/y-1"))
        await until(lambda: service.registry("pbx1").channel("y.1") is not None, "events flow on pbx1")
        assert (await service.action("pbx1", "Ping"))["Ping"] == "Pong"
        assert service.for_sip_server("PBX1.example.net") is service.connection("pbx1")
        await until(lambda: "no AMI banner" in service.connection("mute").last_error, "mute timed out")
        for name in ("dead", "mute"):
            with pytest.raises(AsteriskUnavailable) as down:
                await service.action(name, "Ping")
            assert code(down) == "E_ASTERISK_QUERY_ERROR"
        with pytest.raises(AsteriskUnavailable):
            service.connection("nowhere")
        states = {s["server"]: s["state"] for s in service.statuses()}
        assert states["pbx1"] == "up" and states["dead"] != "up" and states["mute"] != "up"
    finally:
        await service.close()
        black_hole.close()
        for transport in accepted:
            transport.close()
        await black_hole.wait_closed()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("ami:")]


async def test_a_changed_server_gets_a_new_connection_and_a_removed_one_is_closed(fake: FakeAmi) -> None:
    service = AmiService(db=None, box=None, timings=FAST)  # type: ignore[arg-type]
    try:
        await service.use([target(fake)])
        first = service.connection("pbx1")
        assert await first.wait_up(PATIENT)
        await service.use([target(fake)])  # unchanged: the same connection
        assert service.connection("pbx1") is first
        await service.use([target(fake, secret="rotated")])
        assert first.state is State.CLOSED and service.connection("pbx1") is not first
        await service.use([])
        with pytest.raises(AsteriskUnavailable):
            service.connection("pbx1")
    finally:
        await service.close()


async def test_an_action_cannot_smuggle_headers() -> None:
    with pytest.raises(ValueError):
        build_action("Hangup", {"Channel": "PJSIP/a-1\r\nAction: Originate"})
    with pytest.raises(ValueError):
        build_action("Hangup", {"Channel\r\nX": "PJSIP/a-1"})
    assert str(build_action("Hangup", {"Channel": "PJSIP/a-1"})).startswith("Action: Hangup\r\n")


def test_a_logged_action_never_shows_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger=WIRE_LOG.name):
        WIRE_LOG.error("Fail to send %r", {"Action": "Login", "Secret": "ami-s3cret", "Username": "callgate"})
        WIRE_LOG.error("Fail to send %s", "Action: Login\r\nSecret: ami-s3cret\r\nUsername: callgate\r\n")
    assert "ami-s3cret" not in caplog.text and caplog.text.count("***") == 2


class Mute(asyncio.Protocol):
    """Accepts a connection and says nothing: a port that is not an Asterisk's, or a hung one."""

    def __init__(self, accepted: list[asyncio.BaseTransport]) -> None:
        self.accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.accepted.append(transport)


async def _closed_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port
