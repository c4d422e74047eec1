"""A call through callgate from the dialplan's point of view: an Asterisk-behaving client
talks FastAGI to the real server, which answers from the real registry, rating engine and
ledger (on both backends). Assertions are on the channel variables Asterisk would store
and on the rows and balances in the database."""

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
from fastagi.server import FastAGIServer, ServerConfig
from tests.asterisk_sim import (
    AGISessionResult,
    load_transcript,
    replay_transcript,
    run_agi_session,
    session_transcripts,
    transcript_env,
)
from tests.factories import balance_of, make_key, make_user
from tests.rating_world import RatingWorld


@dataclass
class Gate:
    services: Services
    port: int
    spool: Spool

    async def agi(self, script: str, query: str, *, uniqueid: str, **kw: object) -> AGISessionResult:
        return await run_agi_session("127.0.0.1", self.port, script, query=query, uniqueid=uniqueid, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def gate(services: Services, tmp_path: Path) -> AsyncIterator[Gate]:
    import billing_core.api.methods  # noqa: F401

    spool = Spool(tmp_path / "spool")
    bridge = AGIBridge(Dispatcher(services), spool)
    server = FastAGIServer(bridge, ServerConfig(env_timeout_s=2.0, reply_timeout_s=2.0))
    await server.start("127.0.0.1", 0)
    try:
        yield Gate(services, server.port, spool)
    finally:
        server.close()
        await server.wait_closed()


@dataclass(frozen=True)
class World:
    account: int


async def build_world(services: Services, *, balance: str = "1.00", owner: str = "admin") -> World:
    """alice (SIP 10000) on tariff `std`: 7901… at 0.60 EUR/min via route1-cli (prefix outline/),
    bill type sixsec (free 3 s, step 6 s), connection fee 0.05; bob (SIP 10001) is local."""
    w = RatingWorld(services)
    await w.direction("7", "Russia", min_len=11, max_len=11)
    tele2 = await w.direction("7901", "Russia Mobile Tele2", min_len=11, max_len=11)
    route1 = await w.route("route1-cli", prefix="outline/")
    route2 = await w.route("route2", prefix="backup/")
    sixsec = await w.bill_type("sixsec", free_threshold=3, step=6)
    std = await w.tariff("std", bill_type=sixsec, connect_fee="0.05")
    await w.entry(std, tele2, "0.60", route1, priority=1)
    await w.entry(std, tele2, "0.90", route2, priority=2)
    alice = await make_user(
        services, "alice", balance=Decimal(balance), sip_extension="10000", sip_rates_id=std, sip_callerid="79020000002"
    )
    await make_user(services, "bob", sip_extension="10001", sip_rates_id=std)
    await make_key(services, level=50, source="127.0.0.1", auth_by="sip_extension", owner=owner, name="asterisk")
    return World(alice.account_id)


async def test_prepare_then_finish_sets_variables_and_charges_once(gate: Gate) -> None:
    world = await build_world(gate.services)
    prepared = await gate.agi("callPrepare", "login=10000&destination=79010000001&callerid=&prior=1", uniqueid="c1")
    v = prepared.variables
    assert v["CALLGATE_RESULT"] == "Allowed"
    assert v["CALLGATE_ERROR"] == ""
    # available 1.00 - fee 0.05 = 0.95 at 0.06 per 6 s step -> 15 steps = 90 s
    assert v["CALLGATE_MAXTIME"] == "90"
    assert v["CALLGATE_ROUTE"] == "route1-cli"
    assert v["CALLGATE_ROUTE_PREFIX"] == "outline/"
    assert v["CALLGATE_DIRECTION"] == "Russia Mobile Tele2"
    assert v["CALLGATE_CALLERID"] == "79020000002"
    assert v["CALLGATE_ANSWER"] == "Allowed 90 79010000001 79020000002 RussiaMobileTele2 outline/ route1-cli -1 -1"
    # one round trip for the whole answer, and the server closed the session
    assert len(prepared.commands) == 1 and prepared.commands[0].startswith("EXEC MSet ")
    assert prepared.closed_by_server

    query = "login=10000&destination=79010000001&callerid=&prior=1&length=13&status=ANSWER&answered_ms=12001&cause=16"
    finished = await gate.agi("callFinish", query, uniqueid="c1")
    f = finished.variables
    # 12.001 s answered -> 12 s (truncated, as Asterisk's billsec) -> 12 s billed = 2 steps * 0.06
    # + 0.05 = 0.17
    assert f["CALLGATE_RESULT"] == "Saved"
    assert f["CALLGATE_COST"] == "0.17"
    assert f["CALLGATE_CURRENCY"] == "EUR"
    assert f["CALLGATE_ANSWER"] == (
        "Saved RussiaMobileTele2 [79020000002/79010000001] via [route1-cli] 12 0.17 EUR ANSWER"
    )
    assert await balance_of(gate.services, world.account) == Decimal("0.8300")

    again = await gate.agi("callFinish", query, uniqueid="c1")
    assert again.variables["CALLGATE_ANSWER"] == f["CALLGATE_ANSWER"]
    assert await balance_of(gate.services, world.account) == Decimal("0.8300")
    async with gate.services.db.begin() as conn:
        rows = (await conn.execute(select(cdrs).where(cdrs.c.call_uid == "c1"))).all()
        holds = (await conn.execute(select(reservations).where(reservations.c.call_uid == "c1"))).all()
    assert len(rows) == 1 and rows[0].billed_s == 12 and rows[0].cost == Decimal("0.1700")
    assert holds == []  # the hold ended in the transaction that charged the call


async def test_empty_status_closes_the_attempt_unanswered(gate: Gate) -> None:
    """The caller hung up between the hangup handler's push and Dial (or during callPrepare):
    DIALSTATUS is empty. callFinish closes the attempt as unanswered: 0 billed, the hold
    released, Saved (not Failed E_INVALID_ARGUMENT, which left the hold for its 4 h)."""
    world = await build_world(gate.services)
    prepared = await gate.agi("callPrepare", "login=10000&destination=79010000001&prior=1", uniqueid="e1")
    assert prepared.variables["CALLGATE_RESULT"] == "Allowed"
    async with gate.services.db.begin() as conn:
        held = (await conn.execute(select(reservations).where(reservations.c.call_uid == "e1"))).all()
    assert len(held) == 1 and held[0].amount > 0
    query = "login=10000&destination=79010000001&callerid=&prior=1&length=0&answered_ms=&status=&cause=16"
    finished = await gate.agi("callFinish", query, uniqueid="e1", hangup_after_env=True)
    assert finished.raw_sent.count(b"HANGUP\n") == 2  # the handler runs on a dead channel
    assert finished.variables["CALLGATE_RESULT"] == "Saved"
    assert finished.variables["CALLGATE_ERROR"] == ""
    assert finished.variables["CALLGATE_COST"] == "0.00"
    async with gate.services.db.begin() as conn:
        rows = (await conn.execute(select(cdrs).where(cdrs.c.call_uid == "e1"))).all()
        holds = (await conn.execute(select(reservations).where(reservations.c.call_uid == "e1"))).all()
    assert [(r.prior, r.status, r.billed_s, r.cost) for r in rows] == [(1, "", 0, Decimal("0"))]
    assert holds == []
    assert await balance_of(gate.services, world.account) == Decimal("1.0000")
    # the money is free again: a second call gets the whole balance's max time
    again = await gate.agi("callPrepare", "login=10000&destination=79010000001&prior=1", uniqueid="e2")
    assert again.variables["CALLGATE_MAXTIME"] == prepared.variables["CALLGATE_MAXTIME"]


async def test_failover_attempts_are_separate_calls(gate: Gate) -> None:
    world = await build_world(gate.services)
    first = await gate.agi("callPrepare", "login=10000&destination=79010000001&prior=1", uniqueid="c2")
    assert first.variables["CALLGATE_ROUTE"] == "route1-cli"
    congestion = "login=10000&destination=79010000001&prior=1&length=0&status=CONGESTION&answered_ms="
    closed = await gate.agi("callFinish", congestion, uniqueid="c2")
    assert closed.variables["CALLGATE_RESULT"] == "Saved"
    assert closed.variables["CALLGATE_COST"] == "0.00"
    second = await gate.agi("callPrepare", "login=10000&destination=79010000001&prior=2", uniqueid="c2")
    assert second.variables["CALLGATE_ROUTE"] == "route2"
    third = await gate.agi("callPrepare", "login=10000&destination=79010000001&prior=3", uniqueid="c2")
    assert third.variables["CALLGATE_RESULT"] == "Declined"
    assert third.variables["CALLGATE_ERROR"] == "E_UNROUTABLE"
    # variables of the previous round are cleared, never left over
    assert third.variables["CALLGATE_ROUTE"] == ""
    assert await balance_of(gate.services, world.account) == Decimal("1.0000")


async def test_internal_call_and_insufficient_money(gate: Gate) -> None:
    await build_world(gate.services, balance="0.05")
    internal = await gate.agi("callPrepare", "login=10000&destination=10001", uniqueid="c3")
    assert internal.variables["CALLGATE_RESULT"] == "Allowed"
    assert internal.variables["CALLGATE_ROUTE"] == "internal"
    poor = await gate.agi("callPrepare", "login=10000&destination=79010000001", uniqueid="c4")
    assert poor.variables["CALLGATE_RESULT"] == "Declined"
    assert poor.variables["CALLGATE_ERROR"] == "E_INSUFFICIENT_MONEY"
    assert poor.variables["CALLGATE_ANSWER"] == "Declined E_INSUFFICIENT_MONEY"


async def test_connection_from_an_address_no_key_admits_is_declined(gate: Gate) -> None:
    await build_world(gate.services)
    # 127.0.0.2 is loopback too, but the Asterisk key admits 127.0.0.1 only
    result = await run_agi_session(
        "127.0.0.1", gate.port, "callPrepare", query="login=10000&destination=79010000001", local_addr="127.0.0.2"
    )
    assert result.variables["CALLGATE_RESULT"] == "Declined"
    assert result.variables["CALLGATE_ERROR"] == "E_AUTH_FAILED"
    assert result.closed_by_server
    async with gate.services.db.begin() as conn:
        assert (await conn.execute(select(reservations))).first() is None


async def test_unknown_script_and_missing_argument(gate: Gate) -> None:
    await build_world(gate.services)
    unknown = await gate.agi("transferMoney", "destination=bob&amount=100", uniqueid="u1")
    assert unknown.variables["CALLGATE_RESULT"] == "Declined"
    assert unknown.variables["CALLGATE_ERROR"] == "E_UNKNOWN_METHOD"
    missing = await gate.agi("callFinish", "login=10000&destination=79010000001", uniqueid="u2")
    assert missing.variables["CALLGATE_RESULT"] == "Failed"
    assert missing.variables["CALLGATE_ERROR"] == "E_MISSING_ARGUMENT"
    garbage = await gate.agi("callPrepare", "login=10000&destination=79010000001&prior=abc", uniqueid="u3")
    assert garbage.variables["CALLGATE_ERROR"] == "E_INVALID_ARGUMENT"


async def test_hangup_in_the_middle_of_the_session_still_records_the_call(gate: Gate) -> None:
    world = await build_world(gate.services)
    await gate.agi("callPrepare", "login=10000&destination=79010000001", uniqueid="c5")
    query = "login=10000&destination=79010000001&length=6&status=ANSWER&answered_ms=6000"
    result = await gate.agi("callFinish", query, uniqueid="c5", hangup_before_reply=1)
    assert result.variables["CALLGATE_RESULT"] == "Saved"
    assert await balance_of(gate.services, world.account) == Decimal("0.8900")  # 6 s = 1 step + fee


async def test_concurrent_sessions_on_one_account_never_overdraw(gate: Gate) -> None:
    world = await build_world(gate.services, balance="1.00")
    results = await asyncio.gather(
        *(
            gate.agi("callPrepare", "login=10000&destination=79010000001", uniqueid=f"p{i}")
            for i in range(40)
        )
    )
    allowed = [r for r in results if r.variables["CALLGATE_RESULT"] == "Allowed"]
    declined = [r for r in results if r.variables["CALLGATE_ERROR"] == "E_INSUFFICIENT_MONEY"]
    assert allowed and declined and len(allowed) + len(declined) == 40
    async with gate.services.db.begin() as conn:
        held = [r.amount for r in (await conn.execute(select(reservations.c.amount))).all()]
    assert sum(held, Decimal(0)) <= Decimal("1.00")
    assert await balance_of(gate.services, world.account) == Decimal("1.0000")


async def test_real_asterisk_transcripts_replay_through_the_whole_service(gate: Gate) -> None:
    """001-014 carry no login: the server key (owned by `lab`) acts as lab. 015 on carry
    login=10001 (the dialplan sends it on every request, callFinish included): the key
    authorizes by SIP extension, and 10001 is dora's. Replay them in recorded order; every
    answer must be one the dialplan understands, and the money must add up."""
    w = RatingWorld(gate.services)
    route = await w.route("carrier", prefix="out")
    backup = await w.route("backup", prefix="bk")
    tariff = await w.tariff("lab")
    for code in ("1", "2", "3", "4"):
        direction = await w.direction(code, f"Lab {code}", min_len=7, max_len=7)
        await w.entry(tariff, direction, "0.60", route, priority=1)
        await w.entry(tariff, direction, "0.60", backup, priority=2)
    # 015-027: dora can cover two 4 h holds (017 hung up before its answer; releasing that
    # hold is the server's, tested with it). carrier-a (prefix 8) first, carrier-b (prefix 9) second, as recorded.
    carrier_a = await w.route("carrier-a", prefix="8")
    carrier_b = await w.route("carrier-b", prefix="9")
    germany = await w.tariff("germany")
    for code in ("49151", "49154"):
        direction = await w.direction(code, f"Germany {code}", min_len=13, max_len=13)
        await w.entry(germany, direction, "0.60", carrier_a, priority=1)
        await w.entry(germany, direction, "0.60", carrier_b, priority=2)
    admin = await make_user(gate.services, "lab", balance=Decimal("1000"), rates_id=tariff)
    dora = await make_user(
        gate.services, "dora", balance=Decimal("1000"), sip_extension="10001", sip_rates_id=germany, manager="lab"
    )
    await make_key(
        gate.services, level=50, source="127.0.0.1", owner="lab", name="lab-asterisk", auth_by="sip_extension"
    )

    answers: dict[str, dict[str, str]] = {}
    for path in session_transcripts():
        script = transcript_env(load_transcript(path))["agi_network_script"].split("?", 1)[0]
        if script not in ("callPrepare", "callFinish"):
            continue
        result = await replay_transcript("127.0.0.1", gate.port, path)
        answers[path.name] = result.variables
        expected = {"callPrepare": {"Allowed"}, "callFinish": {"Saved"}}[script]
        if path.name.startswith("017-"):
            # The caller hung up before the answer: whether callgate still answers Allowed
            # (and releases the hold) or Declined is the server's; a dead channel stores it.
            expected = {"Allowed", "Declined"}
        assert result.variables["CALLGATE_RESULT"] in expected, (path.name, result.variables)
    # 011: 2001 ms answered -> 3 s billed (byminute step 60 -> 60 s at 0.60) = 0.60
    assert answers["011-callFinish-1234502-prior1-ANSWER.json"]["CALLGATE_COST"] == "0.60"
    assert answers["014-callFinish-3000000-prior1-NOANSWER.json"]["CALLGATE_COST"] == "0.00"
    assert answers["003-callFinish-4000003-prior1-CONGESTION.json"]["CALLGATE_COST"] == "0.00"
    charged = sum(
        (Decimal(v["CALLGATE_COST"]) for name, v in answers.items() if v.get("CALLGATE_COST") and name < "015"),
        Decimal(0),
    )
    assert charged == Decimal("1.8000")  # three answered calls of under a minute
    assert await balance_of(gate.services, admin.account_id) == Decimal("1000") - charged
    # 015-027 as recorded (old dialplan: length=0, answered_ms = ANSWEREDTIME_MS): 016 3005 ms,
    # 020 16400 ms, 027 3006 ms, each under a minute -> 0.60; the CONGESTION prior 1 (025) is 0.
    assert answers["025-callFinish-4915400000003-prior1-CONGESTION.json"]["CALLGATE_COST"] == "0.00"
    assert answers["026-callPrepare-4915400000003-prior2.json"]["CALLGATE_ROUTE"] == "carrier-b"
    assert answers["026-callPrepare-4915400000003-prior2.json"]["CALLGATE_ROUTE_PREFIX"] == "9"
    dora_charged = [answers[n]["CALLGATE_COST"] for n in sorted(answers) if n >= "015" and "ANSWER" in n]
    assert dora_charged == ["0.60", "0.60", "0.60"]
    assert await balance_of(gate.services, dora.account_id) == Decimal("1000") - Decimal("1.8000")
    async with gate.services.db.begin() as conn:
        dora_cdrs = (await conn.execute(select(cdrs).where(cdrs.c.account_id == dora.account_id))).all()
    # 017's caller hung up before the answer: callgate closed that attempt unanswered itself
    # (empty status, as the hangup handler would: issue 9 item 1), so its hold is gone.
    assert sorted((r.prior, r.status, r.answered_ms) for r in dora_cdrs) == [
        (1, "", 0), (1, "ANSWER", 3005), (1, "ANSWER", 16400), (1, "CONGESTION", 0), (2, "ANSWER", 3006)
    ]
    async with gate.services.db.begin() as conn:
        dora_holds = select(reservations).where(reservations.c.account_id == dora.account_id)
        open_holds = (await conn.execute(dora_holds)).all()
    assert open_holds == []


async def test_the_asterisk_key_is_found_among_several_keys_of_one_address(gate: Gate) -> None:
    # a portal key (level 95, users by name) admitting the same address, created first
    await make_key(gate.services, level=95, source="127.0.0.1", auth_by="username", name="portal")
    await build_world(gate.services)  # adds the Asterisk key (level 50, users by SIP extension)
    prepared = await gate.agi("callPrepare", "login=10000&destination=79010000001", uniqueid="k1")
    assert prepared.variables["CALLGATE_RESULT"] == "Allowed"
    unknown = await gate.agi("callPrepare", "login=99999&destination=79010000001", uniqueid="k2")
    assert unknown.variables["CALLGATE_ERROR"] == "E_AUTH_FAILED"
