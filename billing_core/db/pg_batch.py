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

Every item has a deadline (its decision's, billing_core.deadline), and the statement gets
the least time left among its items as a budget that PostgreSQL keeps on its own clock
(migration 0008): an item it could not reach in time writes nothing and comes back
`timeout`. So a statement never commits after a decision stopped waiting for it (the
"phantom hold" of issue 9). In these statements an account locked by another transaction
is waited for at most BATCH_LOCK_WAIT_S (callgate's own steps hold a row for
milliseconds), so an account locked from outside spends neither the time of the other
items nor one of the statements in flight; a `timeout` item whose decision still has time
is then sent again alone, beside them, where it may wait all that is left. One whose time
is up fails E_SQL_ERROR: nothing of it was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import asyncpg
import msgspec
import structlog
from prometheus_client import Counter

from billing_core.errors import BackendUnavailable

log = structlog.get_logger(__name__)

FAILED_STATEMENTS = Counter(
    "callgate_db_batch_failed", "Ledger batch statements PostgreSQL refused (each then split or sent again)"
)

# item (a JSON object per callgate_batch's fields), the decision waiting for its row, and
# the decision's deadline (event-loop time)
Pending = tuple[dict[str, Any], "asyncio.Future[asyncpg.Record]", float]

TIMEOUT: Final = "timeout"  # callgate_batch's outcome for an item it did not reach in time
# Less time than this left: not worth a round trip (nothing could be decided in it).
MIN_BUDGET_S: Final = 0.005
# How long an item of a batch of several waits for a row another transaction holds.
BATCH_LOCK_WAIT_S: Final = 0.05

# Decimals as strings, datetimes as RFC 3339: what callgate_batch casts back exactly.
_encode = msgspec.json.Encoder().encode


class LedgerBatches:
    def __init__(
        self, execute: Callable[[str, float, float], Awaitable[list[asyncpg.Record]]], *, in_flight: int = 2,
        budget_s: float = 5.0,
    ) -> None:
        """`execute(items_json, budget_s, lock_wait_s)` runs `callgate_batch` on the JSON of
        some items within `budget_s`, each waiting at most `lock_wait_s` for a locked row,
        and returns its rows; at most `in_flight` statements run at once.
        An item without a deadline of its own gets `budget_s` from when it is queued."""
        self._execute = execute
        self._budget_s = budget_s
        self.failed_statements = 0  # statements PostgreSQL refused (split or sent again after)
        self._pending: list[Pending] = []
        self._max_in_flight = in_flight
        self._in_flight: set[asyncio.Task[None]] = set()
        self._patient: set[asyncio.Task[None]] = set()  # items alone, waiting for a locked row

    async def run(self, item: dict[str, Any], deadline: float | None = None) -> asyncpg.Record:
        """This item's row of the batch it went in (`o_n` dropped), or its statement's error.
        `deadline` (event-loop time): after it, nothing of the item may be written."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[asyncpg.Record] = loop.create_future()
        self._enqueue((item, future, loop.time() + self._budget_s if deadline is None else deadline))
        return await future

    def _enqueue(self, pending: Pending) -> None:
        self._pending.append(pending)
        if len(self._in_flight) < self._max_in_flight:
            self._launch()

    def _launch(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._next)

    def _next(self, done: asyncio.Task[None]) -> None:
        self._in_flight.discard(done)
        if self._pending:
            self._launch()

    async def _send(self, batch: list[Pending], *, retries: int = 1, patient: bool = False) -> None:
        now = asyncio.get_running_loop().time()
        batch = [one for one in batch if not _expired(one, now)]
        if not batch:
            return
        budget_s = min(deadline for _, _, deadline in batch) - now
        lock_wait_s = budget_s if patient else min(budget_s, BATCH_LOCK_WAIT_S)
        try:
            rows = await self._execute(_encode([item for item, _, _ in batch]).decode(), budget_s, lock_wait_s)
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
                await self._send(batch, retries=retries - 1, patient=patient)
            else:
                _fail(batch, exc)
            return
        except BaseException as exc:  # unavailable, timed out, cancelled at shutdown
            _fail(batch, exc)
            return
        again: list[Pending] = []
        for row in rows:
            pending = batch[row["o_n"] - 1]
            future = pending[1]
            if future.done():  # its decision may have been cancelled meanwhile
                continue
            if row["o_outcome"] == TIMEOUT:
                again.append(pending)  # nothing written; again if its decision has time left
            else:
                future.set_result(row)
        answered = [one for one in batch if all(one is not other for other in again)]
        _fail(answered, RuntimeError("callgate_batch returned no row for an item"))  # never, but never hang
        for pending in again:  # alone, with all its time left (or failed, if none is left)
            task = asyncio.get_running_loop().create_task(self._send([pending], patient=True))
            self._patient.add(task)
            task.add_done_callback(self._patient.discard)


def _expired(pending: Pending, now: float) -> bool:
    """Fail an item whose deadline leaves no time to decide anything (nothing was written)."""
    item, future, deadline = pending
    if future.done():
        return True
    if deadline - now >= MIN_BUDGET_S:
        return False
    log.warning("db.ledger_deadline_passed", kind=item.get("kind"), call_uid=item.get("call_uid"))
    future.set_exception(BackendUnavailable("the decision's deadline passed before the database could decide"))
    return True


def _fail(batch: list[Pending], exc: BaseException) -> None:
    for _, future, _ in batch:
        if future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)
