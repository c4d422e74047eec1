"""getLogs as a CSV file: every row getLogs would show, streamed in pages.

The file is read page by page (keyset pagination: `id < last id`, newest first, at most
PAGE_ROWS rows a page), each page in its own short transaction, and written out as it is
read. So memory stays one page whatever the size of the log, a long download never holds a
database connection between pages (the embedded store has only one), and rows written
while the file downloads are not in it (the first page fixes the newest row).

Order: newest first by row id, the order callFinish writes the rows. getLogs orders by
the row's date, then id; the two agree unless a clock stepped back. Paging by id is what
the tables' indexes (the primary key, `user_id`) serve without sorting the whole log.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, Select, select

from billing_core.calls import cdr_log
from billing_core.catalog.registry import FileAnswer
from billing_core.clock import utcnow
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.tables import cdrs
from billing_core.money import money_json
from billing_core.records import UserRecord

Generations = dict[str, int] | None

PAGE_ROWS = 5000
COLUMNS = (
    "id", "date", "clientdate", "username", "sip_extension", "callerid", "destination", "direction", "route",
    "status", "time", "billed_time", "cost", "displaycost", "displaycurrency",
)  # fmt: skip
RESOLVED_COLUMNS = (*COLUMNS, "info", "debug")
CONTENT_TYPE = "text/csv; charset=utf-8"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

_SELECTED = (
    cdrs.c.id, cdrs.c.call_uid, cdrs.c.prior, cdrs.c.sip_extension, cdrs.c.callerid, cdrs.c.destination,
    cdrs.c.direction, cdrs.c.route, cdrs.c.length_s, cdrs.c.answered_ms, cdrs.c.billed_s, cdrs.c.status,
    cdrs.c.cause, cdrs.c.cost, cdrs.c.display_cost, cdrs.c.display_currency, cdrs.c.created_at,
)  # fmt: skip


def file_name(subject: UserRecord, now: datetime) -> str:
    """`cdrs-<user>-<UTC time>.csv`, the user name reduced to characters safe in a header."""
    user = _UNSAFE.sub("_", subject.username).strip("._") or "user"
    return f"cdrs-{user[:64]}-{now.strftime('%Y%m%dT%H%M%SZ')}.csv"


def _query(subject: UserRecord, *, only_completed: bool, before: int | None, rows: int) -> Select[tuple[object, ...]]:
    query = select(*_SELECTED).where(cdrs.c.user_id == subject.id, cdrs.c.deleted_at.is_(None))  # deleteLogs hides
    if only_completed:
        query = query.where(cdr_log.completed())
    if before is not None:
        query = query.where(cdrs.c.id < before)
    return query.order_by(cdrs.c.id.desc()).limit(rows)


class _Pages:
    """The subject's rows, PAGE_ROWS at a time, at most `limit` in all (None: all)."""

    def __init__(
        self, services: LedgerContext, subject: UserRecord, *, limit: int | None, only_completed: bool, resolve: bool
    ) -> None:
        self.services = services
        self.subject = subject
        self.left = limit
        self.only_completed = only_completed
        self.resolve = resolve
        self.before: int | None = None
        self.done = False

    async def next(self) -> tuple[list[Row[tuple[object, ...]]], dict[str, str] | None]:
        if self.done:
            return [], None
        size = PAGE_ROWS if self.left is None else min(PAGE_ROWS, self.left)
        query = _query(self.subject, only_completed=self.only_completed, before=self.before, rows=size)
        async with self.services.db.begin() as conn:
            rows = list((await conn.execute(query)).all())
            called = await cdr_log.called_users(conn, {str(r.destination) for r in rows}) if self.resolve else None
        if self.left is not None:
            self.left -= len(rows)
        self.done = len(rows) < size or self.left == 0
        if rows:
            self.before = int(rows[-1].id)  # type: ignore[call-overload]
        return rows, called


def _stamp(value: datetime) -> str:
    """billing_core.clock.wire_time by isoformat, cheaper than strftime: a 10^7-row file calls it 2x10^7 times."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "seconds")[:19]


def _lines(rows: Sequence[Sequence[Any]], view: cdr_log.LogView, called: dict[str, str] | None) -> list[list[Any]]:
    """The rows as cdr_log.entry shows them, in COLUMNS order (tests hold the two equal),
    from the row tuples: entry's dict and attribute reads were half of an export's time."""
    lines: list[list[Any]] = []
    offset, username, signs = view.offset, view.username, view.signs
    for row in rows:
        (id_, call_uid, prior, ext, callerid, destination, direction, route, length_s, answered_ms, billed_s,
         status, cause, cost, display_cost, currency, created_at) = row  # fmt: skip
        line: list[Any] = [
            id_, _stamp(created_at), _stamp(created_at + offset), username, ext, callerid, destination, direction,
            route, status, length_s, billed_s, money_json(cost), money_json(display_cost),
            signs.get(str(currency), currency),
        ]  # fmt: skip
        if called is not None:
            line.append(called.get(str(destination), ""))
            line.append(f"call_uid={call_uid} prior={prior} cause={cause} answered_ms={answered_ms}")
        lines.append(line)
    return lines


def _csv(rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode()


async def export(
    services: LedgerContext,
    gens: Generations,
    subject: UserRecord,
    *,
    limit: int | None,
    only_completed: bool,
    resolve_info: bool,
) -> FileAnswer:
    """The subject's call log as CSV (RFC 4180, a header line, getLogs' fields as columns).
    The first page is read here, so that a store failure is an answer, not a cut file."""
    view = await cdr_log.subject_view(services, gens, subject)
    pages = _Pages(services, subject, limit=limit, only_completed=only_completed, resolve=resolve_info)
    first = await pages.next()
    header = RESOLVED_COLUMNS if resolve_info else COLUMNS

    async def chunks() -> AsyncIterator[bytes]:
        rows, called = first
        yield _csv([list(header)])
        while rows:
            yield _csv(_lines(rows, view, called))
            rows, called = await pages.next()

    return FileAnswer(file_name(subject, utcnow()), CONTENT_TYPE, chunks())
