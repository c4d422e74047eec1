"""callPrepare / callFinish as a pair: holds, idempotency, expiry, locked-in rates, input."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from billing_core import clock
from billing_core.api.dispatch import Dispatcher
from billing_core.container import Services
from billing_core.errors import ErrorCode
from billing_core.ledger import book as ledger
from billing_core.ledger.tables import reservations
from tests.conftest import BACKENDS
from tests.factories import MadeUser, balance_of, make_key, make_user
from tests.rating_world import Standard, credentials, finish, ledger_of, prepare, standard_world, text_of

NUMBER = "74951234567"  # Russia, 0.10 EUR/min on route1-cli, byminute


async def _setup(services: Services, *, balance: str = "10", overdraft: str = "0") -> tuple[Standard, MadeUser]:
    std = await standard_world(services)
    made = await make_user(
        services,
        "alice",
        balance=Decimal(balance),
        overdraft=Decimal(overdraft),
        rates_id=std.base,
        sip_extension="1001",
    )
    return std, made


async def _expire_in_db(services: Services, call_uid: str) -> None:
    """Move a reservation's expires_at into the past (as if the call outlived its hold)."""
    async with services.db.begin() as conn:
        await conn.execute(
            update(reservations)
            .where(reservations.c.call_uid == call_uid)
            .values(expires_at=clock.utcnow() - timedelta(seconds=1))
        )


# -- idempotency -----------------------------------------------------------------------


async def test_duplicate_finish_charges_once_and_answers_the_same(services: Services, dispatcher: Dispatcher) -> None:
    std, made = await _setup(services)
    text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_uid="1700000000.1"))
    first = text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="61", call_uid="1700000000.1"))
    again = text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="61", call_uid="1700000000.1"))
    # a retry with other numbers still replays the stored answer
    other = text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="3000", call_uid="1700000000.1"))
    assert first.text == "Saved Russia [alice/74951234567] via [route1-cli] 120 0.20 EUR ANSWER"
    assert again == first and other == first
    assert await balance_of(services, made.account_id) == Decimal("9.8000")
    books = await ledger_of(services, made.account_id)
    assert len(books.cdrs) == 1 and books.cdrs[0].answer == first.text
    assert [(t.amount, t.ref) for t in books.transactions] == [(Decimal("-0.2000"), "1700000000.1:1")]
    assert books.reservations == []  # the hold ended with the charge


async def test_concurrent_duplicate_finish_charges_once(services: Services, dispatcher: Dispatcher) -> None:
    std, made = await _setup(services)
    text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="dup"))
    outcomes = await asyncio.gather(
        *(finish(dispatcher, std.key, "alice", NUMBER, length="125", call_id="dup") for _ in range(5))
    )
    texts = {text_of(o).text for o in outcomes}
    assert texts == {"Saved Russia [alice/74951234567] via [route1-cli] 180 0.30 EUR ANSWER"}
    assert await balance_of(services, made.account_id) == Decimal("9.7000")
    books = await ledger_of(services, made.account_id)
    assert (len(books.cdrs), len(books.transactions)) == (1, 1)


async def test_prepare_retry_does_not_hold_twice(services: Services, dispatcher: Dispatcher) -> None:
    std, made = await _setup(services, balance="1")
    first = text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="retry"))
    again = text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="retry"))
    assert first == again and first.fields["CALLGATE_MAXTIME"] == "600"
    books = await ledger_of(services, made.account_id)
    assert [(r.amount, r.prior) for r in books.reservations] == [(Decimal("1.0000"), 1)]
    # the same call's next prior is a separate hold: nothing is left for it
    assert text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="retry", prior="2")).error == (
        "E_UNROUTABLE"  # Russia has one route only
    )
    other = text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="another"))
    assert other.text == "Declined E_INSUFFICIENT_MONEY"


async def test_prepare_replayed_after_its_finish_holds_nothing(services: Services, dispatcher: Dispatcher) -> None:
    std, made = await _setup(services, balance="1")
    text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="over"))
    saved = text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="61", call_id="over"))
    assert saved.text == "Saved Russia [alice/74951234567] via [route1-cli] 120 0.20 EUR ANSWER"
    outcome = await prepare(dispatcher, std.key, "alice", NUMBER, call_id="over")
    assert outcome.error is not None and outcome.error.code is ErrorCode.E_DATA_ABORT
    books = await ledger_of(services, made.account_id)
    assert books.reservations == [] and len(books.cdrs) == 1
    # the money the finished attempt did not use is free for the next call
    following = text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="next"))
    assert following.fields["CALLGATE_MAXTIME"] == "480"


