"""authorizeCall (DISA login): trusted caller ID, extension + PIN, ownership, user state,
lock-out per caller ID and per extension, an empty `auth` that counts nothing, and no PIN
in any log line. Both backends, HTTP and FastAGI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from sqlalchemy import select, update

from billing_core.api.dispatch import Credentials, Dispatcher, Outcome
from billing_core.calls.disa import caller_counter, extension_counter
from billing_core.catalog.registry import TextAnswer
from billing_core.container import Services
from billing_core.directory.tables import disa_failures
from fastagi import contract
from fastagi.bridge import answer_for_outcome
from tests.factories import make_key, make_user

CALLER = "79010000001"


class Gate:
    def __init__(self, dispatcher: Dispatcher, key: str, source_ip: str = "127.0.0.1") -> None:
        self.dispatcher = dispatcher
        self.key = key
        self.ip = source_ip

    async def http(self, auth: str, callerid: str = CALLER) -> Outcome:
        cred = Credentials(self.ip, "http", apikey=self.key)
        return await self.dispatcher.call("authorizeCall", {"callerid": callerid, "auth": auth}, cred)

    async def agi(self, auth: str, callerid: str = CALLER) -> Outcome:
        cred = Credentials(self.ip, "agi", call_uid="disa-1")
        return await self.dispatcher.call("authorizeCall", {"callerid": callerid, "auth": auth}, cred)


def answer(outcome: Outcome) -> TextAnswer:
    assert outcome.error is None, outcome.error
    assert isinstance(outcome.value, TextAnswer)
    return outcome.value


def allowed(outcome: Outcome) -> str:
    value = answer(outcome)
    assert (value.result, value.ok, value.error) == ("Allowed", True, ""), value
    assert value.fields == {"CALLGATE_EXTENSION": value.text}
    return value.text


def declined(outcome: Outcome) -> str:
    value = answer(outcome)
    assert (value.result, value.ok) == ("Declined", False), value
    assert value.text == f"Declined {value.error}"
    return value.error


async def counter(services: Services, callerid: str = CALLER) -> Any:
    """The caller ID's lock-out counter row (None: no failure counted)."""
    key = caller_counter(callerid)
    assert key is not None
    return await counter_row(services, key)


async def counter_row(services: Services, key: str) -> Any:
    async with services.db.begin() as conn:
        return (await conn.execute(select(disa_failures).where(disa_failures.c.callerid == key))).first()


async def counter_rows(services: Services) -> list[tuple[str, int, bool]]:
    async with services.db.begin() as conn:
        rows = (await conn.execute(select(disa_failures).order_by(disa_failures.c.callerid))).all()
    return [(row.callerid, row.failures, row.locked_until is not None) for row in rows]


@pytest.fixture
async def gate(services: Services, dispatcher: Dispatcher) -> Gate:
    """Extensions 100, 1000 and 10000 (prefixes of one another), each with its own PIN."""
    await make_user(services, "u100", sip_extension="100", disa_pin="1234")
    await make_user(services, "u1000", sip_extension="1000", disa_pin="5678")
    await make_user(services, "u10000", sip_extension="10000", disa_pin="6666")
    await make_user(services, "nopin", sip_extension="300")
    return Gate(dispatcher, await make_key(services, level=50))


async def test_spec_example(gate: Gate) -> None:
    outcome = await gate.http("100006666")
    assert allowed(outcome) == "10000"


@pytest.mark.parametrize(
    ("auth", "extension"),
    [("1001234", "100"), ("10005678", "1000"), ("100006666", "10000")],
)
async def test_extension_and_pin_of_different_lengths(gate: Gate, auth: str, extension: str) -> None:
    assert allowed(await gate.http(auth)) == extension
    assert allowed(await gate.agi(auth)) == extension


@pytest.mark.parametrize(
    "auth",
    ["100", "1000", "10001234", "1005678", "1001235", "100012345", "12345678", "3001234", "300", "6666", "x" * 100],
)
async def test_wrong_credentials(services: Services, gate: Gate, auth: str) -> None:
    assert declined(await gate.http(auth)) == "E_AUTH_FAILED"
    row = await counter(services)
    assert row is not None and row.failures == 1 and row.locked_until is None


async def test_longest_extension_wins_an_ambiguous_string(services: Services, dispatcher: Dispatcher) -> None:
    await make_user(services, "a", sip_extension="55", disa_pin="51234")
    await make_user(services, "b", sip_extension="555", disa_pin="1234")
    gate = Gate(dispatcher, await make_key(services, level=50))
    assert allowed(await gate.http("5551234")) == "555"


async def test_agi_channel_variables(gate: Gate) -> None:
    ok = answer_for_outcome(contract.SCRIPT_AUTHORIZE_CALL, await gate.agi("1001234"))
    assert dict(ok.variables)[contract.VAR_RESULT] == contract.RESULT_ALLOWED
    assert dict(ok.variables)["CALLGATE_EXTENSION"] == "100"
    no = answer_for_outcome(contract.SCRIPT_AUTHORIZE_CALL, await gate.agi("1009999"))
    assert dict(no.variables)[contract.VAR_RESULT] == contract.RESULT_DECLINED
    assert dict(no.variables)[contract.VAR_ERROR] == "E_AUTH_FAILED"
    assert dict(no.variables)["CALLGATE_EXTENSION"] == ""


