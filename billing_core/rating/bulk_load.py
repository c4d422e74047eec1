"""Loading large CSV files into the catalogue: read, stage, merge, all or nothing.

Both importers (billing_core.rating.direction_import, billing_core.rating.decks) go the
same way, in one transaction:

1. the file is read as a stream (never whole in memory) and each row is checked on its
   own; a good row goes to a staging table, a bad one is kept with its line number;
2. the staging table is filled in bulk: on PostgreSQL with COPY (asyncpg's
   `copy_records_to_table`), on SQLite with batched `executemany`;
3. what needs the whole file (a key given twice) is asked of the staging table in SQL;
4. if any row was bad, the transaction is rolled back: nothing is loaded, and every bad
   line is reported (the first MAX_REPORTED of them, and how many there were);
5. else a few set-based statements merge the staging table into the real tables.

SQL here is written with `$1`-style parameters; on SQLite they become `?1`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

MAX_REPORTED = 1000  # bad rows reported one by one; the rest are counted
BULK_TIMEOUT_S = 3600.0  # the whole import transaction
LONG_STATEMENT_S = 900.0  # a merge of millions of rows outlives the decision statement time-out
SQLITE_BATCH = 5000  # rows per executemany on SQLite
PROGRESS_EVERY = 10_000  # rows between two progress updates

_PARAM = re.compile(r"\$(\d+)")


class DeckFileError(ValueError):
    """The file itself is unusable (unreadable, not UTF-8, wrong header, malformed CSV)."""


class Progress(Protocol):
    """Where an import says how far it got (a progress bar on a terminal, log lines elsewhere)."""

    def phase(self, name: str, total: int | None = None) -> None: ...
    def advance(self, rows: int) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    def phase(self, name: str, total: int | None = None) -> None:
        return None

    def advance(self, rows: int) -> None:
        return None

    def finish(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class RejectedRow:
    line: int
    code: str
    reason: str


@dataclass(slots=True)
class Rejections:
    """Bad rows: the first MAX_REPORTED kept (by line), all of them counted."""

    rows: list[RejectedRow] = field(default_factory=list)
    total: int = 0

    def add(self, line: int, code: str, reason: str) -> None:
        self.total += 1
        if len(self.rows) < MAX_REPORTED:
            self.rows.append(RejectedRow(line, code, reason))

    def merged(self) -> list[RejectedRow]:
        return sorted(self.rows, key=lambda r: r.line)[:MAX_REPORTED]

    def lines(self) -> list[str]:
        shown = self.merged()
        out = [f"line {r.line}: {r.code or '-'}: {r.reason}" for r in shown]
        if self.total > len(shown):
            out.append(f"… and {self.total - len(shown)} more bad rows")
        return out


def count_lines(path: str | Path) -> int:
    """Lines after the header (blank ones too): the progress bar's total."""
    lines = 0
    try:
        with Path(path).open("rb") as handle:
            while chunk := handle.read(1 << 20):
                lines += chunk.count(b"\n")
    except OSError as exc:
        raise DeckFileError(f"cannot read {path}: {exc.strerror}") from exc
    return max(lines - 1, 0)