async def test_call_id_used_by_another_account_is_refused(services: Services, dispatcher: Dispatcher) -> None:
    std, _ = await _setup(services)
    await make_user(services, "bob", balance=Decimal("10"), rates_id=std.base)
    text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="shared"))
    outcome = await prepare(dispatcher, std.key, "bob", NUMBER, call_id="shared")
    assert outcome.error is not None and outcome.error.code is ErrorCode.E_DATA_ABORT


# -- holds, expiry, late finish -------------------------------------------------------------


async def test_holds_count_against_available_until_finish(services: Services, dispatcher: Dispatcher) -> None:
    std, made = await _setup(services, balance="1", overdraft="0.5")
    first = text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="a"))
    assert first.fields["CALLGATE_MAXTIME"] == "900"  # 1.50 / 0.10 per minute
    assert text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="b")).error == "E_INSUFFICIENT_MONEY"
    text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="60", call_id="a"))
    # 1.00 − 0.10 + 0.50 = 1.40 → 14 minutes
    assert text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="b")).fields["CALLGATE_MAXTIME"] == "840"
    assert await balance_of(services, made.account_id) == Decimal("0.9000")


async def test_expiry_releases_funds_for_new_calls(services: Services, dispatcher: Dispatcher) -> None:
    std, made = await _setup(services, balance="1")
    text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="old"))
    assert text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="new")).error == "E_INSUFFICIENT_MONEY"
    await _expire_in_db(services, "old")
    # past expires_at the hold no longer counts, even before the sweeper marks it
    assert text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="new")).result == "Allowed"
    assert await ledger.expire_reservations(services.db) == 1
    books = await ledger_of(services, made.account_id)
    assert [(r.call_uid, r.state) for r in books.reservations] == [("old", "expired"), ("new", "open")]


async def test_late_finish_after_expiry_charges_once_capped_at_max_time(
    services: Services, dispatcher: Dispatcher
) -> None:
    std, made = await _setup(services, balance="1")
    text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="late"))  # max 600 s
    await _expire_in_db(services, "late")
    await ledger.expire_reservations(services.db)
    first = text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="900", call_id="late"))
    again = text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="900", call_id="late"))
    assert first == again
    assert first.text == "Saved Russia [alice/74951234567] via [route1-cli] 600 1.00 EUR ANSWER"
    assert await balance_of(services, made.account_id) == Decimal("0.0000")
    books = await ledger_of(services, made.account_id)
    assert books.reservations == []  # the hold ended with the charge
    assert (len(books.cdrs), len(books.transactions)) == (1, 1)


async def test_billed_length_is_capped_at_the_reserved_max_time(services: Services, dispatcher: Dispatcher) -> None:
    std, made = await _setup(services, balance="0.30", overdraft="0.20")
    text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="cap"))  # 0.50 → 300 s
    saved = text_of(
        await finish(dispatcher, std.key, "alice", NUMBER, length="400", answered_ms="400500", call_id="cap")
    )
    assert saved.fields["CALLGATE_COST"] == "0.50"
    assert await balance_of(services, made.account_id) == Decimal("-0.2000")  # exactly −overdraft, not below


async def test_finish_without_reservation_still_rates_and_charges(services: Services, dispatcher: Dispatcher) -> None:
    std, made = await _setup(services)
    # over HTTP without call_id: a fresh id, no hold, no cap
    saved = text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="7200"))
    assert saved.text == "Saved Russia [alice/74951234567] via [route1-cli] 7200 12.00 EUR ANSWER"
    assert await balance_of(services, made.account_id) == Decimal("-2.0000")
    books = await ledger_of(services, made.account_id)
    assert books.reservations == [] and len(books.cdrs) == 1 and len(books.transactions) == 1


