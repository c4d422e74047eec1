"""The call ledger on PostgreSQL: one round trip per primitive, on a set of asyncpg connections.

Each primitive is one statement (a PL/pgSQL function of migrations 0002/0004, or one
SELECT), sent through asyncpg's prepared-statement cache; holds and callFinish charges
share statements when they arrive together (billing_core.db.pg_batch, migration 0005).
Measured in docs/performance.md: the same transactions through SQLAlchemy cost several
times the CPU, and a hold took four statements plus a pool pre-ping. Everything else
keeps using SQLAlchemy.

A decision's deadline holds inside PostgreSQL too (issue 9, item 8): holds and charges
carry it into callgate_batch, which keeps it on the database's clock (migration 0008,
billing_core.db.pg_batch); every other statement runs under a `statement_timeout` just past
the ledger's time-out, set on each connection. callgate waits a margin longer than either,
so the database's verdict (done, or nothing written) arrives before callgate gives up: what
callgate answers is what the database did.

The connections are opened on demand (billing_core.db.pg_connections), so a database that
is down at start-up is an E_SQL_ERROR decision (not a crash) and the next call after it
comes back works.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from billing_core import deadline
from billing_core.db.pg_batch import LedgerBatches
from billing_core.db.pg_connections import PgConnections
from billing_core.errors import ApiError, BackendUnavailable, ErrorCode
from billing_core.ledger.book import Hold, Reservation, call_ref, rating_text
from billing_core.ledger.call_ledger import (
    CallRecord,
    DuplicateCall,
    FinishAttempt,
    HoldAttempt,
    StoredAnswer,
)

log = structlog.get_logger(__name__)

# "The database is not there right now", as opposed to a bug or bad data.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # asyncpg's own view of a connection whose protocol state broke (seen when PostgreSQL
    # restarted under in-flight statements: "cannot switch to state …"): the connection is
    # unusable, the database will be back, so it is an outage like a lost socket.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    OSError,
    TimeoutError,
)

# callPrepare's holds and callFinish's charges go through callgate_batch (billing_core.db.pg_batch);
# it calls callgate_hold / callgate_finish per item.
BATCH_SQL = "SELECT * FROM callgate_batch($1::jsonb, $2::integer, $3::integer)"
# How much longer callgate waits for a statement than the database lets it run: the reply's
# way back. A statement the database ended is answered within it, so a wait that runs out
# means the network, not a statement still running.
REPLY_MARGIN_S = 0.5
CHARGE_SQL = (
    "SELECT * FROM callgate_charge($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
    "$13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)"
)
RESERVATION_SQL = (
    "SELECT id, account_id, amount, max_time_s, state, rating FROM reservations WHERE call_uid = $1 AND prior = $2"
)
# The stored answer and the hold of one call attempt, in one round trip.
RECORD_SQL = """
SELECT c.answer, c.display_cost, c.display_currency,
       r.id, r.account_id, r.amount, r.max_time_s, r.state, r.rating
FROM (SELECT 1) AS one
LEFT JOIN cdrs c ON c.call_uid = $1 AND c.prior = $2
LEFT JOIN reservations r ON r.call_uid = $1 AND r.prior = $2
"""


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """postgresql+asyncpg://… (SQLAlchemy's form) → postgresql://… (asyncpg's)."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _unavailable(exc: BaseException) -> BackendUnavailable:
    log.warning("db.unavailable", error=type(exc).__name__, detail=str(exc)[:200])
    return BackendUnavailable()


def _reservation(call_uid: str, prior: int, row: Any, prefix: str = "") -> Reservation | None:
    """The hold in `row`, whose columns are id, account_id, … (each after `prefix`)."""
    if row[prefix + "id"] is None:
        return None
    rating = row[prefix + "rating"]
    return Reservation(
        row[prefix + "id"], call_uid, prior, row[prefix + "account_id"], Decimal(row[prefix + "amount"]),
        row[prefix + "max_time_s"], row[prefix + "state"], json.loads(rating) if rating else None,
    )  # fmt: skip


