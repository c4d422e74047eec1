"""Holds in slices (issue 12 §4): with supervision on, concurrent calls of one account each
hold a slice, grow it while they talk, and are hung up over AMI the moment their money ends;
the account never goes below −overdraft by one cent. Both backends, the fake AMI server,
the supervisor driven tick by tick on a clock of its own."""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal

import pytest

from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.asterisk.servers import add_server
from billing_core.calls.supervision import HoldSupervisor
from billing_core.container import Services
from billing_core.ledger.book import Reservation
from tests.factories import balance_of, make_key, make_user
from tests.fake_ami import FakeAmi, Message, newchannel, var_set
from tests.rating_world import RatingWorld, ledger_of
from tests.test_asterisk_ami import PATIENT, until
from tests.test_asterisk_live_calls import pbx

SLICE_S = 60
LEAD_S = 30
NUMBER = "4915100000001"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def _world(services: Services, *, balance: str) -> int:
    """0.60/min billed per second (0.01 a second), one user with `balance` and no overdraft."""
    w = RatingWorld(services)
    germany = await w.direction("49", "Germany", min_len=5, max_len=15)
    carrier = await w.route("carrier-a", prefix="8")
    tariff = await w.tariff("de", bill_type=await w.bill_type("persecond", free_threshold=0, step=1))
    await w.entry(tariff, germany, "0.60", carrier, priority=1)
    user = await make_user(services, "caller", balance=Decimal(balance), sip_extension="10001", sip_rates_id=tariff)
    await make_key(services, level=50, source="127.0.0.1", auth_by="sip_extension", owner="admin", name="asterisk")
    return user.account_id


async def _agi(dispatcher: Dispatcher, script: str, uid: str, **extra: str) -> tuple[str, dict[str, str]]:
    args = {"login": "10001", "destination": NUMBER, "prior": "1", **extra}
    outcome = await dispatcher.call(script, args, Credentials(peer_ip="127.0.0.1", transport="agi", call_uid=uid))
    assert outcome.error is None, outcome.error
    return str(outcome.value.result), dict(outcome.value.fields)


def _answered_call(uid: str, at: float) -> tuple[Message, ...]:
    """What Asterisk says of a call callPrepare allowed on channel `uid` whose callee
    (`uid`-b) answered at `at`."""
    caller, callee = f"Local/{NUMBER}@callgate-outbound-{uid};2", f"PJSIP/carrier-a-{uid}"
    return (
        newchannel(uid, caller),
        var_set(uid, caller, "CALLGATE_RESULT", "Allowed"),
        newchannel(f"{uid}-b", callee, linkedid=uid, state="5"),
        {"Event": "DialEnd", "Privilege": "call,all", "Channel": caller, "ChannelState": "6", "Uniqueid": uid,
         "Linkedid": uid, "DestChannel": callee, "DestUniqueid": f"{uid}-b", "DialStatus": "ANSWER"},
        {"Event": "Newstate", "Privilege": "call,all", "Timestamp": f"{at:.6f}", "Channel": callee,
         "ChannelState": "6", "ChannelStateDesc": "Up", "Uniqueid": f"{uid}-b", "Linkedid": uid},
    )  # fmt: skip


async def _holds(services: Services, account_id: int) -> dict[str, Reservation]:
    rows = (await ledger_of(services, account_id)).reservations
    return {r.call_uid: Reservation.from_row(r) for r in rows}


def _hangups(fake: FakeAmi) -> list[str]:
    return [a["Channel"] for a in fake.actions if a.get("Action", "").lower() == "hangup"]


@pytest.fixture
def sliced(services: Services) -> Services:
    services.settings = replace(services.settings, hold_slice_s=SLICE_S, hold_slice_lead_s=LEAD_S)
    return services


async def _supervised(services: Services, fake: FakeAmi) -> None:
    await add_server(services.db, services.box, pbx(fake))
    await services.ami.refresh()
    assert await services.ami.connection("pbx1").wait_up(PATIENT)