async def test_trusted_caller_id(services: Services, dispatcher: Dispatcher) -> None:
    await make_user(services, "carol", sip_extension="200", disa_trusted_cli=CALLER)
    gate = Gate(dispatcher, await make_key(services, level=50))
    assert allowed(await gate.http("", callerid=CALLER)) == "200"
    assert allowed(await gate.agi("whatever", callerid=CALLER)) == "200"
    # without a trusted caller ID, an empty `auth` is no login at all (see below)
    assert declined(await gate.http("", callerid="79010000009")) == "E_MISSING_ARGUMENT"


async def test_empty_trusted_cli_trusts_no_one(services: Services, dispatcher: Dispatcher) -> None:
    await make_user(services, "carol", sip_extension="200")  # disa_trusted_cli = ""
    gate = Gate(dispatcher, await make_key(services, level=50))
    assert declined(await gate.http("", callerid="")) == "E_MISSING_ARGUMENT"
    assert await counter_rows(services) == []


async def test_an_empty_auth_is_declined_and_counts_nothing(services: Services, gate: Gate) -> None:
    """Without its prompt files the dialplan's Read() returns at once: three empty `auth`
    per call, 40 ms apart. That is no failed login, from any caller."""
    for callerid in (CALLER, "", "anonymous") * services.settings.disa_max_failures:
        assert declined(await gate.http("", callerid=callerid)) == "E_MISSING_ARGUMENT"
        assert declined(await gate.agi("", callerid=callerid)) == "E_MISSING_ARGUMENT"
    assert await counter_rows(services) == []
    assert allowed(await gate.agi("1001234")) == "100"
    assert allowed(await gate.http("1001234", callerid="")) == "100"


async def test_locked_user(services: Services, dispatcher: Dispatcher) -> None:
    await make_user(services, "locked", sip_extension="400", disa_pin="4444", active=0)
    await make_user(services, "carol", sip_extension="200", disa_trusted_cli=CALLER, active=0)
    await make_user(services, "dave", sip_extension="500", disa_pin="5555", active=2)
    gate = Gate(dispatcher, await make_key(services, level=50))
    assert declined(await gate.http("4004444", callerid="1")) == "E_USER_LOCKED"
    assert declined(await gate.http("", callerid=CALLER)) == "E_USER_LOCKED"
    # A locked trusted extension does not hide a valid PIN of an active one.
    assert allowed(await gate.http("5005555", callerid=CALLER)) == "500"


async def test_extension_of_another_owner(services: Services, dispatcher: Dispatcher) -> None:
    await make_user(services, "r1", accesslevel=22)
    await make_user(services, "r2", accesslevel=22)
    await make_user(services, "mine", manager="r1", sip_extension="600", disa_pin="6000")
    await make_user(services, "deep", manager="mine", sip_extension="601", disa_pin="6010")
    await make_user(services, "theirs", manager="r2", sip_extension="700", disa_pin="7000")
    gate = Gate(dispatcher, await make_key(services, level=50, owner="r1", source="10.0.0.1"), "10.0.0.1")
    assert allowed(await gate.http("6006000", callerid="1")) == "600"
    assert allowed(await gate.agi("6016010", callerid="2")) == "601"  # managed further down the chain
    assert declined(await gate.http("7007000", callerid="3")) == "E_DOES_NOT_BELONG_TO_YOU"
    # The master administrator's key serves everyone.
    admin_gate = Gate(dispatcher, await make_key(services, level=50))
    assert allowed(await admin_gate.http("7007000", callerid="3")) == "700"


async def test_needs_a_call_control_key(services: Services, dispatcher: Dispatcher, gate: Gate) -> None:
    weak = await make_key(services, level=22, name="weak")
    outcome = await dispatcher.call(
        "authorizeCall", {"callerid": CALLER, "auth": "1001234"}, Credentials("127.0.0.1", "http", apikey=weak)
    )
    assert outcome.error is not None and outcome.error.code.value == "E_INSUFFICIENT_ACCESS"
    cred = Credentials("127.0.0.1", "http", apikey=gate.key)
    missing = await dispatcher.call("authorizeCall", {"callerid": CALLER}, cred)
    assert missing.error is not None and missing.error.code.value == "E_MISSING_ARGUMENT"


