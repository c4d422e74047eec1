"""Exchange rates from the source the operator names (CALLGATE_RATES_SOURCE), for the
maintenance run.

The source is a file path or an http(s) URL whose body is JSON `{"USD": 1.08, …}` (units
of the currency per 1 EUR, the `eur_course` of billing_core.money) or CSV with a header
`currency,eur_course`. Only currencies already in the table are updated (a source does
not create currencies); EUR stays 1; a course must be a positive number of at most 6
decimals' worth (it is rounded to 6). No source configured: nothing changes, and the
answer says so. A source that cannot be read or parsed changes nothing either.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from sqlalchemy import select, update

from billing_core.db.engine import Database
from billing_core.rating.tables import currencies

log = structlog.get_logger(__name__)

COURSE_QUANT = Decimal("0.000001")
FETCH_TIMEOUT_S = 10.0
MAX_BODY = 1 << 20


class RatesSourceError(ValueError):
    pass


@dataclass
class RatesReport:
    source: str
    updated: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source or "none", "updated": self.updated, "ignored": self.unknown, "note": self.note}


async def read_source(source: str) -> str:
    if source.startswith(("http://", "https://")):
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(source) as response:
            if response.status != 200:
                raise RatesSourceError(f"HTTP {response.status}")
            body = await response.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise RatesSourceError("larger than 1 MiB")
            return body.decode("utf-8")
    return await asyncio.to_thread(_read_file, source)


def _read_file(source: str) -> str:
    path = Path(source)
    if path.stat().st_size > MAX_BODY:
        raise RatesSourceError("larger than 1 MiB")
    return path.read_text(encoding="utf-8")


def parse_rates(text: str) -> dict[str, Decimal]:
    stripped = text.lstrip()
    pairs: list[tuple[str, str]]
    if stripped.startswith("{"):
        data = json.loads(stripped, parse_float=str, parse_int=str)
        if not isinstance(data, dict):
            raise RatesSourceError("JSON must be an object of currency: course")
        pairs = [(str(k), str(v)) for k, v in data.items()]
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not {"currency", "eur_course"} <= set(reader.fieldnames or ()):
            raise RatesSourceError("CSV needs the header currency,eur_course")
        pairs = [(row["currency"] or "", row["eur_course"] or "") for row in reader]
    rates: dict[str, Decimal] = {}
    for code, value in pairs:
        code = code.strip().upper()
        try:
            course = Decimal(value.strip()).quantize(COURSE_QUANT)
        except (InvalidOperation, ValueError):
            raise RatesSourceError(f"{code[:8]}: not a number") from None
        if len(code) != 3 or not code.isalpha() or not course.is_finite() or course <= 0:
            raise RatesSourceError(f"{code[:8]}: a course is a 3-letter code and a positive number")
        rates[code] = course
    return rates


async def update_rates(db: Database, source: str, system_currency: str) -> RatesReport:
    report = RatesReport(source)
    if not source:
        report.note = "no rates source configured (CALLGATE_RATES_SOURCE): rates unchanged"
        return report
    try:
        rates = parse_rates(await read_source(source))
    except (OSError, UnicodeDecodeError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
        report.note = f"rates source unreadable ({type(exc).__name__}: {str(exc)[:120]}): rates unchanged"
        log.warning("rates.source_failed", error=type(exc).__name__)
        return report
    async with db.begin() as conn:
        known = set((await conn.execute(select(currencies.c.currency))).scalars())
        for code, course in sorted(rates.items()):
            if code not in known or code == system_currency:
                report.unknown.append(code)
                continue
            await conn.execute(update(currencies).where(currencies.c.currency == code).values(eur_course=course))
            report.updated.append(code)
    log.info("rates.updated", count=len(report.updated))
    return report
