"""callPrepare / callFinish over HTTP exactly as the spec shows them (no call_id, no
Asterisk uniqueid): a finish closes the oldest open hold of the same user, destination
and prior; two finishes at once never close the same hold; a finish without any hold is
billed no longer than a prepared call could have lasted. Over real HTTP, both backends,
asserted on balances, holds and CDRs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

import billing_core.api.methods  # noqa: F401 - registers every method
from billing_core.api.dispatch import Dispatcher
from billing_core.container import Services
from tests.factories import MadeUser, balance_of, make_user
from tests.http_support import Api, serve
from tests.rating_world import ledger_of, server_key, standard_world

RUSSIA = "74951234567"  # base tariff: 0.10 EUR/min, byminute
MOBILE = "79161234567"  # priorities 1 (0.10 EUR/min) and 2 (0.15 EUR/min, route2)


@pytest.fixture
async def api(services: Services) -> AsyncIterator[Api]:
    async with serve(services, test_methods=False) as running:
        yield running


async def answer(api: Api, key: str, method: str, **args: str) -> str:
    reply = await api.get(key, method, args)
    assert reply.status == 200, reply.text
    text = reply.json()["response"]
    assert isinstance(text, str)
    return text


async def caller(services: Services, balance: str, **kw: int) -> tuple[str, MadeUser]:
    std = await standard_world(services)
    made = await make_user(services, "hc", balance=Decimal(balance), rates_id=std.base, **kw)  # type: ignore[arg-type]
    return await server_key(services), made


async def test_an_http_pair_closes_its_hold_and_frees_the_money(services: Services, api: Api) -> None:
    key, made = await caller(services, "1.00")

    first = await answer(api, key, "callPrepare", login="hc", destination=RUSSIA)
    assert first.startswith("Allowed 600 ")  # 1.00 EUR at 0.10/min: the whole balance is held
    saved = await answer(api, key, "callFinish", login="hc", destination=RUSSIA, length="60", status="0ANSWER")
    assert saved.startswith("Saved ") and " 60 0.10 EUR " in saved, saved
    books = await ledger_of(services, made.account_id)
    assert [r.state for r in books.reservations] == []  # the hold was closed with the charge
    assert [(c.billed_s, c.cost) for c in books.cdrs] == [(60, Decimal("0.1000"))]
    assert await balance_of(services, made.account_id) == Decimal("0.9000")
    again = await answer(api, key, "callPrepare", login="hc", destination=RUSSIA)
    assert again.startswith("Allowed 540 "), again  # not Declined E_INSUFFICIENT_MONEY


async def test_a_finish_takes_the_oldest_hold_of_its_destination_and_prior(services: Services, api: Api) -> None:
    key, made = await caller(services, "5.00", allowed_call_len=120)
    for destination, prior in ((RUSSIA, "1"), (MOBILE, "1"), (MOBILE, "2"), (MOBILE, "1")):
        text = await answer(api, key, "callPrepare", login="hc", destination=destination, prior=prior)
        assert text.startswith("Allowed 120 "), text
    before = [(r.id, r.amount) for r in (await ledger_of(services, made.account_id)).reservations]

    saved = await answer(
        api, key, "callFinish", login="hc", destination=MOBILE, prior="1", length="10", status="ANSWER"
    )

    assert saved.startswith("Saved ")
    books = await ledger_of(services, made.account_id)
    # of the holds 1 (Russia), 2 (mobile, prior 1), 3 (mobile, prior 2), 4 (mobile, prior 1): 2 went
    assert [r.id for r in books.reservations] == [before[0][0], before[2][0], before[3][0]]
    assert [c.billed_s for c in books.cdrs] == [60]
    assert await balance_of(services, made.account_id) == Decimal("4.9000")


async def test_two_finishes_at_once_close_two_holds(services: Services, api: Api) -> None:
    key, made = await caller(services, "1.00", allowed_call_len=120)
    for _ in range(3):
        assert (await answer(api, key, "callPrepare", login="hc", destination=RUSSIA)).startswith("Allowed 120 ")

    saved = await asyncio.gather(
        *(
            answer(api, key, "callFinish", login="hc", destination=RUSSIA, length="30", status="ANSWER")
            for _ in range(2)
        )
    )

    assert all(s.startswith("Saved ") for s in saved), saved
    books = await ledger_of(services, made.account_id)
    assert len(books.reservations) == 1 and len(books.cdrs) == 2
    assert len({c.call_uid for c in books.cdrs}) == 2
    assert await balance_of(services, made.account_id) == Decimal("0.8000")


async def test_a_finish_without_a_hold_is_billed_at_most_the_call_cap(services: Services, api: Api) -> None:
    key, made = await caller(services, "10.00")
    capped = await answer(api, key, "callFinish", login="hc", destination=RUSSIA, length="999999", status="ANSWER")
    assert capped.startswith("Saved "), capped
    cap = services.settings.max_call_s
    books = await ledger_of(services, made.account_id)
    assert [(c.billed_s, c.cost) for c in books.cdrs] == [(cap, Decimal(cap) / 600)]
    assert await balance_of(services, made.account_id) == Decimal("10.00") - Decimal(cap) / 600


async def test_the_users_own_cap_bounds_a_finish_without_a_hold(
    services: Services, dispatcher: Dispatcher, api: Api
) -> None:
    key, made = await caller(services, "10.00", allowed_call_len=300)
    await answer(api, key, "callFinish", login="hc", destination=RUSSIA, length="999999", status="ANSWER")
    books = await ledger_of(services, made.account_id)
    assert [(c.billed_s, c.cost) for c in books.cdrs] == [(300, Decimal("0.5000"))]
    assert await balance_of(services, made.account_id) == Decimal("9.5000")
