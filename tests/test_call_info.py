"""resolveCallerid and getTextBalance, on both backends: each answers the spec's example
through the real HTTP door (its `ffffffff` key slot replaced by a real key, the
credentials it leaves out added); getTextBalance also over FastAGI and through the
dialplan's [callgate-balance] context, which plays what it answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

import pytest

from billing_core.api.dispatch import Dispatcher
from billing_core.auth.secrets_store import md5_hex
from billing_core.calls.text_balance import number_words, sound_names
from billing_core.container import Services
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer, ServerConfig
from tests.asterisk_sim import run_agi_session
from tests.dialplan_parse import parse
from tests.dialplan_sim import Caller, DialplanSim
from tests.factories import make_key, make_user
from tests.http_support import Api, Reply, serve
from tests.rating_world import RatingWorld
from tests.shared_paths import spec_file

DIALPLAN = Path(__file__).resolve().parent.parent / "dialplan" / "extensions.conf"


def spec_example(method: str) -> tuple[str, str]:
    """(the example's query string, its answer) as the spec prints them."""
    entry = next(m for m in json.loads(spec_file().read_text())["methods"] if m["name"] == method)
    path = entry["example_request"].split(" ", 1)[1]
    assert path.split("?")[0] == f"/billing/api/2.2/{entry['example_key_segment']}/{method}"
    return path.partition("?")[2], entry["example_response"]


@dataclass
class Doors:
    services: Services
    api: Api
    client_key: str  # level 0, logins with a password: JSON answers
    agi_key: str  # level 50, auth_by sip_extension: plain-text answers, as the spec's examples
    agi_port: int

    async def plain(self, query: str) -> Reply:
        return await self.api.request("GET", self.api.url(self.agi_key, "getTextBalance", query=query))


@pytest.fixture
async def doors(services: Services, tmp_path: Path) -> AsyncIterator[Doors]:
    """u10000 (SIP 10000, caller ID 79810000001, 0 EUR), rich (SIP 10001, 2,351.0789 EUR),
    debtor (SIP 10002, -0.005 EUR, in USD at 1.1 per EUR), ivan (SIP 10003, in RUB)."""
    import billing_core.api.methods  # noqa: F401

    w = RatingWorld(services)
    await w.currency("USD", "1.1")
    await w.currency("RUB", "100")
    await make_user(services, "u10000", balance=Decimal("0"), sip_extension="10000", sip_callerid="79810000001",
                    password="u-pw")  # fmt: skip
    await make_user(services, "rich", balance=Decimal("2351.0789"), sip_extension="10001")
    await make_user(services, "debtor", balance=Decimal("-0.005"), sip_extension="10002", currency="USD")
    await make_user(services, "ivan", balance=Decimal("12.5"), sip_extension="10003", currency="RUB")
    await make_user(services, "nosip", password="n-pw")
    client = await make_key(services, level=0, name="portal")
    agi = await make_key(services, level=50, auth_by="sip_extension", name="asterisk")
    server = FastAGIServer(AGIBridge(Dispatcher(services), Spool(tmp_path / "spool")), ServerConfig())
    await server.start("127.0.0.1", 0)
    try:
        async with serve(services, test_methods=False) as api:
            yield Doors(services, api, client, agi, server.port)
    finally:
        server.close()
        await server.wait_closed()


# ----------------------------------------------------------------------- resolveCallerid


async def test_resolve_callerid_answers_its_example(doors: Doors) -> None:
    query, expected = spec_example("resolveCallerid")
    assert query == ""
    creds = urlencode({"login": "u10000", "password": md5_hex("u-pw")})
    reply = await doors.api.request("GET", doors.api.url(doors.client_key, "resolveCallerid", query=creds))
    assert (reply.status, reply.json()["response"]) == (200, expected) == (200, "79810000001")
    # the deprecation says what it is: getValue?property=sip_callerid
    same = await doors.api.get(doors.client_key, "getValue", {"login": "u10000", "password": md5_hex("u-pw"),
                                                              "property": "sip_callerid"})  # fmt: skip
    assert same.json()["response"] == expected


async def test_resolve_callerid_needs_a_user_with_a_sip_account(doors: Doors) -> None:
    anonymous = await doors.api.get(doors.client_key, "resolveCallerid")
    assert anonymous.json()["response"] == "E_AUTH_FAILED"
    wrong = await doors.api.get(doors.client_key, "resolveCallerid", {"login": "u10000", "password": md5_hex("no")})
    assert wrong.json()["response"] == "E_AUTH_FAILED"
    nosip = await doors.api.get(doors.client_key, "resolveCallerid", {"login": "nosip", "password": md5_hex("n-pw")})
    assert (nosip.status, nosip.json()["response"]) == (200, "E_NOT_EXIST")


# ------------------------------------------------------------------------ getTextBalance


async def test_get_text_balance_answers_its_example(doors: Doors) -> None:
    query, expected = spec_example("getTextBalance")
    assert query == "login=10000"
    reply = await doors.plain(query)
    assert (reply.status, reply.content_type, reply.text) == (200, "text/plain", expected)
    assert expected == "balance&null&euro&null&cents&tadam3s"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("login=10001", "balance&2&thousand&3&hundred&50&1&euro&7&cents&tadam3s"),  # 2,351.0789 floored
        ("login=10002", "balance&minus&null&dollars&1&cents&tadam3s"),  # -0.0055 USD floored to -0.01
        ("login=10003", "balance&1&thousand&2&hundred&50&rubles&null&kopecks&tadam3s"),  # 12.5 EUR x 100
        ("login=10001&currency=usd", "balance&2&thousand&5&hundred&80&6&dollars&18&cents&tadam3s"),  # x 1.1
        ("login=10000&balance=115.40", "balance&1&hundred&15&euro&40&cents&tadam3s"),
        ("login=10000&balance=-3&currency=RUB", "balance&minus&3&rubles&null&kopecks&tadam3s"),
        ("login=10000&balance=1000000.99", "balance&1&million&euro&90&9&cents&tadam3s"),
    ],
)
async def test_get_text_balance_amounts_and_currencies(doors: Doors, query: str, expected: str) -> None:
    reply = await doors.plain(query)
    assert (reply.status, reply.text) == (200, expected)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("login=10000&currency=XYZ", "E_NOT_EXIST"),
        ("login=10000&balance=abc", "E_INVALID_ARGUMENT"),
        ("login=10000&balance=1.00001", "E_INVALID_ARGUMENT"),
        ("login=10000&balance=1e3", "E_INVALID_ARGUMENT"),
        ("login=99999", "E_AUTH_FAILED"),
    ],
)
async def test_get_text_balance_refuses_bad_input(doors: Doors, query: str, code: str) -> None:
    reply = await doors.plain(query)
    assert reply.status in (200, 400) and reply.text == code


