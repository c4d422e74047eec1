"""Ledger work that arrives while a statement runs goes to PostgreSQL as one statement.

Measured here (docs/decisions.md, "Batched ledger statements"): the CPU of a one-row
statement is mostly its round trip, the send that wakes a PostgreSQL backend and the
reply that wakes callgate, not the row. `LedgerBatches` keeps at most two statements in
flight (one more and the batches only got smaller: measured); what callPrepare and
callFinish ask for meanwhile waits and then goes in the next one,
`callgate_batch(items jsonb)` (migration 0005), which runs each item through its own
function in one transaction. An idle process sends each item alone at once, so batching
adds no wait; a busy one sends more per round trip, as many as arrived.

An item whose SQL fails (an account that does not exist, a duplicate racing in) would
abort its whole batch, so a failed batch is sent again one item per statement: the error
reaches the item that caused it and only that one. A lone item that PostgreSQL rolled
back to break a deadlock with some other transaction is sent once more. (Batches do not
deadlock with each other: every step locks its account row first, in account order.)
A database that is unavailable fails every item of the batch, as it would have failed
each of their statements.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
import structlog
from prometheus_client import Counter

log = structlog.get_logger(__name__)

FAILED_STATEMENTS = Counter(
    "callgate_db_batch_failed", "Ledger batch statements PostgreSQL refused (each then split or sent again)"
)

# item (a JSON object per callgate_batch's fields) → the decision waiting for its row
Pending = tuple[dict[str, Any], "asyncio.Future[asyncpg.Record]"]

# Decimals as strings, datetimes as RFC 3339: what callgate_batch casts back exactly.
_encode = msgspec.json.Encoder().encode


class LedgerBatches:
    def __init__(self, execute: Callable[[str], Awaitable[list[asyncpg.Record]]], *, in_flight: int = 2) -> None:
        """`execute` runs `callgate_batch` on the JSON of some items and returns its rows;
        at most `in_flight` statements run at once."""
        self._execute = execute
        self.failed_statements = 0  # statements PostgreSQL refused (split or sent again after)
        self._pending: list[Pending] = []
        self._max_in_flight = in_flight
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run(self, item: dict[str, Any]) -> asyncpg.Record:
        """This item's row of the batch it went in (`o_n` dropped), or its statement's error."""
        future: asyncio.Future[asyncpg.Record] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._in_flight) < self._max_in_flight:
            self._launch()
        return await future

    def _launch(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._next)

    def _next(self, done: asyncio.Task[None]) -> None:
        self._in_flight.discard(done)
        if self._pending:
            self._launch()

    async def _send(self, batch: list[Pending], *, retries: int = 1) -> None:
        try:
            rows = await self._execute(_encode([item for item, _ in batch]).decode())
        except asyncpg.PostgresError as exc:
            self.failed_statements += 1
            FAILED_STATEMENTS.inc()
            log.warning("db.batch_failed", items=len(batch), error=type(exc).__name__, sqlstate=exc.sqlstate)
            if len(batch) > 1:
                for one in batch:  # find the item that failed: each in its own statement
                    await self._send([one])
            elif isinstance(exc, asyncpg.exceptions.TransactionRollbackError) and retries > 0:
                # PostgreSQL broke a deadlock (or a serialization conflict) with some other
                # transaction by rolling this one back: nothing of it was written; again.
                await self._send(batch, retries=retries - 1)
            else:
                _fail(batch, exc)
            return
        except BaseException as exc:  # unavailable, timed out, cancelled at shutdown
            _fail(batch, exc)
            return
        for row in rows:
            future = batch[row["o_n"] - 1][1]
            if not future.done():  # its decision may have been cancelled meanwhile
                future.set_result(row)
        _fail(batch, RuntimeError("callgate_batch returned no row for an item"))  # never, but never hang


def _fail(batch: list[Pending], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
