"""`callgate rates import FILE.csv --tariff NAME`: a tariff's whole rate deck in bulk.

The file's header is `code,direction,cost,route,priority`: one row per (code, priority)
slot of the tariff, its per-minute cost (EUR, at most 4 decimals), the route by name (a
route of the tariff's owner) and the priority (1..99, empty = 1).

The deck REPLACES the tariff's entries (docs/decisions.md, "Rate decks"): after an
import the tariff has exactly the deck's slots. It is applied as a merge, so a slot that
was there before keeps its entry id, a changed one is updated in place, a new one is
inserted and a slot absent from the deck is deleted; a re-import of the same file writes
nothing. A code that no direction has yet becomes a direction (the deck's name, numbers of
any length); an existing direction keeps its name and lengths (directions are shared by
every tariff: `callgate directions import` changes them).

All or nothing, read as a stream, staged with COPY on PostgreSQL (billing_core.rating.
bulk_load). The caller MUST invalidate NS_RATING afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import structlog
from sqlalchemy import select

from billing_core.checks import MAX_PRIORITY, money_arg
from billing_core.db.engine import Database
from billing_core.db.money_type import MONEY_SCALE
from billing_core.errors import ApiError, ErrorCode
from billing_core.rating.bulk_load import (
    BULK_TIMEOUT_S,
    Bulk,
    NoProgress,
    Progress,
    RejectedRow,
    Rejections,
    RolledBack,
    count_lines,
    read_csv,
    ticking,
)
from billing_core.rating.direction_import import DIGITS, MAX_NAME_LEN, code_field, duplicates, name_field
from billing_core.rating.directions import MAX_NUMBER_LEN
from billing_core.rating.tables import routes, tariffs

log = structlog.get_logger(__name__)

DECK_HEADER: tuple[str, ...] = ("code", "direction", "cost", "route", "priority")

_STAGE = "deck_stage"
_ENTRIES = "deck_entries"
_COLUMNS = ("line", "code", "direction", "cost", "route_id", "priority")


@dataclass(slots=True)
class DeckReport:
    """What an import did. When anything is rejected nothing is written (`applied` False)."""

    tariff: str
    tariff_id: int
    rows: int = 0
    directions_added: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    rejected_total: int = 0
    applied: bool = False

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        head = (
            f"tariff {self.tariff} (id {self.tariff_id}): rows={self.rows} inserted={self.inserted} "
            f"updated={self.updated} unchanged={self.unchanged} deleted={self.deleted} "
            f"new_directions={self.directions_added} rejected={self.rejected_total} "
            f"applied={'yes' if self.applied else 'no'}"
        )
        return "\n".join([head, *Rejections(self.rejected, self.rejected_total).lines()])


def _cost(value: str) -> Decimal:
    text = value.strip()
    try:
        cost = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"cost must be a decimal number, got {text!r}") from None
    if not cost.is_finite():
        raise ValueError(f"cost must be a decimal number, got {text!r}")
    try:
        return money_arg(cost, "cost")
    except ApiError as exc:
        raise ValueError(exc.detail) from None


def _priority(value: str) -> int:
    text = value.strip() or "1"
    if not DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_PRIORITY:
        raise ValueError(f"priority must be an integer 1..{MAX_PRIORITY}, got {text!r}")
    return int(text)


_COST = re.compile(r"([0-9]{1,6})(?:\.([0-9]{1,4}))?")  # below checks.MONEY_CEILING, at most 4 places
_PRIORITIES = frozenset({"", *(str(n) for n in range(1, MAX_PRIORITY + 1))})


def _scaled(cost: str) -> int:
    """SQLite keeps money in 1/10000 units (billing_core.db.money_type)."""
    whole, _, fraction = cost.partition(".")
    return int(whole) * MONEY_SCALE + int(fraction.ljust(4, "0"))


def _checked(
    rows: Iterable[tuple[int, list[str]]], route_ids: Mapping[str, int], owner: str, scaled: bool, bad: Rejections
) -> Iterator[tuple[object, ...]]:
    """The staging rows of the good lines; each bad one goes to `bad` with its reason.

    A plain row (no blanks to strip, ASCII digits) takes the fast test; anything else the
    field-by-field one, which also says what is wrong."""
    width = len(DECK_HEADER)
    for line, fields in rows:
        if len(fields) == width:
            code, name, cost, route, priority = fields
            if (
                code.isdigit() and code.isascii() and len(code) <= MAX_NUMBER_LEN
                and 0 < len(name) <= MAX_NAME_LEN and name.isprintable() and name == name.strip()
                and _COST.fullmatch(cost) and route in route_ids and priority in _PRIORITIES
            ):  # fmt: skip
                yield line, code, name, _scaled(cost) if scaled else cost, route_ids[route], int(priority or 1)
                continue
        code = (fields[0] if fields else "").strip()
        try:
            if len(fields) != width:
                raise ValueError(f"{len(fields)} fields, expected {width} ({','.join(DECK_HEADER)})")
            code = code_field(fields[0])
            name = name_field(fields[1])
            exact = str(_cost(fields[2]))
            route = fields[3].strip()
            if route not in route_ids:
                raise ValueError(f"no route {route!r} of {owner}" if route else "route is empty")
            prior = _priority(fields[4])
        except ValueError as exc:
            bad.add(line, code, str(exc))
            continue
        yield line, code, name, _scaled(exact) if scaled else exact, route_ids[route], prior


async def _owner_rows(db: Database, tariff: str, owner: str) -> tuple[int, dict[str, int]]:
    async with db.begin() as conn:
        found = (
            await conn.execute(select(tariffs.c.id).where(tariffs.c.owner == owner, tariffs.c.name == tariff))
        ).first()
        if found is None:
            raise ApiError(ErrorCode.E_NOT_EXIST, f"no tariff named {tariff!r} of {owner}")
        names = (await conn.execute(select(routes.c.route, routes.c.id).where(routes.c.owner == owner))).all()
    return int(found.id), {r.route: int(r.id) for r in names}


async def _merge(bulk: Bulk, tariff_id: int, report: DeckReport) -> None:
    # a code new to the directions, with the name of its first line
    if bulk.is_sqlite:
        firsts = f"SELECT min(line) FROM {_STAGE} GROUP BY code"
        first = f"SELECT s.code, s.direction FROM {_STAGE} AS s WHERE s.line IN ({firsts})"
    else:
        first = f"SELECT DISTINCT ON (code) code, direction FROM {_STAGE} ORDER BY code, line"
    report.directions_added = await bulk.run(
        f"INSERT INTO directions (code, direction) SELECT f.code, f.direction FROM ({first}) AS f "
        f"WHERE NOT EXISTS (SELECT 1 FROM directions AS d WHERE d.code = f.code) ORDER BY f.code"
    )
    cost = "s.cost" if bulk.is_sqlite else "CAST(s.cost AS NUMERIC(18, 4))"
    if bulk.is_sqlite:
        await bulk.run(f"DROP TABLE IF EXISTS temp.{_ENTRIES}")
        create = f"CREATE TEMP TABLE {_ENTRIES} AS"
    else:
        create = f"CREATE TEMP TABLE {_ENTRIES} ON COMMIT DROP AS"
    await bulk.run(
        f"{create} SELECT d.id AS direction_id, s.priority, {cost} AS cost, s.route_id "
        f"FROM {_STAGE} AS s JOIN directions AS d ON d.code = s.code"
    )
    if bulk.is_sqlite:
        await bulk.run(f"CREATE UNIQUE INDEX temp.{_ENTRIES}_slot ON {_ENTRIES} (direction_id, priority)")
    else:
        await bulk.run(f"ANALYZE {_ENTRIES}")
    report.deleted = await bulk.run(
        f"DELETE FROM tariff_entries WHERE tariff_id = $1 AND NOT EXISTS (SELECT 1 FROM {_ENTRIES} AS n "
        f"WHERE n.direction_id = tariff_entries.direction_id AND n.priority = tariff_entries.priority)",
        tariff_id,
    )
    report.updated = await bulk.run(
        f"UPDATE tariff_entries SET cost = n.cost, route_id = n.route_id FROM {_ENTRIES} AS n "
        f"WHERE tariff_entries.tariff_id = $1 AND tariff_entries.direction_id = n.direction_id "
        f"AND tariff_entries.priority = n.priority "
        f"AND (tariff_entries.cost <> n.cost OR tariff_entries.route_id <> n.route_id)",
        tariff_id,
    )
    report.inserted = await bulk.run(
        f"INSERT INTO tariff_entries (tariff_id, direction_id, cost, route_id, priority) "
        f"SELECT CAST($1 AS INTEGER), n.direction_id, n.cost, n.route_id, n.priority FROM {_ENTRIES} AS n "
        f"WHERE NOT EXISTS (SELECT 1 FROM tariff_entries AS t WHERE t.tariff_id = $1 "
        f"AND t.direction_id = n.direction_id AND t.priority = n.priority) "
        f"ORDER BY n.direction_id, n.priority",  # in index order: the unique index grows at its end
        tariff_id,
    )
    report.unchanged = report.rows - report.updated - report.inserted


async def _load(
    db: Database, rows: Iterable[tuple[int, list[str]]], *, tariff: str, owner: str, progress: Progress
) -> DeckReport:
    tariff_id, route_ids = await _owner_rows(db, tariff, owner)
    report = DeckReport(tariff, tariff_id)
    bad = Rejections()
    money = "INTEGER" if db.is_sqlite else "TEXT"  # PostgreSQL: checked text, cast by the merge
    columns = [("line", "INTEGER"), ("code", "VARCHAR(32)"), ("direction", "VARCHAR(128)"), ("cost", money),
               ("route_id", "INTEGER"), ("priority", "INTEGER")]  # fmt: skip
    try:
        async with db.begin(timeout_s=BULK_TIMEOUT_S) as conn:
            bulk = Bulk(conn, db.is_sqlite)
            await bulk.open()
            if not db.is_sqlite:  # one import of a tariff at a time
                await bulk.run("SELECT id FROM tariffs WHERE id = $1 FOR UPDATE", tariff_id)
            await bulk.temp_table(_STAGE, columns)
            try:
                checked = _checked(rows, route_ids, owner, db.is_sqlite, bad)
                report.rows = await bulk.stage(_STAGE, _COLUMNS, checked)
                progress.finish()
                await duplicates(bulk, _STAGE, ["code", "priority"], bad, "code and priority")
                if bad.total:
                    raise RolledBack()
                progress.phase("merging into the tariff")
                await _merge(bulk, tariff_id, report)
            finally:
                await bulk.drop_temp(_STAGE, _ENTRIES)
            progress.finish()
    except RolledBack:
        progress.finish()
        report.rejected, report.rejected_total = bad.merged(), bad.total
        report.rows = 0
        log.info("rates.import_rejected", tariff_id=tariff_id, rejected=bad.total)
        return report
    report.applied = True
    log.info(
        "rates.imported", tariff_id=tariff_id, rows=report.rows, inserted=report.inserted, updated=report.updated,
        deleted=report.deleted, directions_added=report.directions_added,
    )  # fmt: skip
    return report


async def import_deck(
    db: Database, path: str | Path, *, tariff: str, owner: str = "admin", progress: Progress | None = None
) -> DeckReport:
    """Replace tariff `tariff` (of `owner`)'s entries with the deck in `path`, all or nothing."""
    shown = progress or NoProgress()
    total = count_lines(path)
    rows = read_csv(path, DECK_HEADER)
    shown.phase("reading and staging", total)
    return await _load(db, ticking(rows, shown), tariff=tariff, owner=owner, progress=shown)
