"""addDID, addDIDRule and getDIDRules through the dispatcher, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from billing_core.api.dispatch import Credentials, Dispatcher, Outcome
from billing_core.auth.secrets_store import md5_hex
from billing_core.container import Services
from billing_core.numbers.tables import did_rules, dids
from tests.factories import make_key, make_user

DID = "78005555550"

RULE_KEYS = {
    "timeout",
    "server",
    "did",
    "policy",
    "condition",
    "sms_action",
    "source",
    "action",
    "pattern",
    "destination",
    "rule",
    "callerid",
    "input",
}


@pytest.fixture
async def world(services: Services) -> dict[str, str]:
    """admin ─┬─ reseller (22) ── sub (11)
              ├─ other (22) ── stranger (11)
              └─ boss (33, an administrator)"""
    await make_user(services, "reseller", accesslevel=22, password="rpw")
    await make_user(services, "sub", accesslevel=11, manager="reseller", password="spw")
    await make_user(services, "other", accesslevel=22, password="opw")
    await make_user(services, "stranger", accesslevel=11, manager="other", password="xpw")
    await make_user(services, "boss", accesslevel=33, password="bpw")
    key = await make_key(services, level=0)
    return {"key": key, "reseller": "rpw", "sub": "spw", "other": "opw", "stranger": "xpw", "boss": "bpw"}


async def call(dispatcher: Dispatcher, world: dict[str, str], login: str, method: str, **args: Any) -> Outcome:
    raw = {"login": login, "password": md5_hex(world[login]), **{k: str(v) for k, v in args.items()}}
    return await dispatcher.call(method, raw, Credentials(peer_ip="127.0.0.1", transport="test", apikey=world["key"]))


def code(outcome: Outcome) -> str | None:
    return None if outcome.error is None else outcome.error.code.value


async def did_rows(services: Services) -> list[Any]:
    async with services.db.begin() as conn:
        return list((await conn.execute(select(dids).order_by(dids.c.id))).all())


async def rule_rows(services: Services, did: str = DID) -> list[tuple[int, str]]:
    async with services.db.begin() as conn:
        rows = (
            await conn.execute(
                select(did_rules.c.position, did_rules.c.destination)
                .join(dids, dids.c.id == did_rules.c.did_id)
                .where(dids.c.did == did)
                .order_by(did_rules.c.position)
            )
        ).all()
    return [(row.position, row.destination) for row in rows]


# ------------------------------------------------------------------------------ addDID


async def test_add_did_for_a_managed_user(services: Services, dispatcher: Dispatcher, world: dict[str, str]) -> None:
    outcome = await call(
        dispatcher, world, "reseller", "addDID",
        did=DID, owner="sub", cost="100", comment="main line", expiration="2031-01-02 03:04:05",
    )
    assert outcome.ok and outcome.value is True
    [row] = await did_rows(services)
    assert (row.did, row.owner, row.comment) == (DID, "sub", "main line")
    assert Decimal(row.cost) == Decimal("100.0000")
    expiration = row.expiration if row.expiration.tzinfo else row.expiration.replace(tzinfo=UTC)
    assert expiration == datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert bool(row.enabled) is True


async def test_add_did_defaults(services: Services, dispatcher: Dispatcher, world: dict[str, str]) -> None:
    outcome = await call(dispatcher, world, "reseller", "addDID", did=DID, owner="reseller")
    assert outcome.ok
    [row] = await did_rows(services)
    assert (row.owner, row.comment, Decimal(row.cost), row.expiration) == ("reseller", "", Decimal("0"), None)


async def test_add_did_needs_level_22(services: Services, dispatcher: Dispatcher, world: dict[str, str]) -> None:
    outcome = await call(dispatcher, world, "sub", "addDID", did=DID, owner="sub")
    assert code(outcome) == "E_INSUFFICIENT_ACCESS"
    assert await did_rows(services) == []


async def test_add_did_twice_is_refused(services: Services, dispatcher: Dispatcher, world: dict[str, str]) -> None:
    assert (await call(dispatcher, world, "reseller", "addDID", did=DID, owner="sub")).ok
    again = await call(dispatcher, world, "boss", "addDID", did=DID, owner="stranger")
    assert code(again) == "E_DATA_ABORT"
    [row] = await did_rows(services)
    assert row.owner == "sub"


@pytest.mark.parametrize("bad", ["7800-555", "++78005555550", "78005555550x", "١٢٣", "1" * 33, "12"])
async def test_add_did_needs_digits(
    services: Services, dispatcher: Dispatcher, world: dict[str, str], bad: str
) -> None:
    outcome = await call(dispatcher, world, "reseller", "addDID", did=bad, owner="sub")
    assert code(outcome) == "E_INVALID_ARGUMENT"
    assert await did_rows(services) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"cost": "-1"}, "E_INVALID_ARGUMENT"),
        ({"cost": "ten"}, "E_INVALID_ARGUMENT"),
        ({"expiration": "2031-01-02"}, "E_INVALID_ARGUMENT"),
        ({"expiration": "2031-13-02 00:00:00"}, "E_INVALID_ARGUMENT"),
    ],
)
async def test_add_did_bad_values(
    services: Services, dispatcher: Dispatcher, world: dict[str, str], args: dict[str, str], expected: str
) -> None:
    outcome = await call(dispatcher, world, "reseller", "addDID", did=DID, owner="sub", **args)
    assert code(outcome) == expected
    assert await did_rows(services) == []


async def test_add_did_missing_owner(dispatcher: Dispatcher, world: dict[str, str]) -> None:
    outcome = await call(dispatcher, world, "reseller", "addDID", did=DID)
    assert code(outcome) == "E_MISSING_ARGUMENT"


async def test_add_did_owner_must_exist(services: Services, dispatcher: Dispatcher, world: dict[str, str]) -> None:
    outcome = await call(dispatcher, world, "reseller", "addDID", did=DID, owner="nobody")
    assert code(outcome) == "E_NOT_EXIST"
    assert await did_rows(services) == []


async def test_add_did_for_someone_elses_user(
    services: Services, dispatcher: Dispatcher, world: dict[str, str]
) -> None:
    outcome = await call(dispatcher, world, "reseller", "addDID", did=DID, owner="stranger")
    assert code(outcome) == "E_DOES_NOT_BELONG_TO_YOU"
    outcome = await call(dispatcher, world, "reseller", "addDID", did=DID, owner="other")
    assert code(outcome) == "E_DOES_NOT_BELONG_TO_YOU"
    assert await did_rows(services) == []


async def test_admin_adds_for_anyone(services: Services, dispatcher: Dispatcher, world: dict[str, str]) -> None:
    assert (await call(dispatcher, world, "boss", "addDID", did=DID, owner="stranger")).ok
    [row] = await did_rows(services)
    assert row.owner == "stranger"


# -------------------------------------------------------------------------- addDIDRule


async def add_rule(
    dispatcher: Dispatcher, world: dict[str, str], login: str, dest: str, **args: Any
) -> Outcome:
    base = {"did": DID, "source": "number", "pattern": "%", "policy": "ACCEPT", "destination": dest}
    return await call(dispatcher, world, login, "addDIDRule", **(base | args))


@pytest.fixture
async def sub_did(dispatcher: Dispatcher, world: dict[str, str]) -> str:
    assert (await call(dispatcher, world, "reseller", "addDID", did=DID, owner="sub")).ok
    return DID


async def test_rules_at_end_and_start_are_renumbered(
    services: Services, dispatcher: Dispatcher, world: dict[str, str], sub_did: str
) -> None:
    for destination in ("a", "b", "c"):
        assert (await add_rule(dispatcher, world, "sub", destination, position="end")).ok
    assert await rule_rows(services) == [(1, "a"), (2, "b"), (3, "c")]
    assert (await add_rule(dispatcher, world, "sub", "first", position="start")).ok
    assert await rule_rows(services) == [(1, "first"), (2, "a"), (3, "b"), (4, "c")]
    # The spec's default position is the start.
    assert (await add_rule(dispatcher, world, "sub", "newest")).ok
    assert await rule_rows(services) == [(1, "newest"), (2, "first"), (3, "a"), (4, "b"), (5, "c")]
    assert (await add_rule(dispatcher, world, "sub", "last", position="END")).ok
    assert (await rule_rows(services))[-1] == (6, "last")


async def test_first_rule_at_start_of_an_empty_chain(
    services: Services, dispatcher: Dispatcher, world: dict[str, str], sub_did: str
) -> None:
    assert (await add_rule(dispatcher, world, "sub", "only")).ok
    assert await rule_rows(services) == [(1, "only")]


async def test_rule_columns_are_stored(
    services: Services, dispatcher: Dispatcher, world: dict[str, str], sub_did: str
) -> None:
    outcome = await add_rule(
        dispatcher, world, "sub", "10000",
        policy="reject", pattern="7901%", action="call", server="rdx.narayana.im", callerid="TRANSIT",
        timeout="30", sms_action="internal", sms_destination="10000", condition="busy",
    )
    assert outcome.ok
    async with services.db.begin() as conn:
        row = (await conn.execute(select(did_rules))).one()
    assert (row.policy, row.pattern, row.action, row.server, row.callerid) == (
        "REJECT", "7901%", "call", "rdx.narayana.im", "TRANSIT",
    )
    assert (row.timeout, row.sms_action, row.sms_destination, row.condition, row.input) == (
        30, "internal", "10000", "BUSY", "",
    )


async def test_manager_and_admin_may_add_rules(
    services: Services, dispatcher: Dispatcher, world: dict[str, str], sub_did: str
) -> None:
    assert (await add_rule(dispatcher, world, "reseller", "by-reseller")).ok
    assert (await add_rule(dispatcher, world, "boss", "by-boss")).ok
    assert await rule_rows(services) == [(1, "by-boss"), (2, "by-reseller")]


async def test_strangers_may_not_add_rules(
    services: Services, dispatcher: Dispatcher, world: dict[str, str], sub_did: str
) -> None:
    assert code(await add_rule(dispatcher, world, "stranger", "x")) == "E_DOES_NOT_BELONG_TO_YOU"
    assert code(await add_rule(dispatcher, world, "other", "x")) == "E_DOES_NOT_BELONG_TO_YOU"
    assert await rule_rows(services) == []


async def test_rule_for_missing_did(dispatcher: Dispatcher, world: dict[str, str]) -> None:
    assert code(await add_rule(dispatcher, world, "sub", "x", did="79990000000")) == "E_NOT_EXIST"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"policy": "MAYBE"}, "E_INVALID_ARGUMENT"),
        ({"position": "middle"}, "E_INVALID_ARGUMENT"),
        ({"condition": "SOMETIMES"}, "E_INVALID_ARGUMENT"),
        ({"condition": "INPUT"}, "E_MISSING_ARGUMENT"),
        ({"timeout": "-1"}, "E_INVALID_ARGUMENT"),
        ({"timeout": "soon"}, "E_INVALID_ARGUMENT"),
        ({"source": "weather"}, "E_INVALID_ARGUMENT"),
        ({"destination": "two words"}, "E_INVALID_ARGUMENT"),
        ({"pattern": "x" * 129}, "E_INVALID_ARGUMENT"),
    ],
)
async def test_bad_rules_are_refused(
    services: Services,
    dispatcher: Dispatcher,
    world: dict[str, str],
    sub_did: str,
    args: dict[str, str],
    expected: str,
) -> None:
    assert code(await add_rule(dispatcher, world, "sub", "x", **args)) == expected
    assert await rule_rows(services) == []


async def test_rule_needs_its_required_arguments(
    dispatcher: Dispatcher, world: dict[str, str], sub_did: str
) -> None:
    outcome = await call(dispatcher, world, "sub", "addDIDRule", did=DID, source="number", pattern="%", policy="ACCEPT")
    assert code(outcome) == "E_MISSING_ARGUMENT"
    # The spec's example as printed ('pattern=%policy=ACCEPT') has no policy at all.
    outcome = await call(
        dispatcher, world, "sub", "addDIDRule", did=DID, source="number", pattern="%policy=ACCEPT", destination="1"
    )
    assert code(outcome) == "E_MISSING_ARGUMENT"


async def test_input_condition_with_input(
    services: Services, dispatcher: Dispatcher, world: dict[str, str], sub_did: str
) -> None:
    assert (await add_rule(dispatcher, world, "sub", "menu1", condition="INPUT", input="1")).ok
    assert await rule_rows(services) == [(1, "menu1")]


# ------------------------------------------------------------------------- getDIDRules


async def test_get_rules_shape_and_cache_invalidation(
    dispatcher: Dispatcher, world: dict[str, str], sub_did: str
) -> None:
    empty = await call(dispatcher, world, "sub", "getDIDRules", did=DID)
    assert empty.ok and empty.value == []
    assert (
        await add_rule(
            dispatcher, world, "sub", "beep", source="number", pattern="", action="playfile",
            callerid="TRANSIT", sms_action="internal", position="end",
        )
    ).ok
    assert (
        await add_rule(
            dispatcher, world, "sub", "10000", server="ptr-aa.narayana.im", timeout="30",
            condition="NOANSWER", position="end",
        )
    ).ok
    outcome = await call(dispatcher, world, "sub", "getDIDRules", did=DID)
    assert outcome.ok
    first, second = outcome.value
    assert set(first) == RULE_KEYS
    assert first == {
        "timeout": None, "server": "", "did": DID, "policy": "ACCEPT", "condition": "",
        "sms_action": "internal", "source": "number", "action": "playfile", "pattern": "",
        "destination": "beep", "rule": 1, "callerid": "TRANSIT", "input": "",
    }
    assert (second["rule"], second["timeout"], second["server"], second["condition"]) == (
        2, 30, "ptr-aa.narayana.im", "NOANSWER",
    )


async def test_get_one_rule(dispatcher: Dispatcher, world: dict[str, str], sub_did: str) -> None:
    for destination in ("a", "b"):
        assert (await add_rule(dispatcher, world, "sub", destination, position="end")).ok
    outcome = await call(dispatcher, world, "reseller", "getDIDRules", did=DID, rule="2")
    assert outcome.ok
    assert [(r["rule"], r["destination"]) for r in outcome.value] == [(2, "b")]
    assert code(await call(dispatcher, world, "sub", "getDIDRules", did=DID, rule="3")) == "E_NOT_EXIST"
    assert code(await call(dispatcher, world, "sub", "getDIDRules", did=DID, rule="two")) == "E_INVALID_ARGUMENT"


async def test_get_rules_ownership(dispatcher: Dispatcher, world: dict[str, str], sub_did: str) -> None:
    assert code(await call(dispatcher, world, "stranger", "getDIDRules", did=DID)) == "E_DOES_NOT_BELONG_TO_YOU"
    assert code(await call(dispatcher, world, "sub", "getDIDRules", did="79990000000")) == "E_NOT_EXIST"
    assert code(await call(dispatcher, world, "sub", "getDIDRules")) == "E_MISSING_ARGUMENT"
    assert (await call(dispatcher, world, "boss", "getDIDRules", did=DID)).ok