async def test_rate_is_locked_in_at_prepare(services: Services, dispatcher: Dispatcher) -> None:
    std, made = await _setup(services)
    mobile = "79111234567"  # Russia Mobile: route1-cli 0.10, then route2 0.15
    text_of(await prepare(dispatcher, std.key, "alice", mobile, call_id="locked"))
    await std.world.set_entry_cost(std.mobile_entry, "0.90")
    await std.world.set_route_enabled(std.route1, False)  # prior 1 would now be route2
    saved = text_of(await finish(dispatcher, std.key, "alice", mobile, length="60", call_id="locked"))
    assert saved.text == "Saved RussiaMobile [alice/79111234567] via [route1-cli] 60 0.10 EUR ANSWER"
    assert await balance_of(services, made.account_id) == Decimal("9.9000")


async def test_a_call_whose_only_route_went_away_is_charged_at_its_hold(
    services: Services, dispatcher: Dispatcher
) -> None:
    std, made = await _setup(services)
    text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="orphan"))  # Russia: route1 only
    await std.world.set_route_enabled(std.route1, False)  # rating it now: E_UNROUTABLE
    saved = text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="61", call_id="orphan"))
    assert saved.text == "Saved Russia [alice/74951234567] via [route1-cli] 120 0.20 EUR ANSWER"
    assert await balance_of(services, made.account_id) == Decimal("9.8000")
    books = await ledger_of(services, made.account_id)
    assert books.reservations == [] and len(books.cdrs) == 1


async def test_finish_for_an_unroutable_call_without_hold_is_an_error(
    services: Services, dispatcher: Dispatcher
) -> None:
    std, made = await _setup(services)
    outcome = await finish(dispatcher, std.key, "alice", "123", length="60", call_id="nowhere")
    assert outcome.error is not None and outcome.error.code is ErrorCode.E_UNROUTABLE
    assert (await ledger_of(services, made.account_id)).cdrs == []


async def test_expiry_loop_marks_expired_holds(services: Services, dispatcher: Dispatcher) -> None:
    std, _ = await _setup(services)
    text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="sweep"))
    await _expire_in_db(services, "sweep")

    async def state() -> str:
        async with services.db.begin() as conn:
            value = (await conn.execute(select(reservations.c.state))).scalar_one()
        return str(value)

    task = asyncio.create_task(ledger.run_expiry_loop(services, 0.01))
    try:
        async with asyncio.timeout(10):
            while await state() != "expired":  # noqa: ASYNC110 - the loop signals nothing else
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await state() == "expired"


# -- status and input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cost"),
    [
        ("ANSWER", "0.10"),
        ("200ANSWER", "0.10"),
        ("0CANCEL", "0.00"),
        ("BUSY", "0.00"),
        ("NOANSWER", "0.00"),
        ("CANCEL", "0.00"),
        ("CONGESTION", "0.00"),
        ("CHANUNAVAIL", "0.00"),
        ("DONTCALL", "0.00"),
        ("TORTURE", "0.00"),
        ("INVALIDARGS", "0.00"),
        ("486BUSY", "0.00"),
    ],
)
async def test_status_forms_and_only_answer_costs(
    services: Services, dispatcher: Dispatcher, status: str, cost: str
) -> None:
    std, made = await _setup(services)
    saved = text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="60", status=status))
    assert saved.text.endswith(f" {cost} EUR {status}")
    assert await balance_of(services, made.account_id) == Decimal("10") - Decimal(cost)
    assert [c.status for c in (await ledger_of(services, made.account_id)).cdrs] == [status]


# An empty status is not here: it is a call that never reached Dial, closed as unanswered
# (test_agi_end_to_end.py::test_empty_status_closes_the_attempt_unanswered).
@pytest.mark.parametrize("status", ["ANSWERED", "OK", "200", "200 ANSWER", "ANSWER1"])
async def test_unknown_status_is_invalid(services: Services, dispatcher: Dispatcher, status: str) -> None:
    std, made = await _setup(services)
    outcome = await finish(dispatcher, std.key, "alice", NUMBER, length="60", status=status)
    assert outcome.error is not None and outcome.error.code is ErrorCode.E_INVALID_ARGUMENT
    assert (await ledger_of(services, made.account_id)).cdrs == []


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ({"length": "-1"}, ErrorCode.E_INVALID_ARGUMENT),
        ({"length": "abc"}, ErrorCode.E_INVALID_ARGUMENT),
        ({"length": "1", "answered_ms": "-5"}, ErrorCode.E_INVALID_ARGUMENT),
        ({"length": "1", "call_id": "x" * 65}, ErrorCode.E_INVALID_ARGUMENT),
    ],
)
async def test_bad_finish_arguments(
    services: Services, dispatcher: Dispatcher, args: dict[str, str], code: ErrorCode
) -> None:
    std, _ = await _setup(services)
    outcome = await finish(dispatcher, std.key, "alice", NUMBER, **args)
    assert outcome.error is not None and outcome.error.code is code


