"""addKey, getKeys, getCurrencies, getCourse, getLogs through the dispatcher."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.auth.secrets_store import api_key_hash
from billing_core.cache.keys import NAMESPACES
from billing_core.container import Services
from billing_core.directory.tables import api_keys, users
from billing_core.ledger.tables import cdrs
from billing_core.rating.tables import currencies
from tests.factories import MadeUser, make_key, make_user
from tests.test_api_users import Keys, call, code, login, make_keys


@pytest.fixture
async def keys(services: Services) -> Keys:
    return await make_keys(services)


def new_key(**overrides: str) -> dict[str, str]:
    args = {
        "name": "portal",
        "auth_by": "username",
        "source": "10.0.0.*",
        "apikey": "k3y-0123456789abcdef",
        "accessLevel": "0",
        "secure_only": "0",
    }
    return {**args, **overrides}


# --- addKey / getKeys -------------------------------------------------------------------


async def test_add_key_creates_a_working_hashed_key_owned_by_the_caller(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    await make_user(services, "alice", balance=Decimal("3"))
    args = new_key(default_user="alice", allowed_methods="getInfo,getValue")

    out = await call(dispatcher, keys.server, "addKey", {"login": "admin", **args})

    assert out.ok and out.value is True, out.error
    async with services.db.begin() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.name == "portal"))).one()
    assert row.key_hash == api_key_hash("k3y-0123456789abcdef") and row.key_hint == "k3y-"
    assert (row.owner, row.default_user, row.source, row.access_level) == ("admin", "alice", "10.0.0.*", 0)
    portal = Credentials(peer_ip="10.0.0.7", transport="test", apikey="k3y-0123456789abcdef")
    info = await dispatcher.call("getInfo", {}, portal)
    assert info.ok and info.value["username"] == "alice"  # static authorization by the default user
    not_allowed = await dispatcher.call("getLogs", {}, portal)
    wrong_ip = await dispatcher.call("getInfo", {}, Credentials("10.0.1.7", "test", apikey="k3y-0123456789abcdef"))
    assert code(not_allowed) == "E_INSUFFICIENT_ACCESS" and code(wrong_ip) == "E_AUTH_FAILED"


async def test_add_key_refuses_bad_keys_and_levels_above_the_callers(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    ops = await make_user(services, "ops", accesslevel=33)
    res = await make_user(services, "res", accesslevel=22)
    await call(dispatcher, keys.server, "addKey", {"login": "admin", **new_key(apikey="already-there-01-Xq7")})

    cases = {
        "E_INSUFFICIENT_ACCESS": new_key(accessLevel="50"),
        "E_NOT_EXIST": new_key(default_user="ghost"),
        "E_DATA_ABORT": new_key(apikey="already-there-01-Xq7"),
    }
    for expected, args in cases.items():
        assert code(await call(dispatcher, keys.client, "addKey", login(ops, **args))) == expected, args
    bad = (("auth_by", "paymentmethod"), ("source", "10.0.0.0/33"), ("apikey", "short"), ("secure_only", "2"))
    for field, value in bad:
        out = await call(dispatcher, keys.client, "addKey", login(ops, **new_key(**{field: value})))
        assert code(out) == "E_INVALID_ARGUMENT", field
    for sim in ("msisdn", "iccid"):  # the spec's, but there are no SIM cards to find a user by
        out = await call(dispatcher, keys.client, "addKey", login(ops, **new_key(auth_by=sim)))
        assert code(out) == "E_UNDEFINED_INSTRUCTION", sim
    no_key = {k: v for k, v in new_key().items() if k != "apikey"}
    assert code(await call(dispatcher, keys.client, "addKey", login(ops, **no_key))) == "E_MISSING_ARGUMENT"
    assert code(await call(dispatcher, keys.client, "addKey", login(res, **new_key()))) == "E_INSUFFICIENT_ACCESS"
    server_key_by_master = await call(
        dispatcher, keys.server, "addKey", {"login": "admin", **new_key(apikey="ast-Zr9w-k7Qm-4Tb", accessLevel="50")}
    )
    assert server_key_by_master.ok, server_key_by_master.error
    async with services.db.begin() as conn:
        owners = sorted((await conn.execute(select(api_keys.c.owner).where(api_keys.c.name == "portal"))).scalars())
    assert owners == ["admin", "admin"]


async def test_get_keys_lists_hints_never_keys_and_only_the_callers_own(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    ops = await make_user(services, "ops", accesslevel=33)
    ops_key = await make_key(services, level=0, owner="ops", name="ops-key")

    mine = await call(dispatcher, keys.client, "getKeys", login(ops))
    every = await call(dispatcher, keys.server, "getKeys", {"login": "admin"})

    assert mine.ok and every.ok
    assert [k["name"] for k in mine.value] == ["ops-key"]
    assert {"client", "server", "ops-key"} <= {k["name"] for k in every.value}
    assert mine.value[0]["key"] == ops_key[:4] + "…" and mine.value[0]["owner"] == "ops"
    dumped = json.dumps(every.value)
    for clear in (ops_key, keys.client, keys.server):
        assert clear not in dumped
    async with services.db.begin() as conn:
        hashes = (await conn.execute(select(api_keys.c.key_hash))).scalars().all()
    assert not any(h in dumped for h in hashes)


# --- getCurrencies / getCourse ---------------------------------------------------------


async def test_currencies_are_anonymous_and_exact(services: Services, dispatcher: Dispatcher, keys: Keys) -> None:
    async with services.db.begin() as conn:
        await conn.execute(
            currencies.insert().values(
                currency="RUB", eur_course=Decimal("68.917"), displayname="rub. ", transfer_fee=Decimal("15.5")
            )
        )
    await services.cache.invalidate(*NAMESPACES)

    listed = await call(dispatcher, keys.client, "getCurrencies", {})
    course = await call(dispatcher, keys.client, "getCourse", {"currency": "rub"})
    unknown = await call(dispatcher, keys.client, "getCourse", {"currency": "XXX"})
    missing = await call(dispatcher, keys.client, "getCourse", {})

    assert listed.ok and course.ok, (listed.error, course.error)
    assert listed.value == [
        {"eur_course": Decimal("1"), "currency": "EUR", "displayname": "€"},
        {"eur_course": Decimal("68.917"), "currency": "RUB", "displayname": "rub. "},
    ]
    assert str(listed.value[1]["eur_course"]) == "68.917"
    assert course.value == {
        "eur_course": Decimal("68.917"),
        "currency": "RUB",
        "displayname": "rub. ",
        "transfer_fee": Decimal("15.5"),
        "referral_reward": Decimal("0"),
    }
    assert code(unknown) == "E_NOT_EXIST" and code(missing) == "E_MISSING_ARGUMENT"


# --- getLogs ----------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


async def add_cdr(services: Services, user: MadeUser, n: int, status: str, destination: str = "79010000001") -> None:
    async with services.db.begin() as conn:
        await conn.execute(
            cdrs.insert().values(
                call_uid=f"{user.username}-{n}",
                prior=1,
                user_id=user.id,
                account_id=user.account_id,
                sip_extension=user.sip_extension or "",
                callerid="74950000000",
                destination=destination,
                direction="Russia Mobile",
                route="route1",
                length_s=60 + n,
                billed_s=60 if "ANSWER" in status and "NO" not in status else 0,
                status=status,
                cost=Decimal("0.1234") * n,
                display_cost=Decimal("12.34") * n,
                display_currency="RUB",
                answer="Saved",
                created_at=T0 + timedelta(minutes=n),
            )
        )


async def test_get_logs_lists_the_actors_calls_newest_first(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    async with services.db.begin() as conn:
        await conn.execute(currencies.insert().values(currency="RUB", eur_course=Decimal(100), displayname="rub."))
    alice = await make_user(services, "alice", currency="RUB", sip_extension="10001")
    bob = await make_user(services, "bob", sip_extension="20002")
    async with services.db.begin() as conn:
        await conn.execute(update(users).where(users.c.id == alice.id).values(timezone=Decimal("3")))
    await services.cache.invalidate(*NAMESPACES)
    await add_cdr(services, alice, 1, "ANSWER", destination="20002")
    await add_cdr(services, alice, 2, "0NOANSWER")
    await add_cdr(services, alice, 3, "16ANSWER")
    await add_cdr(services, alice, 4, "0CANCEL")
    await add_cdr(services, bob, 5, "ANSWER")

    every = await call(dispatcher, keys.client, "getLogs", login(alice))
    two = await call(dispatcher, keys.client, "getLogs", login(alice, limit="2"))
    done = await call(dispatcher, keys.client, "getLogs", login(alice, only_completed="true", resolve_info="true"))

    assert every.ok and two.ok and done.ok
    assert [r["status"] for r in every.value] == ["0CANCEL", "16ANSWER", "0NOANSWER", "ANSWER"]
    assert [r["status"] for r in two.value] == ["0CANCEL", "16ANSWER"]
    assert [r["status"] for r in done.value] == ["16ANSWER", "ANSWER"]
    first = every.value[-1]
    assert first["date"] == "2024-05-01 12:01:00" and first["clientdate"] == "2024-05-01 15:01:00"
    assert (first["username"], first["sip_extension"], first["destination"]) == ("alice", "10001", "20002")
    assert (first["cost"], first["displaycost"], first["displaycurrency"]) == (
        Decimal("0.1234"),
        Decimal("12.34"),
        "rub.",
    )
    assert (first["time"], first["billed_time"], first["direction"], first["route"]) == (
        61,
        60,
        "Russia Mobile",
        "route1",
    )
    assert "info" not in first
    assert done.value[-1]["info"] == "bob" and done.value[0]["info"] == ""
    assert "alice-3" in done.value[0]["debug"]


async def test_get_logs_of_another_user_needs_to_manage_it(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    res = await make_user(services, "res", accesslevel=22)
    carol = await make_user(services, "carol", manager="res")
    stranger = await make_user(services, "stranger")
    await add_cdr(services, carol, 1, "ANSWER")
    await add_cdr(services, stranger, 2, "ANSWER")

    managed = await call(dispatcher, keys.client, "getLogs", login(res, user="carol"))
    foreign = await call(dispatcher, keys.client, "getLogs", login(res, user="stranger"))
    upward = await call(dispatcher, keys.client, "getLogs", login(carol, user="res"))
    ghost = await call(dispatcher, keys.client, "getLogs", login(res, user="ghost"))
    by_admin = await call(dispatcher, keys.server, "getLogs", {"login": "admin", "user": "stranger"})

    assert managed.ok and [r["username"] for r in managed.value] == ["carol"]
    assert code(foreign) == "E_DOES_NOT_BELONG_TO_YOU" and code(upward) == "E_DOES_NOT_BELONG_TO_YOU"
    assert code(ghost) == "E_NOT_EXIST"
    assert by_admin.ok and [r["id"] for r in by_admin.value] != [] and by_admin.value[0]["username"] == "stranger"
    for limit in ("0", "10001", "many"):
        out = await call(dispatcher, keys.client, "getLogs", login(res, limit=limit))
        assert code(out) == "E_INVALID_ARGUMENT", limit
