"""Rating rules through callPrepare / callFinish: direction, tariff, options, failover,
internal calls, user status, the arithmetic of steps, thresholds and fees, caps, currency."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import event, update

from billing_core.api.dispatch import Dispatcher
from billing_core.cache.keys import NAMESPACES
from billing_core.container import Services
from billing_core.directory.tables import users
from billing_core.errors import ErrorCode
from tests.factories import balance_of, make_user
from tests.rating_world import Standard, credentials, finish, ledger_of, prepare, server_key, standard_world, text_of


async def _user(services: Services, std: Standard, name: str = "alice", **kw: object) -> str:
    kw.setdefault("balance", Decimal("1000"))  # every callPrepare holds up to max_call_s
    kw.setdefault("rates_id", std.base)
    kw.setdefault("sip_extension", "1001")
    await make_user(services, name, **kw)  # type: ignore[arg-type]
    return name


async def _direction_and_route(
    dispatcher: Dispatcher, key: str, login: str, number: str, **args: str
) -> tuple[str, str]:
    answer = text_of(await prepare(dispatcher, key, login, number, **args))
    assert answer.result == "Allowed", answer.text
    return answer.fields["CALLGATE_DIRECTION"], answer.fields["CALLGATE_ROUTE"]


# -- direction -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "direction"),
    [
        ("79011234567", "RussiaMobile-Tele2"),  # 7901 beats 79 and 7
        ("79111234567", "Russia Mobile"),
        ("74951234567", "Russia"),
        ("442012345678", "UK London"),  # 12 digits: London's length
        ("44201234567", "United Kingdom"),  # 11 digits: too short for London, falls back to 44
    ],
)
async def test_longest_prefix_within_length_limits_wins(
    services: Services, dispatcher: Dispatcher, number: str, direction: str
) -> None:
    std = await standard_world(services)
    login = await _user(services, std)
    found, _ = await _direction_and_route(dispatcher, std.key, login, number)
    assert found == direction


@pytest.mark.parametrize("number", ["123", "4420123", "7901123456789", "999999999999"])
async def test_number_without_a_direction_is_declined_unroutable(
    services: Services, dispatcher: Dispatcher, number: str
) -> None:
    std = await standard_world(services)
    login = await _user(services, std)
    answer = text_of(await prepare(dispatcher, std.key, login, number))
    assert (answer.text, answer.result, answer.ok, answer.error) == (
        "Declined E_UNROUTABLE",
        "Declined",
        False,
        "E_UNROUTABLE",
    )
    made = await services.profiles.user_by(None, "username", login)
    assert made is not None
    assert (await ledger_of(services, made.account_id)).reservations == []


@pytest.mark.parametrize("number", ["79o11234567", "7901 234567", "++79011234567", "-7901", ""])
async def test_destination_must_be_digits(services: Services, dispatcher: Dispatcher, number: str) -> None:
    std = await standard_world(services)
    login = await _user(services, std)
    outcome = await prepare(dispatcher, std.key, login, number)
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.E_INVALID_ARGUMENT


async def test_leading_plus_is_stripped(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    login = await _user(services, std)
    answer = text_of(await prepare(dispatcher, std.key, login, "+79011234567"))
    assert answer.fields["CALLGATE_DESTINATION"] == "79011234567"


# -- tariff, options, failover ---------------------------------------------------------


async def test_active_option_overrides_base_for_its_directions_only(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    w = std.world
    login = await _user(services, std)
    option = await w.tariff("cheap-mobile", is_option=True, bill_type="bysecond")
    await w.entry(option, std.mobile, "0.06", std.route2)
    not_an_option = await w.tariff("plain", is_option=False)
    await w.entry(not_an_option, std.russia, "0.01", std.route2)
    await w.option("1001", option)
    await w.option("1001", not_an_option)  # listed but not an option tariff: ignored

    assert await _direction_and_route(dispatcher, std.key, login, "79111234567") == ("Russia Mobile", "route2")
    assert await _direction_and_route(dispatcher, std.key, login, "74951234567") == ("Russia", "route1-cli")
    # The option has a single entry: no second route for it.
    assert text_of(await prepare(dispatcher, std.key, login, "79111234567", prior="2")).error == "E_UNROUTABLE"
    # Charged at the option's price and bill type: 61 s × 0.06/60 = 0.0610.
    saved = text_of(await finish(dispatcher, std.key, login, "79111234567", length="61", call_id="opt"))
    assert saved.fields["CALLGATE_COST"] == "0.061"


async def test_extension_tariff_wins_over_user_tariff(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    other = await std.world.tariff("other")
    await std.world.entry(other, std.russia, "0.50", std.route2)
    login = await _user(services, std, sip_rates_id=other)
    assert await _direction_and_route(dispatcher, std.key, login, "74951234567") == ("Russia", "route2")


async def test_user_without_tariff_is_unroutable(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    login = await _user(services, std, rates_id=None)
    assert text_of(await prepare(dispatcher, std.key, login, "74951234567")).text == "Declined E_UNROUTABLE"


async def test_prior_fails_over_by_priority_skipping_disabled_routes(
    services: Services, dispatcher: Dispatcher
) -> None:
    std = await standard_world(services)
    login = await _user(services, std)
    number = "79111234567"
    first = text_of(await prepare(dispatcher, std.key, login, number, prior="1"))
    second = text_of(await prepare(dispatcher, std.key, login, number, prior="2"))
    third = text_of(await prepare(dispatcher, std.key, login, number, prior="3"))
    assert (first.fields["CALLGATE_ROUTE"], first.fields["CALLGATE_ROUTE_PREFIX"]) == ("route1-cli", "outline/")
    assert (second.fields["CALLGATE_ROUTE"], second.fields["CALLGATE_ROUTE_PREFIX"]) == ("route2", "backup/")
    assert third.text == "Declined E_UNROUTABLE"
    # Re-enabling the dead route gives it back its slot (priority 2, between the others).
    await std.world.set_route_enabled(std.dead, True)
    again = text_of(await prepare(dispatcher, std.key, login, number, prior="2", call_id="re-enabled"))
    assert again.fields["CALLGATE_ROUTE"] == "dead-route"


async def test_prior_must_be_positive(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    login = await _user(services, std)
    outcome = await prepare(dispatcher, std.key, login, "79111234567", prior="0")
    assert outcome.error is not None and outcome.error.code is ErrorCode.E_INVALID_ARGUMENT


# -- internal calls and user status -------------------------------------------------------


async def test_call_to_a_local_extension_is_internal_and_free(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    login = await _user(services, std, balance=Decimal("0"))
    await make_user(services, "bob", sip_extension="1002", rates_id=std.base)
    made = await services.profiles.user_by(None, "username", login)
    assert made is not None
    answer = text_of(await prepare(dispatcher, std.key, login, "1002", call_id="int-1"))
    assert answer.result == "Allowed"
    assert answer.text == f"Allowed {services.settings.max_call_s} 1002 alice internal - internal -1 -1"
    saved = text_of(await finish(dispatcher, std.key, login, "1002", length="600", call_id="int-1"))
    assert saved.text == "Saved internal [alice/1002] via [internal] 600 0.00 EUR ANSWER"
    books = await ledger_of(services, made.account_id)
    assert books.reservations == []  # the free hold ended with the (zero) charge
    assert [(c.cost, c.billed_s, c.direction, c.route) for c in books.cdrs] == [
        (Decimal("0"), 600, "internal", "internal")
    ]
    assert books.transactions == []
    assert await balance_of(services, made.account_id) == Decimal("0")
    # An internal call has one route only: failover ends there.
    assert text_of(await prepare(dispatcher, std.key, login, "1002", prior="2")).text == "Declined E_UNROUTABLE"


async def test_extension_created_through_the_api_is_internal_at_once(
    services: Services, dispatcher: Dispatcher
) -> None:
    """Numbers of a length no extension has skip the extension lookup; a new extension of a
    new length (written through the registry, which invalidates the cache) is seen at once."""
    std = await standard_world(services)
    login = await _user(services, std)
    await make_user(services, "bob", rates_id=std.base)
    assert text_of(await prepare(dispatcher, std.key, login, "79111234567", call_id="ext-0")).result == "Allowed"
    assert await services.profiles.extension_lengths(await services.cache.generations()) == frozenset({4})
    new_extension = {"login": "bob", "sip_extension": "2000005", "sip_password": "secret"}
    created = await dispatcher.call("createExtension", new_extension, credentials(std.key, None))
    assert created.error is None, created.error
    answer = text_of(await prepare(dispatcher, std.key, login, "2000005", call_id="ext-1"))
    assert (answer.result, answer.fields["CALLGATE_ROUTE"]) == ("Allowed", "internal")


async def test_dialled_number_of_no_extension_length_reads_no_extension(
    services: Services, dispatcher: Dispatcher
) -> None:
    std = await standard_world(services)
    login = await _user(services, std)
    text_of(await prepare(dispatcher, std.key, login, "79111234567", call_id="len-warm"))
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement.lower())

    event.listen(services.db.engine.sync_engine, "before_cursor_execute", record)
    try:
        for n in range(3):  # new numbers every time, as real traffic dials
            text_of(await prepare(dispatcher, std.key, login, f"7911765432{n}", call_id=f"len-{n}"))
    finally:
        event.remove(services.db.engine.sync_engine, "before_cursor_execute", record)
    assert not [s for s in statements if "sip_extensions" in s]


@pytest.mark.parametrize(
    ("active", "external", "internal"),
    [
        (1, "Allowed", "Allowed"),
        (2, "Declined E_USER_LOCKED", "Allowed"),
        (3, "Declined E_USER_LOCKED", "Declined E_USER_LOCKED"),
        (0, "Declined E_USER_LOCKED", "Declined E_USER_LOCKED"),
        (-1, "Declined E_USER_LOCKED", "Declined E_USER_LOCKED"),
    ],
)
async def test_user_status_blocks_calls(
    services: Services, dispatcher: Dispatcher, active: int, external: str, internal: str
) -> None:
    std = await standard_world(services)
    login = await _user(services, std, active=active)
    await make_user(services, "bob", sip_extension="1002")
    ext_answer = text_of(await prepare(dispatcher, std.key, login, "74951234567"))
    int_answer = text_of(await prepare(dispatcher, std.key, login, "1002"))
    assert ext_answer.text.split(" ")[0] + ("" if ext_answer.ok else f" {ext_answer.error}") == external
    assert int_answer.text.split(" ")[0] + ("" if int_answer.ok else f" {int_answer.error}") == internal


# -- arithmetic -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bill", "cost", "multiplier", "fee", "args", "billed", "charged"),
    [
        # byminute (0 s free, 60 s step): 61 s bills 120 s at 0.10 → 0.2000
        ("byminute", "0.10", "1", "0", {"length": "61"}, 120, "0.20"),
        # bysecond: 61 s × 0.10/60 = 0.101666… → 0.1017 (half up, once)
        ("bysecond", "0.10", "1", "0", {"length": "61"}, 61, "0.1017"),
        # answered_ms is exact and wins over length: 61 999 ms → 61 s (truncated, as Asterisk's
        # CDR billsec; CALLGATE_BILLSEC_ROUNDING default) → 0.1017
        ("bysecond", "0.10", "1", "0", {"length": "1", "answered_ms": "61999"}, 61, "0.1017"),
        # answered_ms=0 (unset) falls back to length
        ("bysecond", "0.10", "1", "0", {"length": "30", "answered_ms": "0"}, 30, "0.05"),
        # half-up at the last digit: 30 s × 0.0001/60 = 0.00005 → 0.0001
        ("bysecond", "0.0001", "1", "0", {"length": "30"}, 30, "0.0001"),
        # (5 s free, 30 s step), 0.12 × 1.5 = 0.18/min, fee 0.05
        ("t5s30", "0.12", "1.5", "0.05", {"length": "5"}, 0, "0.00"),
        ("t5s30", "0.12", "1.5", "0.05", {"length": "6"}, 30, "0.14"),
        ("t5s30", "0.12", "1.5", "0.05", {"length": "31"}, 60, "0.23"),
        # unanswered: nothing, whatever the length
        ("t5s30", "0.12", "1.5", "0.05", {"length": "31", "status": "BUSY"}, 0, "0.00"),
        ("t5s30", "0.12", "1.5", "0.05", {"length": "0"}, 0, "0.00"),
    ],
)
async def test_cost_arithmetic(
    services: Services,
    dispatcher: Dispatcher,
    bill: str,
    cost: str,
    multiplier: str,
    fee: str,
    args: dict[str, str],
    billed: int,
    charged: str,
) -> None:
    std = await standard_world(services)
    w, key = std.world, std.key
    if bill == "t5s30":
        await w.bill_type(bill, free_threshold=5, step=30)
    tariff = await w.tariff("arith", bill_type=bill, multiplier=multiplier, connect_fee=fee)
    direction = await w.direction("31", "Netherlands", min_len=11, max_len=11)
    route = await w.route("nl")
    await w.entry(tariff, direction, cost, route)
    made = await make_user(services, "carol", balance=Decimal("10"), rates_id=tariff)
    args = {"call_id": "c1", **args}
    prepared = text_of(await prepare(dispatcher, key, "carol", "31201234567", call_id="c1"))
    assert prepared.result == "Allowed"
    saved = text_of(await finish(dispatcher, key, "carol", "31201234567", **args))
    assert saved.fields["CALLGATE_COST"] == charged
    assert saved.text.split(" ")[-4:-2] == [str(billed), charged]
    books = await ledger_of(services, made.account_id)
    assert [(c.billed_s, c.cost) for c in books.cdrs] == [(billed, Decimal(charged))]
    assert await balance_of(services, made.account_id) == Decimal("10") - Decimal(charged)
    assert sum((t.amount for t in books.transactions), Decimal(0)) == -Decimal(charged)


# -- max call time, caps, money ------------------------------------------------------------


async def _fee_world(services: Services, std: Standard, *, fee: str = "0.05", cost: str = "0.10") -> int:
    tariff = await std.world.tariff("fee", connect_fee=fee)
    await std.world.entry(tariff, std.russia, cost, std.route1)
    return tariff


@pytest.mark.parametrize(
    ("user_kw", "max_time", "reserved"),
    [
        # available 1.00 + 0.50 overdraft = 1.50; k·0.10 + 0.05 ≤ 1.50 → 14 minutes
        ({}, 840, "1.4500"),
        # allowed_call_len caps it (a multiple of the step already)
        ({"allowed_call_len": 300}, 300, "0.5500"),
        # the extension's cap, rounded down to the step: 250 → 240
        ({"sip_max_call_len": 250}, 240, "0.4500"),
        # a cap shorter than one step is used as it is; the hold covers the one step it bills
        ({"allowed_call_len": 30}, 30, "0.1500"),
    ],
)
async def test_max_call_time_and_reservation(
    services: Services, dispatcher: Dispatcher, user_kw: dict[str, int], max_time: int, reserved: str
) -> None:
    std = await standard_world(services)
    tariff = await _fee_world(services, std)
    made = await make_user(
        services,
        "dave",
        balance=Decimal("1.00"),
        overdraft=Decimal("0.50"),
        rates_id=tariff,
        sip_extension="2001",
        **user_kw,  # type: ignore[arg-type]
    )
    answer = text_of(await prepare(dispatcher, std.key, "dave", "74951234567", call_id="m1"))
    assert answer.fields["CALLGATE_MAXTIME"] == str(max_time)
    books = await ledger_of(services, made.account_id)
    assert [(r.amount, r.max_time_s, r.state) for r in books.reservations] == [(Decimal(reserved), max_time, "open")]


async def test_settings_cap_applies_when_the_price_is_zero(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    free = await std.world.tariff("free")
    await std.world.entry(free, std.russia, "0", std.route1)
    await make_user(services, "erin", balance=Decimal("0"), rates_id=free)
    answer = text_of(await prepare(dispatcher, std.key, "erin", "74951234567"))
    assert answer.fields["CALLGATE_MAXTIME"] == str(services.settings.max_call_s)


@pytest.mark.parametrize(("balance", "overdraft"), [("0.14", "0"), ("0", "0.14"), ("-1", "0.5")])
async def test_not_one_step_affordable_is_insufficient_money(
    services: Services, dispatcher: Dispatcher, balance: str, overdraft: str
) -> None:
    std = await standard_world(services)
    tariff = await _fee_world(services, std)  # one minute = 0.15
    made = await make_user(services, "fred", balance=Decimal(balance), overdraft=Decimal(overdraft), rates_id=tariff)
    answer = text_of(await prepare(dispatcher, std.key, "fred", "74951234567"))
    assert (answer.text, answer.ok, answer.error) == ("Declined E_INSUFFICIENT_MONEY", False, "E_INSUFFICIENT_MONEY")
    assert (await ledger_of(services, made.account_id)).reservations == []


async def test_exactly_one_step_affordable_is_allowed(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    tariff = await _fee_world(services, std)
    await make_user(services, "gina", balance=Decimal("0.15"), rates_id=tariff)
    answer = text_of(await prepare(dispatcher, std.key, "gina", "74951234567"))
    assert answer.fields["CALLGATE_MAXTIME"] == "60"


# -- answers: caller ID, pitch, currency, the spec's line --------------------------------------


async def test_allowed_answer_has_the_spec_form(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    await _user(services, std, name="10000", balance=Decimal("1"), sip_callerid="79020000002")
    await std.world.set_pitch("1001", 3)
    answer = text_of(await prepare(dispatcher, std.key, "10000", "79010000001"))
    # 1.00 / 0.10 per minute = 10 minutes
    assert answer.text == "Allowed 600 79010000001 79020000002 RussiaMobile-Tele2 outline/ route1-cli 3 3"
    assert dict(answer.fields) == {
        "CALLGATE_MAXTIME": "600",
        "CALLGATE_DESTINATION": "79010000001",
        "CALLGATE_CALLERID": "79020000002",
        "CALLGATE_DIRECTION": "RussiaMobile-Tele2",
        "CALLGATE_ROUTE_PREFIX": "outline/",
        "CALLGATE_ROUTE": "route1-cli",
        "CALLGATE_PITCH_RX": "3",
        "CALLGATE_PITCH_TX": "3",
        "CALLGATE_RINGTIME": "60",  # callgate's own, for Dial's time-out: in the fields, not the line
    }


async def test_direction_name_loses_its_spaces_in_the_line_only(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    login = await _user(services, std)
    answer = text_of(await prepare(dispatcher, std.key, login, "79111234567", call_id="sp"))
    assert answer.text.split(" ")[4] == "RussiaMobile"
    assert answer.fields["CALLGATE_DIRECTION"] == "Russia Mobile"
    saved = text_of(await finish(dispatcher, std.key, login, "79111234567", length="0", status="0CANCEL", call_id="sp"))
    assert saved.text == "Saved RussiaMobile [alice/79111234567] via [route1-cli] 0 0.00 EUR 0CANCEL"


async def test_callerid_precedence(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    await _user(services, std, name="hank", sip_extension="3001")
    number = "74951234567"

    async def callerid(**args: str) -> str:
        return text_of(await prepare(dispatcher, std.key, "hank", number, **args)).fields["CALLGATE_CALLERID"]

    assert await callerid() == "hank"  # nothing set: the login
    async with services.db.begin() as conn:
        await conn.execute(update(users).where(users.c.username == "hank").values(callerid="4950001"))
    await services.cache.invalidate(*NAMESPACES)
    assert await callerid() == "4950001"  # the user's
    await make_user(services, "ivan", sip_extension="3002", sip_callerid="4950002", rates_id=std.base)
    assert text_of(await prepare(dispatcher, std.key, "ivan", number)).fields["CALLGATE_CALLERID"] == "4950002"
    assert await callerid(callerid="4951111") == "4951111"  # the argument wins


async def test_sip_extension_key_uses_that_extension(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    other = await std.world.tariff("other")
    await std.world.entry(other, std.russia, "0.20", std.route2)
    await make_user(services, "jack", sip_extension="4001", sip_rates_id=other, sip_callerid="111", rates_id=std.base)
    key = await server_key(services, auth_by="sip_extension")
    answer = text_of(await prepare(dispatcher, key, "4001", "74951234567"))
    assert (answer.fields["CALLGATE_ROUTE"], answer.fields["CALLGATE_CALLERID"]) == ("route2", "111")


async def test_cost_is_shown_in_the_users_currency(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    await std.world.currency("RUB", "100.5")
    made = await make_user(services, "kate", balance=Decimal("10"), rates_id=std.base, currency="RUB")
    text_of(await prepare(dispatcher, std.key, "kate", "74951234567", call_id="rub"))
    saved = text_of(await finish(dispatcher, std.key, "kate", "74951234567", length="61", call_id="rub"))
    # 120 s × 0.10/60 = 0.2000 EUR = 20.1000 RUB; the ledger is in EUR
    assert saved.text == "Saved Russia [kate/74951234567] via [route1-cli] 120 20.10 RUB ANSWER"
    assert dict(saved.fields) == {"CALLGATE_COST": "20.10", "CALLGATE_CURRENCY": "RUB"}
    assert await balance_of(services, made.account_id) == Decimal("9.8000")
    books = await ledger_of(services, made.account_id)
    assert [(c.cost, c.display_cost, c.display_currency) for c in books.cdrs] == [
        (Decimal("0.2000"), Decimal("20.1000"), "RUB")
    ]


async def test_saved_answer_has_the_spec_form(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    tele2 = await std.world.direction("7902", "RussiaMobile-Tele2", min_len=11, max_len=11)
    await std.world.entry(std.base, tele2, "0.10", std.route1)
    await _user(services, std, name="10000", sip_callerid="79010000001")
    args = {"call_id": "spec"}
    assert text_of(await prepare(dispatcher, std.key, "10000", "79020000002", **args)).result == "Allowed"
    saved = text_of(await finish(dispatcher, std.key, "10000", "79020000002", length="0", status="0CANCEL", **args))
    # The spec's example prints the zero cost as "0"; every answer writes money one way
    # (docs/billing.md, "Money in answers").
    assert saved.text == "Saved RussiaMobile-Tele2 [79010000001/79020000002] via [route1-cli] 0 0.00 EUR 0CANCEL"
    assert (saved.result, saved.ok, dict(saved.fields)) == (
        "Saved",
        True,
        {"CALLGATE_COST": "0.00", "CALLGATE_CURRENCY": "EUR"},
    )


# -- the cache ------------------------------------------------------------------------------


async def test_warm_decision_reads_no_catalog_table(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    login = await _user(services, std)
    text_of(await prepare(dispatcher, std.key, login, "79111234567", call_id="warm"))  # fills the caches
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement.lower())

    event.listen(services.db.engine.sync_engine, "before_cursor_execute", record)
    try:
        answer = text_of(await prepare(dispatcher, std.key, login, "79111234567", call_id="hot"))
    finally:
        event.remove(services.db.engine.sync_engine, "before_cursor_execute", record)
    assert answer.result == "Allowed"
    catalog = ("directions", "tariff_entries", "tariffs", "routes", "bill_types", "currencies")
    assert not [s for s in statements if any(f"from {t}" in s or f"join {t}" in s for t in catalog)]
    # The hold itself reached the database: through SQLAlchemy on SQLite, through the
    # asyncpg call ledger (no SQLAlchemy statement at all) on PostgreSQL.
    assert bool(statements) == services.db.is_sqlite
    held = await services.call_ledger.find_reservation("hot", 1)
    assert held is not None and held.state == "open" and held.amount > 0


async def test_rating_without_cache_generations_matches(services: Services) -> None:
    std = await standard_world(services)
    option = await std.world.tariff("opt", is_option=True)
    await std.world.entry(option, std.uk, "0.01", std.route2)
    rating = services.rating
    gens = await services.cache.generations()
    for number in ("79011234567", "79111234567", "442012345678", "44201234567", "123"):
        cached = await rating.resolve_direction(gens, number)
        direct = await rating.resolve_direction(None, number)
        assert cached == direct
        if cached is not None:
            for options in ((), (option,)):
                assert await rating.route_candidates(gens, std.base, options, cached.id) == (
                    await rating.route_candidates(None, std.base, options, cached.id)
                )
    candidates = await rating.route_candidates(None, std.base, (option,), std.uk)
    assert [(e.tariff_id, e.route.route, e.cost) for e in candidates] == [(option, "route2", Decimal("0.01"))]


async def test_unknown_user_currency_is_shown_in_eur(services: Services, dispatcher: Dispatcher) -> None:
    std = await standard_world(services)
    await make_user(services, "lena", balance=Decimal("10"), rates_id=std.base, currency="XXX")
    saved = text_of(await finish(dispatcher, std.key, "lena", "74951234567", length="60"))
    assert saved.text.endswith(" 60 0.10 EUR ANSWER")


async def test_switch_price_is_not_charged_per_call_but_connect_fee_is(
    services: Services, dispatcher: Dispatcher
) -> None:
    """switch_price is the price of switching to the tariff (switchRates charges it once);
    a call pays its time plus callgate's own connect_fee, which defaults to 0."""
    std = await standard_world(services)
    plain = await std.world.tariff("plain", switch_price="0.05")
    fee = await std.world.tariff("fee", switch_price="0.05", connect_fee="0.02")
    for tariff in (plain, fee):
        await std.world.entry(tariff, std.russia, "0.60", std.route1)
    payers = {
        "plain": await make_user(services, "pp", balance=Decimal("1.20"), rates_id=plain),
        "fee": await make_user(services, "pf", balance=Decimal("1.20"), rates_id=fee),
    }
    for name, made in payers.items():
        prepared = text_of(await prepare(dispatcher, std.key, made.username, "74951234567", call_id=f"s-{name}"))
        assert prepared.result == "Allowed"
        # 1.20 EUR at 0.60 EUR/min: two minutes without a per-call fee; 1.22 does not fit
        assert prepared.fields["CALLGATE_MAXTIME"] == ("120" if name == "plain" else "60")
        saved = text_of(
            await finish(
                dispatcher, std.key, made.username, "74951234567", call_id=f"s-{name}", length="30", status="ANSWER"
            )
        )
        assert saved.result == "Saved"
    # byminute: 30 s bills 60 s at 0.60/min = 0.60; the fee tariff adds 0.02 once
    assert await balance_of(services, payers["plain"].account_id) == Decimal("0.6000")
    assert await balance_of(services, payers["fee"].account_id) == Decimal("0.5800")
