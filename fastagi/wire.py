"""The FastAGI wire format: pure functions, no I/O.

Decoding follows what Asterisk's res_agi.c writes (env block, replies); encoding follows
how Asterisk 22 parses what we send (res_agi.c `parse_args`, then `EXEC`, then MSet's
`__ast_app_separate_args` in main/app.c). See /work/shared/agi/README.md and
tests/asterisk_sim.py, which implements the Asterisk side and is what the tests check
these functions against.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Final

from billing_core.errors import ErrorCode
from billing_core.percent import unquote
from fastagi.contract import VAR_RESULT
from fastagi.messages import AGIRequest

# res_agi.c reads each command with fgets() into AGI_BUF_LEN bytes: 8192 since the July 2025
# fix (asterisk/asterisk#1317, in Asterisk 22.10.1), 2048 before. fgets keeps one byte for
# the NUL, so a line may be at most 8191 bytes *including* "\n". A longer line is not
# rejected: Asterisk runs its first 8191 bytes as one command and the rest as another, and
# every reply after that is off by one.
MAX_LINE_BYTES: Final = 8191
LEGACY_MAX_LINE_BYTES: Final = 2047

# MSet parses at most 99 comma-separated arguments (AST_APP_ARG(pair)[99]); the 99th is the
# unparsed rest of the string, escapes and all. 98 pairs is the most that decode correctly.
MSET_MAX_PAIRS: Final = 98

HANGUP_LINE: Final = "HANGUP"
USAGE_END_PREFIX: Final = "520 "

# Names we are willing to put on the wire: anything else could break MSet's parsing.
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters MSet's argument splitter treats specially; a backslash makes each literal.
_MSET_SPECIAL: Final = frozenset("\\,()[]")
_MSET_ESCAPES: Final = str.maketrans({char: "\\" + char for char in _MSET_SPECIAL})
# Finds one far faster than translate() runs: most values have none.
_MSET_SPECIAL_RE: Final = re.compile("[" + re.escape("".join(sorted(_MSET_SPECIAL))) + "]")
# Values that cannot go through MSet (it removes every double quote) or a line at all.
_NOT_FOR_MSET: Final = frozenset('"\r\n')
# Bytes of `EXEC MSet "<one segment>"\n` besides the segment.
_MSET_FRAME_BYTES: Final = len('EXEC MSet ""\n')
_REPLY_RE: Final = re.compile(r"(\d{3}) result=(-?\d+)(?: \((.*)\))?(?: (.*))?")


class EnvError(ValueError):
    """The env block cannot be turned into a request; `code` is the E_* code to answer with."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail


# --- env block -------------------------------------------------------------------------------


def parse_env_line(line: str) -> tuple[str, str]:
    """`agi_name: value` -> (name, value). The value may be empty or contain ': '."""
    name, sep, value = line.partition(": ")
    if not sep or not name or name != name.strip():
        raise _malformed_env_line(0, line)
    return name, value


def parse_env_block(lines: Iterable[str]) -> dict[str, str]:
    """The env lines (without the terminating empty line) -> dict; a repeated name keeps the last."""
    env: dict[str, str] = {}
    for index, line in enumerate(lines, 1):  # parse_env_line inlined: it runs for every line
        name, sep, value = line.partition(": ")
        if not sep or not name or name != name.strip():
            raise _malformed_env_line(index, line)
        env[name] = value
    return env


def _malformed_env_line(index: int, line: str) -> EnvError:
    """Where and how long, never what: the detail is logged (agi_env_rejected), and a line
    can be anything the dialplan put there, a DISA `auth` (extension + PIN) included."""
    where = f"line {index}" if index else "line"
    return EnvError(ErrorCode.E_INVALID_ARGUMENT, f"malformed env {where} ({len(line)} characters)")


def split_script(network_script: str) -> tuple[str, str]:
    """`callPrepare?destination=1&prior=1` -> ("callPrepare", "destination=1&prior=1")."""
    script, _, query = network_script.partition("?")
    return script, query


def parse_query(query: str) -> dict[str, str]:
    """A URL query -> dict (last value wins, blank values kept).

    `%XX` escapes are decoded and any other `%` is literal, as over HTTP
    (billing_core/percent.py): `callerid=100%` is `100%`. A literal '+' is kept as '+':
    the dialplan builds the query from raw variables (`callerid=${CALLERID(num)}`), so
    '+74951234567' must not turn into ' 74951234567'. Asterisk's own URIENCODE writes a
    space as %20, never as '+'.
    """
    escaped = "%" in query
    pairs: dict[str, str] = {}
    for field in query.split("&"):
        if field:
            name, _, value = field.partition("=")
            if escaped:  # the usual query has nothing to unquote: no call per field
                name = unquote(name, plus_is_space=False, errors="replace")
                value = unquote(value, plus_is_space=False, errors="replace")
            pairs[name] = value
    return pairs


