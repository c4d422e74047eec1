"""Orphans: calls whose callFinish never came, closed from Asterisk's own AMI `Cdr` events.

A hold whose call ended without a callFinish (the hangup handler's AGI failed, the answer
was lost, the node it asked was down) used to stay open until it expired, and the call was
never charged. Every Asterisk with `cdr_manager` on sends one `Cdr` event per CDR row it
writes, the same rows `callgate reconcile` reads from Master.csv. This module buffers those
events per caller uniqueid (a hold's call_uid) and, `grace_s` after the last one of a call
(time for the ordinary callFinish, which the hangup handler sends before Asterisk posts the
CDR), hands the call to billing_core.calls.reconcile: the holds still open are charged for
what Asterisk says the call lasted, or released, through the ordinary callFinish path.

Exactly once: that path writes one CDR per (call_uid, prior) and replays it afterwards, so
a late callFinish after this (or this after a late callFinish) charges nothing more; the
CDR it wrote carries `cause` = `ami` (CLOSED_BY_AMI). A call no Cdr event ever names keeps
its hold until it expires, as before; `callgate reconcile` can still close it from the files.

Every worker of `callgate serve` has its own AMI connections and so its own closer: two
closers on one call meet in that same (call_uid, prior) key and charge once.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from billing_core.asterisk.service import AmiService
from billing_core.calls.asterisk_cdr import AsteriskCdr
from billing_core.calls.reconcile import CLOSED_BY_AMI, Report, reconcile
from billing_core.ledger.context import LedgerContext

log = structlog.get_logger(__name__)

ROWS_KEPT = 20_000  # Cdr rows remembered by channel, for the callee rows of later calls
STALE_AFTER_S = 10 * 365 * 86400  # a call with Cdr rows is never "stale" here: it has ended


def cdr_from_event(message: Mapping[str, Any], order: int) -> AsteriskCdr:
    """One cdr_manager `Cdr` event as the row cdr_csv would have written for it."""

    def text(name: str) -> str:
        return str(message.get(name) or "").strip()

    try:
        billsec = max(int(text("BillableSeconds") or "0"), 0)
    except ValueError:
        billsec = 0
    return AsteriskCdr(
        uniqueid=text("UniqueID"), channel=text("Channel"), dstchannel=text("DestinationChannel"),
        lastapp=text("LastApplication"), lastdata=text("LastData"), start=text("StartTime"), billsec=billsec,
        disposition=text("Disposition"), src=text("Source"), order=order,
    )  # fmt: skip


class OrphanCloser:
    def __init__(
        self, services: LedgerContext, *, grace_s: float, sweep_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.services = services
        self.grace_s = grace_s
        self.sweep_s = sweep_s
        self.clock = clock
        self._rows: dict[str, list[AsteriskCdr]] = {}  # caller uniqueid -> its rows, until closed
        self._due: dict[str, float] = {}  # caller uniqueid -> when to close it
        self._by_channel: OrderedDict[str, AsteriskCdr] = OrderedDict()  # every recent row by channel
        self._order = 0
        self._task: asyncio.Task[None] | None = None
        self.closed: list[Report] = []  # the reports of the last sweeps (bounded), for tests and logs

    # --- life cycle ----------------------------------------------------------------------

    def attach(self, ami: AmiService) -> None:
        ami.on("Cdr", self.on_cdr)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ami:orphans")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                await self.sweep()
            except Exception as exc:  # the database is away: the calls stay due, tried again
                log.warning("orphans.sweep_failed", error=type(exc).__name__)

    # --- events --------------------------------------------------------------------------

    def on_cdr(self, server: str, message: Mapping[str, Any]) -> None:
        """Inline in the AMI stream: buffer the row, (re)start the call's grace."""
        self._order += 1
        row = cdr_from_event(message, self._order)
        if not row.uniqueid:
            return
        self._rows.setdefault(row.uniqueid, []).append(row)
        self._due[row.uniqueid] = self.clock() + self.grace_s
        if row.channel:
            self._by_channel[row.channel] = row
            self._by_channel.move_to_end(row.channel)
            while len(self._by_channel) > ROWS_KEPT:
                self._by_channel.popitem(last=False)

    @property
    def pending(self) -> int:
        return len(self._due)

    # --- closing -------------------------------------------------------------------------

    async def _read_rows(self, column: str, values: Sequence[str]) -> list[AsteriskCdr]:
        if column == "uniqueid":
            return [row for uid in values for row in self._rows.get(uid, ())]
        return [row for channel in values if (row := self._by_channel.get(channel)) is not None]

    async def sweep(self, *, now: float | None = None) -> Report | None:
        """Close the calls whose grace is over (their holds still open); None when none is due."""
        moment = self.clock() if now is None else now
        due = sorted(uid for uid, at in self._due.items() if at <= moment)
        if not due:
            return None
        report = await reconcile(
            self.services, self._read_rows, dry_run=False, stale_after_s=STALE_AFTER_S, call_uids=due,
            closed_by=CLOSED_BY_AMI,
        )  # fmt: skip
        for uid in due:  # written (or found closed already): forget them
            if self._due.get(uid, moment + 1) <= moment:  # unless a new row came during the sweep
                self._due.pop(uid, None)
                self._rows.pop(uid, None)
        acted = [d for d in report.decisions if d.action in ("charge", "release")]
        if acted:
            log.info("orphans.closed", calls=len(due), charged=len(report.of("charge")),
                     released=len(report.of("release")))  # fmt: skip
        self.closed = [*self.closed[-9:], report]
        return report