async def test_get_text_balance_needs_a_call_control_key(doors: Doors) -> None:
    reply = await doors.api.get(doors.client_key, "getTextBalance", {"login": "u10000", "password": md5_hex("u-pw")})
    assert reply.json()["response"] == "E_INSUFFICIENT_ACCESS"


async def test_get_text_balance_over_fastagi(doors: Doors) -> None:
    session = await run_agi_session("127.0.0.1", doors.agi_port, "getTextBalance", query="login=10001", uniqueid="b1")
    v = session.variables
    assert (v["CALLGATE_RESULT"], v["CALLGATE_ERROR"]) == ("OK", "")
    assert v["CALLGATE_ANSWER"] == "balance&2&thousand&3&hundred&50&1&euro&7&cents&tadam3s"
    assert session.closed_by_server


async def test_the_dialplan_plays_the_balance(doors: Doors) -> None:
    sim = DialplanSim(parse(DIALPLAN.read_text()), {"CALLGATE_AGI": f"agi://127.0.0.1:{doors.agi_port}"},
                      Caller(channel="PJSIP/10001-00000001"), uniqueid="b2")  # fmt: skip
    await sim.call("callgate-balance", "s")
    assert sim.run.requests == ["getTextBalance?login=10001"]
    assert sim.run.played == ["balance&2&thousand&3&hundred&50&1&euro&7&cents&tadam3s"]
    # an unknown login: no balance, the no-service prompt
    sim = DialplanSim(parse(DIALPLAN.read_text()), {"CALLGATE_AGI": f"agi://127.0.0.1:{doors.agi_port}"},
                      Caller(channel="PJSIP/55555-00000001"), uniqueid="b3")  # fmt: skip
    await sim.call("callgate-balance", "s")
    assert sim.run.played == ["ss-noservice"]
    assert [level for level, _ in sim.run.logs] == ["WARNING"]


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "null"), (7, "7"), (19, "19"), (20, "20"), (21, "20 1"), (100, "1 hundred"), (115, "1 hundred 15"),
        (1000, "1 thousand"), (2351, "2 thousand 3 hundred 50 1"), (10**6 + 1, "1 million 1"),
        (999_000_000_001_000, "9 hundred 90 9 trillion 1 thousand"),
    ],
)  # fmt: skip
def test_number_words(n: int, words: str) -> None:
    assert " ".join(number_words(n)) == words


def test_sound_names_of_an_unlisted_currency() -> None:
    assert sound_names(Decimal("3.5"), "CHF") == "balance&3&chf&50&cents&tadam3s"
