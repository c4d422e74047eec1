"""resolveDIDRule: rule chain walking over HTTP (one rule per request: OK / SKIP n / FIN)
and over FastAGI (first applicable rule at once), plus the matching primitives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from billing_core.api.dispatch import Credentials, Dispatcher, Outcome
from billing_core.cache.keys import NAMESPACES
from billing_core.catalog.registry import TextAnswer
from billing_core.container import Services
from billing_core.numbers.did_rules import caller_id_for, like_match, status_word, walk
from billing_core.numbers.dids import DIDRule
from billing_core.numbers.tables import dids
from fastagi import contract
from fastagi.bridge import answer_for_outcome
from tests.factories import make_key, make_user

DID = "78005555550"
CALLER = "79010000001"
OTHER_CALLER = "79020000002"

# ------------------------------------------------------------------- pure matching rules


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("%", "", True),
        ("%", "79010000001", True),
        ("7901%", "79010000001", True),
        ("7901%", "7902", False),
        ("%0001", "79010000001", True),
        ("%0001", "79010000002", False),
        ("7901_______", "79010000001", True),
        ("7901_______", "7901000000", False),  # one short
        ("7901______", "79010000001", False),  # one long
        ("7%1%1", "79010000001", True),
        ("%%", "x", True),
        ("_", "", False),
        ("", "", True),
        ("", "1", False),
        ("7.9", "7.9", True),  # regex metacharacters are literal
        ("7.9", "7x9", False),
        (".*", "anything", False),
        ("a+b", "aab", False),
        ("a+b", "a+b", True),
        ("[12]", "1", False),
        ("[12]", "[12]", True),
        ("(1|2)", "1", False),
        ("^1$", "1", False),
        ("\\d", "1", False),
        ("\\d", "\\d", True),
        ("ANON%", "anonymous", True),  # case-insensitive
    ],
)
def test_like_match(pattern: str, value: str, expected: bool) -> None:
    assert like_match(pattern, value) is expected


def test_like_match_many_wildcards_is_correct() -> None:
    # A backtracking regex would explore O(n^k) splits here; the matcher must just answer.
    pattern = "%1" * 40 + "%2"
    assert like_match(pattern, "1" * 60) is False
    assert like_match(pattern, "1" * 60 + "2") is True
    assert like_match(pattern, "1" * 39 + "2") is False  # one 1 short
    assert like_match("%1" * 40 + "%", "1" * 40) is True
    assert like_match("%1" * 41 + "%", "1" * 40) is False


@pytest.mark.parametrize(
    ("status", "word"),
    [
        ("", ""),
        ("ANSWER", "ANSWER"),
        ("0CANCEL", "CANCEL"),
        ("99INPUT", "INPUT"),
        ("busy", "BUSY"),
        ("200ANSWER", "ANSWER"),
        ("NOANSWER", "NOANSWER"),
    ],
)
def test_status_word(status: str, word: str) -> None:
    assert status_word(status) == word


def test_transit_is_replaced_by_the_callers_number() -> None:
    rule = DIDRule(1, "any", "", "ACCEPT", "", "", "call", "", "1", "TRANSIT", None, "", "")
    assert caller_id_for(rule, CALLER) == CALLER
    assert caller_id_for(rule.__class__(**{**rule.to_json(), "callerid": "74950000000"}), CALLER) == "74950000000"
    assert caller_id_for(rule.__class__(**{**rule.to_json(), "callerid": ""}), CALLER) == ""


def test_unknown_source_matches_no_one() -> None:
    """Sources other than number/any/all cannot be added, but imported data may hold them."""
    odd = DIDRule(1, "weather", "", "ACCEPT", "", "", "call", "", "1", "", None, "", "")
    fallback = DIDRule(2, "any", "", "ACCEPT", "", "", "call", "", "2", "", None, "", "")
    assert walk((odd,), 1, CALLER, "", "", first_match=True).kind == "FIN"
    agi = walk((odd, fallback), 1, CALLER, "", "", first_match=True)
    assert (agi.kind, agi.rule) == ("OK", fallback)
    http = walk((odd, fallback), 1, CALLER, "", "", first_match=False)
    assert (http.kind, http.next_rule) == ("SKIP", 2)


# --------------------------------------------------------------------- through the API


class Gate:
    """A level-50 server key owned by the master admin, called over HTTP or FastAGI."""

    def __init__(self, dispatcher: Dispatcher, key: str) -> None:
        self.dispatcher = dispatcher
        self.key = key

    async def admin(self, method: str, **args: Any) -> Outcome:
        raw = {k: str(v) for k, v in args.items()}
        return await self.dispatcher.call(method, raw, Credentials("127.0.0.1", "http", apikey=self.key))

    async def http(self, **args: Any) -> Outcome:
        raw = {"did": DID, "callerid": CALLER, "status": ""} | {k: str(v) for k, v in args.items()}
        return await self.dispatcher.call("resolveDIDRule", raw, Credentials("127.0.0.1", "http", apikey=self.key))

    async def agi(self, **args: Any) -> Outcome:
        raw = {"did": DID, "rule": "1", "callerid": CALLER, "status": ""} | {k: str(v) for k, v in args.items()}
        return await self.dispatcher.call("resolveDIDRule", raw, Credentials("127.0.0.1", "agi", call_uid="c1"))


def text(outcome: Outcome) -> str:
    assert outcome.error is None, outcome.error
    assert isinstance(outcome.value, TextAnswer)
    return outcome.value.text


def fields(outcome: Outcome) -> dict[str, str]:
    assert isinstance(outcome.value, TextAnswer)
    return dict(outcome.value.fields)


def code(outcome: Outcome) -> str | None:
    return None if outcome.error is None else outcome.error.code.value


CHAIN: list[dict[str, str]] = [
    # 1: callers from 7901… go to extension 10000 with their own number (the spec's example)
    {"pattern": "7901%", "action": "call", "server": "rdx.narayana.im", "destination": "10000",
     "callerid": "TRANSIT", "timeout": "30", "sms_action": "internal", "sms_destination": "10000"},
    # 2: a literal dot, regex-special, must not match any character
    {"pattern": "7.9_", "policy": "REJECT", "destination": "blocked"},
    # 3-4: only after a failed attempt
    {"source": "any", "pattern": "", "condition": "BUSY", "action": "call", "destination": "10001"},
    {"source": "all", "pattern": "", "condition": "NOANSWER", "action": "call", "destination": "voicemail"},
    # 5: unconditional fallback
    {"source": "number", "pattern": "%", "action": "playfile", "destination": "beep"},
]


@pytest.fixture
async def gate(services: Services, dispatcher: Dispatcher) -> Gate:
    await make_user(services, "alice", sip_extension="10000")
    await make_user(services, "bob")  # no extension
    g = Gate(dispatcher, await make_key(services, level=50))
    assert (await g.admin("addDID", did=DID, owner="alice")).ok
    for rule in CHAIN:
        args = {"did": DID, "source": "number", "policy": "ACCEPT", "position": "end"} | rule
        outcome = await g.admin("addDIDRule", **args)
        assert outcome.ok, outcome.error
    return g


async def test_http_ok_line_is_the_spec_example(gate: Gate) -> None:
    outcome = await gate.http(rule=1)
    assert text(outcome) == "OK ACCEPT 10000 call rdx.narayana.im 10000 TRANSIT 30 internal 10000"
    assert outcome.value.result == "OK" and outcome.value.ok
    assert fields(outcome) == {
        "CALLGATE_RULE": "1",
        "CALLGATE_POLICY": "ACCEPT",
        "CALLGATE_OWNER": "10000",
        "CALLGATE_ACTION": "call",
        "CALLGATE_SERVER": "rdx.narayana.im",
        "CALLGATE_DESTINATION": "10000",
        "CALLGATE_CALLERID": CALLER,  # TRANSIT replaced on the channel
        "CALLGATE_TIMEOUT": "30",
        "CALLGATE_SMS_ACTION": "internal",
        "CALLGATE_SMS_DESTINATION": "10000",
    }
    assert set(fields(outcome)) <= set(contract.SCRIPT_VARIABLES[contract.SCRIPT_RESOLVE_DID_RULE])


@pytest.mark.parametrize("rule", [None, "I", "i", ""])
async def test_default_rule_is_the_first(gate: Gate, rule: str | None) -> None:
    args = {} if rule is None else {"rule": rule}
    assert text(await gate.http(**args)).startswith("OK ACCEPT 10000 call")


async def test_http_skip_numbering(gate: Gate) -> None:
    assert text(await gate.http(rule=1, callerid=OTHER_CALLER)) == "SKIP 2"
    assert text(await gate.http(rule=2, callerid=OTHER_CALLER)) == "SKIP 3"
    assert text(await gate.http(rule=3, callerid=OTHER_CALLER)) == "SKIP 4"  # conditional, first attempt
    assert text(await gate.http(rule=4, callerid=OTHER_CALLER)) == "SKIP 5"
    fallback = await gate.http(rule=5, callerid=OTHER_CALLER)
    assert text(fallback) == "OK ACCEPT 10000 playfile - beep - - - -"
    assert fields(fallback)["CALLGATE_TIMEOUT"] == ""  # empty on the channel, '-' only in the line
    assert fields(fallback)["CALLGATE_CALLERID"] == ""
    skip = await gate.http(rule=1, callerid=OTHER_CALLER)
    assert skip.value.result == "SKIP" and skip.value.ok and fields(skip) == {}


async def test_http_fin(gate: Gate) -> None:
    # The last rule does not apply after an answered call (unconditional = not after success).
    fin = await gate.http(rule=5, status="ANSWER")
    assert text(fin) == "FIN" and fin.value.result == "FIN" and fin.value.ok
    assert text(await gate.http(rule=6)) == "FIN"
    assert text(await gate.http(rule=100)) == "FIN"


async def test_literal_dot_in_pattern(gate: Gate) -> None:
    rejected = await gate.http(rule=2, callerid="7.91")
    assert text(rejected) == "OK REJECT 10000 - - blocked - - - -"
    assert fields(rejected)["CALLGATE_POLICY"] == "REJECT"
    assert text(await gate.http(rule=2, callerid="7191")) == "SKIP 3"
    assert text(await gate.http(rule=2, callerid="7.912")) == "SKIP 3"  # '_' is exactly one character


@pytest.mark.parametrize(
    ("rule", "status", "expected"),
    [
        (3, "BUSY", "OK"),
        (3, "17BUSY", "OK"),
        (3, "NOANSWER", "SKIP 4"),
        (4, "NOANSWER", "OK"),
        (4, "0CANCEL", "OK"),
        (4, "BUSY", "SKIP 5"),
        (4, "CHANUNAVAIL", "SKIP 5"),
        (5, "CONGESTION", "OK"),
        (5, "BUSY", "OK"),
    ],
)
async def test_conditions(gate: Gate, rule: int, status: str, expected: str) -> None:
    assert text(await gate.http(rule=rule, callerid=OTHER_CALLER, status=status)).startswith(expected)


async def test_agi_returns_the_first_applicable_rule(gate: Gate) -> None:
    first = await gate.agi(callerid=OTHER_CALLER)
    assert fields(first)["CALLGATE_RULE"] == "5"  # 1 and 2 do not match, 3 and 4 need a failure
    assert text(first) == "OK ACCEPT 10000 playfile - beep - - - -"
    busy = await gate.agi(rule=2, callerid=OTHER_CALLER, status="BUSY")
    assert (fields(busy)["CALLGATE_RULE"], fields(busy)["CALLGATE_DESTINATION"]) == ("3", "10001")
    noanswer = await gate.agi(rule=2, callerid=OTHER_CALLER, status="NOANSWER")
    assert (fields(noanswer)["CALLGATE_RULE"], fields(noanswer)["CALLGATE_DESTINATION"]) == ("4", "voicemail")
    spec_caller = await gate.agi()
    assert fields(spec_caller)["CALLGATE_RULE"] == "1"
    fin = await gate.agi(rule=2, callerid=CALLER, status="ANSWER")
    assert fin.value.result == "FIN"


async def test_agi_channel_variables(gate: Gate) -> None:
    answer = answer_for_outcome(contract.SCRIPT_RESOLVE_DID_RULE, await gate.agi(rule=1))
    variables = dict(answer.variables)
    assert variables[contract.VAR_RESULT] == contract.RESULT_OK
    assert variables["CALLGATE_RULE"] == "1"
    assert variables["CALLGATE_CALLERID"] == CALLER
    assert variables["CALLGATE_OWNER"] == "10000"
    fin = answer_for_outcome(contract.SCRIPT_RESOLVE_DID_RULE, await gate.agi(rule=6))
    assert dict(fin.variables)[contract.VAR_RESULT] == contract.RESULT_FIN
    assert dict(fin.variables)["CALLGATE_RULE"] == ""


async def test_success_unsuccess_unavail_and_input(services: Services, gate: Gate) -> None:
    for rule in (
        {"condition": "SUCCESS", "destination": "thanks"},
        {"condition": "UNSUCCESS", "destination": "sorry"},
        {"condition": "UNAVAIL", "destination": "backup"},
        {"condition": "INPUT", "input": "2", "destination": "sales"},
    ):
        outcome = await gate.admin("addDIDRule", did=DID, source="any", pattern="", policy="ACCEPT", **rule)
        assert outcome.ok, outcome.error
    # The chain is now: 1 INPUT(2), 2 UNAVAIL, 3 UNSUCCESS, 4 SUCCESS, 5.. the original five.
    destination = "CALLGATE_DESTINATION"
    assert fields(await gate.agi(status="99INPUT", input="2"))[destination] == "sales"
    assert fields(await gate.agi(status="99INPUT", input="3"))[destination] == "sorry"  # not ANSWER: UNSUCCESS
    assert fields(await gate.agi(status="CONGESTION"))[destination] == "backup"
    assert fields(await gate.agi(status="CHANUNAVAIL"))[destination] == "backup"
    assert fields(await gate.agi(status="BUSY"))[destination] == "sorry"
    assert fields(await gate.agi(status="ANSWER"))[destination] == "thanks"
    assert fields(await gate.agi(status=""))[destination] == "10000"  # none of 1-4 on a first attempt
    assert text(await gate.http(rule=1, status="99INPUT", input="3")) == "SKIP 2"


async def test_new_rule_at_start_is_seen_at_once(gate: Gate) -> None:
    assert fields(await gate.agi())["CALLGATE_DESTINATION"] == "10000"
    outcome = await gate.admin("addDIDRule", did=DID, source="number", pattern=CALLER, policy="REJECT", destination="x")
    assert outcome.ok
    now = await gate.agi()
    assert (fields(now)["CALLGATE_RULE"], fields(now)["CALLGATE_POLICY"]) == ("1", "REJECT")
    # the old rule 1 is rule 2 now
    assert fields(await gate.agi(rule=2))["CALLGATE_DESTINATION"] == "10000"


async def test_owner_without_extension_is_named(services: Services, gate: Gate) -> None:
    assert (await gate.admin("addDID", did="78120000000", owner="bob")).ok
    args = {"did": "78120000000", "source": "any", "pattern": "", "policy": "ACCEPT", "destination": "x"}
    assert (await gate.admin("addDIDRule", **args)).ok
    outcome = await gate.http(did="78120000000")
    assert text(outcome) == "OK ACCEPT bob - - x - - - -"
    assert fields(outcome)["CALLGATE_OWNER"] == "bob"


async def test_did_without_rules_is_fin(gate: Gate) -> None:
    assert (await gate.admin("addDID", did="78120000001", owner="bob")).ok
    assert text(await gate.http(did="78120000001")) == "FIN"
    assert text(await gate.agi(did="78120000001")) == "FIN"


async def set_did(services: Services, **values: Any) -> None:
    async with services.db.begin() as conn:
        await conn.execute(update(dids).where(dids.c.did == DID).values(**values))
    await services.cache.invalidate(*NAMESPACES)


async def test_unknown_disabled_and_expired_dids(services: Services, gate: Gate) -> None:
    assert code(await gate.http(did="79990000000")) == "E_NOT_EXIST"
    assert code(await gate.agi(did="not-a-number")) == "E_NOT_EXIST"
    await set_did(services, enabled=False)
    assert code(await gate.agi()) == "E_NOT_EXIST"
    declined = answer_for_outcome(contract.SCRIPT_RESOLVE_DID_RULE, await gate.agi())
    assert dict(declined.variables)[contract.VAR_ERROR] == "E_NOT_EXIST"
    await set_did(services, enabled=True, expiration=datetime.now(UTC) - timedelta(days=1))
    assert code(await gate.agi()) == "E_NOT_EXIST"
    await set_did(services, expiration=datetime.now(UTC) + timedelta(days=1))
    assert fields(await gate.agi())["CALLGATE_RULE"] == "1"


async def test_arguments(gate: Gate) -> None:
    assert code(await gate.http(rule="first")) == "E_INVALID_ARGUMENT"
    assert code(await gate.http(rule="0")) == "E_INVALID_ARGUMENT"
    missing = await gate.dispatcher.call(
        "resolveDIDRule", {"did": DID, "callerid": CALLER}, Credentials("127.0.0.1", "http", apikey=gate.key)
    )
    assert code(missing) == "E_MISSING_ARGUMENT"


async def test_key_of_another_owner(services: Services, dispatcher: Dispatcher, gate: Gate) -> None:
    """A reseller's Asterisk key serves the reseller's users' DIDs only."""
    await make_user(services, "reseller", accesslevel=22)
    await make_user(services, "carol", manager="reseller")
    key = await make_key(services, level=50, owner="reseller", source="10.0.0.1")
    cred = Credentials("10.0.0.1", "http", apikey=key)
    raw = {"did": DID, "callerid": CALLER, "status": ""}
    assert code(await dispatcher.call("resolveDIDRule", raw, cred)) == "E_DOES_NOT_BELONG_TO_YOU"
    assert (await gate.admin("addDID", did="78120000002", owner="carol")).ok
    assert (
        await gate.admin("addDIDRule", did="78120000002", source="any", pattern="", policy="ACCEPT", destination="y")
    ).ok
    mine = await dispatcher.call("resolveDIDRule", raw | {"did": "78120000002"}, cred)
    assert text(mine) == "OK ACCEPT carol - - y - - - -"


async def test_e164_numbers_with_a_plus(gate: Gate) -> None:
    """callgate's numbers are digits: a DID given as +DID is the DID, and a caller ID in E.164
    (+7901…) matches the digits pattern 7901% as 7901… does; TRANSIT keeps the caller's own form."""
    plus = await gate.http(rule=1, did=f"+{DID}", callerid=f"+{CALLER}")
    assert text(plus) == "OK ACCEPT 10000 call rdx.narayana.im 10000 TRANSIT 30 internal 10000"
    assert fields(plus)["CALLGATE_CALLERID"] == f"+{CALLER}"
    over_agi = await gate.agi(did=f"+{DID}", callerid=f"+{CALLER}")
    assert fields(over_agi)["CALLGATE_RULE"] == "1"
    assert text(await gate.http(rule=1, callerid=f"+{OTHER_CALLER}")) == "SKIP 2"  # still only 7901…
    assert code(await gate.http(did=f"++{DID}")) == "E_NOT_EXIST"
