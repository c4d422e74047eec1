"""Whole calls: dialplan/extensions.conf run by tests/dialplan_sim.py (Asterisk 22's behaviour
as recorded), its FastAGI requests answered by a real callgate; assertions on the requests,
the Dial lines, the CDR rows, the holds and the balances."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.container import Services
from billing_core.ledger.tables import cdrs, reservations
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer, ServerConfig
from tests.dialplan_parse import parse
from tests.dialplan_sim import Caller, DialOutcome, DialplanSim, Run
from tests.factories import balance_of, make_key, make_user
from tests.ports import free_port
from tests.rating_world import RatingWorld

DIALPLAN = Path(__file__).resolve().parent.parent / "dialplan" / "extensions.conf"
NUMBER = "79010000001"


@pytest.fixture
async def port(services: Services, tmp_path: Path) -> AsyncIterator[int]:
    import billing_core.api.methods  # noqa: F401

    bridge = AGIBridge(Dispatcher(services), Spool(tmp_path / "spool"))
    server = FastAGIServer(bridge, ServerConfig(env_timeout_s=2.0, reply_timeout_s=2.0))
    await server.start("127.0.0.1", 0)
    try:
        yield server.port
    finally:
        server.close()
        await server.wait_closed()


async def world(services: Services) -> int:
    """alice (SIP 10000, DISA PIN 1234) on `std`: 7901… at 0.60 EUR/min (0.01 a second) via
    carrier-a (prefix 8), per second, no fee; 10 EUR."""
    w = RatingWorld(services)
    tele2 = await w.direction("7901", "Russia Mobile Tele2", min_len=11, max_len=11)
    route = await w.route("carrier-a", prefix="8")
    backup = await w.route("carrier-b", prefix="9")
    persecond = await w.bill_type("persecond", free_threshold=0, step=1)
    std = await w.tariff("std", bill_type=persecond)
    await w.entry(std, tele2, "0.60", route, priority=1)
    await w.entry(std, tele2, "0.60", backup, priority=2)
    alice = await make_user(services, "alice", balance=Decimal("10"), sip_extension="10000", sip_rates_id=std,
                            disa_pin="1234")  # fmt: skip
    await make_key(services, level=50, source="127.0.0.1", auth_by="sip_extension", name="asterisk")
    return alice.account_id


async def run_call(port: int, caller: Caller, *, context: str, exten: str, uid: str, **globals_: str) -> Run:
    sim = DialplanSim(parse(DIALPLAN.read_text()), {"CALLGATE_AGI": f"agi://127.0.0.1:{port}", **globals_},
                      caller, uniqueid=uid)  # fmt: skip
    await sim.call(context, exten)
    return sim.run


async def rows(services: Services, uid: str) -> tuple[list[tuple[int, str, int, Decimal]], int]:
    async with services.db.begin() as conn:
        found = (await conn.execute(select(cdrs).where(cdrs.c.call_uid == uid).order_by(cdrs.c.prior))).all()
        holds = (await conn.execute(select(reservations).where(reservations.c.call_uid == uid))).all()
    return [(r.prior, r.status, r.billed_s, r.cost) for r in found], len(holds)


async def test_caller_hangs_up_during_callprepare(services: Services, port: int) -> None:
    """[1] 017: HANGUP arrives while callPrepare decides; the dialplan stops there. The hangup
    handler (pushed before callPrepare) closes the prior unanswered: no hold is left."""
    account = await world(services)
    run = await run_call(port, Caller(hangup_during="callPrepare"), context="callgate-outbound", exten=NUMBER,
                         uid="h1")  # fmt: skip
    assert [r.split("?")[0] for r in run.requests] == ["callPrepare", "callFinish"]
    assert "&status=&" in run.requests[1] and "&answered_ms=0&" in run.requests[1]
    assert run.dials == []
    assert await rows(services, "h1") == ([(1, "", 0, Decimal("0"))], 0)
    assert await balance_of(services, account) == Decimal("10")


async def test_caller_gone_between_allowed_and_dial(services: Services, port: int) -> None:
    """[1, 9] Allowed, then the caller hangs up before Dial: DIALSTATUS is empty; the handler's
    callFinish (status=) closes the attempt unanswered and the hold is released."""
    account = await world(services)
    run = await run_call(port, Caller(hangup_before="Dial"), context="callgate-outbound", exten=NUMBER, uid="g1")
    assert [r.split("?")[0] for r in run.requests] == ["callPrepare", "callFinish"]
    assert "&status=&" in run.requests[1]
    assert run.dials == []
    assert await rows(services, "g1") == ([(1, "", 0, Decimal("0"))], 0)
    assert await balance_of(services, account) == Decimal("10")
    assert not [m for level, m in run.logs if level == "ERROR"]


async def test_disa_bills_the_called_party_talk_time(services: Services, port: int) -> None:
    """[2, 3] 018-020: the DISA caller is answered, enters 10000#1234 and the number; the callee
    answers after 2 s and talks 5 s. ANSWEREDTIME_MS would be ~13 s (the caller's up time) and
    CDR(billsec) 0; billed: the 5 s the callee talked."""
    account = await world(services)
    caller = Caller(reads=["100001234", NUMBER], dials=[DialOutcome("ANSWER", ring_s=2, talk_s=5)])
    run = await run_call(port, caller, context="callgate-disa", exten="s", uid="d1")
    assert [r.split("?")[0] for r in run.requests] == ["authorizeCall", "callPrepare", "callFinish"]
    assert "&length=5&answered_ms=5000&status=ANSWER&" in run.requests[2]
    assert await rows(services, "d1") == ([(1, "ANSWER", 5, Decimal("0.05"))], 0)
    assert await balance_of(services, account) == Decimal("9.95")


async def test_failover_then_answer_bills_the_second_prior(services: Services, port: int) -> None:
    """024-027: prior 1 CONGESTION (closed at once), prior 2 answered, 3 s of talk."""
    account = await world(services)
    caller = Caller(dials=[DialOutcome("CONGESTION"), DialOutcome("ANSWER", ring_s=1, talk_s=3.006)])
    run = await run_call(port, caller, context="callgate-outbound", exten=NUMBER, uid="f1")
    assert [d[0] for d in run.dials] == [f"PJSIP/8{NUMBER}@carrier-a", f"PJSIP/9{NUMBER}@carrier-b"]
    assert await rows(services, "f1") == ([(1, "CONGESTION", 0, Decimal("0")), (2, "ANSWER", 3, Decimal("0.03"))], 0)
    assert await balance_of(services, account) == Decimal("9.97")


async def test_dial_has_the_ring_timeout_and_an_unanswered_call_is_free(services: Services, port: int) -> None:
    """[9] Dial rings for CALLGATE_RINGTIME (60 s when callgate sends none), then NOANSWER."""
    account = await world(services)
    run = await run_call(port, Caller(dials=[DialOutcome("ANSWER", ring_s=600, talk_s=5)]),
                         context="callgate-outbound", exten=NUMBER, uid="r1")  # fmt: skip
    assert [d[1] for d in run.dials] == ["60"]
    assert await rows(services, "r1") == ([(1, "NOANSWER", 0, Decimal("0"))], 0)
    assert await balance_of(services, account) == Decimal("10")


async def test_silent_disa_sends_no_login_attempt(services: Services, port: int) -> None:
    """[7] 021-023: Read() gets nothing three times: no authorizeCall at all."""
    await world(services)
    run = await run_call(port, Caller(reads=[None, None, None]), context="callgate-disa", exten="s", uid="s1")
    assert run.requests == []
    assert run.apps.count("Read") == 3


async def test_the_next_callgate_node_answers_when_the_first_is_down(services: Services, port: int) -> None:
    """[5] CALLGATE_AGI is refused (nothing listens): CALLGATE_AGI2 answers every request."""
    account = await world(services)
    down = f"agi://127.0.0.1:{free_port()}"
    caller = Caller(dials=[DialOutcome("ANSWER", ring_s=1, talk_s=2)])
    run = await run_call(port, caller, context="callgate-outbound", exten=NUMBER, uid="n1",
                         CALLGATE_AGI=down, CALLGATE_AGI2=f"agi://127.0.0.1:{port}")  # fmt: skip
    assert [r.split("?")[0] for r in run.requests] == ["callPrepare", "callPrepare", "callFinish", "callFinish"]
    assert await rows(services, "n1") == ([(1, "ANSWER", 2, Decimal("0.02"))], 0)
    assert await balance_of(services, account) == Decimal("9.98")
    assert not [m for level, m in run.logs if level == "ERROR"]


async def test_a_callfinish_neither_saved_nor_spooled_is_logged_not_billed(services: Services, port: int) -> None:
    """[20] The handler closes prior 1 for a login callgate does not know: the answer is not
    Saved/Spooled, and the handler logs it at ERROR as NOT billed (before: only an empty one)."""
    await world(services)
    sim = DialplanSim(parse(DIALPLAN.read_text()), {"CALLGATE_AGI": f"agi://127.0.0.1:{port}"}, Caller(), uniqueid="x1")
    await sim.gosub("callgate-hangup,s,1")  # nothing open: the handler sends nothing
    assert sim.run.requests == []
    sim.vars.update({"CG_OPEN_PRIOR": "1", "CG_LOGIN": "99999", "CG_DESTINATION": NUMBER, "DIALSTATUS": "ANSWER"})
    await sim.gosub("callgate-hangup,s,1")
    assert sim.run.requests[0].startswith("callFinish?login=99999&")
    assert sim.vars["CALLGATE_RESULT"] not in ("", "Saved", "Spooled")
    assert [m for level, m in sim.run.logs if level == "ERROR" and m.endswith("NOT billed")]


async def test_an_inbound_call_in_e164_with_a_plus_reaches_its_did_rule(
    services: Services, dispatcher: Dispatcher, port: int
) -> None:
    """A trunk that sends +DID from +caller (E.164, as many carriers do): [callgate-inbound]
    drops the "+" of the DID, callgate's rule "7901%" matches the caller's +7901…, and the
    call rings the rule's extension with the caller's own number (TRANSIT)."""
    await world(services)
    key = await make_key(services, level=50)
    for method, args in (
        ("addDID", {"did": "78005555550", "owner": "alice"}),
        ("addDIDRule", {"did": "78005555550", "source": "number", "pattern": "7901%", "policy": "ACCEPT",
                        "action": "call", "destination": "10000", "callerid": "TRANSIT", "timeout": "25"}),
    ):  # fmt: skip
        outcome = await dispatcher.call(method, args, Credentials("127.0.0.1", "http", apikey=key))
        assert outcome.error is None, outcome.error
    caller = Caller(dials=[DialOutcome("ANSWER", ring_s=1, talk_s=4)], channel="PJSIP/trunk-00000007",
                    callerid="+79010000001")  # fmt: skip
    run = await run_call(port, caller, context="callgate-inbound", exten="+78005555550", uid="in1")
    assert [r.split("?")[0] for r in run.requests] == ["resolveDIDRule"]
    assert "did=78005555550&" in run.requests[0] and "callerid=%2B79010000001&" in run.requests[0]
    assert run.dials == [("PJSIP/10000", "25", "")]