def arg_pairs(env: Mapping[str, str]) -> dict[str, str]:
    """The `key=value` ones among agi_arg_1..N, in order; other arguments are left in env."""
    pairs: dict[str, str] = {}
    index = 1
    while (arg := env.get(f"agi_arg_{index}")) is not None:
        key, sep, value = arg.partition("=")
        if sep and key:
            pairs[key] = value
        index += 1
    return pairs


def build_request(env: Mapping[str, str], peer_ip: str) -> AGIRequest:
    """The decoded env -> AGIRequest; raises EnvError when there is nothing to route on."""
    network_script = env.get("agi_network_script")
    if network_script is None:
        # res_agi.c leaves the line out when AGI() was given no path: agi://host
        raise EnvError(ErrorCode.E_MISSING_ARGUMENT, "no agi_network_script in the env block")
    script, query = split_script(network_script)
    if not script:
        raise EnvError(ErrorCode.E_INVALID_ARGUMENT, "empty script in agi_network_script")
    args = parse_query(query) | arg_pairs(env)
    return AGIRequest(script=script, args=args, env=dict(env), peer_ip=peer_ip)


# --- replies ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AGIReply:
    """One reply from Asterisk. `result`/`value` are set for 200 replies only."""

    code: int
    result: int | None
    value: str | None
    text: str
    lines: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.code == 200


def is_hangup(line: str) -> bool:
    """The out-of-band line Asterisk writes when the channel hangs up: never a reply."""
    return line == HANGUP_LINE


def reply_needs_more(lines: Sequence[str]) -> bool:
    """True while a `520-...` usage block has not reached its `520 End of proper usage.` line."""
    return bool(lines) and lines[0].startswith("520-") and not lines[-1].startswith(USAGE_END_PREFIX)


def parse_reply(lines: Sequence[str]) -> AGIReply:
    """A complete reply (one line, or a whole 520 block) -> AGIReply.

    A line that is not `NNN ...` (e.g. `failure`) becomes code 0, which callers treat as fatal.
    """
    if not lines:
        raise ValueError("empty reply")
    first = lines[0]
    match = _REPLY_RE.fullmatch(first)
    if match:
        code, result, value, rest = match.groups()
        return AGIReply(int(code), int(result), value, rest or "", tuple(lines))
    if len(first) >= 3 and first[:3].isdigit() and first[3:4] in (" ", "-", ""):
        return AGIReply(int(first[:3]), None, None, first[4:], tuple(lines))
    return AGIReply(0, None, None, first, tuple(lines))


# --- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncodedAnswer:
    """The command lines (without "\\n") and the names whose values had to be shortened."""

    lines: tuple[str, ...]
    truncated: tuple[str, ...]


def clean_value(value: str) -> str:
    """What can travel on a line: CR/LF become a space, NUL (ends a C string) is dropped."""
    value = value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").replace("\0", "")
    # A lone surrogate cannot be encoded; Asterisk would store the bytes verbatim anyway.
    return value.encode("utf-8", "replace").decode("utf-8")


def agi_quote(text: str) -> str:
    """One AGI argument in double quotes: parse_args takes a backslash-escaped char literally."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mset_escape(value: str) -> str:
    """Escape what MSet's splitter would act on: `,` splits, `\\` escapes, ( ) [ ] nest."""
    return value.translate(_MSET_ESCAPES) if _MSET_SPECIAL_RE.search(value) else value


def mset_line(pairs: Sequence[tuple[str, str]]) -> str:
    joined = ",".join(f"{name}={mset_escape(value)}" for name, value in pairs)
    return f"EXEC MSet {agi_quote(joined)}"


def set_variable_line(name: str, value: str) -> str:
    return f"SET VARIABLE {name} {agi_quote(value)}"


def line_bytes(line: str) -> int:
    """Bytes the line takes on the wire, "\\n" included."""
    return len(line.encode("utf-8")) + 1


