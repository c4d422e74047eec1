"""Failure counters with lock-out, shared by DISA (authorizeCall) and password logins.

A counter is a row of `disa_failures` (the table predates the other uses and keeps its
name; its `callerid` column holds the counter's key). Keys are namespaced: `cli:<caller
ID>` and `ext:<extension>` for DISA, `login:<auth_by>:<login>` and `ip:<address>` for
dynamic client-key logins; a key longer than the column is hashed.

`limit.max_failures` failures, each within `limit.window_s` of the previous one, lock
the counter for `window_s` (0 failures = never locked) and start it afresh; while it is
locked nothing is counted. Every update happens under the rows' locks (taken in key
order, so two attempts cannot deadlock), so parallel guesses cannot exceed a limit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.clock import as_utc, utcnow
from billing_core.db.engine import Database
from billing_core.directory.tables import disa_failures

log = structlog.get_logger(__name__)

KEY_LEN = 64  # disa_failures.callerid is String(64)


@dataclass(frozen=True, slots=True)
class Limit:
    max_failures: int
    window_s: int


def counter_key(kind: str, value: str) -> str:
    key = f"{kind}:{value}"
    if len(key) <= KEY_LEN:
        return key
    return f"{kind}#{hashlib.sha256(value.encode()).hexdigest()}"[:KEY_LEN]


def _is_locked(locked_until: datetime | None, now: datetime) -> bool:
    until = as_utc(locked_until)
    return until is not None and until > now


async def locked(db: Database, keys: Iterable[str]) -> set[str]:
    """The keys locked now (a cheap read without row locks, for the flood path)."""
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    now = utcnow()
    async with db.begin() as conn:
        rows = (
            await conn.execute(
                select(disa_failures.c.callerid, disa_failures.c.locked_until).where(
                    disa_failures.c.callerid.in_(wanted)
                )
            )
        ).all()
    return {row.callerid for row in rows if _is_locked(row.locked_until, now)}


async def _lock_rows(conn: AsyncConnection, keys: Sequence[str], now: datetime) -> dict[str, Any]:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for key in keys:  # create missing rows race-free (parallel first failures)
        await conn.execute(
            dialect.insert(disa_failures)
            .values(callerid=key, failures=0, locked_until=None, updated_at=now)
            .on_conflict_do_nothing(index_elements=["callerid"])
        )
    query = (
        select(disa_failures).where(disa_failures.c.callerid.in_(keys)).order_by(disa_failures.c.callerid)
    ).with_for_update()
    return {row.callerid: row for row in (await conn.execute(query)).all()}


async def record_failure(db: Database, counters: Sequence[tuple[str, Limit]]) -> tuple[set[str], set[str]]:
    """Count one failure on each counter. Returns (keys that were already locked and so
    not counted, keys this failure locked). Counter keys hold caller IDs, extensions,
    logins and addresses, never a secret, so they may be logged."""
    if not counters:
        return set(), set()
    limits = dict(counters)
    keys = sorted(limits)
    now = utcnow()
    was_locked: set[str] = set()
    now_locked: set[str] = set()
    async with db.begin() as conn:
        rows = await _lock_rows(conn, keys, now)
        for key in keys:
            row, limit = rows[key], limits[key]
            if _is_locked(row.locked_until, now):
                was_locked.add(key)
                continue
            window = timedelta(seconds=limit.window_s)
            recent = (as_utc(row.updated_at) or now) > now - window
            failures = (row.failures if recent else 0) + 1
            locked_until = None
            if 0 < limit.max_failures <= failures:
                locked_until = now + window
                failures = 0  # after the lock-out the counter starts afresh
                now_locked.add(key)
                log.warning("lockout.locked", counter=key, until=locked_until.isoformat())
            await conn.execute(
                update(disa_failures)
                .where(disa_failures.c.callerid == key)
                .values(failures=failures, locked_until=locked_until, updated_at=now)
            )
    return was_locked, now_locked


async def record_success(db: Database, keys: Sequence[str]) -> bool:
    """Clear the counters of a success; False (and nothing cleared) when one of them was
    locked meanwhile (by a parallel attempt), which turns the success into a refusal."""
    wanted = sorted(set(keys))
    if not wanted:
        return True
    now = utcnow()
    async with db.begin() as conn:
        query = select(disa_failures).where(disa_failures.c.callerid.in_(wanted)).with_for_update()
        rows = (await conn.execute(query)).all()
        if any(_is_locked(row.locked_until, now) for row in rows):
            return False
        if rows:
            await conn.execute(delete(disa_failures).where(disa_failures.c.callerid.in_(wanted)))
    return True

