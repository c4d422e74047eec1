"""The AMI service over the database, on both backends: it follows the servers table, and
joins each live call to its hold (call_uid = the uniqueid of the channel callPrepare ran on)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from billing_core.api.dispatch import Dispatcher
from billing_core.asterisk.connection import State
from billing_core.asterisk.errors import AsteriskUnavailable
from billing_core.asterisk.servers import ServerSpec, add_server, remove_server
from billing_core.asterisk.service import AmiService
from billing_core.config import Settings
from billing_core.container import Services
from callgate.startup import Worker
from tests.asterisk_sim import run_agi_session
from tests.factories import make_user
from tests.fake_ami import SECRET, USER, FakeAmi, Message, newchannel, var_set
from tests.ports import HOST, free_port
from tests.rating_world import ledger_of, prepare, standard_world, text_of
from tests.test_agi_end_to_end import build_world
from tests.test_asterisk_ami import FAST, PATIENT, Mute, until
from tests.test_startup import PREPARE

CALLER = "Local/74951234567@callgate-outbound-00000001;2"


def held_call_events() -> tuple[Message, ...]:
    """What the dialplan's call 1795416507 makes Asterisk say: the caller's ;1/;2 Local pair,
    callPrepare Allowed on ;2 (its uniqueid, 1795416507.1, is the call_uid), then the
    carrier channel Dial created."""
    return (
        newchannel("1795416507.0", "Local/74951234567@callgate-outbound-00000001;1"),
        newchannel("1795416507.1", CALLER, linkedid="1795416507.0"),
        var_set("1795416507.1", CALLER, "CALLGATE_RESULT", "Allowed", linkedid="1795416507.0"),
        newchannel("1795416507.2", "PJSIP/route1-cli-00000002", linkedid="1795416507.0", state="6"),
    )


def pbx(fake: FakeAmi, *, enabled: bool = True, secret: str | None = SECRET) -> ServerSpec:
    return ServerSpec("pbx1", "127.0.0.1", "127.0.0.1", fake.port, USER, secret, ("pbx1.example.net",), enabled)


async def test_the_service_follows_the_servers_table(services: Services, fake: FakeAmi) -> None:
    ami = AmiService(services.db, services.box, FAST)
    try:
        await ami.refresh()
        assert ami.statuses() == []  # only `local`, which has no AMI user
        await add_server(services.db, services.box, pbx(fake))
        await ami.refresh()
        first = ami.connection("pbx1")
        assert await first.wait_up(PATIENT) and fake.logins == 1
        await add_server(services.db, services.box, pbx(fake, enabled=False, secret=None), replace=True)
        await ami.refresh()
        assert first.state is State.CLOSED
        with pytest.raises(AsteriskUnavailable):
            ami.connection("pbx1")
        await add_server(services.db, services.box, pbx(fake, secret=None), replace=True)
        await ami.refresh()
        assert await ami.connection("pbx1").wait_up(PATIENT) and fake.logins == 2
        await remove_server(services.db, "pbx1")
        await ami.refresh()
        assert ami.statuses() == []
    finally:
        await ami.close()


async def test_a_live_call_joins_its_hold_before_and_after_a_reconnect(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi
) -> None:
    std = await standard_world(services)
    alice = await make_user(services, "alice", balance=Decimal("10"), rates_id=std.base, sip_extension="1001")
    text_of(await prepare(dispatcher, std.key, "alice", "74951234567", call_uid="1795416507.1", prior="1"))
    [held] = (await ledger_of(services, alice.account_id)).reservations
    await add_server(services.db, services.box, pbx(fake))
    ami = services.ami
    await ami.refresh()
    conn = ami.connection("pbx1")
    assert await conn.wait_up(PATIENT)

    # what the dialplan's call makes Asterisk say: the caller's ;1/;2 Local pair, callPrepare
    # Allowed on ;2 (its uniqueid is the call_uid), then the carrier channel Dial created
    fake.emit(
        *held_call_events(),
        newchannel("1795416599.7", "PJSIP/someone-else-00000003"),  # a call callgate holds nothing for
    )
    await until(lambda: len(conn.registry) == 4, "four channels")
    calls = {c.linkedid: c for c in await ami.live_calls("pbx1")}
    call = calls["1795416507.0"]
    assert call.call_uid == "1795416507.1" and len(call.channels) == 3
    assert [(h.prior, h.account_id, h.user_id, h.amount, h.state) for h in call.holds] == [
        (1, alice.account_id, alice.id, Decimal(held.amount), "open")
    ]
    assert calls["1795416599.7"].holds == ()

    # the connection dies; meanwhile nothing changes; the rebuilt registry joins the same way
    fake.kill()
    await fake.wait_for("logins", 2, PATIENT)
    assert await conn.wait_up(PATIENT)
    rejoined = {c.linkedid: c for c in await ami.live_calls()}
    assert rejoined["1795416507.0"].holds == call.holds

    # a process that never saw the VarSet (started after it): the linkedid's uniqueids find it
    fresh = AmiService(services.db, services.box, FAST)
    try:
        await fresh.refresh()
        assert await fresh.connection("pbx1").wait_up(PATIENT)
        [found] = [c for c in await fresh.live_calls("pbx1") if c.holds]
        assert found.linkedid == "1795416507.0" and found.holds == call.holds
    finally:
        await fresh.close()


async def test_serve_keeps_its_connections_and_a_hung_asterisk_never_delays_a_decision(
    services: Services, settings: Settings, fake: FakeAmi, tmp_path: Path
) -> None:
    await build_world(services)
    accepted: list[asyncio.BaseTransport] = []
    loop = asyncio.get_running_loop()
    hung = await loop.create_server(lambda: Mute(accepted), "127.0.0.1", 0)  # accepts, never answers
    hung_port = hung.sockets[0].getsockname()[1]
    await add_server(services.db, services.box, pbx(fake))
    await add_server(services.db, services.box, ServerSpec(
        "hung", "127.0.0.1", "127.0.0.1", hung_port, USER, SECRET, ("hung.example.net",)
    ))  # fmt: skip
    node = replace(settings, agi_port=free_port(), http_port=free_port(), spool_dir=str(tmp_path / "node-spool"))
    worker = Worker(node)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await worker.listening.wait()
        await until(lambda: bool(accepted), "the hung server was dialled")
        # while `hung` holds its login: decisions are answered, and pbx1 is connected
        prepared = await run_agi_session(HOST, node.agi_port, "callPrepare", query=PREPARE, uniqueid="s1")
        assert prepared.variables["CALLGATE_RESULT"] == "Allowed"
        assert await worker.services.ami.connection("pbx1").wait_up(PATIENT)
        assert worker.services.ami.connection("hung").state.value != "up"
    finally:
        stop.set()
        await running
        hung.close()
        for transport in accepted:
            transport.close()
        await hung.wait_closed()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("ami:")]