def read_csv(path: str | Path, header: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank row after the header, as a stream.

    The header must be exactly `header` (a UTF-8 BOM and blanks around names are tolerated)."""
    expected = ",".join(header)
    try:
        with Path(path).open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            first = next(reader, None)
            if first is None:
                raise DeckFileError(f"the file is empty (expected header {expected})")
            names = tuple(name.strip() for name in first)
            if names != tuple(header):
                raise DeckFileError(f"bad header {','.join(names)!r}: expected {expected!r}")
            for fields in reader:
                if not fields or all(not f.strip() for f in fields):
                    continue  # blank lines carry nothing
                yield reader.line_num, fields
    except UnicodeDecodeError as exc:
        raise DeckFileError(f"the file is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    except csv.Error as exc:
        raise DeckFileError(f"malformed CSV: {exc}") from exc
    except OSError as exc:
        raise DeckFileError(f"cannot read {path}: {exc.strerror}") from exc


class RolledBack(Exception):
    """Raised inside the import's transaction to undo it (some row was bad)."""


class Bulk:
    """One import's statements on its transaction's connection, on either backend."""

    def __init__(self, conn: AsyncConnection, is_sqlite: bool) -> None:
        self.conn = conn
        self.is_sqlite = is_sqlite
        self._pg: asyncpg.Connection | None = None

    async def open(self) -> None:
        """Starts the transaction (a first statement) and, on PostgreSQL, takes its driver
        connection, whose COPY and long statements then run inside that transaction."""
        await self.conn.exec_driver_sql("SELECT 1")
        if not self.is_sqlite:
            raw = await self.conn.get_raw_connection()
            self._pg = raw.driver_connection

    def _sqlite(self, sql: str) -> str:
        return _PARAM.sub(r"?\1", sql)

    async def run(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it wrote."""
        if self._pg is None:
            result = await self.conn.exec_driver_sql(self._sqlite(sql), tuple(args))
            return max(int(result.rowcount), 0)
        status = await self._pg.execute(sql, *args, timeout=LONG_STATEMENT_S)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        if self._pg is None:
            result = await self.conn.exec_driver_sql(self._sqlite(sql), tuple(args))
            return [tuple(row) for row in result.all()]
        return [tuple(row) for row in await self._pg.fetch(sql, *args, timeout=LONG_STATEMENT_S)]

    async def temp_table(self, name: str, columns: Sequence[tuple[str, str]]) -> None:
        """A staging table of this transaction (PostgreSQL drops it at commit or rollback;
        SQLite's single connection keeps temp tables, so it is dropped first and after)."""
        spec = ", ".join(f"{column} {kind}" for column, kind in columns)
        if self.is_sqlite:
            await self.run(f"DROP TABLE IF EXISTS temp.{name}")
            await self.run(f"CREATE TEMP TABLE {name} ({spec})")
        else:
            await self.run(f"CREATE TEMP TABLE {name} ({spec}) ON COMMIT DROP")

    async def drop_temp(self, *names: str) -> None:
        if self.is_sqlite:
            for name in names:
                await self.run(f"DROP TABLE IF EXISTS temp.{name}")

    async def stage(self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int:
        """Fill `table` with `rows` in bulk; how many there were."""
        if self._pg is not None:
            counted = _Counted(rows)
            await self._pg.copy_records_to_table(table, records=counted, columns=list(columns),
                                                 timeout=LONG_STATEMENT_S)  # fmt: skip
            await self.run(f"ANALYZE {table}")  # temp tables get no autovacuum: plan the merge on real counts
            return counted.count
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        batch: list[tuple[Any, ...]] = []
        staged = 0
        for row in rows:
            batch.append(row)
            if len(batch) >= SQLITE_BATCH:
                await self.conn.exec_driver_sql(sql, batch)  # type: ignore[arg-type]
                staged += len(batch)
                batch = []
        if batch:
            await self.conn.exec_driver_sql(sql, batch)  # type: ignore[arg-type]
            staged += len(batch)
        return staged


class _Counted:
    """An iterable that counts what went through it (COPY does not say)."""

    def __init__(self, rows: Iterable[tuple[Any, ...]]) -> None:
        self._rows = rows
        self.count = 0

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        for row in self._rows:
            self.count += 1
            yield row


def ticking(rows: Iterable[tuple[int, list[str]]], progress: Progress) -> Iterator[tuple[int, list[str]]]:
    """`rows` as they are, telling `progress` every PROGRESS_EVERY rows."""
    pending = 0
    for item in rows:
        yield item
        pending += 1
        if pending >= PROGRESS_EVERY:
            progress.advance(pending)
            pending = 0
    if pending:
        progress.advance(pending)
