"""Holds in slices: supervised calls hold their money a slice at a time (issue 12 §4).

Without supervision every call holds the money of the longest call its balance allows: at
0.10/min and the default 4 h cap that is 24.01 EUR a call, so a 100 EUR account runs about
five calls at once. With `CALLGATE_HOLD_SLICE_S` > 0, a call whose Asterisk has AMI up
(callPrepare over FastAGI from a registered server's address) is allowed as long as the
whole spendable money lasts (`CALLGATE_MAXTIME` as before), but holds only its first
slice. This supervisor, one task per serving process, then follows every live held call
through the channel registries (billing_core.asterisk):

- talk starts when the called channel answers (`DialEnd` of the held channel names it,
  its `Newstate` Up gives the moment); a call whose answer time is unknown (found by
  `CoreShowChannels` after a reconnect) counts from when its first channel was created,
  which can only end it early, never late;
- `lead_s` before the held seconds are talked, the hold grows by one more slice
  (billing_core.ledger.slices.grow, atomic under the account lock, so the account's other
  calls, transfers and balance changes are respected);
- when it cannot grow by a whole slice (the money is spent elsewhere), what it did get is
  the call's last slice: the hold's max time is cut to what the hold pays for (`trim`), so
  callFinish bills at most that, and an AMI `Hangup` ends the call when that time is
  talked. The call never costs more than its hold: no overdraft, to the cent.

Every worker supervises the calls it sees; two workers meeting on one hold do no harm (a
grow asks for the same target; a trim or hangup twice does what once did). Calls that are
not supervised, or everything when AMI is down, keep the whole-call hold of callPrepare.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Protocol

import structlog

from billing_core.asterisk.channels import Channel
from billing_core.asterisk.errors import AsteriskUnavailable
from billing_core.asterisk.service import AmiService, LiveCall
from billing_core.clock import utcnow
from billing_core.errors import ApiError
from billing_core.ledger import slices
from billing_core.ledger.book import OPEN, Reservation
from billing_core.ledger.context import LedgerContext
from billing_core.rating.arithmetic import max_call_time, reserve_amount
from billing_core.rating.engine import Rating

log = structlog.get_logger(__name__)


class SupervisionContext(LedgerContext, Protocol):
    ami: AmiService


def supervised_slice(services: SupervisionContext, *, transport: str, peer_ip: str) -> int:
    """The slice a callPrepare from `peer_ip` holds (0: the whole call, as without AMI)."""
    slice_s = services.settings.hold_slice_s
    if slice_s <= 0 or transport != "agi":
        return 0
    return slice_s if services.ami.up_at(peer_ip) else 0


def covered_s(rating: Rating, amount: Decimal, cap_s: int) -> int:
    """The seconds of talk `amount` pays for, at most `cap_s`."""
    if rating.internal:
        return cap_s
    found = max_call_time(
        price_per_minute=rating.price_per_minute, connect_fee=rating.connect_fee, step=rating.step,
        free_threshold=rating.free_threshold, available=amount, cap_s=cap_s,
    )  # fmt: skip
    return found or 0


def hold_for(rating: Rating, seconds: int) -> Decimal:
    return reserve_amount(rating.billed(seconds), price_per_minute=rating.price_per_minute,
                          connect_fee=rating.connect_fee)  # fmt: skip


def talk_started(call: LiveCall, call_uid: str) -> float:
    """When the called party answered, as the registry saw it (else the call's start)."""
    channels = {c.uniqueid: c for c in call.channels}
    held: Channel | None = channels.get(call_uid)
    if held is not None and held.dialed:
        callee = channels.get(held.dialed)
        if callee is not None and callee.answered_at is not None:
            return callee.answered_at
    return call.since


class HoldSupervisor:
    def __init__(
        self, services: SupervisionContext, *, tick_s: float = 1.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.services = services
        self.tick_s = tick_s
        self.clock = clock
        self.hangups: dict[tuple[str, int], float] = {}  # (call_uid, prior) -> when its money ends
        self.hung_up: set[tuple[str, int]] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def slice_s(self) -> int:
        return self.services.settings.hold_slice_s

    def start(self) -> None:
        if self._task is None and self.slice_s > 0:
            self._task = asyncio.create_task(self._run(), name="ami:supervision")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def next_wake_s(self) -> float:
        """Until the next tick, or sooner when a call's money ends before it: the hangup is
        sent at that moment, not up to a tick later."""
        due = [at for key, at in self.hangups.items() if key not in self.hung_up]
        if not due:
            return self.tick_s
        return max(0.0, min(self.tick_s, min(due) - self.clock()))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.next_wake_s())
            try:
                await self.tick()
            except Exception as exc:  # the database or AMI is away: the next tick tries again
                log.warning("supervision.tick_failed", error=type(exc).__name__)

    async def tick(self) -> None:
        now = self.clock()
        live: set[tuple[str, int]] = set()
        for call in await self.services.ami.live_calls():
            for hold in call.holds:
                if hold.state != OPEN:
                    continue
                key = (hold.call_uid, hold.prior)
                live.add(key)
                await self._supervise(call, key, now)
        for key in [k for k in self.hangups if k not in live]:  # ended (or charged): forget it
            self.hangups.pop(key, None)
            self.hung_up.discard(key)

    async def _supervise(self, call: LiveCall, key: tuple[str, int], now: float) -> None:
        if key in self.hangups:
            if now >= self.hangups[key] and key not in self.hung_up:
                await self._hang_up(call, key)
            return
        reservation = await self.services.call_ledger.find_reservation(*key)
        if reservation is None or reservation.rating is None or reservation.state != OPEN:
            return
        rating = Rating.from_json(reservation.rating)
        held_s = covered_s(rating, reservation.amount, reservation.max_time_s)
        if held_s >= reservation.max_time_s:
            return  # the whole call is held (not sliced, or its last slice reached the end)
        started = talk_started(call, key[0])
        if now < started + held_s - self.services.settings.hold_slice_lead_s:
            return
        target_s = min(held_s + self.slice_s, reservation.max_time_s)
        grown = await slices.grow(self.services.db, reservation.id, hold_for(rating, target_s), utcnow())
        if grown is None:
            return  # charged meanwhile
        got_s = covered_s(rating, grown.amount, reservation.max_time_s)
        if got_s >= target_s:
            log.info("supervision.extended", call_uid=key[0], prior=key[1], held_s=got_s, amount=str(grown.amount))
            return
        await self._last_slice(call, key, rating, grown, got_s, started)

    async def _last_slice(
        self, call: LiveCall, key: tuple[str, int], rating: Rating, hold: Reservation, got_s: int, started: float
    ) -> None:
        """The money of this call ends after `got_s` seconds of talk: bill at most that, and
        hang up then."""
        if not await slices.trim(self.services.db, hold.id, amount=hold_for(rating, got_s), max_time_s=got_s):
            return  # charged meanwhile
        self.hangups[key] = started + got_s
        log.info("supervision.last_slice", call_uid=key[0], prior=key[1], talk_s=got_s, hangup_at=started + got_s)
        if self.clock() >= self.hangups[key]:
            await self._hang_up(call, key)

    async def _hang_up(self, call: LiveCall, key: tuple[str, int]) -> None:
        channel = next((c for c in call.channels if c.uniqueid == key[0]), None)
        names = [channel.name] if channel is not None else [c.name for c in call.channels]
        try:
            for name in names:
                await self.services.ami.action(call.server, "Hangup", {"Channel": name, "Cause": "16"})
        except (AsteriskUnavailable, ApiError) as exc:
            log.warning("supervision.hangup_failed", call_uid=key[0], server=call.server, error=str(exc))
            return  # tried again at the next tick
        self.hung_up.add(key)
        log.info("supervision.hung_up", call_uid=key[0], prior=key[1], server=call.server, money="spent")
