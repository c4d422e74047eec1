"""fastagi.wire against what a real Asterisk 22 sent and stored (shared/agi/transcripts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_core.errors import ErrorCode
from fastagi import wire
from fastagi.contract import VAR_RESULT
from tests.asterisk_sim import (
    ChannelSim,
    agi_shell_split,
    load_transcript,
    mset_decode,
    reply_value,
    separate_args,
    session_transcripts,
    transcript_env,
    transcript_paths,
)

QUOTING = transcript_paths() / "mset-and-set-variable-quoting.json"


def stored_by_asterisk(lines: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Apply command lines to a simulated channel, the way Asterisk 22 parses them."""
    channel = ChannelSim()
    for line in lines:
        assert channel.respond(line).startswith("200 "), line
    return channel.variables


def quoting_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(QUOTING.read_text(encoding="utf-8"))
    return cases


# --- env block -------------------------------------------------------------------------------


def test_env_line_splits_on_the_first_colon_space() -> None:
    assert wire.parse_env_line("agi_calleridname: ami: test") == ("agi_calleridname", "ami: test")


def test_env_line_keeps_an_empty_value() -> None:
    assert wire.parse_env_line("agi_accountcode: ") == ("agi_accountcode", "")


@pytest.mark.parametrize("line", ["garbage", "agi_network:yes", ": yes", " agi_network: yes", ""])
def test_malformed_env_line_is_invalid_argument(line: str) -> None:
    with pytest.raises(wire.EnvError) as caught:
        wire.parse_env_line(line)
    assert caught.value.code is ErrorCode.E_INVALID_ARGUMENT


@pytest.mark.parametrize("path", session_transcripts(), ids=lambda p: p.name)
def test_every_recorded_env_block_parses(path: Path) -> None:
    transcript = load_transcript(path)
    text = b"".join(e["bytes"].encode() for e in transcript["exchange"] if e["from"] == "asterisk")
    env_text = text.decode().split("\n\n", 1)[0]
    env = wire.parse_env_block(env_text.split("\n"))
    assert env == transcript_env(transcript)
    assert env["agi_network"] == "yes"
    assert env["agi_accountcode"] == ""


@pytest.mark.parametrize(
    ("network_script", "expected"),
    [
        ("callPrepare?destination=1&prior=1", ("callPrepare", "destination=1&prior=1")),
        ("callPrepare", ("callPrepare", "")),
        ("callPrepare?", ("callPrepare", "")),
        ("a?b=c?d", ("a", "b=c?d")),
        ("?x=1", ("", "x=1")),
    ],
)
def test_split_script(network_script: str, expected: tuple[str, str]) -> None:
    assert wire.split_script(network_script) == expected


def test_query_keeps_blank_values() -> None:
    assert wire.parse_query("destination=1&callerid=&prior=1&answered_ms=") == {
        "destination": "1", "callerid": "", "prior": "1", "answered_ms": "",
    }


def test_query_keeps_a_literal_plus_and_decodes_percent_escapes() -> None:
    args = wire.parse_query("callerid=+74951234567&name=J%C3%BCrgen%20M&x=a%2Bb")
    assert args == {"callerid": "+74951234567", "name": "Jürgen M", "x": "a+b"}


def test_agi_arg_pairs_win_over_the_query() -> None:
    env = {
        "agi_network_script": "callFinish?destination=1&prior=1",
        "agi_arg_1": "prior=2",
        "agi_arg_2": "not a pair",
        "agi_arg_3": "=no key",
        "agi_arg_4": "status=ANSWER=really",
    }
    request = wire.build_request(env, "10.0.0.1")
    assert request.script == "callFinish"
    assert request.args == {"destination": "1", "prior": "2", "status": "ANSWER=really"}
    assert request.env == env
    assert request.peer_ip == "10.0.0.1"


def test_missing_network_script_is_missing_argument() -> None:
    with pytest.raises(wire.EnvError) as caught:
        wire.build_request({"agi_network": "yes"}, "127.0.0.1")
    assert caught.value.code is ErrorCode.E_MISSING_ARGUMENT


