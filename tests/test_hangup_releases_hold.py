"""Issue 9, item 1 (server side): a callPrepare whose channel hung up before its answer was
delivered releases its hold.

Asterisk writes `HANGUP` out of band when the caller leaves and still answers `200 result=0`
to the EXEC MSet on the dead channel (transcript 017), so only that line tells. Played over
a real socket by the Asterisk-behaving client, against the real registry and ledger on both
backends; the HANGUP is made to arrive before the hold is written, or after it was written
and before the answer goes out, or before the reply to the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from billing_core.api.dispatch import Dispatcher
from billing_core.container import Services
from billing_core.ledger.tables import cdrs, reservations
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.messages import AGIAnswer, AGIRequest
from fastagi.server import FastAGIServer, ServerConfig
from tests.asterisk_sim import AGISessionResult, run_agi_session
from tests.factories import balance_of
from tests.test_agi_end_to_end import build_world

PREPARE = "login=10000&destination=79010000001&callerid=&prior=1"


class Paced:
    """The bridge, with the HANGUP made to arrive at a chosen point of the decision."""

    def __init__(self, bridge: AGIBridge) -> None:
        self.bridge = bridge
        self.server: FastAGIServer | None = None
        self.hang_up_at: str | None = None  # "before_hold" | "after_hold" | None

    async def _hung_up(self) -> None:
        assert self.server is not None
        for _ in range(2000):  # the client wrote HANGUP already; wait for the server to read it
            if any(session.hung_up for session in self.server._sessions):
                return
            await asyncio.sleep(0.001)
        raise AssertionError("the server never saw the HANGUP line")

    async def __call__(self, request: AGIRequest) -> AGIAnswer:
        if self.hang_up_at == "before_hold":
            await self._hung_up()
        answer = await self.bridge(request)
        if self.hang_up_at == "after_hold":
            await self._hung_up()
        return answer

    async def undelivered(self, request: AGIRequest, variables: dict[str, str]) -> None:
        await self.bridge.undelivered(request, variables)


@dataclass
class Gate:
    services: Services
    paced: Paced
    server: FastAGIServer

    async def agi(self, script: str, query: str, uid: str, **kw: object) -> AGISessionResult:
        result = await run_agi_session("127.0.0.1", self.server.port, script, query=query, uniqueid=uid, **kw)  # type: ignore[arg-type]
        await self.server.settled()  # the release, if any, is done
        return result


@pytest.fixture
async def gate(services: Services, tmp_path: Path) -> AsyncIterator[Gate]:
    import billing_core.api.methods  # noqa: F401

    paced = Paced(AGIBridge(Dispatcher(services), Spool(tmp_path / "spool")))
    server = FastAGIServer(paced, ServerConfig(env_timeout_s=2.0, reply_timeout_s=2.0))
    paced.server = server
    await server.start("127.0.0.1", 0)
    try:
        yield Gate(services, paced, server)
    finally:
        server.close()
        await server.wait_closed()


async def _rows(services: Services, uid: str) -> tuple[list[tuple[str, int, Decimal]], int]:
    async with services.db.begin() as conn:
        cdr_rows = (await conn.execute(select(cdrs.c.status, cdrs.c.billed_s, cdrs.c.cost)
                                       .where(cdrs.c.call_uid == uid))).all()
        holds = (await conn.execute(select(reservations.c.id).where(reservations.c.call_uid == uid))).all()
    return [(r.status, r.billed_s, Decimal(r.cost)) for r in cdr_rows], len(holds)


async def _released(gate: Gate, uid: str, account: int) -> None:
    assert await _rows(gate.services, uid) == ([("", 0, Decimal("0"))], 0)
    assert await balance_of(gate.services, account) == Decimal("1.0000")
    # The dialplan's own handler may still send callFinish for it: the stored answer, no charge.
    late = await gate.agi("callFinish", PREPARE + "&length=0&status=&answered_ms=0", uid)
    assert late.variables["CALLGATE_RESULT"] == "Saved" and " 0 0.00 EUR" in late.variables["CALLGATE_ANSWER"]
    later = await gate.agi("callFinish", PREPARE + "&length=30&status=ANSWER&answered_ms=30000", uid)
    assert later.variables == late.variables  # the stored answer: charged once, at 0
    assert await _rows(gate.services, uid) == ([("", 0, Decimal("0"))], 0)
    assert await balance_of(gate.services, account) == Decimal("1.0000")
    # The money is free again: the next call gets the longest call 1.00 EUR buys.
    following = await gate.agi("callPrepare", PREPARE, uid + "-next")
    assert following.variables["CALLGATE_MAXTIME"] == "90"


@pytest.mark.parametrize("moment", ["before_hold", "after_hold"])
async def test_hangup_while_call_prepare_is_decided_releases_the_hold(gate: Gate, moment: str) -> None:
    world = await build_world(gate.services)
    gate.paced.hang_up_at = moment
    result = await gate.agi("callPrepare", PREPARE, f"hu-{moment}", hangup_after_env=True)
    gate.paced.hang_up_at = None
    # As on Asterisk: the answer still goes out and gets 200 result=0 on the dead channel.
    assert result.raw_sent.count(b"HANGUP\n") >= 1 and result.replies == ["200 result=0"]
    assert result.variables["CALLGATE_RESULT"] == "Allowed"
    await _released(gate, f"hu-{moment}", world.account)


async def test_hangup_before_the_reply_to_the_answer_releases_the_hold(gate: Gate) -> None:
    world = await build_world(gate.services)
    result = await gate.agi("callPrepare", PREPARE, "hu-reply", hangup_before_reply=1)
    assert result.variables["CALLGATE_RESULT"] == "Allowed" and result.raw_sent.startswith(b"agi_network: yes")
    await _released(gate, "hu-reply", world.account)


async def test_an_answer_delivered_to_a_live_channel_keeps_its_hold(gate: Gate) -> None:
    """The control: the HANGUP after the reply (the call went on to Dial) changes nothing."""
    world = await build_world(gate.services)
    result = await gate.agi("callPrepare", PREPARE, "live", hangup_at_end=True)
    assert result.variables["CALLGATE_RESULT"] == "Allowed"
    assert await _rows(gate.services, "live") == ([], 1)
    finished = await gate.agi("callFinish", PREPARE + "&length=13&status=ANSWER&answered_ms=12001", "live")
    assert finished.variables["CALLGATE_COST"] == "0.17"
    assert await balance_of(gate.services, world.account) == Decimal("0.8300")
    assert await _rows(gate.services, "live") == ([("ANSWER", 12, Decimal("0.1700"))], 0)


async def test_hangup_in_the_same_segment_as_the_env_block_releases_the_hold(gate: Gate) -> None:
    """Asterisk writes each env line alone, but TCP may coalesce: the HANGUP can arrive with
    the end of the env block in one read (it waits in the buffer and is read as the line
    before the reply to the answer)."""
    from tests.asterisk_sim import build_env

    world = await build_world(gate.services)
    env = build_env("callPrepare", query=PREPARE, uniqueid="hu-seg", port=gate.server.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", gate.server.port)
    writer.write(("\n".join(env) + "\n\nHANGUP\n").encode())
    command = await asyncio.wait_for(reader.readline(), 5)
    assert command.startswith(b"EXEC MSet ") and b"CALLGATE_RESULT=Allowed" in command
    writer.write(b"200 result=0\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the server closed the session
    writer.close()
    await gate.server.settled()
    assert await _rows(gate.services, "hu-seg") == ([("", 0, Decimal("0"))], 0)
    assert await balance_of(gate.services, world.account) == Decimal("1.0000")
