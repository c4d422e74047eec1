"""`callgate directions import FILE.csv`: directions (code, name, number lengths) in bulk.

The file's header is `code,direction,min_len,max_len`. Directions are upserted by code,
all or nothing (billing_core.rating.bulk_load): a code already there gets the file's name
and lengths (its id stays, so tariff entries keep pointing at it); a new code is added;
codes absent from the file are left alone. One bad row (with its line) and nothing is
written. The caller MUST invalidate NS_RATING afterwards
(`await services.cache.invalidate(NS_RATING)`): directions are cached and this loader does
not go through the API registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from billing_core.db.engine import Database
from billing_core.rating.bulk_load import (
    BULK_TIMEOUT_S,
    Bulk,
    DeckFileError,
    NoProgress,
    Progress,
    RejectedRow,
    Rejections,
    RolledBack,
    count_lines,
    read_csv,
    ticking,
)
from billing_core.rating.directions import MAX_NUMBER_LEN

log = structlog.get_logger(__name__)

CSV_HEADER: tuple[str, ...] = ("code", "direction", "min_len", "max_len")
MAX_NAME_LEN = 128  # directions.direction is String(128)
LINE_KEY = "_line"  # set by read_directions_csv: the row's line in the file
EXTRA_KEY = "_extra"  # set by read_directions_csv: how many fields the row had beyond the header

DIGITS = re.compile(r"[0-9]+")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

DirectionsFileError = DeckFileError  # the name this module's callers know

_STAGE = "direction_stage"
_STAGE_COLUMNS = (("line", "INTEGER"), ("code", "VARCHAR(32)"), ("direction", "VARCHAR(128)"),
                  ("min_len", "INTEGER"), ("max_len", "INTEGER"))  # fmt: skip


@dataclass(slots=True)
class ImportReport:
    """What an import did. When anything is rejected nothing is written (`applied` False)."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    rejected_total: int = 0
    applied: bool = False

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        head = (
            f"inserted={self.inserted} updated={self.updated} unchanged={self.unchanged} "
            f"rejected={self.rejected_total} applied={'yes' if self.applied else 'no'}"
        )
        bad = Rejections(self.rejected, self.rejected_total)
        return "\n".join([head, *bad.lines()])


def read_directions_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a directions CSV file, each tagged with its line number (key `_line`).

    The header must be exactly `code,direction,min_len,max_len` (a UTF-8 BOM and
    blanks around names are tolerated). A row with fewer fields gets "" for the
    missing ones; a row with more gets `_extra` set: both are rejected by
    `import_directions` with their line, so one run reports every bad line.
    (A large file is better streamed: `import_directions_file`.)
    """
    rows: list[dict[str, str]] = []
    for line, fields in read_csv(path, CSV_HEADER):
        row = {name: (fields[i] if i < len(fields) else "") for i, name in enumerate(CSV_HEADER)}
        row[LINE_KEY] = str(line)
        if len(fields) > len(CSV_HEADER):
            row[EXTRA_KEY] = str(len(fields) - len(CSV_HEADER))
        rows.append(row)
    return rows


def length_field(value: str, name: str) -> int:
    text = value.strip()
    if not DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_NUMBER_LEN:
        raise ValueError(f"{name} must be an integer 1..{MAX_NUMBER_LEN}, got {text!r}")
    return int(text)


def code_field(value: str) -> str:
    code = value.strip()
    if not DIGITS.fullmatch(code) or len(code) > MAX_NUMBER_LEN:
        raise ValueError(f"code must be 1..{MAX_NUMBER_LEN} digits, got {code!r}")
    return code


def name_field(value: str) -> str:
    name = value.strip()
    if not name:
        raise ValueError("direction name is empty")
    if len(name) > MAX_NAME_LEN or CONTROL.search(name):
        raise ValueError(f"direction name must be at most {MAX_NAME_LEN} printable characters")
    return name


def check_row(fields: Sequence[str]) -> tuple[str, str, int, int]:
    """(code, direction, min_len, max_len) of a row's fields, or ValueError saying what is wrong."""
    if len(fields) > len(CSV_HEADER):
        raise ValueError(f"{len(fields) - len(CSV_HEADER)} field(s) more than the header's {len(CSV_HEADER)}")
    values = [*fields, *([""] * (len(CSV_HEADER) - len(fields)))]
    code, name = code_field(values[0]), name_field(values[1])
    min_len, max_len = length_field(values[2], "min_len"), length_field(values[3], "max_len")
    if min_len > max_len:
        raise ValueError(f"min_len {min_len} is greater than max_len {max_len}")
    if max_len < len(code):
        raise ValueError(f"max_len {max_len} is shorter than the code itself: no number could match")
    return code, name, min_len, max_len


