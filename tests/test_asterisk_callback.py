"""createCallback (both backends): the Originate on the wire of a fake Asterisk, leg 1's
verdict, bad input, unknown users, servers that are down; then both legs run through the
dialplan's [callgate-callback] (tests/dialplan_sim.py) with the very variables the
Originate carried, each leg an ordinary callPrepare/callFinish call with its own hold and
CDR, leg 2 dialled while leg 1 is up and holding."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select, update

from billing_core.api.dispatch import Dispatcher, Outcome
from billing_core.asterisk.servers import add_server
from billing_core.container import Services
from billing_core.directory.tables import sip_extensions
from billing_core.errors import ErrorCode
from billing_core.ledger.tables import reservations
from tests.dialplan_parse import parse
from tests.dialplan_sim import Caller, DialOutcome, DialplanSim
from tests.doc_sections import section
from tests.factories import balance_of, make_user
from tests.fake_ami import FakeAmi, newchannel, var_set
from tests.rating_world import credentials, server_key, text_of
from tests.test_asterisk_ami import PATIENT, until
from tests.test_asterisk_live_calls import pbx
from tests.test_dialplan_calls import DIALPLAN, port, rows, world

README = Path(__file__).resolve().parents[1] / "README.md"
__all__ = ["port"]  # the FastAGI server fixture of tests/test_dialplan_calls.py

DEST1, DEST2 = "79010000001", "79010000009"


async def _connected(services: Services, fake: FakeAmi, *, extension: str = "10000") -> None:
    async with services.db.begin() as conn:
        await conn.execute(
            update(sip_extensions).where(sip_extensions.c.sip_extension == extension)
            .values(sip_server="pbx1.example.net")
        )  # fmt: skip
    await add_server(services.db, services.box, pbx(fake))
    await services.ami.refresh()
    assert await services.ami.connection("pbx1").wait_up(PATIENT)


async def _callback(dispatcher: Dispatcher, key: str, login: str, **args: str) -> Outcome:
    query = {"login": login, "destination1": DEST1, "destination2": DEST2, **args}
    return await dispatcher.call("createCallback", query, credentials(key, None))


def _originates(fake: FakeAmi) -> list[list[tuple[str, str]]]:
    return [lines for lines in fake.action_lines if ("Action", "Originate") in lines]


def _error(outcome: Outcome) -> ErrorCode | None:
    return outcome.error.code if outcome.error is not None else None


async def test_the_originate_on_the_wire(services: Services, dispatcher: Dispatcher, fake: FakeAmi) -> None:
    await world(services)
    await _connected(services, fake)
    key = await server_key(services)
    outcome = await _callback(dispatcher, key, "alice")
    assert (outcome.error, outcome.value) == (None, True)
    [lines] = _originates(fake)
    headers = dict(lines)
    assert headers["ActionID"]
    assert {k: v for k, v in lines if k not in ("ActionID", "Variable")} == {
        "Action": "Originate", "Channel": f"Local/{DEST1}@callgate-callback/n", "Context": "callgate-callback",
        "Exten": "leg2", "Priority": "1", "Timeout": "70000", "Async": "true",
    }  # fmt: skip  (ring time-out 60 s + 10 s for callPrepare; no CallerID: the profile's)
    variables = dict(v.split("=", 1) for k, v in lines if k == "Variable")
    assert re.fullmatch(r"[0-9a-f]{16}", variables.pop("CG_CALLBACK"))
    assert variables == {"CG_LOGIN": "10000", "CG_CALLBACK_DEST2": DEST2, "CG_CALLBACK_CALLERID": "",
                         "CG_CALLBACK_PITCH": ""}  # fmt: skip

    again = await _callback(dispatcher, key, "alice", callerid="+4930123", epitch="3")
    assert again.value is True
    second = dict(_originates(fake)[1])
    assert second["CallerID"] == "+4930123"
    variables = dict(v.split("=", 1) for k, v in _originates(fake)[1] if k == "Variable")
    assert (variables["CG_CALLBACK_CALLERID"], variables["CG_CALLBACK_PITCH"]) == ("+4930123", "3")


async def test_leg_one_not_answered_or_refused(services: Services, dispatcher: Dispatcher, fake: FakeAmi) -> None:
    await world(services)
    await _connected(services, fake)
    key = await server_key(services)
    fake.originate_result = ("Failure", "5")  # busy
    fake.originate_delay_s = 0.05
    busy = await _callback(dispatcher, key, "alice")
    assert (busy.error, busy.value) == (None, False)
    fake.originate_error = "Extension does not exist."
    refused = await _callback(dispatcher, key, "alice")
    assert _error(refused) is ErrorCode.E_INITIATE_ASTERISK_CALL_FAIL
    assert refused.error is not None and "Extension does not exist." in refused.error.detail


async def test_bad_input_and_unknown_users_originate_nothing(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi
) -> None:
    await world(services)
    await make_user(services, "nosip")
    await _connected(services, fake)
    key = await server_key(services)
    assert _error(await _callback(dispatcher, key, "nobody")) is ErrorCode.E_AUTH_FAILED
    assert _error(await _callback(dispatcher, key, "nosip")) is ErrorCode.E_INITIATE_ASTERISK_CALL_FAIL
    for bad in ({"destination1": "7901x"}, {"destination2": ""}, {"epitch": "7"}, {"epitch": "2.5"},
                {"callerid": "alice"}):  # fmt: skip
        outcome = await _callback(dispatcher, key, "alice", **bad)
        assert _error(outcome) in (ErrorCode.E_INVALID_ARGUMENT, ErrorCode.E_MISSING_ARGUMENT), bad
    assert _originates(fake) == []


async def test_a_server_that_is_down(services: Services, dispatcher: Dispatcher, fake: FakeAmi) -> None:
    await world(services)
    key = await server_key(services)
    # alice's SIP account names no server with AMI (only `local`, which has none)
    assert _error(await _callback(dispatcher, key, "alice")) is ErrorCode.E_ASTERISK_QUERY_ERROR
    await _connected(services, fake)
    fake.originate_delay_s = 30.0  # leg 1 rings; the connection dies meanwhile
    pending = dispatcher.call("createCallback", {"login": "alice", "destination1": DEST1, "destination2": DEST2},
                              credentials(key, None))  # fmt: skip
    task = asyncio.ensure_future(pending)
    await fake.wait_for("originates", 1, PATIENT)
    fake.kill()
    lost = await task
    assert _error(lost) is ErrorCode.E_ASTERISK_QUERY_ERROR
    await fake.close()
    await until(lambda: services.ami.connection("pbx1").state.value != "up", "pbx1 down")
    assert _error(await _callback(dispatcher, key, "alice")) is ErrorCode.E_ASTERISK_QUERY_ERROR


# --- both legs through the dialplan, as the Originate set them up ----------------------


async def _open_holds(services: Services, uid: str) -> list[Decimal]:
    async with services.db.begin() as conn:
        query = select(reservations.c.amount).where(reservations.c.call_uid == uid)
        return [Decimal(a) for a in (await conn.execute(query)).scalars()]


async def _run_legs(
    services: Services, fake: FakeAmi, agi_port: int, leg1: list[DialOutcome], leg2: list[DialOutcome]
) -> tuple[DialplanSim, DialplanSim, list[list[Decimal]]]:
    """Leg 1 on the Local channel's ;2 half (uniqueid cb.2), leg 2 on ;1 (cb.1) when leg 1
    answers, with the Originate's Variable headers as both halves' variables."""
    lines = _originates(fake)[-1]
    headers = dict(lines)
    variables = dict(v.split("=", 1) for k, v in lines if k == "Variable")
    match = re.fullmatch(r"Local/(\d+)@([\w-]+)/n", headers["Channel"])
    assert match is not None
    plan, globals_ = parse(DIALPLAN.read_text()), {"CALLGATE_AGI": f"agi://127.0.0.1:{agi_port}"}
    local = f"Local/{match.group(1)}@{match.group(2)}-00000001"
    first = DialplanSim(plan, globals_, Caller(dials=leg1, channel=f"{local};2", callerid=""), uniqueid="cb.2")
    second = DialplanSim(plan, globals_, Caller(dials=leg2, channel=f"{local};1", callerid=""), uniqueid="cb.1")
    first.vars.update(variables)
    second.vars.update(variables)
    held_during_leg2: list[list[Decimal]] = []

    async def leg_two() -> None:
        held_during_leg2.append(await _open_holds(services, "cb.2"))
        await second.call(headers["Context"], headers["Exten"], int(headers["Priority"]))

    first.on_answer = leg_two
    await first.call(match.group(2), match.group(1))
    return first, second, held_during_leg2


async def test_each_leg_is_a_normal_call_and_a_failing_leg_two_releases_its_hold(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi, port: int
) -> None:
    account = await world(services)  # 10 EUR; 7901… at 0.60/min via carrier-a, then carrier-b
    async with services.db.begin() as conn:
        await conn.execute(update(sip_extensions).values(sip_max_call_len=300))  # a hold of 3.00 per leg
    await services.cache.invalidate("profiles", "extensions")
    await _connected(services, fake)
    assert (await _callback(dispatcher, await server_key(services), "alice")).value is True

    first, second, held = await _run_legs(
        services, fake, port,
        leg1=[DialOutcome("ANSWER", ring_s=3, talk_s=30)],
        leg2=[DialOutcome("CONGESTION"), DialOutcome("CONGESTION")],
    )  # fmt: skip
    assert held == [[Decimal("3.00")]]  # leg 2 was prepared while leg 1's hold was open
    assert [r.split("?")[0] for r in first.run.requests] == ["callPrepare", "callFinish"]
    assert "login=10000" in first.run.requests[0] and f"destination={DEST1}" in first.run.requests[0]
    assert [r.split("?")[0] for r in second.run.requests] == ["callPrepare", "callFinish"] * 2 + ["callPrepare"]
    assert all(f"destination={DEST2}" in r for r in second.run.requests)
    assert [d[0] for d in second.run.dials] == [f"PJSIP/8{DEST2}@carrier-a", f"PJSIP/9{DEST2}@carrier-b"]
    leg2_rows, leg2_holds = await rows(services, "cb.1")
    assert [(prior, status) for prior, status, _, _ in leg2_rows] == [(1, "CONGESTION"), (2, "CONGESTION")]
    assert leg2_holds == 0 and await _open_holds(services, "cb.1") == []
    assert await rows(services, "cb.2") == ([(1, "ANSWER", 30, Decimal("0.30"))], 0)
    assert await balance_of(services, account) == Decimal("9.70")


async def test_leg_two_is_declined_when_leg_one_holds_the_money(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi, port: int
) -> None:
    """With today's whole-call holds, leg 1 holds what the balance allows: leg 2 finds no
    money left and is declined (never an overdraft); leg 1 is billed as it ran."""
    account = await world(services)  # 10 EUR: leg 1 may last 1000 s and holds all of it
    await _connected(services, fake)
    assert (await _callback(dispatcher, await server_key(services), "alice")).value is True
    _, second, held = await _run_legs(
        services, fake, port, leg1=[DialOutcome("ANSWER", ring_s=2, talk_s=10)], leg2=[]
    )
    assert held == [[Decimal("10.00")]]
    assert [r.split("?")[0] for r in second.run.requests] == ["callPrepare"]
    assert second.get("CALLGATE_ERROR") == "E_INSUFFICIENT_MONEY" and second.run.dials == []
    assert await rows(services, "cb.1") == ([], 0)
    assert await rows(services, "cb.2") == ([(1, "ANSWER", 10, Decimal("0.10"))], 0)
    assert await balance_of(services, account) == Decimal("9.90")


async def test_with_holds_in_slices_leg_two_is_allowed_on_the_same_balance(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi, port: int
) -> None:
    """The same 10 EUR as above, with holds in slices: each leg holds one minute (0.60), so
    leg 2 is allowed while leg 1 talks; each leg is billed what it talked."""
    services.settings = replace(services.settings, hold_slice_s=60)
    account = await world(services)
    await _connected(services, fake)  # the FastAGI peer, 127.0.0.1, is pbx1's address: supervised
    assert (await _callback(dispatcher, await server_key(services), "alice")).value is True
    _, second, held = await _run_legs(
        services, fake, port,
        leg1=[DialOutcome("ANSWER", ring_s=2, talk_s=10)],
        leg2=[DialOutcome("ANSWER", ring_s=1, talk_s=8)],
    )  # fmt: skip
    assert held == [[Decimal("0.60")]]
    assert second.run.dials[0][0] == f"PJSIP/8{DEST2}@carrier-a"
    assert await rows(services, "cb.1") == ([(1, "ANSWER", 8, Decimal("0.08"))], 0)
    assert await rows(services, "cb.2") == ([(1, "ANSWER", 10, Decimal("0.10"))], 0)
    assert await _open_holds(services, "cb.1") == [] and await _open_holds(services, "cb.2") == []
    assert await balance_of(services, account) == Decimal("9.82")


def test_the_callback_context_is_in_the_dialplan() -> None:
    plan = parse(Path(DIALPLAN).read_text())
    assert {"_X.", "leg2"} <= set(plan.contexts["callgate-callback"])


async def test_both_legs_holds_join_one_live_call(services: Services, dispatcher: Dispatcher, fake: FakeAmi) -> None:
    """What Asterisk says of a callback: the originated ;1 half (its uniqueid is the call's
    linkedid), the ;2 half, callPrepare Allowed on each, CG_CALLBACK on each: the live call
    has both legs' holds and the callback's id."""
    await world(services)
    async with services.db.begin() as conn:
        await conn.execute(update(sip_extensions).values(sip_max_call_len=300))  # a hold of 3.00 per leg
    await services.cache.invalidate("profiles", "extensions")
    await _connected(services, fake)
    key = await server_key(services)
    for uid, destination in (("cb.2", DEST1), ("cb.1", DEST2)):
        outcome = await dispatcher.call("callPrepare", {"login": "alice", "destination": destination},
                                        credentials(key, uid))  # fmt: skip
        assert text_of(outcome).result == "Allowed"
    half1, half2 = f"Local/{DEST1}@callgate-callback-00000001;1", f"Local/{DEST1}@callgate-callback-00000001;2"
    fake.emit(
        newchannel("cb.1", half1, linkedid="cb.1"), newchannel("cb.2", half2, linkedid="cb.1"),
        var_set("cb.2", half2, "CG_CALLBACK", "00ff00ff00ff00ff", linkedid="cb.1"),
        var_set("cb.2", half2, "CALLGATE_RESULT", "Allowed", linkedid="cb.1"),
        newchannel("cb.3", "PJSIP/801010000001@carrier-a-00000003", linkedid="cb.1", state="6"),
        var_set("cb.1", half1, "CG_CALLBACK", "00ff00ff00ff00ff", linkedid="cb.1"),
        var_set("cb.1", half1, "CALLGATE_RESULT", "Allowed", linkedid="cb.1"),
    )  # fmt: skip
    registry = services.ami.registry("pbx1")
    await until(lambda: len(registry) == 3 and all(c.held for c in registry.channels()[:2]), "both legs held")
    [call] = await services.ami.live_calls("pbx1")
    assert call.callback == "00ff00ff00ff00ff" and len(call.channels) == 3
    assert sorted(h.call_uid for h in call.holds) == ["cb.1", "cb.2"]


async def test_the_readme_callback_example(services: Services, dispatcher: Dispatcher, fake: FakeAmi) -> None:
    """README "Asterisk servers and AMI": the request answers as shown, and the Originate
    block is what Asterisk received, header for header (ActionID aside)."""
    text = section(README.read_text(), "## Asterisk servers and AMI")
    request, originate = re.findall(r"```text\n(.*?)```", text, re.DOTALL)[:2]
    get, answer = request.strip().splitlines()
    query = dict(pair.split("=", 1) for pair in get.split("?", 1)[1].split("&"))
    await world(services)
    await _connected(services, fake)
    outcome = await dispatcher.call("createCallback", query, credentials(await server_key(services), None))
    assert (outcome.error, str(outcome.value).lower()) == (None, answer)
    shown = [tuple(line.split(": ", 1)) if ": " in line else (line.rstrip(":"), "")
             for line in originate.strip().splitlines()]  # fmt: skip
    sent = sorted((k, v) for k, v in _originates(fake)[0] if k != "ActionID")
    callback_id = next(v for k, v in sent if v.startswith("CG_CALLBACK="))
    assert sorted((k, callback_id if v == "CG_CALLBACK=<a new id>" else v) for k, v in shown) == sent
