"""The bench's `--experiment constant` (bench/load.py): a floor under every real decision.

It must answer callPrepare and callFinish the way a real decision would look to Asterisk
(so the load client counts pairs), decide nothing (no hold, no CDR, no balance change) and
leave every other method to the real registry. The patch is undone after each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from bench.load import apply_experiments
from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.container import Services
from billing_core.ledger.tables import cdrs, reservations
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer, ServerConfig
from tests.asterisk_sim import run_agi_session
from tests.factories import balance_of, make_key, make_user


@pytest.fixture
async def constant_port(services: Services, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    import billing_core.api.methods  # noqa: F401 - registers every method

    monkeypatch.setattr(Dispatcher, "call", Dispatcher.call)  # restored after the test
    apply_experiments(["constant"])
    server = FastAGIServer(AGIBridge(Dispatcher(services)), ServerConfig(env_timeout_s=2.0, reply_timeout_s=2.0))
    await server.start("127.0.0.1", 0)
    try:
        yield server.port
    finally:
        server.close()
        await server.wait_closed()


async def _count(services: Services, table: object) -> int:
    async with services.db.begin() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_constant_answers_like_a_decision_and_decides_nothing(services: Services, constant_port: int) -> None:
    await make_key(services, level=50, source="127.0.0.1", auth_by="sip_extension", name="asterisk")
    alice = await make_user(services, "alice", balance=Decimal("1.00"), sip_extension="10000")

    prepare = await run_agi_session(
        "127.0.0.1", constant_port, "callPrepare", query="login=10000&destination=79010000001", uniqueid="1.1"
    )
    finish = await run_agi_session(
        "127.0.0.1", constant_port, "callFinish",
        query="login=10000&destination=79010000001&length=30&status=ANSWER", uniqueid="1.1",
    )  # fmt: skip

    assert prepare.variables["CALLGATE_RESULT"] == "Allowed"
    assert prepare.variables["CALLGATE_MAXTIME"] == "3600"
    assert prepare.variables["CALLGATE_ROUTE"] == "carrier"
    assert prepare.variables["CALLGATE_ANSWER"].startswith("Allowed 3600 ")
    assert finish.variables["CALLGATE_RESULT"] == "Saved"
    assert finish.variables["CALLGATE_COST"] == "0.0050"
    assert await _count(services, reservations) == 0
    assert await _count(services, cdrs) == 0
    assert await balance_of(services, alice.account_id) == Decimal("1.00")


async def test_constant_leaves_other_methods_to_the_registry(services: Services, constant_port: int) -> None:
    key = await make_key(services, level=95, source="127.0.0.1", name="portal")
    credentials = Credentials(peer_ip="127.0.0.1", transport="http", apikey=key)

    unknown = await Dispatcher(services).call("noSuchMethod", {}, credentials)
    prepare = await Dispatcher(services).call("callPrepare", {"destination": "79010000001"}, credentials)

    assert unknown.error is not None and unknown.error.code.value == "E_UNKNOWN_METHOD"
    assert prepare.error is None and prepare.value.result == "Allowed"
