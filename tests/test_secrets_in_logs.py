"""No secret in any log line, at every level: a malformed FastAGI env line (it was logged
verbatim, DISA `auth` included), failed and locked-out password logins, DISA over
FastAGI, and addKey, which also refuses weak keys. Both backends; structlog events and
the standard library's log records are captured."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.auth.secrets_store import md5_hex
from billing_core.container import Services
from billing_core.directory.keys import generate_key, key_strength_problem
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer
from tests.asterisk_sim import build_env, run_agi_session
from tests.factories import make_key, make_user

HOST = "127.0.0.1"
AUTH = "100006666"  # extension 10000 + PIN 6666
PIN = "6666"


@dataclass
class Logs:
    events: list[Any]
    caplog: pytest.LogCaptureFixture

    def lines(self) -> list[str]:
        """Every log line so far as text: structlog events (DEBUG up) and stdlib records."""
        return [repr(event) for event in self.events] + [record.getMessage() for record in self.caplog.records]

    def names(self) -> set[str]:
        return {str(event.get("event")) for event in self.events}

    def assert_absent(self, *secrets: str) -> None:
        lines = self.lines()
        assert lines, "nothing was logged: the capture is broken"
        for secret in secrets:
            assert not [line for line in lines if secret in line], secret


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[Logs]:
    previous = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    caplog.set_level(logging.DEBUG)
    try:
        with capture_logs(processors=[structlog.processors.format_exc_info]) as events:
            yield Logs(events, caplog)
    finally:
        structlog.configure(wrapper_class=previous)


@pytest.fixture
async def agi_port(dispatcher: Dispatcher, tmp_path: Path) -> AsyncIterator[int]:
    server = FastAGIServer(AGIBridge(dispatcher, Spool(tmp_path / "spool")))
    await server.start(HOST, 0)
    try:
        yield server.port
    finally:
        server.close()
        await server.wait_closed()


async def test_a_malformed_env_line_is_not_logged_verbatim(
    services: Services, agi_port: int, logged: Logs
) -> None:
    await make_key(services, level=50)
    env = build_env("authorizeCall", query="callerid=79010000001", host=HOST, port=agi_port)
    lines = [*env, f"agi_arg_1=auth={AUTH}"]  # the last line has no ": "
    result = await run_agi_session(HOST, agi_port, "authorizeCall", env_lines=lines)
    assert result.variables["CALLGATE_ANSWER"] == "Declined E_INVALID_ARGUMENT"
    assert "agi_env_rejected" in logged.names()
    logged.assert_absent(AUTH, PIN)


async def test_disa_over_fastagi_logs_no_pin(services: Services, agi_port: int, logged: Logs) -> None:
    await make_user(services, "u", sip_extension="10000", disa_pin=PIN)
    await make_key(services, level=50)
    ok = await run_agi_session(HOST, agi_port, "authorizeCall", query=f"callerid=79010000001&auth={AUTH}")
    assert ok.variables["CALLGATE_RESULT"] == "Allowed"
    for n in range(services.settings.disa_max_failures + 1):
        no = await run_agi_session(HOST, agi_port, "authorizeCall", query="callerid=79010000001&auth=100009999",
                                   uniqueid=f"d{n}")
        assert no.variables["CALLGATE_RESULT"] == "Declined"
    assert {"disa.allowed", "disa.declined", "lockout.locked"} <= logged.names()
    logged.assert_absent(AUTH, "100009999", "9999")


async def test_failed_and_locked_out_logins_log_no_password(
    services: Services, dispatcher: Dispatcher, logged: Logs
) -> None:
    await make_user(services, "alice", password="clear-Pa55")
    key = await make_key(services, level=0)
    wrong, right = md5_hex("wrong-Pa55"), md5_hex("clear-Pa55")
    cred = Credentials(HOST, "http", apikey=key)
    for _ in range(services.settings.login_max_failures + 1):
        await dispatcher.call("getInfo", {"login": "alice", "password": wrong}, cred)
    locked = await dispatcher.call("getInfo", {"login": "alice", "password": right}, cred)
    assert locked.error is not None and locked.error.code.value == "E_USER_LOCKED"
    assert "lockout.locked" in logged.names()
    logged.assert_absent(wrong, right, "clear-Pa55", "wrong-Pa55", key)


async def test_add_key_refuses_weak_keys_and_logs_no_key(
    services: Services, dispatcher: Dispatcher, logged: Logs
) -> None:
    admin_key = await make_key(services, level=50)
    cred = Credentials(HOST, "http", apikey=admin_key)
    base = {"login": "admin", "name": "portal", "auth_by": "username", "source": "10.0.0.*", "accessLevel": "0",
            "secure_only": "0"}
    weak = ["c" * 32, "ab" * 16, "0123456789abcdef" * 2, "short-key-1", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"]
    for candidate in weak:
        refused = await dispatcher.call("addKey", {**base, "apikey": candidate}, cred)
        assert refused.error is not None and refused.error.code.value == "E_INVALID_ARGUMENT", candidate
        assert candidate not in refused.error.detail
    strong = "Zq8-vR2m-Lp4x-Ht7k-Wn3c"
    assert (await dispatcher.call("addKey", {**base, "apikey": strong}, cred)).value is True
    logged.assert_absent(strong, admin_key, *weak)


def test_generated_keys_always_pass() -> None:
    for _ in range(2000):
        assert key_strength_problem(generate_key()) is None


async def test_prepaid_codes_are_never_logged(services: Services, dispatcher: Dispatcher, logged: Logs) -> None:
    """createPrepaidCode, getPrepaidCodes, activatePrepaidCode (right and wrong codes, a
    lock-out), registerRequest and registerByCode (simulated and real), deletePrepaidCode:
    no form of any code (dashed, bare, lower case) in any log line."""
    await make_user(services, "alice", password="apw")
    admin = Credentials(HOST, "http", apikey=await make_key(services, level=44, name="master"))
    client = Credentials("127.0.0.9", "http", apikey=await make_key(services, level=0, source="127.0.0.*"))
    alice = {"login": "alice", "password": md5_hex("apw")}

    async def answer(credentials: Credentials, method: str, args: dict[str, str]) -> Any:
        outcome = await dispatcher.call(method, args, credentials)
        assert outcome.error is None, outcome.error
        return outcome.value.text if hasattr(outcome.value, "text") else outcome.value

    funded = await answer(admin, "createPrepaidCode", {"login": "admin", "balance": "5"})
    spare = await answer(admin, "createPrepaidCode", {"login": "admin"})
    await answer(admin, "getPrepaidCodes", {"login": "admin"})
    await answer(client, "activatePrepaidCode", {**alice, "code": funded, "amount": "1"})
    await answer(client, "activatePrepaidCode", {**alice, "code": funded.replace("-", "").lower(), "amount": "0"})
    wrong = funded[:-1] + ("A" if funded[-1] != "A" else "B")
    for _ in range(services.settings.login_max_failures + 1):
        await dispatcher.call("activatePrepaidCode", {**alice, "code": wrong, "amount": "0"}, client)
    invite = await answer(client, "registerRequest", {"signature": "web-1"})
    reg = {"code": invite, "user": "newbie", "web_password": md5_hex("npw"), "language": "en"}
    await answer(client, "registerByCode", {**reg, "register": "false"})
    await answer(client, "registerByCode", {**reg, "register": "true"})
    await answer(admin, "deletePrepaidCode", {"login": "admin", "code": spare})
    assert {"codes.created", "codes.activated", "codes.registered", "codes.deleted", "lockout.locked"} <= logged.names()
    forms = [form for code in (funded, spare, wrong, invite) for form in (code, code.replace("-", ""))]
    logged.assert_absent(*forms, *(form.lower() for form in forms))
