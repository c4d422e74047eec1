"""Asterisk's own CDRs, read for `callgate reconcile` (billing_core.calls.reconcile).

Two sources, both giving `AsteriskCdr` rows in the order Asterisk wrote them:
- cdr_csv's `Master.csv`: no header; Asterisk's column order is accountcode, src, dst,
  dcontext, clid, channel, dstchannel, lastapp, lastdata, start, answer, end, duration,
  billsec, disposition, amaflags, uniqueid, userfield (cdr_csv's `loguniqueid` and
  `loguserfield`, on by default), then peeraccount, linkedid, sequence with
  `newcdrcolumns`. A file without the uniqueid column cannot be matched to calls: refused.
- the table cdr_pgsql / cdr_adaptive_odbc write (standard column names calldate, clid, src,
  dst, dcontext, channel, dstchannel, lastapp, lastdata, duration, billsec, disposition,
  amaflags, accountcode, uniqueid, userfield; `sequence` used for order when present),
  read through a SQLAlchemy async URL, only the rows of the calls asked about.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from billing_core.errors import ApiError, ErrorCode

CSV_COLUMNS = (
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
    "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield",
)  # fmt: skip
CSV_WITH_NEW_COLUMNS = (*CSV_COLUMNS, "peeraccount", "linkedid", "sequence")
TABLE_COLUMNS = (
    "calldate", "clid", "src", "dst", "dcontext", "channel", "dstchannel", "lastapp", "lastdata",
    "duration", "billsec", "disposition", "amaflags", "accountcode", "uniqueid", "userfield",
)  # fmt: skip
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")
_IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class AsteriskCdr:
    uniqueid: str
    channel: str
    dstchannel: str
    lastapp: str
    lastdata: str
    start: str  # as Asterisk wrote it (local time or GMT per cdr.conf): used for order only
    billsec: int
    disposition: str
    src: str
    order: int  # position in the source (file line, or sequence/row order of the table)


class CdrSourceError(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.E_INVALID_ARGUMENT, detail)


def _seconds(value: str, where: str) -> int:
    value = value.strip()
    if not value.isdigit():
        raise CdrSourceError(f"{where}: billsec {value[:16]!r} is not a whole number of seconds")
    return int(value)


def read_master_csv(path: str | Path, column: str, values: Iterable[str]) -> list[AsteriskCdr]:
    """The rows of a cdr_csv file whose `column` (uniqueid or channel) is one of `values`."""
    wanted = set(values)
    rows: list[AsteriskCdr] = []
    try:
        with Path(path).open(newline="", encoding="utf-8", errors="replace") as fh:
            for number, fields in enumerate(csv.reader(fh), 1):
                if not fields:
                    continue
                if len(fields) not in (len(CSV_COLUMNS), len(CSV_WITH_NEW_COLUMNS)):
                    raise CdrSourceError(
                        f"{Path(path).name} line {number}: {len(fields)} columns; expected cdr_csv's "
                        f"{len(CSV_COLUMNS)} (with uniqueid and userfield) or {len(CSV_WITH_NEW_COLUMNS)}"
                    )
                row = dict(zip(CSV_WITH_NEW_COLUMNS, fields, strict=False))
                if row[column] not in wanted:
                    continue
                rows.append(
                    AsteriskCdr(
                        uniqueid=row["uniqueid"], channel=row["channel"], dstchannel=row["dstchannel"],
                        lastapp=row["lastapp"], lastdata=row["lastdata"], start=row["start"],
                        billsec=_seconds(row["billsec"], f"{Path(path).name} line {number}"),
                        disposition=row["disposition"], src=row["src"], order=number,
                    )
                )  # fmt: skip
    except OSError as exc:
        raise CdrSourceError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from exc
    return rows


async def read_cdr_table(url: str, table: str, column: str, values: Iterable[str]) -> list[AsteriskCdr]:
    """The rows whose `column` (uniqueid or channel) is one of `values`, in the table
    cdr_pgsql / cdr_adaptive_odbc write."""
    if _TABLE_NAME.fullmatch(table) is None:
        raise CdrSourceError("table must be a plain SQL name (optionally schema.name)")
    if column not in ("uniqueid", "channel"):
        raise ValueError(column)
    wanted = sorted(set(values))
    engine = create_async_engine(url)
    rows: list[AsteriskCdr] = []
    try:
        async with engine.connect() as conn:
            names = {c.lower() for c in (await conn.execute(text(f"SELECT * FROM {table} WHERE 1 = 0"))).keys()}
            missing = [c for c in ("calldate", "channel", "dstchannel", "lastapp", "lastdata", "billsec",
                                   "disposition", "uniqueid", "src") if c not in names]  # fmt: skip
            if missing:
                raise CdrSourceError(f"table {table} lacks the columns {', '.join(missing)}")
            order = "calldate, sequence" if "sequence" in names else "calldate"
            for at in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[at : at + _IN_CHUNK]
                marks = ", ".join(f":u{i}" for i in range(len(chunk)))
                query = text(
                    f"SELECT uniqueid, channel, dstchannel, lastapp, lastdata, calldate, billsec, disposition, src "
                    f"FROM {table} WHERE {column} IN ({marks}) ORDER BY {order}"
                )
                result = await conn.execute(query, {f"u{i}": uid for i, uid in enumerate(chunk)})
                for r in result:
                    rows.append(
                        AsteriskCdr(
                            uniqueid=str(r.uniqueid), channel=str(r.channel or ""), dstchannel=str(r.dstchannel or ""),
                            lastapp=str(r.lastapp or ""), lastdata=str(r.lastdata or ""), start=str(r.calldate),
                            billsec=int(r.billsec or 0), disposition=str(r.disposition or ""), src=str(r.src or ""),
                            order=len(rows),
                        )
                    )  # fmt: skip
    except CdrSourceError:
        raise
    except Exception as exc:  # a wrong URL, a missing table: say which, never the URL (password)
        raise CdrSourceError(f"cannot read the CDR table {table}: {type(exc).__name__}") from exc
    finally:
        await engine.dispose()
    return rows
