"""Where the numbers of a pool come from: a DID provider, chosen per pool by its `provider`.

A provider lists the numbers it can sell (getDIDPool), orders one (orderDID) and releases
one (deleteDID, the release after the grace). `local` is the operator's own stock
(`did_stock`, loaded with `callgate dids import FILE.csv`), sold from the pools of the
same country and area. A name no provider is registered under, or a provider that fails,
makes orderDID answer E_DID_ORDER_FAIL before any money moves (billing_core.numbers.
did_orders). Another provider (a carrier's API) registers itself with `register_provider`;
it is given the pool's credentials decrypted, never stored or logged in clear.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog
from sqlalchemy import select, update

from billing_core.clock import utcnow
from billing_core.db.engine import Database
from billing_core.errors import ApiError, ErrorCode
from billing_core.numbers.dids import normalize_did
from billing_core.numbers.tables import did_stock

log = structlog.get_logger(__name__)

LOCAL = "local"
AVAILABLE = "available"
TAKEN = "taken"
IMPORT_BATCH = 1000


class ProviderError(Exception):
    """The provider could not do it (number gone, carrier down, refused)."""


@dataclass(frozen=True, slots=True)
class PoolView:
    """A pool as its provider sees it: credentials in clear, in memory only."""

    id: int
    country: str
    area: str
    provider: str
    user: str
    password: str
    params: tuple[str, str, str]
    qty: int


@dataclass(frozen=True, slots=True)
class Offer:
    did: str
    voice_support: bool
    sms_support: bool
    args: tuple[str, str, str] = ("", "", "")  # what orderDID's arg1..arg3 should echo


class DIDProvider(Protocol):
    async def available(self, pool: PoolView, pattern: str, limit: int) -> list[Offer]: ...

    async def order(self, pool: PoolView, did: str, args: tuple[str, str, str]) -> None: ...

    async def release(self, pool: PoolView, did: str) -> None: ...


ProviderFactory = Callable[[Database], DIDProvider]
_PROVIDERS: dict[str, ProviderFactory] = {}


def register_provider(name: str, factory: ProviderFactory) -> None:
    _PROVIDERS[name] = factory


def unregister_provider(name: str) -> None:
    _PROVIDERS.pop(name, None)


def provider_for(db: Database, name: str) -> DIDProvider:
    """The pool's provider; E_DID_ORDER_FAIL for a name none is registered under."""
    factory = _PROVIDERS.get(name)
    if factory is None:
        raise ApiError(ErrorCode.E_DID_ORDER_FAIL, f"no DID provider {name[:32]!r}")
    return factory(db)


class LocalProvider:
    """The operator's own numbers: a `did_stock` row of the pool's country and area."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def available(self, pool: PoolView, pattern: str, limit: int) -> list[Offer]:
        query = select(did_stock).where(
            did_stock.c.country == pool.country, did_stock.c.area == pool.area, did_stock.c.status == AVAILABLE
        )
        if pattern:
            query = query.where(did_stock.c.did.contains(pattern, autoescape=True))
        async with self._db.begin() as conn:
            rows = (await conn.execute(query.order_by(did_stock.c.did).limit(limit))).all()
        return [Offer(row.did, bool(row.voice_support), bool(row.sms_support)) for row in rows]

    async def order(self, pool: PoolView, did: str, args: tuple[str, str, str]) -> None:
        async with self._db.begin() as conn:
            taken = await conn.execute(
                update(did_stock)
                .where(
                    did_stock.c.did == did,
                    did_stock.c.country == pool.country,
                    did_stock.c.area == pool.area,
                    did_stock.c.status == AVAILABLE,
                )
                .values(status=TAKEN, taken_at=utcnow())
            )
        if not taken.rowcount:
            raise ProviderError("the number is not available in this pool")

    async def release(self, pool: PoolView, did: str) -> None:
        async with self._db.begin() as conn:
            await conn.execute(
                update(did_stock).where(did_stock.c.did == did).values(status=AVAILABLE, taken_at=None)
            )


register_provider(LOCAL, LocalProvider)


# ------------------------------------------------------------------ the stock's import


@dataclass(frozen=True, slots=True)
class StockRow:
    did: str
    country: str
    area: str
    voice_support: bool
    sms_support: bool


@dataclass
class ImportReport:
    inserted: int = 0
    present: int = 0  # already in the stock: left as they are
    errors: list[str] | None = None

    def summary(self) -> str:
        errors = self.errors or []
        return f"inserted={self.inserted} present={self.present} errors={len(errors)}"


class StockFileError(ValueError):
    pass


def _flag(value: str | None, default: bool) -> bool:
    text = (value or "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ValueError(f"not a yes/no value: {text[:16]!r}")


def read_stock_csv(path: str) -> tuple[list[StockRow], list[str]]:
    """`did,country,area[,voice_support,sms_support]` with a header; bad lines are reported
    (line number and why), the others kept. Numbers: digits, a leading + dropped, 3 to 32."""
    rows: list[StockRow] = []
    errors: list[str] = []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"did", "country", "area"} - set(reader.fieldnames or ())
        if missing:
            raise StockFileError(f"{path}: the header needs did,country,area (missing {', '.join(sorted(missing))})")
        for line, record in enumerate(reader, start=2):
            try:
                country, area = (record.get("country") or "").strip(), (record.get("area") or "").strip()
                if not country or not area or len(country) > 64 or len(area) > 64:
                    raise ValueError("country and area must be 1 to 64 characters")
                did = normalize_did(record.get("did") or "")
                voice = _flag(record.get("voice_support"), True)
                sms = _flag(record.get("sms_support"), False)
            except (ValueError, ApiError) as exc:
                errors.append(f"line {line}: {getattr(exc, 'detail', None) or exc}")
                continue
            rows.append(StockRow(did, country, area, voice, sms))
    return rows, errors


def _batches(rows: list[StockRow], size: int) -> Iterator[list[StockRow]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def import_stock(
    db: Database, rows: Iterable[StockRow], progress: Callable[[int], None] | None = None
) -> ImportReport:
    """Add the numbers to the local stock, IMPORT_BATCH per transaction; a number already in
    it is left as it is (counted as present). `progress(n)` after each batch of n rows."""
    report = ImportReport(errors=[])
    unique = list({row.did: row for row in rows}.values())
    for batch in _batches(unique, IMPORT_BATCH):
        async with db.begin() as conn:
            present = set(
                (
                    await conn.execute(select(did_stock.c.did).where(did_stock.c.did.in_([r.did for r in batch])))
                ).scalars()
            )
            fresh = [
                {"did": r.did, "country": r.country, "area": r.area, "voice_support": r.voice_support,
                 "sms_support": r.sms_support, "status": AVAILABLE}
                for r in batch if r.did not in present
            ]  # fmt: skip
            if fresh:
                await conn.execute(did_stock.insert(), fresh)
        report.inserted += len(fresh)
        report.present += len(present)
        if progress is not None:
            progress(len(batch))
    log.info("dids.stock_imported", inserted=report.inserted, present=report.present)
    return report
