"""A `%` not followed by two hex digits is a literal `%`, at both doors (HTTP and FastAGI),
as browsers and PHP take it: the spec's `addDIDRule?…&pattern=%&…` works as printed.
On both backends: HTTP bodies and the FastAGI command bytes are asserted exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from billing_core.api.dispatch import Dispatcher
from billing_core.container import Services
from billing_core.http.form import parse_urlencoded
from billing_core.numbers.tables import did_rules
from billing_core.spool import Spool
from fastagi import wire
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer, ServerConfig
from tests.asterisk_sim import run_agi_session
from tests.factories import make_key, make_user
from tests.http_support import Api, serve

DID = "78005555550"
CALLER = "79010000001"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("pattern=%", {"pattern": "%"}),
        ("pattern=%&policy=ACCEPT", {"pattern": "%", "policy": "ACCEPT"}),
        ("a=100%", {"a": "100%"}),
        ("a=%zz", {"a": "%zz"}),
        ("a=%4", {"a": "%4"}),
        ("a=%%41", {"a": "%A"}),
        ("a=%25", {"a": "%"}),
        ("a=7901%25", {"a": "7901%"}),
        ("a=J%C3%BCrgen%", {"a": "Jürgen%"}),
        ("%=x", {"%": "x"}),
        # the spec's example as printed: one field, no policy (PHP's parse_str reads it so too)
        ("pattern=%policy=ACCEPT&destination=10000", {"pattern": "%policy=ACCEPT", "destination": "10000"}),
    ],
)
def test_both_doors_decode_a_percent_alike(query: str, expected: dict[str, str]) -> None:
    assert dict(parse_urlencoded(query)) == expected
    assert wire.parse_query(query) == expected


def test_the_doors_differ_only_on_plus_and_on_bytes_that_are_not_text() -> None:
    assert dict(parse_urlencoded("a=+1%2B")) == {"a": " 1+"}  # the form encoding
    assert wire.parse_query("a=+1%2B") == {"a": "+1+"}  # the dialplan's raw caller ID
    assert wire.parse_query("a=%FF%") == {"a": "\ufffd%"}  # as the env block's own bytes


# ----------------------------------------------------------------- through both doors


@pytest.fixture
async def doors(services: Services, tmp_path: Path) -> AsyncIterator[tuple[Api, int, str]]:
    """The HTTP shim and a FastAGI server over the real registry; a level-50 server key of
    the master administrator (HTTP) and the Asterisk's key on 127.0.0.1 (FastAGI)."""
    await make_user(services, "alice", sip_extension="10000")
    http_key = await make_key(services, level=50, source="127.0.0.1", name="portal")
    await make_key(services, level=50, source="127.0.0.1", auth_by="sip_extension", name="asterisk")
    bridge = AGIBridge(Dispatcher(services), Spool(tmp_path / "spool"))
    agi = FastAGIServer(bridge, ServerConfig(env_timeout_s=2.0, reply_timeout_s=2.0))
    await agi.start("127.0.0.1", 0)
    try:
        async with serve(services, test_methods=False) as api:
            yield api, agi.port, http_key
    finally:
        agi.close()
        await agi.wait_closed()


async def patterns(services: Services) -> list[tuple[int, str, str]]:
    async with services.db.begin() as conn:
        rows = await conn.execute(select(did_rules.c.position, did_rules.c.pattern, did_rules.c.callerid))
        return sorted((r.position, r.pattern, r.callerid) for r in rows)


async def test_the_spec_example_pattern_percent_works(services: Services, doors: tuple[Api, int, str]) -> None:
    api, agi_port, key = doors
    add_did = await api.request("GET", api.url(key, "addDID", query=f"login=admin&did={DID}&owner=alice"))
    assert add_did.body == b'{"result": true, "response": true, "description": ""}'

    # The spec's example with its lost '&' put back: `pattern=%` is the match-all pattern.
    example = f"login=admin&did={DID}&source=number&pattern=%&policy=ACCEPT&destination=10000"
    added = await api.request("GET", api.url(key, "addDIDRule", query=example))
    assert (added.status, added.body) == (200, b'{"result": true, "response": true, "description": ""}')
    # As printed (`pattern=%policy=ACCEPT`) it has no policy: the method says so, not the decoder.
    printed = f"login=admin&did={DID}&source=number&pattern=%policy=ACCEPT&destination=10000"
    refused = await api.request("GET", api.url(key, "addDIDRule", query=printed))
    assert (refused.status, refused.body) == (
        400,
        b'{"result": false, "response": "E_MISSING_ARGUMENT", "description": "missing argument: policy"}',
    )
    # A rule before it that passes the caller ID on (TRANSIT) and matches callers ending in '%1'.
    transit = f"login=admin&did={DID}&source=number&pattern=%25%251&policy=ACCEPT&destination=10000&callerid=TRANSIT"
    assert (await api.request("GET", api.url(key, "addDIDRule", query=transit))).json()["result"] is True
    assert await patterns(services) == [(1, "%%1", "TRANSIT"), (2, "%", "")]

    # The same caller ID with lone '%'s through both doors: the same decoded value.
    query = f"did={DID}&callerid=50%&status="
    http = await api.request("GET", api.url(key, "resolveDIDRule", query="login=admin&" + query))
    assert http.body == b'{"result": true, "response": "SKIP 2", "description": ""}'  # over HTTP, rule by rule
    http = await api.request("GET", api.url(key, "resolveDIDRule", query="login=admin&rule=2&" + query))
    assert http.body == b'{"result": true, "response": "OK ACCEPT 10000 - - 10000 - - - -", "description": ""}'
    session = await run_agi_session("127.0.0.1", agi_port, "resolveDIDRule", query=query, uniqueid="p1")
    assert session.commands == [
        'EXEC MSet "CALLGATE_ERROR=,CALLGATE_ANSWER=OK ACCEPT 10000 - - 10000 - - - -,'
        "CALLGATE_RULE=2,CALLGATE_POLICY=ACCEPT,CALLGATE_OWNER=10000,CALLGATE_ACTION=,CALLGATE_SERVER=,"
        "CALLGATE_DESTINATION=10000,CALLGATE_CALLERID=,CALLGATE_TIMEOUT=,CALLGATE_SMS_ACTION=,"
        'CALLGATE_SMS_DESTINATION=,CALLGATE_RESULT=OK"'
    ]
    # A caller ID that ends in "%1" (lone '%' then '1': not an escape) meets rule 1, which
    # hands the caller ID on exactly as decoded.
    odd = f"did={DID}&callerid=7%%1&status="
    http = await api.request("GET", api.url(key, "resolveDIDRule", query="login=admin&" + odd))
    assert http.body == (
        b'{"result": true, "response": "OK ACCEPT 10000 - - 10000 TRANSIT - - -", "description": ""}'
    )
    session = await run_agi_session("127.0.0.1", agi_port, "resolveDIDRule", query=odd, uniqueid="p2")
    assert session.commands == [
        'EXEC MSet "CALLGATE_ERROR=,CALLGATE_ANSWER=OK ACCEPT 10000 - - 10000 TRANSIT - - -,'
        "CALLGATE_RULE=1,CALLGATE_POLICY=ACCEPT,CALLGATE_OWNER=10000,CALLGATE_ACTION=,CALLGATE_SERVER=,"
        "CALLGATE_DESTINATION=10000,CALLGATE_CALLERID=7%%1,CALLGATE_TIMEOUT=,CALLGATE_SMS_ACTION=,"
        'CALLGATE_SMS_DESTINATION=,CALLGATE_RESULT=OK"'
    ]
