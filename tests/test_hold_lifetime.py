"""Issue 9, item 9: a hold lasts while its call rings, then its max time, then the grace.

The clock is moved by hand (callPrepare and callFinish read billing_core.calls.control'
utcnow), so a call that "rings" for minutes takes no time in the test.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

import billing_core.api.methods  # noqa: F401 - registers callPrepare and callFinish
from billing_core import clock
from billing_core.api.dispatch import Dispatcher
from billing_core.calls import control as calls
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.ledger.tables import reservations
from tests.factories import balance_of, make_user
from tests.rating_world import finish, prepare, standard_world, text_of
from tests.test_agi_end_to_end import Gate, build_world, gate  # noqa: F401 - the fixture

NUMBER = "74951234567"  # Russia, 0.10 EUR/min on route1-cli, byminute
T0 = datetime(2026, 12, 2, 3, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def _expires_at(services: Services, call_uid: str) -> datetime | None:
    async with services.db.begin() as conn:
        value = (
            await conn.execute(select(reservations.c.expires_at).where(reservations.c.call_uid == call_uid))
        ).scalar_one()
    return clock.as_utc(value)


async def test_a_call_ringing_longer_than_the_grace_keeps_its_hold(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    ringing = replace(services, settings=replace(services.settings, ring_timeout_s=300, reservation_grace_s=120))
    dispatcher = Dispatcher(ringing)
    now = Clock()
    monkeypatch.setattr(calls, "utcnow", now)
    std = await standard_world(services)
    made = await make_user(services, "alice", balance=Decimal("1"), rates_id=std.base, sip_extension="1001")

    first = text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="rings"))
    assert first.fields["CALLGATE_MAXTIME"] == "600" and first.fields["CALLGATE_RINGTIME"] == "300"
    assert "300" not in first.text.split()  # the spec's Allowed line carries no ring time
    assert await _expires_at(services, "rings") == T0 + timedelta(seconds=300 + 600 + 120)

    # It rang 200 s (more than the 120 s grace), was answered, and talks 590 s: at T0 + 790 a
    # hold counted from callPrepare (max time + grace = T0 + 720) would be over.
    now.now = T0 + timedelta(seconds=790)
    other = await prepare(dispatcher, std.key, "alice", NUMBER, call_id="other")
    assert text_of(other).error == "E_INSUFFICIENT_MONEY"

    saved = text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="590", call_id="rings"))
    assert saved.text == "Saved Russia [alice/74951234567] via [route1-cli] 600 1.00 EUR ANSWER"
    assert await balance_of(services, made.account_id) == Decimal("0.0000")  # never below −overdraft (0)
    assert text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="other")).error == "E_INSUFFICIENT_MONEY"


async def test_the_hold_still_ends_after_ring_time_max_time_and_grace(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side of the rule: a hold whose callFinish never came stops counting."""
    dispatcher = Dispatcher(services)  # the defaults: ring 60 s, grace 120 s
    now = Clock()
    monkeypatch.setattr(calls, "utcnow", now)
    std = await standard_world(services)
    await make_user(services, "alice", balance=Decimal("1"), rates_id=std.base, sip_extension="1001")
    text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="lost"))
    assert await _expires_at(services, "lost") == T0 + timedelta(seconds=60 + 600 + 120)
    now.now = T0 + timedelta(seconds=60 + 600 + 119)
    assert text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="next")).error == "E_INSUFFICIENT_MONEY"
    now.now = T0 + timedelta(seconds=60 + 600 + 120)
    assert text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="next")).result == "Allowed"


async def test_call_prepare_sets_callgate_ringtime_on_the_channel(gate: Gate) -> None:  # noqa: F811
    await build_world(gate.services)
    prepared = await gate.agi("callPrepare", "login=10000&destination=79010000001&prior=1", uniqueid="ring1")
    v = prepared.variables
    assert (v["CALLGATE_RESULT"], v["CALLGATE_RINGTIME"]) == ("Allowed", "60")
    assert v["CALLGATE_ANSWER"] == "Allowed 90 79010000001 79020000002 RussiaMobileTele2 outline/ route1-cli -1 -1"


def test_ring_timeout_setting() -> None:
    assert Settings.from_env({}).ring_timeout_s == 60
    assert Settings.from_env({"CALLGATE_RING_TIMEOUT_S": "45"}).ring_timeout_s == 45
    with pytest.raises(ValueError, match="CALLGATE_RING_TIMEOUT_S"):
        Settings.from_env({"CALLGATE_RING_TIMEOUT_S": "0"})
