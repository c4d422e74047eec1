"""500 concurrent callPrepare on one account can never hold more than it has, and the
charges of the calls that went through add up to the cent.

On PostgreSQL the 500 requests really run at once over the 20-connection pool and meet
at the account row lock; on SQLite they queue on its single connection.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from billing_core.api.dispatch import Dispatcher
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.ledger.tables import cdrs, reservations
from billing_core.rating.engine import reserve_amount
from tests.conftest import BACKENDS
from tests.factories import balance_of, make_user
from tests.rating_world import RatingWorld, finish, ledger_of, prepare, server_key, sum_of_call_transactions, text_of

CALLS = 500
BALANCE = Decimal("20.0000")
OVERDRAFT = Decimal("5.0000")
# 0.0937 × 1.3 = 0.12181 EUR/min, per second, 0.0123 per call, at most 120 s per call:
# a full hold is 0.25592 → 0.2560, so about a hundred calls fit in 25.00 and the rest
# are declined; the odd numbers make every hold and charge round.
PRICE, MULTIPLIER, FEE = "0.0937", "1.3", "0.0123"
CAP_S = 120
NUMBER = "31201234567"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # 500 decisions on ONE account serialize on its row lock; the tail of this burst
    # waits longer than the production per-decision bound (CALLGATE_DB_TIMEOUT_S).
    return replace(settings, db_timeout_s=60.0)


async def _world(services: Services) -> tuple[str, int]:
    w = RatingWorld(services)
    direction = await w.direction("31", "Netherlands", min_len=11, max_len=11)
    route = await w.route("nl-1", prefix="nl/")
    tariff = await w.tariff("odd", bill_type="bysecond", multiplier=MULTIPLIER, connect_fee=FEE)
    await w.entry(tariff, direction, PRICE, route)
    made = await make_user(
        services, "busy", balance=BALANCE, overdraft=OVERDRAFT, rates_id=tariff, allowed_call_len=CAP_S
    )
    return await server_key(services), made.account_id


async def _reserved_total(services: Services, account_id: int) -> Decimal:
    async with services.db.begin() as conn:
        total = (
            await conn.execute(
                select(func.coalesce(func.sum(reservations.c.amount), 0)).where(reservations.c.account_id == account_id)
            )
        ).scalar_one()
    return Decimal(total)


async def test_concurrent_prepare_never_overdraws_and_charges_add_up(
    services: Services, dispatcher: Dispatcher
) -> None:
    key, account_id = await _world(services)
    # Warm the caches with a call that holds nothing (no direction), so the burst measures
    # the money path rather than 500 simultaneous profile loads.
    assert text_of(await prepare(dispatcher, key, "busy", "99912345678")).text == "Declined E_UNROUTABLE"
    outcomes = await asyncio.gather(
        *(prepare(dispatcher, key, "busy", NUMBER, call_id=f"burst-{i}") for i in range(CALLS))
    )
    answers = [text_of(o) for o in outcomes]  # no errors, no timeouts: only decisions
    allowed = {f"burst-{i}": int(a.fields["CALLGATE_MAXTIME"]) for i, a in enumerate(answers) if a.ok}
    declined = [a.text for a in answers if not a.ok]
    assert 1 < len(allowed) < CALLS, "the price must let only a part of the burst through"
    assert set(declined) == {"Declined E_INSUFFICIENT_MONEY"}

    reserved = await _reserved_total(services, account_id)
    start = BALANCE + OVERDRAFT
    assert reserved <= start
    # Saturated: what is left would not pay even one second.
    one_second = reserve_amount(1, price_per_minute=Decimal(PRICE) * Decimal(MULTIPLIER), connect_fee=Decimal(FEE))
    assert start - reserved < one_second
    books = await ledger_of(services, account_id)
    assert sorted(r.call_uid for r in books.reservations) == sorted(allowed)
    assert all(r.amount > 0 and 0 < r.max_time_s <= CAP_S for r in books.reservations)
    held = {r.call_uid: r for r in books.reservations}

    rng = random.Random(20240611)
    plan = {
        uid: (rng.randint(0, max_s + 30), rng.choice(["ANSWER", "ANSWER", "ANSWER", "BUSY"]))
        for uid, max_s in allowed.items()
    }
    finished = await asyncio.gather(
        *(
            finish(dispatcher, key, "busy", NUMBER, length=str(length), status=status, call_id=uid)
            for uid, (length, status) in plan.items()
        )
    )
    assert all(text_of(o).result == "Saved" for o in finished)

    end = await balance_of(services, account_id)
    books = await ledger_of(services, account_id)
    charged = sum((c.cost for c in books.cdrs), Decimal(0))
    assert len(books.cdrs) == len(allowed)
    assert end == BALANCE - charged
    assert end >= -OVERDRAFT
    assert await sum_of_call_transactions(services, account_id) == -charged
    assert books.reservations == []  # every hold ended with its charge
    for cdr in books.cdrs:
        assert cdr.cost <= held[cdr.call_uid].amount
        assert cdr.billed_s <= held[cdr.call_uid].max_time_s
    async with services.db.begin() as conn:
        priced = (await conn.execute(select(func.count()).select_from(cdrs).where(cdrs.c.cost > 0))).scalar_one()
    assert priced > 0


@pytest.mark.skipif("server" not in BACKENDS, reason="two workers need PostgreSQL")
@pytest.mark.parametrize("settings", ["server"], indirect=True)
async def test_two_workers_holding_and_finishing_on_shared_accounts_add_up(
    services: Services, dispatcher: Dispatcher
) -> None:
    """Two processes' batches (two statements in flight each) lock the same accounts at
    once; each call is finished by the worker that did not hold it. Money adds up, nothing
    is charged twice, no hold is left, and no batch statement deadlocked."""
    key, account_id = await _world(services)
    other = Services.build(services.settings)
    workers = [dispatcher, Dispatcher(other)]
    try:
        calls = [f"pair-{i}" for i in range(120)]
        prepared = await asyncio.gather(
            *(prepare(workers[i % 2], key, "busy", NUMBER, call_id=uid) for i, uid in enumerate(calls))
        )
        allowed = [uid for uid, o in zip(calls, prepared, strict=True) if text_of(o).ok]
        assert 1 < len(allowed) < len(calls)
        assert await _reserved_total(services, account_id) <= BALANCE + OVERDRAFT
        finished = await asyncio.gather(
            *(
                finish(workers[(i + 1) % 2], key, "busy", NUMBER, length=str(30 + i % 60), call_id=uid)
                for i, uid in enumerate(allowed)
            ),
            *(finish(workers[i % 2], key, "busy", NUMBER, length=str(30 + i % 60), call_id=uid)  # duplicates
              for i, uid in enumerate(allowed[:20])),
        )  # fmt: skip
        assert all(text_of(o).result == "Saved" for o in finished)
        # No batch statement was refused: a deadlock between the workers' batches would be
        # broken by PostgreSQL and then retried, invisible in the answers but counted here.
        assert [getattr(s.call_ledger, "failed_batch_statements", None) for s in (services, other)] == [0, 0]
    finally:
        await other.close()
    books = await ledger_of(services, account_id)
    charged = sum((c.cost for c in books.cdrs), Decimal(0))
    assert len(books.cdrs) == len(allowed)
    assert await balance_of(services, account_id) == BALANCE - charged
    assert await sum_of_call_transactions(services, account_id) == -charged
    assert books.reservations == []
