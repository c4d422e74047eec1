"""One money format in every answer (docs/billing.md, "Money in answers"): at least two
decimals, a third or fourth only when not zero. Over HTTP (text and JSON numbers, bodies
exact) and FastAGI (command bytes exact), on both backends; and getRates' spec key
`"<direction id>": "<direction name>"`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing_core.api.dispatch import Dispatcher
from billing_core.container import Services
from billing_core.money import format_money, money_json
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer, ServerConfig
from tests.asterisk_sim import AGISessionResult, run_agi_session
from tests.factories import make_key, make_user
from tests.http_support import Api, Reply, serve
from tests.rating_world import RatingWorld


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("0", "0.00"),
        ("-0.0000", "0.00"),
        ("1", "1.00"),  # the spec's getValue example
        ("5.0000", "5.00"),
        ("0.1100", "0.11"),
        ("119.9650", "119.965"),
        ("0.0125", "0.0125"),
        ("-2.5", "-2.50"),
        ("1E+2", "100.00"),
        ("0.00005", "0.0001"),  # rounded half-up to the ledger's 0.0001, once
        ("0.00004", "0.00"),
        ("1000.0010", "1000.001"),
        ("99999999999999.9999", "99999999999999.9999"),
    ],
)
def test_one_format(amount: str, text: str) -> None:
    assert format_money(Decimal(amount)) == text
    assert str(money_json(Decimal(amount))) == text  # what a JSON answer writes


# ----------------------------------------------------------------- through both doors


@dataclass
class Doors:
    services: Services
    api: Api
    key: str  # the portal's server key (level 50, auth by username): JSON answers
    agi_port: int
    ids: dict[str, int]

    async def get(self, method: str, query: str) -> Reply:
        reply = await self.api.request("GET", self.api.url(self.key, method, query="login=admin&" + query))
        assert reply.status == 200, reply.text
        return reply

    async def response(self, method: str, query: str) -> Any:
        """The answer's `response` with every JSON number as the text it was written as."""
        body = json.loads((await self.get(method, query)).body, parse_float=str)
        assert body["result"] is True, body
        return body["response"]

    async def agi(self, script: str, query: str, uniqueid: str) -> AGISessionResult:
        return await run_agi_session("127.0.0.1", self.agi_port, script, query=query, uniqueid=uniqueid)


@pytest.fixture
async def doors(services: Services, tmp_path: Path) -> AsyncIterator[Doors]:
    """alice (SIP 10000, EUR, 1.00) on `std`: 7901… at 0.60 EUR/min via route1-cli, 0.0125 via
    route2 (priority 2), 6 s steps after 3 free, 0.05 per call; rita (XRB at 23.993 per EUR,
    5.00, overdraft 0.50); bob (0)."""
    w = RatingWorld(services)
    tele2 = await w.direction("7901", "Russia Mobile Tele2", min_len=11, max_len=11)
    route1 = await w.route("route1-cli", prefix="outline/")
    route2 = await w.route("route2")
    sixsec = await w.bill_type("sixsec", free_threshold=3, step=6)
    std = await w.tariff("std", bill_type=sixsec, connect_fee="0.05")
    await w.entry(std, tele2, "0.60", route1, priority=1)
    await w.entry(std, tele2, "0.0125", route2, priority=2)
    await w.currency("XRB", "23.993")
    await make_user(services, "alice", balance=Decimal("1"), sip_extension="10000", sip_rates_id=std,
                    sip_callerid="79020000002", rates_id=std)  # fmt: skip
    rita = await make_user(services, "rita", balance=Decimal("5"), overdraft=Decimal("0.5"), currency="XRB")
    await make_user(services, "bob", balance=Decimal("0"))
    key = await make_key(services, level=50, source="127.0.0.1", name="portal")
    await make_key(services, level=50, source="127.0.0.1", auth_by="sip_extension", name="asterisk")
    bridge = AGIBridge(Dispatcher(services), Spool(tmp_path / "spool"))
    agi = FastAGIServer(bridge, ServerConfig(env_timeout_s=2.0, reply_timeout_s=2.0))
    await agi.start("127.0.0.1", 0)
    ids = {"tele2": tele2, "route1": route1, "route2": route2, "std": std, "rita_account": rita.account_id}
    try:
        async with serve(services, test_methods=False) as api:
            yield Doors(services, api, key, agi.port, ids)
    finally:
        agi.close()
        await agi.wait_closed()


async def test_get_value_writes_the_spec_format(doors: Doors) -> None:
    for username, prop, text in [
        ("alice", "balance", "1.00"),  # the spec's example answer
        ("rita", "balance", "5.00"),
        ("rita", "displaybalance", "119.965"),  # 5 × 23.993
        ("rita", "overdraft", "0.50"),
        ("rita", "actualbalance", "5.50"),
        ("bob", "balance", "0.00"),
    ]:
        reply = await doors.get("getValue", f"username={username}&property={prop}")
        assert reply.body == b'{"result": true, "response": "%s", "description": ""}' % text.encode(), prop


