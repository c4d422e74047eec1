"""Orphans (issue 12 §4): calls whose callFinish never came are closed from Asterisk's AMI
`Cdr` events, charged once for what Asterisk logged, in either order with a late callFinish.

The events are the real Master.csv rows of transcripts 015-027 (the rows cdr_manager sends
as `Cdr` events, field for field), over the fake AMI server, on both backends."""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from billing_core.api.dispatch import Dispatcher
from billing_core.asterisk.servers import add_server
from billing_core.calls.asterisk_cdr import CSV_COLUMNS
from billing_core.calls.orphans import OrphanCloser, cdr_from_event
from billing_core.calls.reconcile import CLOSED_BY_AMI
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.ledger.tables import cdrs
from callgate.startup import Worker
from tests.factories import balance_of
from tests.fake_ami import FakeAmi, Message
from tests.ports import free_port
from tests.test_asterisk_ami import PATIENT, until
from tests.test_asterisk_live_calls import pbx
from tests.test_reconcile import START, _agi, _holds_as_asterisk_left_them, _open_uids, _world, master_csv_lines

GRACE_S = 30.0
# cdr_manager's field names, in cdr_csv's column order (Master.csv)
AMI_FIELDS = (
    "AccountCode", "Source", "Destination", "DestinationContext", "CallerID", "Channel", "DestinationChannel",
    "LastApplication", "LastData", "StartTime", "AnswerTime", "EndTime", "Duration", "BillableSeconds",
    "Disposition", "AMAFlags", "UniqueID", "UserField",
)  # fmt: skip
LATE_S1 = {"login": "10001", "destination": "4915100000003", "prior": "1", "length": "3", "status": "ANSWER"}


def cdr_events() -> list[Message]:
    """The Cdr event Asterisk sends for each Master.csv row of 015-027."""
    events: list[Message] = []
    for fields in csv.reader(io.StringIO("\n".join(master_csv_lines()))):
        row = dict(zip(CSV_COLUMNS, fields, strict=True))
        event = {"Event": "Cdr", "Privilege": "cdr,all"}
        event.update({ami: row[column] for ami, column in zip(AMI_FIELDS, CSV_COLUMNS, strict=True)})
        events.append(event)
    return events


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _cdrs(services: Services) -> dict[tuple[str, int], tuple[str, int, Decimal, str]]:
    async with services.db.begin() as conn:
        rows = (await conn.execute(select(cdrs))).all()
    return {(r.call_uid, r.prior): (r.status, r.billed_s, Decimal(r.cost), r.cause) for r in rows}


async def _attached(services: Services, fake: FakeAmi, clock: Clock) -> OrphanCloser:
    closer = OrphanCloser(services, grace_s=GRACE_S, clock=clock)
    closer.attach(services.ami)
    await add_server(services.db, services.box, pbx(fake))
    await services.ami.refresh()
    assert await services.ami.connection("pbx1").wait_up(PATIENT)
    return closer


def test_a_cdr_event_reads_as_the_csv_row_it_mirrors() -> None:
    [event] = [e for e in cdr_events() if e["Disposition"] == "CONGESTION"][:1]
    row = cdr_from_event(event, 7)
    assert (row.uniqueid, row.lastapp, row.billsec, row.disposition, row.order) == (
        event["UniqueID"], event["LastApplication"], int(event["BillableSeconds"]), "CONGESTION", 7
    )
    assert cdr_from_event({**event, "BillableSeconds": "x"}, 1).billsec == 0  # never an exception in the stream