def test_empty_script_is_invalid_argument() -> None:
    with pytest.raises(wire.EnvError) as caught:
        wire.build_request({"agi_network_script": "?destination=1"}, "127.0.0.1")
    assert caught.value.code is ErrorCode.E_INVALID_ARGUMENT


@pytest.mark.parametrize("path", session_transcripts(), ids=lambda p: p.name)
def test_request_from_every_transcript(path: Path) -> None:
    transcript = load_transcript(path)
    env = transcript_env(transcript)
    request = wire.build_request(env, "127.0.0.1")
    assert request.script == transcript["script"]
    query = env["agi_network_script"].partition("?")[2]
    # The recorded agi_arg_N ("first arg", "second" in 006) are not key=value pairs.
    assert request.args == dict(parse_qsl(query, keep_blank_values=True))
    assert request.uniqueid == env["agi_uniqueid"]


# --- replies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "code", "result", "value"),
    [
        ("200 result=1", 200, 1, None),
        ("200 result=0", 200, 0, None),
        ("200 result=-2", 200, -2, None),
        ("200 result=1 (Local/5551234@explore-00000007;2)", 200, 1, "Local/5551234@explore-00000007;2"),
        ("200 result=1 (a (nested) value)", 200, 1, "a (nested) value"),
        ("200 result=1 ()", 200, 1, ""),
        ("200 result=0 endpos=1234", 200, 0, None),
        ("510 Invalid or unknown command", 510, None, None),
        ("511 Command Not Permitted on a dead channel or intercept routine", 511, None, None),
        ("520 Invalid command syntax.  Proper usage not available.", 520, None, None),
        ("failure", 0, None, None),
    ],
)
def test_parse_reply(line: str, code: int, result: int | None, value: str | None) -> None:
    reply = wire.parse_reply([line])
    assert (reply.code, reply.result, reply.value) == (code, result, value)
    assert reply.ok is (code == 200)


def test_value_and_trailer_are_separated() -> None:
    reply = wire.parse_reply(["200 result=1 (5) endpos=160000"])
    assert (reply.value, reply.text) == ("5", "endpos=160000")


def test_multi_line_520_needs_its_end_line() -> None:
    block = ["520-Invalid command syntax.  Proper usage follows:", " Usage: SET VARIABLE <name> <value>"]
    assert wire.reply_needs_more(block)
    block.append("520 End of proper usage.")
    assert not wire.reply_needs_more(block)
    reply = wire.parse_reply(block)
    assert reply.code == 520
    assert len(reply.lines) == 3
    assert not wire.reply_needs_more(["520 Invalid command syntax.  Proper usage not available."])
    assert not wire.reply_needs_more(["200 result=1"])


def test_hangup_is_recognised_exactly() -> None:
    assert wire.is_hangup("HANGUP")
    assert not wire.is_hangup("200 result=1 (HANGUP)")


# --- what Asterisk 22 did with the lines in the transcript ------------------------------------


@pytest.mark.parametrize("case", quoting_cases(), ids=lambda c: c["command"][:40])
def test_sim_decodes_each_recorded_line_as_asterisk_stored_it(case: dict[str, Any]) -> None:
    channel = ChannelSim()
    assert channel.respond(case["command"]) == case["reply"]
    for name, read_back in case["read_back"].items():
        assert channel.variables.get(name) == reply_value(read_back), name
        assert channel.respond(f"GET VARIABLE {name}") == read_back


@pytest.mark.parametrize("case", quoting_cases(), ids=lambda c: c["command"][:40])
def test_our_lines_store_what_asterisk_stored(case: dict[str, Any]) -> None:
    stored = {n: v for n, rb in case["read_back"].items() if (v := reply_value(rb)) is not None}
    encoded = wire.encode_answer(stored)
    assert stored_by_asterisk(encoded.lines) == stored
    assert len(encoded.lines) == 1