async def test_calls_share_the_money_a_slice_at_a_time_and_stop_when_it_ends(
    sliced: Services, dispatcher: Dispatcher, fake: FakeAmi
) -> None:
    services = sliced
    account = await _world(services, balance="3.00")  # 300 s of talk in all
    await _supervised(services, fake)
    # three calls at once: each is allowed for all the money there is, each holds one minute
    answers = [await _agi(dispatcher, "callPrepare", uid) for uid in ("c1", "c2", "c3")]
    assert [result for result, _ in answers] == ["Allowed"] * 3
    assert [fields["CALLGATE_MAXTIME"] for _, fields in answers] == ["300", "240", "180"]
    holds = await _holds(services, account)
    assert {uid: h.amount for uid, h in holds.items()} == {uid: Decimal("0.60") for uid in ("c1", "c2", "c3")}

    clock = Clock()
    start = clock.now
    fake.emit(*(e for uid in ("c1", "c2", "c3") for e in _answered_call(uid, start)))
    registry = services.ami.registry("pbx1")
    await until(lambda: len(registry) == 6, "six channels")
    supervisor = HoldSupervisor(services, clock=clock)

    clock.now = start + 10  # nothing to do yet
    await supervisor.tick()
    assert {h.amount for h in (await _holds(services, account)).values()} == {Decimal("0.60")}

    # 30 s before the first minute ends: c1 and c2 get their second minute, c3 finds the
    # money gone (3.00 = 1.20 + 1.20 + 0.60): its minute is its last
    clock.now = start + 31
    await supervisor.tick()
    holds = await _holds(services, account)
    assert {uid: (h.amount, h.max_time_s) for uid, h in holds.items()} == {
        "c1": (Decimal("1.20"), 300), "c2": (Decimal("1.20"), 240), "c3": (Decimal("0.60"), 60),
    }  # fmt: skip
    assert _hangups(fake) == []
    clock.now = start + 59.5
    await supervisor.tick()
    assert _hangups(fake) == []
    assert 0.49 < supervisor.next_wake_s() < 0.51  # it wakes when c3's money ends, not a tick later
    clock.now = start + 60.01  # (the answer's Timestamp has 6 decimals)
    await supervisor.tick()
    assert _hangups(fake) == [f"Local/{NUMBER}@callgate-outbound-c3;2"]  # hung up when its money ends
    # Asterisk's hangup handler reports a second more than that (the hangup's own latency)
    assert (await _agi(dispatcher, "callFinish", "c3", length="61", status="ANSWER"))[0] == "Saved"
    assert await balance_of(services, account) == Decimal("2.40")

    clock.now = start + 91  # c1 and c2 want a third minute: 2.40 left, 2.40 held
    await supervisor.tick()
    holds = await _holds(services, account)
    assert {uid: (h.amount, h.max_time_s) for uid, h in holds.items()} == {
        "c1": (Decimal("1.20"), 120), "c2": (Decimal("1.20"), 120),
    }  # fmt: skip
    clock.now = start + 120.01
    await supervisor.tick()
    assert sorted(_hangups(fake))[:2] == sorted(
        [f"Local/{NUMBER}@callgate-outbound-c1;2", f"Local/{NUMBER}@callgate-outbound-c2;2"]
    )
    for uid in ("c1", "c2"):
        assert (await _agi(dispatcher, "callFinish", uid, length="122", status="ANSWER"))[0] == "Saved"
    # every cent spent, not one more: 60 + 120 + 120 s at 0.01
    assert await balance_of(services, account) == Decimal("0.00")
    assert [(c.call_uid, c.billed_s, Decimal(c.cost)) for c in (await ledger_of(services, account)).cdrs] == [
        ("c3", 60, Decimal("0.6000")), ("c1", 120, Decimal("1.2000")), ("c2", 120, Decimal("1.2000")),
    ]  # fmt: skip


async def test_money_taken_away_mid_call_ends_the_call_at_what_its_hold_pays(
    sliced: Services, dispatcher: Dispatcher, fake: FakeAmi
) -> None:
    services = sliced
    account = await _world(services, balance="10.00")
    await _supervised(services, fake)
    assert (await _agi(dispatcher, "callPrepare", "m1"))[0] == "Allowed"
    clock = Clock()
    start = clock.now
    fake.emit(*_answered_call("m1", start))
    await until(lambda: len(services.ami.registry("pbx1")) == 2, "two channels")
    # another call of the account (prepared over HTTP: not supervised) takes the rest whole
    other = await dispatcher.call(
        "callPrepare", {"login": "10001", "destination": NUMBER, "prior": "1", "call_id": "http-1"},
        Credentials(peer_ip="127.0.0.1", transport="http", call_uid=None),
    )  # fmt: skip
    assert other.error is None and other.value.result == "Allowed"
    assert (await _holds(services, account))["http-1"].amount == Decimal("9.40")  # 10.00 − m1's minute

    supervisor = HoldSupervisor(services, clock=clock)
    clock.now = start + 31
    await supervisor.tick()  # nothing left to grow into: m1's first minute is its last
    assert (await _holds(services, account))["m1"].max_time_s == 60
    clock.now = start + 60.01  # (the answer's Timestamp has 6 decimals)
    await supervisor.tick()
    assert _hangups(fake) == [f"Local/{NUMBER}@callgate-outbound-m1;2"]
    assert (await _agi(dispatcher, "callFinish", "m1", length="62", status="ANSWER"))[0] == "Saved"
    assert [(c.call_uid, c.billed_s) for c in (await ledger_of(services, account)).cdrs] == [("m1", 60)]


async def test_without_ami_a_call_holds_its_whole_length(
    sliced: Services, dispatcher: Dispatcher
) -> None:
    services = sliced
    account = await _world(services, balance="3.00")
    result, fields = await _agi(dispatcher, "callPrepare", "w1")
    assert (result, fields["CALLGATE_MAXTIME"]) == ("Allowed", "300")
    assert (await _holds(services, account))["w1"].amount == Decimal("3.00")
    assert (await _agi(dispatcher, "callPrepare", "w2"))[0] == "Declined"  # nothing left to hold