async def test_missing_arguments(services: Services, dispatcher: Dispatcher) -> None:
    std, _ = await _setup(services)
    cred_args = {"login": "alice", "destination": NUMBER, "status": "ANSWER"}
    no_length = await dispatcher.call("callFinish", cred_args, credentials(std.key, None))
    no_destination = await dispatcher.call("callPrepare", {"login": "alice"}, credentials(std.key, None))
    assert no_length.error is not None and no_length.error.code is ErrorCode.E_MISSING_ARGUMENT
    assert no_destination.error is not None and no_destination.error.code is ErrorCode.E_MISSING_ARGUMENT


async def test_empty_answered_ms_falls_back_to_length(services: Services, dispatcher: Dispatcher) -> None:
    std, made = await _setup(services)
    saved = text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="30", answered_ms="", cause="16"))
    assert saved.fields["CALLGATE_COST"] == "0.10"  # 30 s → one minute
    cdr = (await ledger_of(services, made.account_id)).cdrs[0]
    assert (cdr.length_s, cdr.answered_ms, cdr.billed_s, cdr.cause) == (30, None, 60, "16")


async def test_call_control_needs_a_server_key(services: Services, dispatcher: Dispatcher) -> None:
    await _setup(services)
    weak = await make_key(services, level=33, name="admin-key")
    outcome = await dispatcher.call("callPrepare", {"login": "alice", "destination": NUMBER}, credentials(weak, None))
    assert outcome.error is not None and outcome.error.code is ErrorCode.E_INSUFFICIENT_ACCESS


async def test_finish_on_another_worker_and_a_late_duplicate_on_the_first(
    services: Services, dispatcher: Dispatcher
) -> None:
    """Workers share nothing but the database: the worker that placed the hold remembers it,
    the other reads it back; either way the call is charged once, at the locked-in price."""
    std, made = await _setup(services)
    text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="w-1"))
    other = Services.build(services.settings)
    try:
        first = text_of(await finish(Dispatcher(other), std.key, "alice", NUMBER, length="61", call_id="w-1"))
    finally:
        await other.close()
    # The first worker still remembers its hold; its retry must not charge again.
    again = text_of(await finish(dispatcher, std.key, "alice", NUMBER, length="61", call_id="w-1"))
    assert first.text == "Saved Russia [alice/74951234567] via [route1-cli] 120 0.20 EUR ANSWER"
    assert again == first
    assert await balance_of(services, made.account_id) == Decimal("9.8000")
    books = await ledger_of(services, made.account_id)
    assert (len(books.cdrs), len(books.transactions)) == (1, 1)
    assert books.reservations == []  # the hold ended with the charge


async def test_warm_up_opens_the_pool_and_decisions_still_work(services: Services, dispatcher: Dispatcher) -> None:
    await services.call_ledger.warm_up()
    if not services.db.is_sqlite:
        from billing_core.ledger.pg_call_ledger import PgCallLedger

        assert isinstance(services.call_ledger, PgCallLedger)
        assert services.call_ledger.open_connections == 10
    std, _ = await _setup(services)
    assert text_of(await prepare(dispatcher, std.key, "alice", NUMBER, call_id="warm-1")).result == "Allowed"


@pytest.mark.skipif("server" not in BACKENDS, reason="only PostgreSQL has a pool to warm up")
@pytest.mark.parametrize("settings", ["server"], indirect=True)
async def test_warm_up_with_the_database_down_is_quiet(services: Services) -> None:
    from dataclasses import replace

    dead = Services.build(replace(services.settings, database_url=services.settings.database_url.replace(
        "127.0.0.1:5432", "127.0.0.1:9"
    )))  # fmt: skip
    try:
        await dead.call_ledger.warm_up()  # logs db.warm_up_skipped, raises nothing
        assert getattr(dead.call_ledger, "open_connections", None) == 0
    finally:
        await dead.close()