@pytest.mark.parametrize(
    ("variables", "recorded"),
    [
        ({"A1": "x", "B1": "y z"}, 'EXEC MSet "A1=x,B1=y z"'),
        ({"A3": "has,comma", "B3": "ok"}, 'EXEC MSet "A3=has\\\\,comma,B3=ok"'),
        ({"A7": "a=b=c", "B7": ""}, 'EXEC MSet "A7=a=b=c,B7="'),
        ({"A8": "ünï", "B8": "x|y;z"}, 'EXEC MSet "A8=ünï,B8=x|y;z"'),
    ],
)
def test_encoding_matches_the_recorded_lines(variables: dict[str, str], recorded: str) -> None:
    assert recorded in {c["command"] for c in quoting_cases()}
    assert wire.encode_answer(variables).lines == (recorded,)


# --- encoding --------------------------------------------------------------------------------

TRICKY = {
    "COMMA": "a,b,,c,",
    "SPACES": "  two  words ",
    "EQUALS": "a=b=c",
    "UTF8": "Jürgen Ωμέγα 电话 📞",
    "DQUOTE": 'say "hi"',
    "SQUOTE": "it's",
    "BACKSLASH": "back\\slash\\",
    "BACKSLASH_COMMA": "\\,",
    "EMPTY": "",
    "PARENS": "(unbalanced",
    "CLOSE": "b)",
    "BRACKETS": "[7901/7902] via [r1",
    "PIPE_SEMI": "x|y;z&$%{}${EXTEN}",
    "TAB": "a\tb",
}


def test_tricky_values_round_trip() -> None:
    encoded = wire.encode_answer(TRICKY)
    assert stored_by_asterisk(encoded.lines) == TRICKY
    assert encoded.truncated == ()
    assert sum(line.startswith("SET VARIABLE") for line in encoded.lines) == 1  # only DQUOTE


def test_line_breaks_become_spaces_and_go_through_set_variable() -> None:
    encoded = wire.encode_answer({"A": "one\r\ntwo\nthree\rfour", "B": "nul\0here"})
    assert stored_by_asterisk(encoded.lines) == {"A": "one two three four", "B": "nulhere"}
    assert all("\n" not in line and "\r" not in line for line in encoded.lines)
    assert encoded.lines[0].startswith("SET VARIABLE A ")


def test_a_typical_answer_is_one_line() -> None:
    answer = {
        "CALLGATE_RESULT": "Allowed", "CALLGATE_ERROR": "", "CALLGATE_ANSWER": "Allowed 61 s",
        "CALLGATE_MAXTIME": "61", "CALLGATE_DESTINATION": "74951234567", "CALLGATE_CALLERID": "+7 495",
        "CALLGATE_DIRECTION": "RussiaMobile [7901/7902]", "CALLGATE_ROUTE_PREFIX": "", "CALLGATE_ROUTE": "r1",
        "CALLGATE_PITCH_RX": "1.30", "CALLGATE_PITCH_TX": "0,00",
    }
    encoded = wire.encode_answer(answer)
    assert len(encoded.lines) == 1
    assert stored_by_asterisk(encoded.lines) == answer


def test_result_is_set_by_the_last_line() -> None:
    answer = {VAR_RESULT: "Allowed", "Q": 'has "quotes"', "A": "1"}
    encoded = wire.encode_answer(answer)
    assert encoded.lines[0].startswith("SET VARIABLE Q ")
    assert encoded.lines[-1].endswith(f'{VAR_RESULT}=Allowed"')
    quoted_result = wire.encode_answer({VAR_RESULT: 'odd "result"', "Q": '"', "A": "1"})
    assert quoted_result.lines[-1].startswith(f"SET VARIABLE {VAR_RESULT} ")


def test_a_10_kb_answer_is_split_into_lines_asterisk_reads_whole() -> None:
    answer = {f"CALLGATE_V{i:03d}": f"{i:03d}," + "x" * 96 for i in range(100)}
    encoded = wire.encode_answer(answer)
    assert 2 <= len(encoded.lines) <= 3
    assert all(wire.line_bytes(line) <= wire.MAX_LINE_BYTES < 8192 for line in encoded.lines)
    assert stored_by_asterisk(encoded.lines) == answer


