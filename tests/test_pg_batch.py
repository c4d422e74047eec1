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
        self.budgets: list[float] = []  # the budget of each statement
        self.lock_waits: list[float] = []  # the lock wait of its items
        self.timeouts: dict[str, int] = {}  # call_uid → how many times to answer it `timeout`

    async def __call__(self, items_json: str, budget_s: float = 0.0, lock_wait_s: float = 0.0) -> list[dict[str, Any]]:
        items = json.loads(items_json)
        self.sent.append([item["call_uid"] for item in items])
        self.budgets.append(budget_s)
        self.lock_waits.append(lock_wait_s)
        await self.gate.wait()
        if self.unavailable:
            raise BackendUnavailable()
        if self.deadlocks:
            self.deadlocks -= 1
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        if any(self.timeouts.get(item["call_uid"], 0) > 0 for item in items):
            await asyncio.sleep(lock_wait_s)  # as callgate_batch does: the item waits for its row
        if any(item["call_uid"] == self.fail_on for item in items):
            raise asyncpg.exceptions.NoDataFoundError("no such account")
        # answered out of order, as the account order of callgate_batch does
        numbered = reversed(list(enumerate(items, 1)))
        return [{"o_n": n, "o_outcome": self._outcome(item["call_uid"])} for n, item in numbered]

    def _outcome(self, uid: str) -> str:
        if self.timeouts.get(uid, 0) > 0:
            self.timeouts[uid] -= 1
            return "timeout"
        return f"done {uid}"


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
    # Cancelled before its statement went out: never sent, so nothing of it can be written
    # after its decision stopped waiting (issue 9, item 8).
    assert statements.sent == [["b"]]


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


# -- the deadline (issue 9, item 8) ---------------------------------------------------------


async def test_the_statement_gets_the_least_time_left_of_its_items() -> None:
    statements = Statements()
    batches = LedgerBatches(statements, in_flight=1)  # type: ignore[arg-type]
    now = asyncio.get_running_loop().time()
    tasks = await _while_busy(batches, statements, "a", "")
    tasks += [asyncio.create_task(batches.run(_item("b"), now + 3.0)),
              asyncio.create_task(batches.run(_item("c"), now + 1.0))]
    await asyncio.sleep(0)
    statements.gate.set()
    await asyncio.gather(*tasks)
    assert statements.sent == [["a"], ["b", "c"]]
    assert 0.9 < statements.budgets[1] <= 1.0  # c's deadline bounds the statement they share


async def test_an_item_past_its_deadline_is_never_sent_and_fails_as_unavailable() -> None:
    statements = Statements()
    batches = LedgerBatches(statements, in_flight=1)  # type: ignore[arg-type]
    with pytest.raises(BackendUnavailable):
        await batches.run(_item("late"), asyncio.get_running_loop().time() - 0.001)
    assert statements.sent == []


async def test_a_timeout_item_with_time_left_is_sent_again_and_one_without_fails() -> None:
    statements = Statements()
    statements.timeouts = {"victim": 1, "blocked": 10**6}
    batches = LedgerBatches(statements, in_flight=1)  # type: ignore[arg-type]
    busy = await _while_busy(batches, statements, "a", "")
    now = asyncio.get_running_loop().time()
    victim = asyncio.create_task(batches.run(_item("victim"), now + 5.0))
    blocked = asyncio.create_task(batches.run(_item("blocked"), now + 0.2))
    await asyncio.sleep(0)
    statements.gate.set()
    await asyncio.gather(*busy)
    assert (await victim)["o_outcome"] == "done victim"  # a victim of the other's wait: again
    with pytest.raises(BackendUnavailable):  # its own time ran out: nothing written, E_SQL_ERROR
        await blocked
    assert statements.sent[:2] == [["a"], ["victim", "blocked"]]
    assert ["victim"] in statements.sent[2:]  # sent again alone
    assert statements.lock_waits[1] == pytest.approx(0.05)  # a batch waits briefly
    assert statements.lock_waits[-1] > 0.05  # alone, all the time left
