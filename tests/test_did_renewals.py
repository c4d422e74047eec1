"""renewDID and the maintenance run (doMaintenance) on both backends: each rent period is
charged once, also when asked twice or by runs at the same moment; an owner who cannot
pay loses the number after the grace; lapsed orders and holds are closed; exchange rates."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from billing_core.api.dispatch import Dispatcher
from billing_core.catalog.maintenance import MAINTENANCE
from billing_core.clock import as_utc, utcnow
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.directory.tables import users
from billing_core.ledger.book import Hold, reserve
from billing_core.ledger.tables import accounts, reservations
from billing_core.numbers.maintenance_api import run_maintenance
from billing_core.numbers.rent import add_month
from billing_core.numbers.tables import did_orders, dids
from billing_core.rating.tables import currencies
from tests.did_world import (
    DidGate,
    code,
    did_row,
    did_transactions,
    make_gate,
    open_holds,
    periods,
    set_expiration,
    stock,
    stock_status,
)
from tests.factories import balance_of, make_key, make_user

NUMBER = "4930123456"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, did_release_grace_days=7, db_timeout_s=30.0)


@pytest.fixture
async def gate(services: Services, dispatcher: Dispatcher) -> DidGate:
    await make_user(services, "reseller", balance=Decimal("50"), password="rpw", accesslevel=22)
    await make_user(services, "alice", balance=Decimal("20"), password="apw", manager="reseller")
    g = await make_gate(services, dispatcher, {"alice": "apw", "reseller": "rpw"})
    assert (await g.admin("addDIDPool", login="admin", country="Germany", area="Berlin", cost="4.00",
                          installcost="1.00")).ok  # fmt: skip
    await stock(services, NUMBER, "4930123457")
    assert (await g.user("alice", "orderDID", pool_id=1, did=NUMBER)).ok
    return g


async def _account(services: Services, username: str) -> int:
    async with services.db.begin() as conn:
        return int((await conn.execute(select(users.c.account_id).where(users.c.username == username))).scalar_one())


async def _set_balance(services: Services, username: str, amount: str) -> None:
    account = await _account(services, username)
    async with services.db.begin() as conn:
        await conn.execute(update(accounts).where(accounts.c.id == account).values(balance=Decimal(amount)))


async def _expiration(services: Services, did: str = NUMBER) -> Any:
    return as_utc((await did_row(services, did)).expiration)


# ------------------------------------------------------------------------------ renewDID


async def test_renew_right_after_the_order_charges_nothing(gate: DidGate, services: Services) -> None:
    before = await _expiration(services)
    assert (await gate.admin("renewDID", login="admin", did=NUMBER)).ok
    assert await _expiration(services) == before
    assert len(await did_transactions(services, await _account(services, "alice"))) == 2  # install + first month


async def test_renew_buys_the_next_month_once_and_a_retry_nothing(gate: DidGate, services: Services) -> None:
    account = await _account(services, "alice")
    soon = utcnow() + timedelta(days=2)
    await set_expiration(services, NUMBER, soon)
    assert (await gate.user("reseller", "renewDID", did=NUMBER)).ok  # alice's manager
    assert (await gate.user("reseller", "renewDID", did=NUMBER)).ok  # the retry
    assert await balance_of(services, account) == Decimal("11.0000")  # 20 − 5 (order) − 4 (one month)
    assert await _expiration(services) == add_month(soon)
    assert [p.kind for p in await periods(services, NUMBER)] == ["order", "renew"]


async def test_concurrent_renewals_charge_once(gate: DidGate, services: Services) -> None:
    account = await _account(services, "alice")
    await set_expiration(services, NUMBER, utcnow() + timedelta(hours=3))
    outcomes = await asyncio.gather(*(gate.admin("renewDID", login="admin", did=NUMBER) for _ in range(6)))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert await balance_of(services, account) == Decimal("11.0000")
    assert [p.kind for p in await periods(services, NUMBER)] == ["order", "renew"]


async def test_renew_refusals(gate: DidGate, services: Services) -> None:
    await set_expiration(services, NUMBER, utcnow() + timedelta(days=1))
    await _set_balance(services, "alice", "3")
    assert code(await gate.admin("renewDID", login="admin", did=NUMBER)) == "E_INSUFFICIENT_MONEY"
    assert await balance_of(services, await _account(services, "alice")) == Decimal("3.0000")
    assert code(await gate.user("alice", "renewDID", did=NUMBER)) == "E_INSUFFICIENT_ACCESS"  # level 22
    assert code(await gate.admin("renewDID", login="admin", did="4930000000")) == "E_NOT_EXIST"
    assert code(await gate.admin("renewDID", login="admin", did="49-30")) == "E_INVALID_ARGUMENT"
    assert (await gate.admin("addDID", login="admin", did="4940000000", owner="alice")).ok
    assert code(await gate.admin("renewDID", login="admin", did="4940000000")) == "E_DATA_ABORT"  # not rented
    await make_user(services, "other", accesslevel=22, password="opw")
    gate.passwords["other"] = "opw"
    assert code(await gate.user("other", "renewDID", did=NUMBER)) == "E_DOES_NOT_BELONG_TO_YOU"


# ------------------------------------------------------------------------------ the run


async def test_the_run_renews_a_lapsed_number_once(gate: DidGate, services: Services) -> None:
    account = await _account(services, "alice")
    lapsed = utcnow() - timedelta(hours=1)
    await set_expiration(services, NUMBER, lapsed)
    first = await run_maintenance(services)
    assert first["dids"] == {"renewed": 1, "charged": "4.00", "disabled": 0, "released": 0, "orders_closed": 0}
    assert await _expiration(services) == add_month(lapsed)  # the period chain goes on
    second = await run_maintenance(services)
    assert second["dids"]["renewed"] == 0
    assert await balance_of(services, account) == Decimal("11.0000")
    assert [p.kind for p in await periods(services, NUMBER)] == ["order", "auto"]


async def test_concurrent_runs_charge_each_number_once(gate: DidGate, services: Services) -> None:
    numbers = [f"49301000{i:02d}" for i in range(30)]
    await stock(services, *numbers)
    await _set_balance(services, "alice", "500")
    for number in numbers:
        assert (await gate.user("alice", "orderDID", pool_id=1, did=number)).ok
    account = await _account(services, "alice")
    before = await balance_of(services, account)
    async with services.db.begin() as conn:
        await conn.execute(update(dids).values(expiration=utcnow() - timedelta(minutes=5)))
    reports = await asyncio.gather(*(run_maintenance(services) for _ in range(3)))
    assert sum(r["dids"]["renewed"] for r in reports) == 31
    assert await balance_of(services, account) == before - 31 * Decimal("4")
    assert [len(await periods(services, n)) for n in [*numbers, NUMBER]] == [2] * 31


async def test_an_owner_who_cannot_pay_is_disabled_then_enabled_when_paid(gate: DidGate, services: Services) -> None:
    await set_expiration(services, NUMBER, utcnow() - timedelta(hours=1))
    await _set_balance(services, "alice", "3")
    report = await run_maintenance(services)
    assert (report["dids"]["renewed"], report["dids"]["disabled"]) == (0, 1)
    row = await did_row(services, NUMBER)
    assert (bool(row.enabled), bool(row.renew_notify), row.unpaid_since is not None) == (False, True, True)
    info = (await gate.admin("getDIDInfo", login="admin", did=NUMBER)).value
    assert (info["enabled"], info["renew_notify"]) == (0, 1)
    assert (await run_maintenance(services))["dids"]["disabled"] == 1  # tried again, still nothing charged
    assert await balance_of(services, await _account(services, "alice")) == Decimal("3.0000")
    await _set_balance(services, "alice", "10")
    assert (await run_maintenance(services))["dids"]["renewed"] == 1
    row = await did_row(services, NUMBER)
    assert (bool(row.enabled), bool(row.renew_notify), row.unpaid_since) == (True, False, None)
    assert await balance_of(services, await _account(services, "alice")) == Decimal("6.0000")


async def test_after_the_grace_the_number_is_released(gate: DidGate, services: Services) -> None:
    assert (await gate.user("alice", "updateDIDState", did=NUMBER, parameter="autorenew", state="false")).ok
    await set_expiration(services, NUMBER, utcnow() - timedelta(days=6))
    assert (await run_maintenance(services))["dids"]["released"] == 0  # within the grace
    await set_expiration(services, NUMBER, utcnow() - timedelta(days=8))
    assert (await run_maintenance(services))["dids"]["released"] == 1
    row = await did_row(services, NUMBER)
    assert (row.deleted_reason, bool(row.enabled), row.deleted_at is not None) == ("released", False, True)
    assert (await gate.user("alice", "getDIDList")).value == []
    assert code(await gate.admin("getDIDInfo", login="admin", did=NUMBER)) == "E_NOT_EXIST"
    assert (await gate.admin("getDIDCount", did=NUMBER)).value.text == "0"
    assert await stock_status(services, NUMBER) == "available"
    # another buyer gets it; alice's paid period stays in the books
    await make_user(services, "bob", balance=Decimal("9"), password="bpw")
    gate.passwords["bob"] = "bpw"
    assert (await gate.user("bob", "orderDID", pool_id=1, did=NUMBER)).ok
    assert [(p.owner, p.kind) for p in await periods(services, NUMBER)] == [("alice", "order"), ("bob", "order")]
    assert (await did_row(services, NUMBER)).owner == "bob"


async def test_the_run_closes_an_order_a_crash_left_pending(gate: DidGate, services: Services) -> None:
    account = await _account(services, "alice")
    old = utcnow() - timedelta(hours=1)
    async with services.db.begin() as conn:
        uid = "did-order:crashed"
        await reserve(conn, Hold(uid, 0, account, 1, Decimal("5"), 0, old, utcnow() + timedelta(hours=1), {}))
        await conn.execute(did_orders.insert().values(
            hold_uid=uid, did="4930123457", pool_id=1, provider="local", owner="alice", account_id=account,
            amount=Decimal("5"), state="pending", created_at=old))  # fmt: skip
    from billing_core.numbers.tables import did_stock

    async with services.db.begin() as conn:
        await conn.execute(update(did_stock).where(did_stock.c.did == "4930123457").values(status="taken"))
    report = await run_maintenance(services)
    assert report["dids"]["orders_closed"] == 1
    assert await open_holds(services) == 0 and await stock_status(services, "4930123457") == "available"
    async with services.db.begin() as conn:
        assert (await conn.execute(select(did_orders.c.state).where(did_orders.c.hold_uid == uid))).scalar() == "failed"
    assert await balance_of(services, account) == Decimal("15.0000")  # only the order that went through


async def test_the_run_marks_lapsed_holds_expired(gate: DidGate, services: Services) -> None:
    account = await _account(services, "alice")
    async with services.db.begin() as conn:
        await reserve(conn, Hold("call-1", 1, account, 1, Decimal("1"), 60, utcnow(), utcnow() - timedelta(seconds=1),
                                 {}))  # fmt: skip
    assert (await run_maintenance(services))["holds"] == {"expired": 1}
    async with services.db.begin() as conn:
        assert (await conn.execute(select(reservations.c.state))).scalar() == "expired"
    assert (await run_maintenance(services))["holds"] == {"expired": 0}


# ------------------------------------------------------------------------------ rates and the method


async def _usd(services: Services) -> Decimal:
    async with services.db.begin() as conn:
        found = (await conn.execute(select(currencies.c.eur_course).where(currencies.c.currency == "USD"))).scalar_one()
    return Decimal(found)


async def _add_usd(services: Services) -> None:
    async with services.db.begin() as conn:
        if (await conn.execute(select(currencies.c.currency).where(currencies.c.currency == "USD"))).first() is None:
            await conn.execute(currencies.insert().values(currency="USD", eur_course=Decimal("1.1"), displayname="$"))


async def test_without_a_rates_source_rates_stay_and_the_answer_says_so(
    gate: DidGate, services: Services, dispatcher: Dispatcher
) -> None:
    key = await make_key(services, level=90, name="cron")
    from billing_core.api.dispatch import Credentials

    outcome = await dispatcher.call("doMaintenance", {}, Credentials("127.0.0.1", "http", apikey=key))
    assert outcome.ok and outcome.value.value is True
    assert "rates unchanged" in outcome.value.description and "dids: renewed=0" in outcome.value.description
    assert code(await gate.admin("doMaintenance")) is None  # the portal key is level 95
    low = await make_key(services, level=50, name="agi")
    refused = await dispatcher.call("doMaintenance", {}, Credentials("127.0.0.1", "http", apikey=low))
    assert code(refused) == "E_INSUFFICIENT_ACCESS"


async def test_rates_come_from_the_configured_file(services: Services, tmp_path: Path) -> None:
    await _add_usd(services)
    source = tmp_path / "rates.json"
    source.write_text(json.dumps({"USD": "1.0842", "XXX": "2", "EUR": "3"}))
    configured = replace(services, settings=replace(services.settings, rates_source=str(source)))
    report = await run_maintenance(configured)
    assert report["exchange_rates"]["updated"] == ["USD"] and await _usd(services) == Decimal("1.0842")
    source.write_text("currency,eur_course\nUSD,1.2000\n")
    await run_maintenance(configured)
    assert await _usd(services) == Decimal("1.2")
    source.write_text('{"USD": "-1"}')
    report = await run_maintenance(configured)
    assert "rates unchanged" in report["exchange_rates"]["note"] and await _usd(services) == Decimal("1.2")


async def test_a_failing_task_is_reported_and_the_others_run(gate: DidGate, services: Services) -> None:
    @MAINTENANCE.task("zz_broken", order=999)
    async def broken(services: Any, now: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    try:
        await set_expiration(services, NUMBER, utcnow() - timedelta(hours=1))
        report = await run_maintenance(services)
        assert report["zz_broken"] == {"error": "RuntimeError"} and report["dids"]["renewed"] == 1
    finally:
        MAINTENANCE._tasks.pop("zz_broken")
