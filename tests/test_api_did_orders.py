"""DID pools, the local provider and orderDID on both backends: the money of an order moves
exactly once (held, then charged or released), credentials never come back in clear."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from sqlalchemy import select, update

from billing_core.api.dispatch import Dispatcher
from billing_core.container import Services
from billing_core.directory.tables import users
from billing_core.numbers import providers
from billing_core.numbers.providers import Offer, PoolView, ProviderError
from billing_core.numbers.tables import did_pools
from billing_core.rating.tables import tariffs
from tests.did_world import (
    DidGate,
    code,
    did_row,
    did_transactions,
    make_gate,
    open_holds,
    order_states,
    periods,
    stock,
    stock_status,
)
from tests.factories import balance_of, make_user
from tests.rating_world import RatingWorld

NUMBER = "4930123456"


@pytest.fixture
async def gate(services: Services, dispatcher: Dispatcher) -> DidGate:
    tariff = await RatingWorld(services).tariff("retail")
    async with services.db.begin() as conn:
        await conn.execute(update(tariffs).where(tariffs.c.id == tariff).values(did_multiplier=Decimal("1.5")))
    await make_user(services, "alice", balance=Decimal("20"), password="apw", accesslevel=11)
    await make_user(services, "bob", balance=Decimal("20"), password="bpw", accesslevel=11, rates_id=tariff)
    await make_user(services, "poor", balance=Decimal("1"), password="ppw", accesslevel=11)
    await make_user(services, "reseller", balance=Decimal("5"), password="rpw", accesslevel=22)
    g = await make_gate(services, dispatcher, {"alice": "apw", "bob": "bpw", "poor": "ppw", "reseller": "rpw"})
    outcome = await g.admin("addDIDPool", login="admin", country="Germany", area="Berlin", cost="4.00",
                            installcost="1.00", user="carrier-login", **{"pass": "carrier-secret"})  # fmt: skip
    assert outcome.ok, outcome.error
    await stock(services, NUMBER, "4930123457", "4930999999")
    return g


async def _account(services: Services, username: str) -> int:
    async with services.db.begin() as conn:
        return int((await conn.execute(select(users.c.account_id).where(users.c.username == username))).scalar_one())


# ------------------------------------------------------------------------------ pools


async def test_pool_credentials_are_stored_encrypted_and_answered_masked(gate: DidGate, services: Services) -> None:
    info = (await gate.admin("getDIDPoolInfo", login="admin", id=1)).value
    assert info["username"] == info["password"] == "********"
    assert (info["param1"], info["provider"], info["quantity"]) == ("", "local", 100)
    assert (info["cost"], info["installcost"]) == (Decimal("4.00"), Decimal("1.00"))
    async with services.db.begin() as conn:
        row = (await conn.execute(select(did_pools))).one()
    assert "carrier-secret" not in row.pass_enc and services.box.decrypt(row.pass_enc) == "carrier-secret"
    assert [p["id"] for p in (await gate.admin("getDIDPools", login="admin")).value] == [1]


async def test_pool_update_and_soft_delete(gate: DidGate, services: Services) -> None:
    assert (await gate.admin("updateDIDPool", login="admin", id=1, cost="6", qty=2, param2="x")).ok
    info = (await gate.admin("getDIDPoolInfo", login="admin", id=1)).value
    assert (info["cost"], info["quantity"], info["param2"]) == (Decimal("6.00"), 2, "********")
    assert len((await gate.user("alice", "getDIDPool", country="Germany", area="Berlin")).value) == 2
    assert (await gate.admin("deleteDIDPool", login="admin", id=1)).ok
    assert (await gate.admin("getDIDPools", login="admin")).value == []
    assert code(await gate.admin("getDIDPoolInfo", login="admin", id=1)) == "E_NOT_EXIST"
    assert code(await gate.user("alice", "orderDID", pool_id=1, did=NUMBER)) == "E_NOT_EXIST"
    async with services.db.begin() as conn:
        assert (await conn.execute(select(did_pools.c.deleted_at))).scalar_one() is not None  # kept for the books


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"area": "Berlin"}, "E_MISSING_ARGUMENT"),
        ({"country": "Germany", "area": "Berlin", "cost": "-1"}, "E_INVALID_ARGUMENT"),
        ({"country": "Germany", "area": "Berlin", "cost": "1.00001"}, "E_INVALID_ARGUMENT"),
        ({"country": "Germany", "area": "Berlin", "qty": "0"}, "E_INVALID_ARGUMENT"),
        ({"country": "Germany", "area": "Berlin", "provider": "a b"}, "E_INVALID_ARGUMENT"),
        ({"country": " ", "area": "Berlin"}, "E_INVALID_ARGUMENT"),
        ({"country": "G" * 65, "area": "Berlin"}, "E_INVALID_ARGUMENT"),
    ],
)
async def test_bad_pool_arguments(gate: DidGate, args: dict[str, str], expected: str) -> None:
    assert code(await gate.admin("addDIDPool", login="admin", **args)) == expected


async def test_pools_are_for_administrators(gate: DidGate) -> None:
    assert code(await gate.user("reseller", "getDIDPools")) == "E_INSUFFICIENT_ACCESS"
    assert code(await gate.user("reseller", "addDIDPool", country="X", area="Y")) == "E_INSUFFICIENT_ACCESS"
    assert code(await gate.admin("updateDIDPool", login="admin", id=9, cost="1")) == "E_NOT_EXIST"
    assert code(await gate.admin("updateDIDPool", login="admin", id=1)) == "E_MISSING_ARGUMENT"


# ------------------------------------------------------------------------------ the shop


async def test_get_did_pool_browses_countries_areas_then_numbers(gate: DidGate) -> None:
    assert (await gate.admin("addDIDPool", login="admin", country="Austria", area="Wien")).ok
    assert (await gate.user("alice", "getDIDPool")).value == [{"country": "Austria"}, {"country": "Germany"}]
    assert (await gate.user("alice", "getDIDPool", country="Germany")).value == [{"area": "Berlin"}]
    found = (await gate.user("alice", "getDIDPool", country="Germany", area="Berlin", search_pattern="999")).value
    assert found == [{"displaycost": Decimal("4.00"), "displayinstallcost": Decimal("1.00"),
                      "cost": Decimal("4.00"), "installcost": Decimal("1.00"), "country": "Germany",
                      "area": "Berlin", "voice_support": 1, "sms_support": 0, "did": "4930999999", "pool_id": 1,
                      "arg1": "", "arg2": "", "arg3": ""}]  # fmt: skip
    # bob's tariff has did_multiplier 1.5: his prices are 6.00 and 1.50
    offer = (await gate.user("bob", "getDIDPool", country="Germany", area="Berlin", search_pattern="999")).value[0]
    assert (offer["cost"], offer["installcost"]) == (Decimal("6.00"), Decimal("1.50"))
    assert code(await gate.user("bob", "getDIDPool", country="Germany", area="Berlin", search_pattern="9%")) == (
        "E_INVALID_ARGUMENT"
    )


# ------------------------------------------------------------------------------ orderDID


async def test_order_charges_install_and_first_month_once(gate: DidGate, services: Services) -> None:
    account = await _account(services, "alice")
    assert (await gate.user("alice", "orderDID", pool_id=1, did="+" + NUMBER, arg1="x")).ok
    assert await balance_of(services, account) == Decimal("15.0000")  # 20 − 1.00 − 4.00
    refs = await did_transactions(services, account)
    assert [amount for amount, _ in refs] == [Decimal("-4.0000"), Decimal("-1.0000")]
    assert refs[0][1].startswith(f"did:{NUMBER}:") and refs[1][1].startswith(f"did:{NUMBER}:install:")
    row = await did_row(services, NUMBER)
    assert (row.owner, Decimal(row.cost), row.pool_id, bool(row.auto_renew), bool(row.enabled)) == (
        "alice", Decimal("4.0000"), 1, True, True)  # fmt: skip
    assert [p.kind for p in await periods(services, NUMBER)] == ["order"]
    assert await stock_status(services, NUMBER) == "taken"
    assert await open_holds(services) == 0 and await order_states(services) == ["done"]
    listed = (await gate.user("alice", "getDIDList")).value
    assert [(d["did"], d["pool"], d["auto_renew"], d["renew_notify"]) for d in listed] == [(NUMBER, 1, 1, 0)]
    # the number is gone from the shop, and nobody can order it twice
    shop = (await gate.user("bob", "getDIDPool", country="Germany", area="Berlin")).value
    assert NUMBER not in [o["did"] for o in shop]
    assert code(await gate.user("bob", "orderDID", pool_id=1, did=NUMBER)) == "E_DATA_ABORT"


async def test_order_prices_follow_the_did_multiplier(gate: DidGate, services: Services) -> None:
    account = await _account(services, "bob")
    assert (await gate.user("bob", "orderDID", pool_id=1, did=NUMBER)).ok
    assert await balance_of(services, account) == Decimal("12.5000")  # 20 − 1.50 − 6.00
    assert Decimal((await did_row(services, NUMBER)).cost) == Decimal("6.0000")


async def test_an_owner_who_cannot_pay_gets_nothing(gate: DidGate, services: Services) -> None:
    account = await _account(services, "poor")
    assert code(await gate.user("poor", "orderDID", pool_id=1, did=NUMBER)) == "E_INSUFFICIENT_MONEY"
    assert await balance_of(services, account) == Decimal("1.0000")
    assert await did_row(services, NUMBER) is None and await stock_status(services, NUMBER) == "available"
    assert await open_holds(services) == 0 and await order_states(services) == []


async def test_a_number_the_provider_has_not_fails_with_no_money_moved(gate: DidGate, services: Services) -> None:
    account = await _account(services, "alice")
    assert code(await gate.user("alice", "orderDID", pool_id=1, did="4930000000")) == "E_DID_ORDER_FAIL"
    assert await balance_of(services, account) == Decimal("20.0000")
    assert await did_transactions(services, account) == []
    assert await open_holds(services) == 0 and await order_states(services) == ["failed"]


async def test_an_unknown_provider_fails_before_anything_is_held(gate: DidGate, services: Services) -> None:
    assert (await gate.admin("addDIDPool", login="admin", country="X", area="Y", provider="nosuch")).ok
    assert code(await gate.user("alice", "orderDID", pool_id=2, did=NUMBER)) == "E_DID_ORDER_FAIL"
    assert await balance_of(services, await _account(services, "alice")) == Decimal("20.0000")
    assert await order_states(services) == [] and await open_holds(services) == 0


class _Failing:
    """A provider whose carrier refuses every order, after seeing the hold in place."""

    seen_holds: ClassVar[list[int]] = []
    services: ClassVar[Services | None] = None

    def __init__(self, db: Any) -> None:
        pass

    async def available(self, pool: PoolView, pattern: str, limit: int) -> list[Offer]:
        raise ProviderError("carrier down")

    async def order(self, pool: PoolView, did: str, args: tuple[str, str, str]) -> None:
        assert self.services is not None
        _Failing.seen_holds.append(await open_holds(self.services))
        raise ProviderError(f"refused {args[0]} with {pool.user}/{pool.password}")

    async def release(self, pool: PoolView, did: str) -> None:
        pass


async def test_a_failing_provider_releases_the_hold(gate: DidGate, services: Services) -> None:
    providers.register_provider("flaky", _Failing)
    _Failing.services, _Failing.seen_holds = services, []
    try:
        assert (await gate.admin("addDIDPool", login="admin", country="X", area="Y", provider="flaky", user="u",
                                 **{"pass": "p"})).ok  # fmt: skip
        assert (await gate.user("alice", "getDIDPool", country="X", area="Y")).value == []  # listing failed: none
        outcome = await gate.user("alice", "orderDID", pool_id=2, did=NUMBER, arg1="a1")
        assert code(outcome) == "E_DID_ORDER_FAIL"
        assert outcome.error is not None and "p" not in outcome.error.detail.split()  # the provider's text stays
        assert "refused" not in outcome.error.detail
        assert _Failing.seen_holds == [1]  # the money was held while the provider was asked
        assert await open_holds(services) == 0 and await order_states(services) == ["failed"]
        assert await balance_of(services, await _account(services, "alice")) == Decimal("20.0000")
    finally:
        providers.unregister_provider("flaky")


async def test_two_buyers_of_one_number_one_gets_it_one_pays(gate: DidGate, services: Services) -> None:
    first, second = await asyncio.gather(
        gate.user("alice", "orderDID", pool_id=1, did=NUMBER), gate.user("bob", "orderDID", pool_id=1, did=NUMBER)
    )
    assert sorted([first.ok, second.ok]) == [False, True]
    assert code(first if not first.ok else second) in ("E_DID_ORDER_FAIL", "E_DATA_ABORT")
    winner = "alice" if first.ok else "bob"
    loser = "bob" if first.ok else "alice"
    assert (await did_row(services, NUMBER)).owner == winner
    assert await did_transactions(services, await _account(services, loser)) == []
    assert len(await did_transactions(services, await _account(services, winner))) == 2
    assert await open_holds(services) == 0


@pytest.mark.parametrize("bad", ["49-30", "++4930123456", "49301234x6", "12", "1" * 33, "٤٩٣٠١٢٣٤٥٦"])
async def test_order_needs_digits(gate: DidGate, bad: str) -> None:
    assert code(await gate.user("alice", "orderDID", pool_id=1, did=bad)) == "E_INVALID_ARGUMENT"


async def test_order_arguments(gate: DidGate) -> None:
    assert code(await gate.user("alice", "orderDID", did=NUMBER)) == "E_MISSING_ARGUMENT"
    assert code(await gate.user("alice", "orderDID", pool_id="one", did=NUMBER)) == "E_INVALID_ARGUMENT"
    assert code(await gate.user("alice", "orderDID", pool_id=99, did=NUMBER)) == "E_NOT_EXIST"