async def test_cdr_events_close_the_orphans_once_and_a_late_callfinish_charges_nothing(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi
) -> None:
    account = await _world(services)
    await _holds_as_asterisk_left_them(services, dispatcher)
    clock = Clock()
    closer = await _attached(services, fake, clock)
    events = cdr_events()
    fake.emit(*events)
    uids = {e["UniqueID"] for e in events}
    await until(lambda: closer.pending == len(uids), "every call's Cdr events buffered")

    assert await closer.sweep() is None  # within the grace: the callFinish may still come
    assert await balance_of(services, account) == START

    clock.now += GRACE_S + 1
    report = await closer.sweep()
    assert report is not None
    # the same charges `callgate reconcile` makes from Master.csv (tests/test_reconcile.py)
    assert await balance_of(services, account) == START - Decimal("0.11")
    written = await _cdrs(services)
    assert written == {
        ("s1-caller2", 1): ("ANSWER", 3, Decimal("0.0300"), CLOSED_BY_AMI),
        ("s2-caller2", 1): ("CANCEL", 0, Decimal("0.0000"), CLOSED_BY_AMI),  # hung up during callPrepare
        ("s3-disa", 1): ("ANSWER", 5, Decimal("0.0500"), CLOSED_BY_AMI),  # the callee's 5 s, not 16
        ("s5-caller2", 1): written[("s5-caller2", 1)],  # its own callFinish (025)
        ("s5-caller2", 2): ("ANSWER", 3, Decimal("0.0300"), CLOSED_BY_AMI),
    }
    assert written[("s5-caller2", 1)][:3] == ("CONGESTION", 0, Decimal("0.0000"))
    assert written[("s5-caller2", 1)][3] != CLOSED_BY_AMI
    assert await _open_uids(services) == [("lost-old", 1), ("still-up", 1)]  # no Cdr names them
    assert closer.pending == 0

    # the callFinish that was lost arrives after all: the stored answer, no second charge
    assert await _agi(dispatcher, "callFinish", LATE_S1, "s1-caller2") == "Saved"
    assert await balance_of(services, account) == START - Decimal("0.11")
    # the same events again (a second worker's closer, a replayed stream): nothing more
    fake.emit(*events)
    await until(lambda: closer.pending == len(uids), "buffered again")
    clock.now += GRACE_S + 1
    await closer.sweep()
    assert await balance_of(services, account) == START - Decimal("0.11")
    assert await _cdrs(services) == written


async def test_a_callfinish_within_the_grace_is_the_charge(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi
) -> None:
    account = await _world(services)
    await _holds_as_asterisk_left_them(services, dispatcher)
    clock = Clock()
    closer = await _attached(services, fake, clock)
    s1 = [e for e in cdr_events() if e["UniqueID"] == "s1-caller2"]
    assert s1
    fake.emit(*s1)
    await until(lambda: closer.pending == 1, "s1's Cdr events buffered")
    # the hangup handler's callFinish, 4 s of talk by its own count, comes before the grace ends
    assert await _agi(dispatcher, "callFinish", {**LATE_S1, "length": "4"}, "s1-caller2") == "Saved"
    clock.now += GRACE_S + 1
    report = await closer.sweep()
    assert report is not None and report.decisions == []  # s1 has no open hold any more
    assert await balance_of(services, account) == START - Decimal("0.04")
    status, billed_s, cost, cause = (await _cdrs(services))[("s1-caller2", 1)]
    assert (status, billed_s, cost) == ("ANSWER", 4, Decimal("0.0400")) and cause != CLOSED_BY_AMI


async def test_serve_closes_an_orphan_from_its_cdr_event(
    services: Services, dispatcher: Dispatcher, settings: Settings, fake: FakeAmi, tmp_path: Path
) -> None:
    account = await _world(services)
    await _holds_as_asterisk_left_them(services, dispatcher)
    await add_server(services.db, services.box, pbx(fake))
    node = replace(
        settings, agi_port=free_port(), http_port=free_port(), spool_dir=str(tmp_path / "node-spool"),
        orphan_grace_s=0.2,
    )  # fmt: skip
    worker = Worker(node)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await worker.listening.wait()
        await until(lambda: bool(worker.services.ami.statuses()), "serve opened its AMI connection")
        assert await worker.services.ami.connection("pbx1").wait_up(PATIENT)
        # the DISA call's rows and its callee's (another uniqueid), not the other calls'
        others = {"s1-caller2", "s2-caller2", "s5-caller2"}
        fake.emit(*[e for e in cdr_events() if e["UniqueID"] not in others])
        for _ in range(100):
            if await balance_of(services, account) != START:
                break
            await asyncio.sleep(0.1)
        assert await balance_of(services, account) == START - Decimal("0.05")
        assert (await _cdrs(services))[("s3-disa", 1)] == ("ANSWER", 5, Decimal("0.0500"), CLOSED_BY_AMI)
    finally:
        stop.set()
        await running
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("ami:")]