class PgCallLedger:
    def __init__(self, database_url: str, *, timeout_s: float, max_connections: int = 10) -> None:
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        # A backstop for the statements outside callgate_batch (a repriced charge, reads):
        # PostgreSQL ends them itself, rolled back, a little after the ledger's time-out.
        statement_timeout_ms = int((timeout_s + REPLY_MARGIN_S / 2) * 1000)
        self._connections = PgConnections(
            asyncpg_dsn(database_url), size=max_connections, timeout_s=timeout_s,
            server_settings={"statement_timeout": str(statement_timeout_ms)},
        )  # fmt: skip
        self._batches = LedgerBatches(self._batch, budget_s=timeout_s)

    async def _batch(self, items: str, budget_s: float, lock_wait_s: float) -> list[asyncpg.Record]:
        """callgate_batch, which keeps `budget_s` itself; waited for a margin longer."""
        budget_ms, wait_ms = max(1, int(budget_s * 1000)), max(1, int(lock_wait_s * 1000))
        return await self._fetch(BATCH_SQL, items, budget_ms, wait_ms, wait_s=budget_s + REPLY_MARGIN_S)

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    async def _fetch(self, sql: str, *args: Any, wait_s: float | None = None) -> list[asyncpg.Record]:
        """One statement on a connection of the set. A connection that failed mid-protocol
        (lost, timed out, cancelled) is discarded; an ordinary SQL error leaves it usable."""
        try:
            conn = await self._connections.acquire()
        except UNAVAILABLE_ERRORS as exc:
            raise _unavailable(exc) from exc
        try:
            rows = await conn.fetch(sql, *args, timeout=wait_s or self._timeout_s + REPLY_MARGIN_S)
        except asyncpg.PostgresError as exc:
            if isinstance(exc, UNAVAILABLE_ERRORS):
                self._connections.discard(conn)
                raise _unavailable(exc) from exc
            self._connections.release(conn)
            raise
        except BaseException as exc:
            self._connections.discard(conn)
            if isinstance(exc, UNAVAILABLE_ERRORS):
                raise _unavailable(exc) from exc
            raise
        self._connections.release(conn)
        return rows

    async def try_hold(self, hold: Hold) -> HoldAttempt:
        item = {
            "kind": "hold", "call_uid": hold.call_uid, "prior": hold.prior, "account_id": hold.account_id,
            "user_id": hold.user_id, "amount": hold.amount, "max_time_s": hold.max_time_s, "now": hold.now,
            "expires_at": hold.expires_at, "rating": rating_text(hold.rating),
        }  # fmt: skip
        try:
            row = await self._batches.run(item, deadline.until(self._timeout_s))
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateCall() from exc
        except asyncpg.exceptions.NoDataFoundError as exc:
            raise ApiError(ErrorCode.E_NOT_EXIST, "no such account") from exc
        outcome = row["o_outcome"]
        if outcome == "exists":
            return HoldAttempt("exists", reservation=_reservation(hold.call_uid, hold.prior, row, "o_"))
        if outcome == "finished":
            return HoldAttempt("finished")
        if outcome == "held":
            return HoldAttempt("held", available=row["o_available"], reservation=hold.reservation(row["o_id"]))
        return HoldAttempt("short", available=row["o_available"])

    async def find_reservation(self, call_uid: str, prior: int) -> Reservation | None:
        row = await self._fetchrow(RESERVATION_SQL, call_uid, prior)
        return None if row is None else _reservation(call_uid, prior, row)

    async def call_record(self, call_uid: str, prior: int) -> tuple[StoredAnswer | None, Reservation | None]:
        row = await self._fetchrow(RECORD_SQL, call_uid, prior)
        assert row is not None  # the LEFT JOINs from one row always give one row
        stored = None
        if row["answer"] is not None:
            stored = StoredAnswer(row["answer"], row["display_cost"], row["display_currency"])
        return stored, _reservation(call_uid, prior, row)

    async def charge_at_hold(self, record: CallRecord, *, rating: dict[str, Any]) -> FinishAttempt:
        item = record.columns()
        item.update(kind="finish", ref=call_ref(record.call_uid, record.prior), rating=rating_text(rating))
        row = await self._batches.run(item, deadline.until(self._timeout_s))
        outcome = row["o_outcome"]
        if outcome == "written":
            return FinishAttempt("written")
        if outcome == "stored":
            return FinishAttempt("stored", stored=StoredAnswer(row["o_answer"], row["o_display_cost"],
                                                               row["o_display_currency"]))  # fmt: skip
        return FinishAttempt("reprice", reservation=_reservation(record.call_uid, record.prior, row, "o_"))

    async def record_call(self, record: CallRecord, *, reservation_id: int | None) -> StoredAnswer | None:
        r = record
        row = await self._fetchrow(
            CHARGE_SQL, r.call_uid, r.prior, r.user_id, r.account_id, r.sip_extension, r.callerid, r.destination,
            r.direction_id, r.direction, r.route_id, r.route, r.length_s, r.answered_ms, r.billed_s, r.status,
            r.cause, r.cost, r.display_cost, r.display_currency, r.is_did, r.answer, r.created_at,
            reservation_id, call_ref(r.call_uid, r.prior),
        )  # fmt: skip
        assert row is not None
        if row["o_written"]:
            return None
        return StoredAnswer(row["o_answer"], row["o_display_cost"], row["o_display_currency"])

    async def warm_up(self) -> None:
        """Open every connection at once, so that the first burst of calls does not pay for
        connecting (measured: the first seconds after start-up had the worst p99). A
        database that is down is not an error here: decisions will connect when it is back."""
        held: list[asyncpg.Connection] = []
        try:
            for _ in range(self._max_connections):
                held.append(await self._connections.acquire())
        except Exception as exc:  # best effort: serving never depends on it
            log.info("db.warm_up_skipped", error=type(exc).__name__)
        finally:
            for conn in held:
                self._connections.release(conn)

    @property
    def failed_batch_statements(self) -> int:
        """Batch statements PostgreSQL refused since start (each then split or sent again)."""
        return self._batches.failed_statements

    @property
    def open_connections(self) -> int:
        return self._connections.open_count

    async def close(self) -> None:
        await self._connections.close()