async def test_lock_out_then_unlock(services: Services, gate: Gate) -> None:
    limit = services.settings.disa_max_failures
    assert limit > 1
    # 999… names no extension: only the caller ID's counter sees these
    for attempt in range(1, limit):
        assert declined(await gate.http("9990000")) == "E_AUTH_FAILED"
        assert (await counter(services)).failures == attempt
    assert declined(await gate.agi("9990000")) == "E_AUTH_FAILED"  # the limit-th failure locks
    row = await counter(services)
    locked_until = row.locked_until if row.locked_until.tzinfo else row.locked_until.replace(tzinfo=UTC)
    assert locked_until > datetime.now(UTC) + timedelta(seconds=services.settings.disa_lockout_s - 60)
    # Locked: even the right PIN is declined, and another caller ID is not affected.
    assert declined(await gate.http("1001234")) == "E_USER_LOCKED"
    assert declined(await gate.agi("1001234")) == "E_USER_LOCKED"
    assert allowed(await gate.http("1001234", callerid="79010000002")) == "100"
    # The lock-out is over once locked_until has passed.
    async with services.db.begin() as conn:
        await conn.execute(
            update(disa_failures)
            .where(disa_failures.c.callerid == caller_counter(CALLER))
            .values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert allowed(await gate.http("1001234")) == "100"
    assert await counter(services) is None


async def test_parallel_guesses_cannot_exceed_the_limit(services: Services, gate: Gate) -> None:
    limit = services.settings.disa_max_failures
    outcomes = await asyncio.gather(*(gate.http(f"100{pin:04d}") for pin in range(limit + 4)))
    errors = sorted(declined(outcome) for outcome in outcomes if answer(outcome).result == "Declined")
    # PIN 1234 is not among 0000..limit+3, so every attempt is declined; only `limit` of
    # them were judged on their credentials, the rest met the lock-out.
    assert errors == ["E_AUTH_FAILED"] * limit + ["E_USER_LOCKED"] * 4
    assert (await counter(services)).locked_until is not None


async def test_success_resets_the_counter(services: Services, gate: Gate) -> None:
    limit = services.settings.disa_max_failures
    for _ in range(limit - 1):
        assert declined(await gate.http("1009999")) == "E_AUTH_FAILED"
    assert allowed(await gate.http("1001234")) == "100"
    assert await counter(services) is None
    for _ in range(limit - 1):
        assert declined(await gate.http("1009999")) == "E_AUTH_FAILED"
    assert (await counter(services)).locked_until is None  # counted afresh: not locked yet


async def test_old_failures_expire(services: Services, gate: Gate) -> None:
    limit = services.settings.disa_max_failures
    for _ in range(limit - 1):
        assert declined(await gate.http("1009999")) == "E_AUTH_FAILED"
    long_ago = datetime.now(UTC) - timedelta(seconds=services.settings.disa_lockout_s + 1)
    async with services.db.begin() as conn:
        await conn.execute(update(disa_failures).values(updated_at=long_ago))
    assert declined(await gate.http("1009999")) == "E_AUTH_FAILED"
    row = await counter(services)
    assert (row.failures, row.locked_until) == (1, None)


async def test_anonymous_callers_share_no_counter(services: Services, gate: Gate) -> None:
    """One counter for every caller without a caller ID let two silent calls lock them all
    out; their guesses are bounded by the extension's counter instead."""
    limit = services.settings.disa_max_failures
    for callerid in ("", "anonymous", "Anonymous", "unknown") * limit:
        assert declined(await gate.http("9990000", callerid=callerid)) == "E_AUTH_FAILED"
    assert await counter_rows(services) == []
    assert allowed(await gate.http("1001234", callerid="")) == "100"
    assert allowed(await gate.agi("1001234", callerid="anonymous")) == "100"


async def test_wrong_pins_from_many_caller_ids_lock_the_extension(services: Services, gate: Gate) -> None:
    limit = services.settings.disa_max_failures
    callers = [f"7901000{n:04d}" for n in range(limit + 3)]
    answers = [declined(await gate.http("1009999", callerid=callerid)) for callerid in callers]
    # the limit-th guess locks extension 100; the later ones meet the lock
    assert answers == ["E_AUTH_FAILED"] * limit + ["E_USER_LOCKED"] * 3
    assert (await counter_row(services, extension_counter("100"))).locked_until is not None
    # the right PIN from a fresh caller ID does not pass a locked extension
    assert declined(await gate.http("1001234", callerid="79020000001")) == "E_USER_LOCKED"
    assert declined(await gate.agi("1001234", callerid="")) == "E_USER_LOCKED"
    # other extensions, even one whose number starts with 100, are not affected
    assert allowed(await gate.http("10005678", callerid="79020000002")) == "1000"
    assert allowed(await gate.http("100006666", callerid="79020000003")) == "10000"


@pytest.fixture
def debug_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Capture every log event, info included (the test config filters below warning)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


async def test_pin_never_logged(services: Services, gate: Gate, debug_logs: list[MutableMapping[str, Any]]) -> None:
    secrets = ("1234", "5678", "6666", "9999", "1009999", "1001234", "100006666")
    assert allowed(await gate.http("1001234")) == "100"
    assert allowed(await gate.agi("100006666")) == "10000"
    for _ in range(services.settings.disa_max_failures + 1):
        declined(await gate.http("1009999"))
    events = {entry["event"] for entry in debug_logs}
    assert {"disa.allowed", "disa.declined", "lockout.locked"} <= events
    for entry in debug_logs:
        # (`until` is a timestamp whose microseconds could hold any digits)
        flat = " ".join(f"{k}={v}" for k, v in entry.items() if k != "until")
        for secret in secrets:
            assert secret not in flat.replace(CALLER, ""), entry
