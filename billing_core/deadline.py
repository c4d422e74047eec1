"""A decision's deadline, handed from the transport that bounds it to the store that must
keep it (issue 9, item 8).

The FastAGI bridge answers every decision within its time limit; a statement still running
in PostgreSQL when it gives up could commit later (a hold nobody was told about). So the
bridge sets the time by which the database must have decided (`within`), and the call ledger
hands PostgreSQL the time left as a budget that it keeps on its own clock. Without a
deadline set (HTTP, the CLI), the ledger's own time-out (CALLGATE_DB_TIMEOUT_S) is the bound.
Event-loop time, in seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("callgate_decision_deadline", default=None)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """The database must have decided within `seconds` from now, for the code run inside."""
    token = _DEADLINE.set(asyncio.get_running_loop().time() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def until(bound_s: float) -> float:
    """When a statement started now must be over: in `bound_s`, or the decision's deadline
    if that comes first."""
    limit = asyncio.get_running_loop().time() + bound_s
    decision = _DEADLINE.get()
    return limit if decision is None else min(limit, decision)
