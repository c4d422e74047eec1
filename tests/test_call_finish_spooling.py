"""Issue 9, item 20: a valid callFinish answers Saved or Spooled, never Failed E_LUA_EXCEPTION.

A failure in the ledger path that is not a verdict on the request (asyncpg's
InternalClientError during a PostgreSQL fast restart, or any exception nobody mapped)
spools the call; the replay charges it exactly once. An empty `call_id=` is absent.
Over a real socket with an Asterisk-behaving client, on both backends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from billing_core.api.dispatch import Dispatcher
from billing_core.container import Services
from billing_core.ledger.tables import cdrs, reservations
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer, ServerConfig
from tests.asterisk_sim import run_agi_session
from tests.factories import balance_of
from tests.test_agi_end_to_end import build_world

PREPARE = "login=10000&destination=79010000001&callerid=&prior=1"
# 12.001 s answered: 12 s billed (Asterisk's billsec rule), 0.17 EUR on build_world's tariff
FINISH = PREPARE + "&length=13&status=ANSWER&answered_ms=12001&cause=16"


@dataclass
class Node:
    services: Services
    bridge: AGIBridge
    port: int

    async def agi(self, script: str, query: str, uniqueid: str) -> dict[str, str]:
        result = await run_agi_session("127.0.0.1", self.port, script, query=query, uniqueid=uniqueid)
        return result.variables


@pytest.fixture
async def node(services: Services, tmp_path: Path) -> AsyncIterator[Node]:
    import billing_core.api.methods  # noqa: F401

    bridge = AGIBridge(Dispatcher(services), Spool(tmp_path / "spool"))
    server = FastAGIServer(bridge, ServerConfig(env_timeout_s=2.0, reply_timeout_s=2.0))
    await server.start("127.0.0.1", 0)
    try:
        yield Node(services, bridge, server.port)
    finally:
        server.close()
        await server.wait_closed()


async def _rows(services: Services, call_uid: str) -> tuple[int, int]:
    """(CDRs, holds) of one call."""
    counted = []
    async with services.db.begin() as conn:
        for table in (cdrs, reservations):
            query = select(func.count()).select_from(table).where(table.c.call_uid == call_uid)
            counted.append(int((await conn.execute(query)).scalar_one()))
    return counted[0], counted[1]


def _once(exc: BaseException, real: Callable[..., Any]) -> Callable[..., Any]:
    calls = {"n": 0}

    async def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise exc
        return await real(*args, **kwargs)

    return failing


async def _spooled_then_replayed_once(node: Node, uid: str, account: int) -> None:
    finished = await node.agi("callFinish", FINISH, uid)
    assert finished["CALLGATE_RESULT"] == "Spooled", finished
    assert await balance_of(node.services, account) == Decimal("1.0000")
    assert await _rows(node.services, uid) == (0, 1)  # nothing written, the hold still open

    report = await node.bridge.replay_spool()
    assert report is not None and (report.done, report.failed, report.pending) == (1, 0, 0)
    assert await balance_of(node.services, account) == Decimal("0.8300")
    assert await _rows(node.services, uid) == (1, 0)  # one CDR, the hold ended with it
    # The dialplan retrying, and a second replay, change nothing.
    again = await node.agi("callFinish", FINISH, uid)
    assert again["CALLGATE_RESULT"] == "Saved" and again["CALLGATE_COST"] == "0.17"
    report = await node.bridge.replay_spool()
    assert report is not None and report.done == 0
    assert await balance_of(node.services, account) == Decimal("0.8300")
    assert await _rows(node.services, uid) == (1, 0)


@pytest.mark.parametrize(
    "exc",
    [asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation is in progress"),
     RuntimeError("nobody expected this")],
    ids=["internal-client-error", "arbitrary"],
)
async def test_an_unexpected_failure_in_the_ledger_spools_the_call_and_replay_charges_once(
    node: Node, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    world = await build_world(node.services)
    assert (await node.agi("callPrepare", PREPARE, "u20"))["CALLGATE_RESULT"] == "Allowed"
    ledger = node.services.call_ledger
    monkeypatch.setattr(ledger, "charge_at_hold", _once(exc, ledger.charge_at_hold))
    await _spooled_then_replayed_once(node, "u20", world.account)


async def test_internal_client_error_from_the_driver_is_an_outage(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the root: on PostgreSQL the statement itself raises InternalClientError (asyncpg's
    connection state after a fast restart): E_SQL_ERROR, the connection dropped. The
    embedded store gets the same exception from its own lowest ledger step."""
    world = await build_world(node.services)
    assert (await node.agi("callPrepare", PREPARE, "u20d"))["CALLGATE_RESULT"] == "Allowed"
    exc = asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation is in progress")
    if node.services.db.is_sqlite:
        from billing_core.ledger import call_ledger

        monkeypatch.setattr(call_ledger, "_write_call", _once(exc, call_ledger._write_call))
    else:
        monkeypatch.setattr(asyncpg.Connection, "fetch", _once(exc, asyncpg.Connection.fetch))
    finished = await node.agi("callFinish", FINISH, "u20d")
    if not node.services.db.is_sqlite:
        assert finished["CALLGATE_ERROR"] == "E_SQL_ERROR"  # mapped as unavailable, not a bug
    await node.bridge.replay_spool()  # the failing call was the one above: this one charges
    assert await balance_of(node.services, world.account) == Decimal("0.8300")
    assert await _rows(node.services, "u20d") == (1, 0)
    assert finished["CALLGATE_RESULT"] == "Spooled", finished


async def test_an_invalid_call_finish_still_fails_and_is_not_spooled(node: Node, tmp_path: Path) -> None:
    await build_world(node.services)
    failed = await node.agi("callFinish", PREPARE + "&length=13&status=RINGING", "u20i")
    assert (failed["CALLGATE_RESULT"], failed["CALLGATE_ERROR"]) == ("Failed", "E_INVALID_ARGUMENT")
    assert node.bridge.spool is not None and node.bridge.spool.pending() == []


async def test_an_empty_call_id_is_absent_over_fastagi(node: Node) -> None:
    world = await build_world(node.services)
    prepared = await node.agi("callPrepare", PREPARE + "&call_id=", "u20e")
    assert prepared["CALLGATE_RESULT"] == "Allowed", prepared
    finished = await node.agi("callFinish", FINISH + "&call_id=", "u20e")
    assert (finished["CALLGATE_RESULT"], finished["CALLGATE_COST"]) == ("Saved", "0.17"), finished
    assert await balance_of(node.services, world.account) == Decimal("0.8300")
    assert await _rows(node.services, "u20e") == (1, 0)  # the uniqueid is the call, as without call_id


async def test_an_empty_call_id_is_absent_over_http(services: Services) -> None:
    import aiohttp

    import billing_core.api.methods  # noqa: F401
    from billing_core.http import bound_port, start_http
    from tests.factories import make_key

    world = await build_world(services)
    key = await make_key(services, level=50, auth_by="sip_extension", name="http-calls")
    runner = await start_http(Dispatcher(services), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{bound_port(runner)}/billing/api/2.2/{key}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/callPrepare?{PREPARE}&call_id=") as resp:
                prepared = (resp.status, await resp.text())
            async with http.get(f"{base}/callFinish?{FINISH}&call_id=") as resp:
                finished = (resp.status, await resp.text())
    finally:
        await runner.cleanup()
    assert prepared[0] == 200 and prepared[1].startswith("Allowed "), prepared
    assert finished[0] == 200 and " 12 0.17 EUR ANSWER" in finished[1], finished
    assert await balance_of(services, world.account) == Decimal("0.8300")