def _from_mappings(rows: Iterable[Mapping[str, str]]) -> Iterator[tuple[int, list[str]]]:
    for position, row in enumerate(rows):
        line = int(row.get(LINE_KEY) or position + 2)  # +2: the header is line 1
        fields = [row.get(name) or "" for name in CSV_HEADER]
        yield line, fields + [""] * int(row.get(EXTRA_KEY) or 0)


def _good_rows(rows: Iterable[tuple[int, list[str]]], bad: Rejections) -> Iterator[tuple[int, str, str, int, int]]:
    for line, fields in rows:
        try:
            yield (line, *check_row(fields))
        except ValueError as exc:
            bad.add(line, (fields[0] if fields else "").strip(), str(exc))


async def duplicates(bulk: Bulk, table: str, keys: Sequence[str], bad: Rejections, what: str) -> None:
    """Rows of the staging table whose `keys` an earlier line already had."""
    key_list = ", ".join(keys)
    probe = f"SELECT 1 FROM {table} GROUP BY {key_list} HAVING count(*) > 1 LIMIT 1"
    if not await bulk.fetch(probe):
        return
    found = await bulk.fetch(
        f"SELECT line, code, first FROM (SELECT line, code, min(line) OVER (PARTITION BY {key_list}) AS first "
        f"FROM {table}) AS x WHERE line <> first ORDER BY line"
    )
    for line, code, first in found:
        bad.add(int(line), str(code), f"duplicate {what} (first on line {first})")


async def _load(db: Database, rows: Iterable[tuple[int, list[str]]], progress: Progress) -> ImportReport:
    bad = Rejections()
    report = ImportReport()
    try:
        async with db.begin(timeout_s=BULK_TIMEOUT_S) as conn:
            bulk = Bulk(conn, db.is_sqlite)
            await bulk.open()
            await bulk.temp_table(_STAGE, _STAGE_COLUMNS)
            try:
                staged = await bulk.stage(_STAGE, [c for c, _ in _STAGE_COLUMNS], _good_rows(rows, bad))
                progress.finish()
                await duplicates(bulk, _STAGE, ["code"], bad, "code")
                if bad.total:
                    raise RolledBack()
                progress.phase("merging into directions")
                report.updated = await bulk.run(
                    f"UPDATE directions SET direction = s.direction, min_len = s.min_len, max_len = s.max_len "
                    f"FROM {_STAGE} AS s WHERE directions.code = s.code AND (directions.direction <> s.direction "
                    f"OR directions.min_len <> s.min_len OR directions.max_len <> s.max_len)"
                )
                report.inserted = await bulk.run(
                    f"INSERT INTO directions (code, direction, min_len, max_len) "
                    f"SELECT code, direction, min_len, max_len FROM {_STAGE} AS s "
                    f"WHERE NOT EXISTS (SELECT 1 FROM directions AS d WHERE d.code = s.code)"
                )
                report.unchanged = staged - report.updated - report.inserted
            finally:
                await bulk.drop_temp(_STAGE)
            progress.finish()
    except RolledBack:
        progress.finish()
        report.rejected, report.rejected_total = bad.merged(), bad.total
        log.info("directions.import_rejected", rejected=bad.total)
        return report
    report.applied = True
    log.info("directions.imported", inserted=report.inserted, updated=report.updated, unchanged=report.unchanged)
    return report


async def import_directions(
    db: Database, rows: Iterable[Mapping[str, str]], progress: Progress | None = None
) -> ImportReport:
    """Upsert directions by code from rows (mappings of CSV_HEADER's names), all or nothing."""
    return await _load(db, _from_mappings(rows), progress or NoProgress())


async def import_directions_file(db: Database, path: str | Path, progress: Progress | None = None) -> ImportReport:
    """The same from a CSV file, streamed (never whole in memory)."""
    shown = progress or NoProgress()
    shown.phase("reading and staging", count_lines(path))
    return await _load(db, ticking(read_csv(path, CSV_HEADER), shown), shown)