def test_legacy_2k_command_buffer() -> None:
    answer = {f"V{i}": "y" * 150 for i in range(40)}
    encoded = wire.encode_answer(answer, max_line_bytes=wire.LEGACY_MAX_LINE_BYTES)
    assert all(wire.line_bytes(line) <= 2047 for line in encoded.lines)
    assert stored_by_asterisk(encoded.lines) == answer


def test_no_mset_line_carries_more_than_98_pairs() -> None:
    answer = {f"V{i}": f"a\\,{i}" for i in range(150)}
    encoded = wire.encode_answer(answer)
    assert [len(mset_decode(agi_shell_split(line)[2])) for line in encoded.lines] == [98, 52]
    assert stored_by_asterisk(encoded.lines) == answer


def test_mset_leaves_its_99th_argument_unparsed() -> None:
    # Why the encoder stops at 98 pairs: Asterisk's MSet would store the 99th raw.
    data = ",".join(f"V{i}=\\({i}" for i in range(100))
    pairs = dict(mset_decode(data))
    assert pairs["V97"] == "(97"
    assert pairs["V98"] == "\\(98,V99=\\(99"
    assert "V99" not in pairs


def test_a_value_too_long_for_any_line_is_shortened_and_reported() -> None:
    encoded = wire.encode_answer({"BIG": "z" * 20000, "SMALL": "ok"})
    assert encoded.truncated == ("BIG",)
    assert all(wire.line_bytes(line) <= wire.MAX_LINE_BYTES for line in encoded.lines)
    stored = stored_by_asterisk(encoded.lines)
    assert stored["SMALL"] == "ok"
    assert 8000 < len(stored["BIG"]) < 8191


def test_shortening_never_splits_an_escape() -> None:
    encoded = wire.encode_answer({"V": ",\\" * 5000}, max_line_bytes=300)
    value = stored_by_asterisk(encoded.lines)["V"]
    assert (",\\" * 5000).startswith(value)
    assert wire.line_bytes(encoded.lines[0]) <= 300


@pytest.mark.parametrize("name", ["", "1ABC", "A B", "A=B", "A,B", 'A"', "CDR(userfield)", "A\n"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid channel variable name"):
        wire.encode_answer({name: "x"})


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
values = st.text(st.characters(codec="utf-8"), max_size=60)  # utf-8: no lone surrogates


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(names, values, max_size=12))
def test_any_answer_round_trips_through_asterisk_parsing(answer: dict[str, str]) -> None:
    encoded = wire.encode_answer(answer)
    assert stored_by_asterisk(encoded.lines) == {k: wire.clean_value(v) for k, v in answer.items()}
    assert encoded.truncated == ()


# --- the sim's port of res_agi.c parse_args --------------------------------------------------


@pytest.mark.parametrize(
    ("line", "argv"),
    [
        ("EXEC MSet A2=x B2=y", ["EXEC", "MSet", "A2=x", "B2=y"]),
        ('SET VARIABLE X ""', ["SET", "VARIABLE", "X", ""]),
        ('SET VARIABLE X "a \\"b\\" c"', ["SET", "VARIABLE", "X", 'a "b" c']),
        ("VERBOSE a\\ b\t 1", ["VERBOSE", "a b", "1"]),
        ('EXEC MSet "A=1"x"B=2"', ["EXEC", "MSet", "A=1xB=2"]),
        ("GET  VARIABLE   X", ["GET", "VARIABLE", "X"]),
    ],
)
def test_agi_shell_split(line: str, argv: list[str]) -> None:
    assert agi_shell_split(line) == argv


def test_separate_args_ignores_delimiters_inside_brackets_and_quotes() -> None:
    assert separate_args('a=[x,y],b="c,d",e', ",", 99) == ["a=[x,y]", "b=c,d", "e"]
    assert separate_args("a,", ",", 99) == ["a", ""]
    assert separate_args("", ",", 99) == []