def encode_answer(variables: Mapping[str, str], *, max_line_bytes: int = MAX_LINE_BYTES) -> EncodedAnswer:
    """Variables -> the fewest AGI command lines that set them.

    Values go through `EXEC MSet` (several per line); a value with a double quote or a
    line break goes through its own `SET VARIABLE`. CALLGATE_RESULT is set by the last
    line, so a session cut halfway never shows a result without the variables that go
    with it. A value too long for any line is shortened (named in `truncated`); a name
    that is not `[A-Za-z_][A-Za-z0-9_]*` raises ValueError.
    """
    segments: list[str] = []
    sizes: list[int] = []
    set_lines: list[str] = []
    truncated: list[str] = []
    for name, raw in _result_last(variables):
        if not _valid_name(name):
            raise ValueError(f"invalid channel variable name {name!r}")
        if raw.isascii() and raw.isprintable():  # the usual value: no CR, LF or NUL to clean
            value, for_mset = raw, '"' not in raw
        else:
            value, for_mset = clean_value(raw), _NOT_FOR_MSET.isdisjoint(raw)
        if for_mset:
            segment = _mset_segment(name, value)
            size = len(segment) if segment.isascii() else len(segment.encode("utf-8"))
            if _MSET_FRAME_BYTES + size > max_line_bytes:
                fitted = _fit(value, partial(_mset_single, name), max_line_bytes)
                segment = _mset_segment(name, fitted)
                size = len(segment.encode("utf-8"))
                truncated.append(name)
            segments.append(segment)
            sizes.append(size)
        else:
            fitted = _fit(value, partial(set_variable_line, name), max_line_bytes)
            set_lines.append(set_variable_line(name, fitted))
            if fitted != value:
                truncated.append(name)
    return EncodedAnswer(_ordered(set_lines, _pack_mset(segments, sizes, max_line_bytes)), tuple(truncated))


@lru_cache(maxsize=1024)  # answers reuse a handful of names
def _valid_name(name: str) -> bool:
    return _NAME_RE.fullmatch(name) is not None


def _result_last(variables: Mapping[str, str]) -> list[tuple[str, str]]:
    items = [(name, value) for name, value in variables.items() if name != VAR_RESULT]
    if VAR_RESULT in variables:
        items.append((VAR_RESULT, variables[VAR_RESULT]))
    return items


def _ordered(set_lines: list[str], mset_lines: list[str]) -> tuple[str, ...]:
    """SET VARIABLE lines first, MSet lines after (CALLGATE_RESULT is in the last MSet pair),
    unless CALLGATE_RESULT itself needed SET VARIABLE: then that line goes last."""
    result_prefix = f"SET VARIABLE {VAR_RESULT} "
    if set_lines and set_lines[-1].startswith(result_prefix):
        return (*set_lines[:-1], *mset_lines, set_lines[-1])
    return (*set_lines, *mset_lines)


def _pack_mset(segments: Sequence[str], sizes: Sequence[int], max_line_bytes: int) -> list[str]:
    """Greedy packing in order: optimal for the number of lines when order is kept.

    Works on the quoted `name=value` segments and their sizes in bytes, so that each line is
    built once; the result is the same as `mset_line` of each batch of pairs.
    """
    lines: list[str] = []
    start = 0
    size = 0  # bytes of the line for segments[start:index], "\n" included
    for index, segment_bytes in enumerate(sizes):
        if index > start and (index - start >= MSET_MAX_PAIRS or size + 1 + segment_bytes > max_line_bytes):
            lines.append(_mset_join(segments[start:index]))
            start = index
        size = size + 1 + segment_bytes if index > start else _MSET_FRAME_BYTES + segment_bytes
    if start < len(segments):
        lines.append(_mset_join(segments[start:]))
    return lines


def _mset_segment(name: str, value: str) -> str:
    """`name=value` escaped for MSet, then as agi_quote escapes (without the quotes): it
    escapes no comma, so joining the segments with "," equals agi_quote of the joined text."""
    return f"{name}={mset_escape(value)}".replace("\\", "\\\\").replace('"', '\\"')


def _mset_join(segments: Sequence[str]) -> str:
    return 'EXEC MSet "' + ",".join(segments) + '"'


def _mset_single(name: str, value: str) -> str:
    return mset_line([(name, value)])


def _fit(value: str, render: Callable[[str], str], max_line_bytes: int) -> str:
    """The longest prefix of value whose rendered line fits (binary search on its length)."""
    if line_bytes(render(value)) <= max_line_bytes:
        return value
    low, high = 0, len(value)
    while low < high:
        middle = (low + high + 1) // 2
        if line_bytes(render(value[:middle])) <= max_line_bytes:
            low = middle
        else:
            high = middle - 1
    if line_bytes(render(value[:low])) > max_line_bytes:
        raise ValueError(f"max_line_bytes={max_line_bytes} leaves no room for a value")
    return value[:low]