async def test_get_rates_carries_the_spec_key_and_money_as_numbers(doors: Doors) -> None:
    ids = doors.ids
    expected = (
        '{"result": true, "response": [{"<D>": "Russia Mobile Tele2", "id": <D>, "code": "7901", '
        '"direction": "Russia Mobile Tele2", "routing": ['
        '{"routename": "route1-cli", "route": <R1>, "displaycost": 0.60, "priority": 1, "cost": 0.60}, '
        '{"routename": "route2", "route": <R2>, "displaycost": 0.0125, "priority": 2, "cost": 0.0125}]}], '
        '"description": ""}'
    )
    for placeholder, value in (("<D>", ids["tele2"]), ("<R1>", ids["route1"]), ("<R2>", ids["route2"])):
        expected = expected.replace(placeholder, str(value))
    assert (await doors.get("getRates", f"id={ids['std']}")).text == expected
    assert (await doors.get("getCurrentRates", "username=alice")).text == expected
    in_xrb = await doors.response("getCurrentRates", "username=alice&currency=XRB")
    assert [r["displaycost"] for r in in_xrb[0]["routing"]] == ["14.3958", "0.2999"]  # × 23.993, half up


async def test_json_answers_write_every_amount_alike(doors: Doors) -> None:
    ids = doors.ids
    info = await doors.response("getInfo", "username=rita")
    money = ("balance", "overdraft", "actualbalance", "displaybalance", "displayoverdraft", "notify_balance_limit",
             "displaynotifybalancelimit")  # fmt: skip
    assert {name: info[name] for name in money} == {
        "balance": "5.00", "overdraft": "0.50", "actualbalance": "5.50", "displaybalance": "119.965",
        "displayoverdraft": "11.9965", "notify_balance_limit": "0.00", "displaynotifybalancelimit": "0.00",
    }  # fmt: skip
    # getAccountInfo shows display amounts in the requester's currency: the admin's EUR.
    account = await doors.response("getAccountInfo", f"account={ids['rita_account']}")
    names = ("balance", "displaybalance", "overdraft", "displayoverdraft", "reserved")
    assert {name: account[name] for name in names} == {
        "balance": "5.00", "displaybalance": "5.00", "overdraft": "0.50", "displayoverdraft": "0.50",
        "reserved": "0.00",
    }  # fmt: skip
    tariff = next(t for t in await doors.response("getRatesList", "") if t["id"] == ids["std"])
    assert (tariff["switch_price"], tariff["display_switch_price"], tariff["connect_fee"]) == ("0.00", "0.00", "0.05")
    assert (tariff["multiplier"], tariff["did_multiplier"]) == ("1.000000", "1.000000")  # not money: as before
    course = await doors.response("getCourse", "currency=XRB")
    assert (course["eur_course"], course["transfer_fee"], course["referral_reward"]) == ("23.993", "0.00", "0.00")


def saved_command(tail: str, cost: str) -> bytes:
    """The one command callFinish's answer is: alice's call to 79010000001, saved."""
    answer = rb"Saved RussiaMobileTele2 \\[79020000002/79010000001\\] via \\[route1-cli\\] " + tail.encode()
    variables = b"CALLGATE_ERROR=,CALLGATE_ANSWER=" + answer + b",CALLGATE_COST=" + cost.encode()
    return b'EXEC MSet "' + variables + b',CALLGATE_CURRENCY=EUR,CALLGATE_RESULT=Saved"\n'


async def test_call_answers_over_fastagi_and_the_log(doors: Doors) -> None:
    prepared = await doors.agi("callPrepare", "login=10000&destination=79010000001&prior=1", uniqueid="m1")
    assert prepared.variables["CALLGATE_RESULT"] == "Allowed"
    finish = "login=10000&destination=79010000001&prior=1&length=13&status=ANSWER&answered_ms=12001&cause=16"
    finished = await doors.agi("callFinish", finish, uniqueid="m1")
    # 12 s billed = 2 steps × 0.06 + 0.05 = 0.17; '[' and ']' are escaped for MSet, and that
    # backslash once more for the AGI line
    assert finished.raw_received == saved_command("12 0.17 EUR ANSWER", "0.17")
    assert finished.variables["CALLGATE_COST"] == "0.17"
    busy = "login=10000&destination=79010000001&prior=1&length=0&status=BUSY&answered_ms=&cause=17"
    await doors.agi("callPrepare", "login=10000&destination=79010000001&prior=1", uniqueid="m2")
    unanswered = await doors.agi("callFinish", busy, uniqueid="m2")
    assert unanswered.raw_received == saved_command("0 0.00 EUR BUSY", "0.00")
    logs = await doors.response("getLogs", "username=alice")
    assert sorted((entry["status"], entry["cost"], entry["displaycost"]) for entry in logs) == [
        ("ANSWER", "0.17", "0.17"),
        ("BUSY", "0.00", "0.00"),
    ]
    balance = await doors.get("getValue", "username=alice&property=balance")
    assert balance.body == b'{"result": true, "response": "0.83", "description": ""}'
