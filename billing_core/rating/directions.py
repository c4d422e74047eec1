"""Directions (number prefixes): lookup rule, cached index, and the CSV loader.

The spec has no API method that creates directions; they come from a CSV file
(`callgate directions import FILE.csv`, header `code,direction,min_len,max_len`).

The matching rule is written once here (`longest_prefix`, `DirectionIndex.resolve`; both
probe through `_probe`), and the API's resolveDirection and the rating engine read the
same cached `DirectionIndex`, so they agree on which direction a number is in:
among the directions whose code is a prefix of the number AND whose
min_len ≤ len(number) ≤ max_len, the one with the longest code wins. A longer code
whose length range does not admit the number therefore falls back to a shorter one
(e.g. a 10-digit number under "7901" [11..11] still matches "7" [10..11]).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from billing_core.cache.keys import NS_RATING
from billing_core.cache.readthrough import ReadThroughCache
from billing_core.db.engine import Database
from billing_core.errors import ApiError, ErrorCode
from billing_core.rating.tables import directions

log = structlog.get_logger(__name__)

Generations = dict[str, int] | None

CSV_HEADER: tuple[str, ...] = ("code", "direction", "min_len", "max_len")
MAX_NUMBER_LEN = 32  # directions.code is String(32); E.164 itself stops at 15
MAX_NAME_LEN = 128  # directions.direction is String(128)
LINE_KEY = "_line"  # set by read_directions_csv: the row's line in the file
EXTRA_KEY = "_extra"  # set by read_directions_csv: how many fields the row had beyond the header
DIRECTIONS_KEY = "directions"  # the cache entry (NS_RATING) of the direction table

_DIGITS = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"\+?([0-9]{1,32})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class DirectionLike(Protocol):
    """What the matching rule needs from a direction (a record, a DB row, …)."""

    @property
    def code(self) -> str: ...
    @property
    def min_len(self) -> int: ...
    @property
    def max_len(self) -> int: ...


D = TypeVar("D", bound=DirectionLike)


@dataclass(frozen=True, slots=True)
class Direction:
    id: int
    code: str
    direction: str
    min_len: int
    max_len: int

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "id": self.id,
            "direction": self.direction,
            "min_len": self.min_len,
            "max_len": self.max_len,
        }



def _admits(row: DirectionLike, number: str) -> bool:
    return row.min_len <= len(number) <= row.max_len


def _probe(by_code: Mapping[str, D], lengths: Iterable[int], number: str) -> D | None:
    """The rule on a mapping code → direction: `number`'s prefixes of the given lengths
    (longest first) are looked up; the first whose direction admits the number wins."""
    size = len(number)
    for length in lengths:
        if length <= size:
            row = by_code.get(number[:length])
            if row is not None and row.min_len <= size <= row.max_len:
                return row
    return None


def longest_prefix(directions: Iterable[D] | Mapping[str, D], number: str) -> D | None:
    """The direction `number` belongs to, or None.

    `directions` is any iterable of direction rows (linear scan), or a mapping
    code → row (then only the number's own prefixes are looked up: O(len(number)),
    what a hot path such as the rating engine wants). `number` is expected to be
    digits only (see `normalize_number`); anything else simply matches less.
    """
    if isinstance(directions, Mapping):
        return _probe(directions, range(len(number), 0, -1), number)
    best: D | None = None
    for row in directions:
        if number.startswith(row.code) and _admits(row, number) and (best is None or len(row.code) > len(best.code)):
            best = row
    return best


def normalize_number(number: str) -> str:
    """A dialled number as digits: one leading '+' is dropped; anything else is E_INVALID_ARGUMENT."""
    match = _NUMBER.fullmatch(number.strip())
    if match is None:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "number must be 1..32 digits, optionally with a leading +")
    return match.group(1)


@dataclass(frozen=True, slots=True)
class DirectionIndex:
    """Every direction, by id and by code (immutable: the cache keeps one per generation).

    `lengths` are the distinct code lengths, longest first: a lookup probes only those
    (a handful) instead of every prefix of the number — this is the rating hot path.
    """

    by_code: Mapping[str, Direction]
    by_id: Mapping[int, Direction]
    lengths: tuple[int, ...]

    @classmethod
    def build(cls, rows: Iterable[Direction]) -> DirectionIndex:
        listed = list(rows)
        return cls(
            by_code={d.code: d for d in listed},
            by_id={d.id: d for d in listed},
            lengths=tuple(sorted({len(d.code) for d in listed}, reverse=True)),
        )

    def resolve(self, number: str) -> Direction | None:
        return _probe(self.by_code, self.lengths, number)

    def all(self) -> list[Direction]:
        return sorted(self.by_code.values(), key=lambda d: d.code)

    def to_json(self) -> list[dict[str, Any]]:
        """getDirections' answer: every direction, by code."""
        return [d.to_json() for d in self.all()]

    def to_rows(self) -> list[list[Any]]:
        """The cache snapshot: [id, code, direction, min_len, max_len] per direction."""
        return [[d.id, d.code, d.direction, d.min_len, d.max_len] for d in self.by_code.values()]

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> DirectionIndex:
        return cls.build(Direction(int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows)


def _prefixes(number: str) -> list[str]:
    return [number[:n] for n in range(1, len(number) + 1)]


async def load_directions(db: Database, *, prefixes_of: str | None = None) -> list[list[Any]]:
    """Direction rows for `DirectionIndex.from_rows`: every direction, or with
    `prefixes_of` only those whose code is a prefix of that number."""
    column = directions.c
    query = select(column.id, column.code, column.direction, column.min_len, column.max_len)
    if prefixes_of is not None:
        query = query.where(directions.c.code.in_(_prefixes(prefixes_of)))
    async with db.begin() as conn:
        rows = (await conn.execute(query)).all()
    return [list(row) for row in rows]


async def direction_index(db: Database, cache: ReadThroughCache, gens: Generations) -> DirectionIndex:
    """All directions, read through the cache (NS_RATING): the one snapshot the API and the
    rating engine share."""
    index = await cache.lookup(
        gens,
        NS_RATING,
        DIRECTIONS_KEY,
        lambda: load_directions(db),
        decode=DirectionIndex.from_rows,
        encode=DirectionIndex.to_rows,
    )
    return index if index is not None else DirectionIndex.build(())


async def resolve(db: Database, cache: ReadThroughCache, gens: Generations, number: str) -> Direction:
    """resolveDirection: the direction of `number`; E_UNROUTABLE when no direction covers it."""
    digits = normalize_number(number)
    found = (await direction_index(db, cache, gens)).resolve(digits)
    if found is None:
        raise ApiError(ErrorCode.E_UNROUTABLE, "no direction covers this number")
    return found


# --- CSV import -------------------------------------------------------------------------


class DirectionsFileError(ValueError):
    """The file itself is unusable (unreadable, not UTF-8, wrong header)."""


@dataclass(frozen=True, slots=True)
class RejectedRow:
    line: int
    code: str
    reason: str


@dataclass(slots=True)
class ImportReport:
    """What an import did. When anything is rejected nothing is written (`applied` False)."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    applied: bool = False

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        head = (
            f"inserted={self.inserted} updated={self.updated} unchanged={self.unchanged} "
            f"rejected={len(self.rejected)} applied={'yes' if self.applied else 'no'}"
        )
        lines = [head] + [f"line {r.line}: {r.code or '-'}: {r.reason}" for r in self.rejected]
        return "\n".join(lines)


def read_directions_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a directions CSV file, each tagged with its line number (key `_line`).

    The header must be exactly `code,direction,min_len,max_len` (a UTF-8 BOM and
    blanks around names are tolerated). A row with fewer fields gets "" for the
    missing ones; a row with more gets `_extra` set: both are rejected by
    `import_directions` with their line, so one run reports every bad line.
    """
    try:
        with Path(path).open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DirectionsFileError("the file is empty (expected header code,direction,min_len,max_len)")
            names = tuple(name.strip() for name in header)
            if names != CSV_HEADER:
                raise DirectionsFileError(f"bad header {','.join(names)!r}: expected {','.join(CSV_HEADER)!r}")
            rows: list[dict[str, str]] = []
            for fields in reader:
                if not fields or all(not f.strip() for f in fields):
                    continue  # blank lines carry nothing
                row = {name: (fields[i] if i < len(fields) else "") for i, name in enumerate(CSV_HEADER)}
                row[LINE_KEY] = str(reader.line_num)
                if len(fields) > len(CSV_HEADER):
                    row[EXTRA_KEY] = str(len(fields) - len(CSV_HEADER))
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise DirectionsFileError(f"the file is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    except csv.Error as exc:
        raise DirectionsFileError(f"malformed CSV: {exc}") from exc
    except OSError as exc:
        raise DirectionsFileError(f"cannot read {path}: {exc.strerror}") from exc
    return rows


def _length(value: str, name: str) -> int:
    text = value.strip()
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_NUMBER_LEN:
        raise ValueError(f"{name} must be an integer 1..{MAX_NUMBER_LEN}, got {text!r}")
    return int(text)


def _validate_row(row: Mapping[str, str]) -> tuple[str, str, int, int]:
    """(code, direction, min_len, max_len) of a CSV row, or ValueError saying what is wrong."""
    if row.get(EXTRA_KEY):
        raise ValueError(f"{row[EXTRA_KEY]} field(s) more than the header's {len(CSV_HEADER)}")
    code = (row.get("code") or "").strip()
    name = (row.get("direction") or "").strip()
    if not _DIGITS.fullmatch(code) or len(code) > MAX_NUMBER_LEN:
        raise ValueError(f"code must be 1..{MAX_NUMBER_LEN} digits, got {code!r}")
    if not name:
        raise ValueError("direction name is empty")
    if len(name) > MAX_NAME_LEN or _CONTROL.search(name):
        raise ValueError(f"direction name must be at most {MAX_NAME_LEN} printable characters")
    min_len = _length(row.get("min_len") or "", "min_len")
    max_len = _length(row.get("max_len") or "", "max_len")
    if min_len > max_len:
        raise ValueError(f"min_len {min_len} is greater than max_len {max_len}")
    if max_len < len(code):
        raise ValueError(f"max_len {max_len} is shorter than the code itself: no number could match")
    return code, name, min_len, max_len


def validate_rows(rows: Iterable[Mapping[str, str]]) -> tuple[list[tuple[str, str, int, int]], list[RejectedRow]]:
    """Every row checked (also duplicates inside the file); line numbers from `_line` or position."""
    good: list[tuple[str, str, int, int]] = []
    rejected: list[RejectedRow] = []
    seen: dict[str, int] = {}
    for position, row in enumerate(rows):
        line = int(row.get(LINE_KEY) or position + 2)  # +2: the header is line 1
        code = (row.get("code") or "").strip()
        try:
            values = _validate_row(row)
        except ValueError as exc:
            rejected.append(RejectedRow(line, code, str(exc)))
            continue
        if values[0] in seen:
            rejected.append(RejectedRow(line, code, f"duplicate code (first on line {seen[values[0]]})"))
            continue
        seen[values[0]] = line
        good.append(values)
    return good, rejected


async def import_directions(db: Database, rows: Iterable[Mapping[str, str]]) -> ImportReport:
    """Upsert directions by code, all-or-nothing: one bad row and nothing is written.

    Existing codes get the file's name and lengths (ids stay, so tariff entries keep
    pointing at them); codes absent from the file are left alone. The caller MUST
    invalidate NS_RATING afterwards (`await services.cache.invalidate(NS_RATING)`):
    directions are cached and this loader does not go through the API registry.
    """
    good, rejected = validate_rows(rows)
    report = ImportReport(rejected=rejected)
    if rejected:
        log.info("directions.import_rejected", rejected=len(rejected))
        return report
    try:
        async with db.begin(timeout_s=120) as conn:
            # The whole table, not an IN (...) of the file's codes: a prefix file can hold
            # more codes than a statement may carry parameters (SQLite).
            existing = {r.code: r for r in (await conn.execute(select(directions))).all()}
            new_rows: list[dict[str, Any]] = []
            for code, name, min_len, max_len in good:
                old = existing.get(code)
                if old is None:
                    new_rows.append({"code": code, "direction": name, "min_len": min_len, "max_len": max_len})
                elif (old.direction, old.min_len, old.max_len) == (name, min_len, max_len):
                    report.unchanged += 1
                else:
                    await conn.execute(
                        update(directions)
                        .where(directions.c.id == old.id)
                        .values(direction=name, min_len=min_len, max_len=max_len)
                    )
                    report.updated += 1
            if new_rows:
                await conn.execute(directions.insert(), new_rows)
            report.inserted = len(new_rows)
    except IntegrityError as exc:
        # Only a concurrent writer of the same codes gets here (the file was validated).
        raise ApiError(ErrorCode.E_DATA_ABORT, "directions changed concurrently; run the import again") from exc
    report.applied = True
    log.info("directions.imported", inserted=report.inserted, updated=report.updated, unchanged=report.unchanged)
    return report
