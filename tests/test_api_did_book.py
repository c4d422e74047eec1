"""getDIDList, getDIDInfo, updateDID, updateDIDState, deleteDID, getDisaDIDList,
getDIDCount and getInfo's did_numbers, on both backends."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from billing_core.api.dispatch import Dispatcher
from billing_core.container import Services
from billing_core.errors import ApiError
from billing_core.numbers.did_rules import resolve
from billing_core.numbers.tables import did_rules
from tests.did_world import DidGate, code, did_row, make_gate, stock, stock_status
from tests.factories import make_user

NUMBER = "4930123456"


@pytest.fixture
async def gate(services: Services, dispatcher: Dispatcher) -> DidGate:
    await make_user(services, "reseller", balance=Decimal("50"), password="rpw", accesslevel=22)
    await make_user(services, "alice", balance=Decimal("20"), password="apw", manager="reseller")
    await make_user(services, "carol", balance=Decimal("20"), password="cpw", manager="admin")
    g = await make_gate(services, dispatcher, {"alice": "apw", "reseller": "rpw", "carol": "cpw"})
    assert (await g.admin("addDIDPool", login="admin", country="Germany", area="Berlin", cost="4.00")).ok
    await stock(services, NUMBER)
    assert (await g.user("alice", "orderDID", pool_id=1, did=NUMBER)).ok
    assert (await g.admin("addDID", login="admin", did="4940000001", owner="alice", cost="2.5",
                          expiration="2031-01-02 03:04:05", comment="DISA Berlin")).ok  # fmt: skip
    assert (await g.admin("addDID", login="admin", did="4940000002", owner="carol")).ok
    return g


async def test_get_did_list_shows_the_spec_fields_and_sorts(gate: DidGate) -> None:
    listed = (await gate.user("alice", "getDIDList")).value
    assert [d["did"] for d in listed] == [NUMBER, "4940000001"]  # by expiration: the ordered one ends first
    assert set(listed[0]) == {"displaycost", "pool", "renew_notify", "expiration", "enabled", "did", "auto_renew",
                              "comment", "owner", "cost"}  # fmt: skip
    assert listed[1] == {"displaycost": Decimal("2.50"), "pool": None, "renew_notify": 0,
                         "expiration": "2031-01-02 03:04:05", "enabled": 1, "did": "4940000001", "auto_renew": 1,
                         "comment": "DISA Berlin", "owner": "alice", "cost": Decimal("2.50")}  # fmt: skip
    by_cost = (await gate.user("alice", "getDIDList", sort_by="COST")).value
    assert [d["did"] for d in by_cost] == ["4940000001", NUMBER]
    assert code(await gate.user("alice", "getDIDList", sort_by="price")) == "E_INVALID_ARGUMENT"


async def test_own_false_shows_the_numbers_of_managed_users(gate: DidGate) -> None:
    assert (await gate.user("reseller", "getDIDList")).value == []
    managed = (await gate.user("reseller", "getDIDList", own="false", sort_by="did")).value
    assert [d["did"] for d in managed] == [NUMBER, "4940000001"]  # not carol's
    everybody = (await gate.admin("getDIDList", login="admin", own="false", sort_by="did")).value
    assert [d["did"] for d in everybody] == [NUMBER, "4940000001", "4940000002"]


async def test_get_did_info_and_its_access(gate: DidGate) -> None:
    info = (await gate.user("reseller", "getDIDInfo", did="+4940000001")).value
    assert (info["did"], info["cost"], info["owner"]) == ("4940000001", Decimal("2.50"), "alice")
    assert code(await gate.user("reseller", "getDIDInfo", did="4940000002")) == "E_DOES_NOT_BELONG_TO_YOU"
    assert code(await gate.user("alice", "getDIDInfo", did=NUMBER)) == "E_INSUFFICIENT_ACCESS"  # level 22
    assert code(await gate.user("reseller", "getDIDInfo", did="4999")) == "E_NOT_EXIST"


async def test_update_did(gate: DidGate, services: Services) -> None:
    assert (await gate.admin("updateDID", login="admin", did=NUMBER, cost="5", comment="main line",
                             expiration="2030-05-06 07:08:09", owner="carol")).ok  # fmt: skip
    info = (await gate.admin("getDIDInfo", login="admin", did=NUMBER)).value
    assert (info["cost"], info["comment"], info["expiration"], info["owner"]) == (
        Decimal("5.00"), "main line", "2030-05-06 07:08:09", "carol")  # fmt: skip
    assert code(await gate.user("reseller", "updateDID", did=NUMBER, cost="1")) == "E_DOES_NOT_BELONG_TO_YOU"
    assert code(await gate.user("reseller", "updateDID", did="4940000001", owner="carol")) == (
        "E_DOES_NOT_BELONG_TO_YOU"
    )
    assert code(await gate.admin("updateDID", login="admin", did=NUMBER, owner="nobody")) == "E_NOT_EXIST"
    assert code(await gate.admin("updateDID", login="admin", did=NUMBER, cost="-1")) == "E_INVALID_ARGUMENT"
    assert code(await gate.admin("updateDID", login="admin", did=NUMBER, expiration="soon")) == "E_INVALID_ARGUMENT"
    assert code(await gate.admin("updateDID", login="admin", did=NUMBER)) == "E_MISSING_ARGUMENT"


async def test_update_did_state_reaches_calls(gate: DidGate, services: Services) -> None:
    assert (await gate.admin("addDIDRule", login="admin", did=NUMBER, source="any", pattern="", policy="ACCEPT",
                             destination="10000")).ok  # fmt: skip
    assert (await resolve(services, None, key_owner="admin", did=NUMBER, start=1, callerid="1", status="",
                          given_input="", first_match=True)).resolution.kind == "OK"  # fmt: skip
    assert (await gate.user("alice", "updateDIDState", did=NUMBER, parameter="enabled", state="false")).ok
    assert (await gate.user("alice", "getDIDList")).value[0]["enabled"] == 0
    with pytest.raises(ApiError) as refused:  # a disabled number takes no calls (the cache was invalidated)
        await resolve(services, None, key_owner="admin", did=NUMBER, start=1, callerid="1", status="",
                      given_input="", first_match=True)  # fmt: skip
    assert refused.value.code.value == "E_NOT_EXIST"
    assert (await gate.user("alice", "updateDIDState", did=NUMBER, state="0")).ok  # parameter defaults to autorenew
    assert bool((await did_row(services, NUMBER)).auto_renew) is False
    assert code(await gate.user("alice", "updateDIDState", did=NUMBER, parameter="color", state="1")) == (
        "E_INVALID_ARGUMENT"
    )
    assert code(await gate.user("alice", "updateDIDState", did=NUMBER)) == "E_MISSING_ARGUMENT"
    assert code(await gate.user("carol", "updateDIDState", did=NUMBER, state="1")) == "E_DOES_NOT_BELONG_TO_YOU"


async def test_delete_did_is_soft_and_gives_the_number_back(gate: DidGate, services: Services) -> None:
    assert (await gate.user("reseller", "deleteDID", did=NUMBER)).ok
    row = await did_row(services, NUMBER)
    assert (row.deleted_reason, row.deleted_at is not None) == ("deleted", True)
    assert [d["did"] for d in (await gate.user("alice", "getDIDList")).value] == ["4940000001"]
    assert await stock_status(services, NUMBER) == "available"
    assert code(await gate.user("reseller", "deleteDID", did=NUMBER)) == "E_NOT_EXIST"
    # addDID gives the row back, without the old rule chain
    assert (await gate.admin("addDIDRule", login="admin", did="4940000001", source="any", pattern="",
                             policy="ACCEPT", destination="x")).ok  # fmt: skip
    assert (await gate.user("reseller", "deleteDID", did="4940000001")).ok
    assert (await gate.admin("addDID", login="admin", did="4940000001", owner="carol")).ok
    async with services.db.begin() as conn:
        assert (await conn.execute(select(did_rules))).all() == []
    assert (await gate.admin("getDIDInfo", login="admin", did="4940000001")).value["owner"] == "carol"


async def test_disa_list_and_count(gate: DidGate, services: Services) -> None:
    assert (await gate.user("alice", "getDisaDIDList")).value == []
    assert (await gate.admin("addDIDRule", login="admin", did="4940000001", source="any", pattern="",
                             policy="ACCEPT", action="disa", destination="")).ok  # fmt: skip
    assert (await gate.user("carol", "getDisaDIDList")).value == [{"did": "4940000001", "comment": "DISA Berlin"}]
    assert (await gate.admin("getDIDCount", did="4940000001")).value.text == "1"
    assert (await gate.admin("getDIDCount", did="+4949")).value.text == "0"
    assert code(await gate.admin("getDIDCount", did="x")) == "E_INVALID_ARGUMENT"
    assert code(await gate.user("alice", "getDIDCount", did=NUMBER)) == "E_INSUFFICIENT_ACCESS"  # level 50


async def test_get_info_did_numbers_carry_the_rent_fields(gate: DidGate) -> None:
    info = (await gate.user("alice", "getInfo")).value
    numbers = {d["did"]: d for d in info["did_numbers"]}
    assert set(numbers) == {NUMBER, "4940000001"}
    assert (numbers[NUMBER]["pool"], numbers[NUMBER]["auto_renew"], numbers[NUMBER]["renew_notify"]) == (1, 1, 0)
    assert numbers[NUMBER]["displaycost"] == Decimal("4.00") and "id" in numbers[NUMBER]
    assert (await gate.user("reseller", "deleteDID", did=NUMBER)).ok
    assert [d["did"] for d in (await gate.user("alice", "getInfo")).value["did_numbers"]] == ["4940000001"]
