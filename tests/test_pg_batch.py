"""How ledger items are grouped into statements (billing_core.db.pg_batch).

The statement here is a stand-in that records what it was sent and answers like
callgate_batch (one row per item, tagged `o_n`), so the grouping can be checked exactly;
the real function runs under every call-control test on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from billing_core.db.pg_batch import LedgerBatches
from billing_core.errors import BackendUnavailable


class Statements:
    def __init__(self, *, fail_on: str | None = None, unavailable: bool = False, deadlocks: int = 0) -> None:
        self.sent: list[list[str]] = []  # the call_uid of each item, per statement
        self.fail_on = fail_on
        self.unavailable = unavailable
        self.deadlocks = deadlocks  # statements to roll back as deadlock victims first
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, items_json: str) -> list[dict[str, Any]]:
        items = json.loads(items_json)
        self.sent.append([item["call_uid"] for item in items])
        await self.gate.wait()
        if self.unavailable:
            raise BackendUnavailable()
        if self.deadlocks:
            self.deadlocks -= 1
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        if any(item["call_uid"] == self.fail_on for item in items):
            raise asyncpg.exceptions.NoDataFoundError("no such account")
        # answered out of order, as the account order of callgate_batch does
        return [{"o_n": n, "o_outcome": f"done {item['call_uid']}"} for n, item in reversed(list(enumerate(items, 1)))]


def _item(uid: str) -> dict[str, Any]:
    return {"kind": "hold", "call_uid": uid, "account_id": 1}


async def _while_busy(
    batches: LedgerBatches, statements: Statements, first: str, then: str
) -> list[asyncio.Task[Any]]:
    """Send `first` and hold its statement open; then send each of `then` meanwhile."""
    statements.gate.clear()
    tasks = [asyncio.create_task(batches.run(_item(first)))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(batches.run(_item(uid))) for uid in then]
    await asyncio.sleep(0)
    return tasks


async def test_an_item_alone_goes_at_once() -> None:
    statements = Statements()
    batches = LedgerBatches(statements, in_flight=1)  # type: ignore[arg-type]
    row = await batches.run(_item("a"))
    assert row["o_outcome"] == "done a" and statements.sent == [["a"]]


async def test_items_arriving_during_a_statement_go_together_in_the_next() -> None:
    statements = Statements()
    batches = LedgerBatches(statements, in_flight=1)  # type: ignore[arg-type]
    tasks = await _while_busy(batches, statements, "a", "bcd")
    assert statements.sent == [["a"]]  # b, c, d wait for the statement in flight
    statements.gate.set()
    rows = await asyncio.gather(*tasks)
    assert [r["o_outcome"] for r in rows] == ["done a", "done b", "done c", "done d"]
    assert statements.sent == [["a"], ["b", "c", "d"]]


async def test_a_failing_item_fails_alone() -> None:
    refused_before = REGISTRY.get_sample_value("callgate_db_batch_failed_total") or 0.0
    statements = Statements(fail_on="c")
    batches = LedgerBatches(statements, in_flight=1)  # type: ignore[arg-type]
    tasks = await _while_busy(batches, statements, "a", "bcd")
    statements.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [r if isinstance(r, BaseException) else r["o_outcome"] for r in results[:2]] == ["done a", "done b"]
    assert isinstance(results[2], asyncpg.exceptions.NoDataFoundError)
    assert not isinstance(results[3], BaseException) and results[3]["o_outcome"] == "done d"
    assert statements.sent == [["a"], ["b", "c", "d"], ["b"], ["c"], ["d"]]
    assert batches.failed_statements == 2  # the batch of three, then c alone
    assert REGISTRY.get_sample_value("callgate_db_batch_failed_total") == refused_before + 2  # /metrics


async def test_an_unavailable_database_fails_every_item_of_the_batch_and_the_next_works() -> None:
    statements = Statements(unavailable=True)
    batches = LedgerBatches(statements, in_flight=1)  # type: ignore[arg-type]
    statements.gate.clear()
    tasks = [asyncio.create_task(batches.run(_item(uid))) for uid in "ab"]
    await asyncio.sleep(0)
    statements.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    statements.unavailable = False
    assert (await batches.run(_item("c")))["o_outcome"] == "done c"


async def test_a_cancelled_decision_leaves_the_others_answered() -> None:
    statements = Statements()
    batches = LedgerBatches(statements, in_flight=1)  # type: ignore[arg-type]
    statements.gate.clear()
    doomed = asyncio.create_task(batches.run(_item("a")))
    kept = asyncio.create_task(batches.run(_item("b")))
    await asyncio.sleep(0)
    doomed.cancel()
    statements.gate.set()
    assert (await kept)["o_outcome"] == "done b"
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert statements.sent == [["a"], ["b"]]  # its item was sent: like a cancelled statement


async def test_a_second_statement_runs_beside_the_first_then_the_rest_wait() -> None:
    statements = Statements()
    batches = LedgerBatches(statements, in_flight=2)  # type: ignore[arg-type]
    statements.gate.clear()
    tasks = [asyncio.create_task(batches.run(_item(uid))) for uid in "abcd"]
    await asyncio.sleep(0.01)
    assert statements.sent == [["a"], ["b"]]  # two in flight; c and d wait for one to end
    statements.gate.set()
    rows = await asyncio.gather(*tasks)
    assert [r["o_outcome"] for r in rows] == ["done a", "done b", "done c", "done d"]
    assert statements.sent == [["a"], ["b"], ["c", "d"]]


async def test_a_deadlock_victim_is_sent_again_once() -> None:
    statements = Statements(deadlocks=1)
    batches = LedgerBatches(statements, in_flight=1)  # type: ignore[arg-type]
    assert (await batches.run(_item("a")))["o_outcome"] == "done a"
    assert statements.sent == [["a"], ["a"]] and batches.failed_statements == 1
    statements.deadlocks = 2  # rolled back twice: the error reaches the decision
    with pytest.raises(asyncpg.exceptions.DeadlockDetectedError):
        await batches.run(_item("b"))
    assert statements.sent[2:] == [["b"], ["b"]] and batches.failed_statements == 3
