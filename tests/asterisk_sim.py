"""A FastAGI client that behaves like Asterisk 22's res_agi.c, for the tests.

It writes the env block the way res_agi.c does (one write per line), then reads one command
line at a time and answers it the way Asterisk would, decoding `EXEC MSet` and `SET VARIABLE`
with ports of Asterisk's own parsers (`parse_args` in res/res_agi.c, `__ast_app_separate_args`
in main/app.c). `variables` in the result is what Asterisk would have stored on the channel.

It is stricter than Asterisk in one way: a server that sends a command before the reply to
the previous one (pipelining) makes it raise PipeliningError, since a FastAGI server that
pipelines goes off by one as soon as Asterisk writes an out-of-band HANGUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

# re-exported: tests import Asterisk's parsers from here, beside the simulator that uses them
from fastagi.asterisk_parse import agi_shell_split as agi_shell_split
from fastagi.asterisk_parse import mset_decode as mset_decode
from fastagi.asterisk_parse import separate_args as separate_args
from tests.shared_paths import transcripts_dir

Responder = Callable[[str, dict[str, str]], str]

# A responder that returns this sends nothing: Asterisk stuck in a long application.
NO_REPLY: Final = ""
AGI_BUF_LEN: Final = 8192  # res_agi.c since asterisk/asterisk#1317 (2048 before)
DEAD_OK_COMMANDS: Final = frozenset(
    {"SET VARIABLE", "GET VARIABLE", "GET FULL VARIABLE", "EXEC", "VERBOSE", "NOOP", "HANGUP",
     "CHANNEL STATUS", "DATABASE GET", "DATABASE PUT", "DATABASE DEL", "DATABASE DELTREE"}
)
REPLY_510: Final = "510 Invalid or unknown command"
REPLY_511: Final = "511 Command Not Permitted on a dead channel or intercept routine"
REPLY_520: Final = "520 Invalid command syntax.  Proper usage not available."
ENV_WRITE_PAUSE_S: Final = 0.0005


class ProtocolViolation(AssertionError):
    """The server broke a FastAGI rule; `result` is the session up to that point."""

    def __init__(self, message: str, result: AGISessionResult) -> None:
        super().__init__(message)
        self.result = result


class PipeliningError(ProtocolViolation):
    """The server sent a command before Asterisk had replied to the previous one."""


class CommandTooLongError(ProtocolViolation):
    """A command line longer than res_agi.c's buffer: Asterisk would run its tail as a second
    command and be off by one from then on."""


@dataclass
class AGISessionResult:
    variables: dict[str, str]  # what Asterisk would have stored, decoded like Asterisk does
    commands: list[str]  # command lines received from the server, without "\n"
    raw_sent: bytes  # every byte the sim sent
    raw_received: bytes  # every byte received
    closed_by_server: bool
    replies: list[str] = field(default_factory=list)  # what the sim answered, per command
    pipelined: list[str] = field(default_factory=list)  # commands that came before their turn


# Asterisk's parsers live in fastagi.asterisk_parse (callgate's own probe client uses them too).


def reply_value(reply: str) -> str | None:
    """`200 result=1 (v)` -> "v"; `200 result=0` -> None (a GET VARIABLE read-back)."""
    match = re.fullmatch(r"200 result=1 \((.*)\)", reply)
    return match.group(1) if match else None


# --- the Asterisk side of one channel --------------------------------------------------------


@dataclass
class ChannelSim:
    """Answers AGI commands like res_agi.c for one channel; `dead` after a hangup."""

    variables: dict[str, str] = field(default_factory=dict)
    dead: bool = False
    astdb: dict[tuple[str, str], str] = field(default_factory=dict)

    def respond(self, command: str) -> str:
        if command[:7].lower() == "failure":
            return NO_REPLY
        argv = agi_shell_split(command)
        name = _command_name(argv)
        if name is None:
            return REPLY_510
        if self.dead and name not in DEAD_OK_COMMANDS:
            return REPLY_511
        return self._handlers()[name](argv)

    def _handlers(self) -> dict[str, Callable[[list[str]], str]]:
        return {
            "SET VARIABLE": self._set_variable,
            "GET VARIABLE": self._get_variable,
            "GET FULL VARIABLE": self._get_full_variable,
            "EXEC": self._exec,
            "VERBOSE": lambda argv: "200 result=1" if len(argv) >= 2 else REPLY_520,
            "NOOP": lambda argv: "200 result=0",  # res_agi.c handle_noop
            "HANGUP": self._hangup,
            "CHANNEL STATUS": lambda argv: "200 result=6",
            "DATABASE GET": self._database_get,
            "DATABASE PUT": self._database_put,
            "DATABASE DEL": lambda argv: "200 result=1",
            "DATABASE DELTREE": lambda argv: "200 result=1",
        }

    def _set_variable(self, argv: list[str]) -> str:
        if len(argv) != 4:
            return REPLY_520
        self.variables[argv[2]] = argv[3]
        return "200 result=1"

    def _get_variable(self, argv: list[str]) -> str:
        if len(argv) != 3:
            return REPLY_520
        value = self.variables.get(argv[2])
        return "200 result=0" if value is None else f"200 result=1 ({value})"

    def _get_full_variable(self, argv: list[str]) -> str:
        if len(argv) not in (3, 4):
            return REPLY_520
        expanded = re.sub(r"\$\{([^}]*)\}", lambda m: self.variables.get(m.group(1), ""), argv[2])
        return f"200 result=1 ({expanded})"

    def _exec(self, argv: list[str]) -> str:
        if len(argv) < 2:
            return REPLY_520
        app, data = argv[1].lower(), argv[2] if len(argv) > 2 else ""
        if app == "mset":
            self.variables.update(mset_decode(data))
        elif app == "set":
            name, sep, value = data.partition("=")
            if sep:
                self.variables[name] = value
        elif app not in ("noop", "verbose", "wait"):
            return "200 result=-2"  # application not found
        return "200 result=0"

    def _hangup(self, argv: list[str]) -> str:
        self.dead = True
        return "200 result=1"

    def _database_get(self, argv: list[str]) -> str:
        if len(argv) != 4:
            return REPLY_520
        value = self.astdb.get((argv[2], argv[3]))
        return "200 result=0" if value is None else f"200 result=1 ({value})"

    def _database_put(self, argv: list[str]) -> str:
        if len(argv) != 5:
            return REPLY_520
        self.astdb[(argv[2], argv[3])] = argv[4]
        return "200 result=1"


_COMMANDS: Final = (
    ("GET", "FULL", "VARIABLE"), ("SET", "VARIABLE"), ("GET", "VARIABLE"), ("CHANNEL", "STATUS"),
    ("DATABASE", "GET"), ("DATABASE", "PUT"), ("DATABASE", "DEL"), ("DATABASE", "DELTREE"),
    ("EXEC",), ("VERBOSE",), ("NOOP",), ("HANGUP",),
)


def _command_name(argv: list[str]) -> str | None:
    upper = tuple(word.upper() for word in argv)
    for words in _COMMANDS:
        if upper[: len(words)] == words:
            return " ".join(words)
    return None


def default_responder(command: str, variables: dict[str, str]) -> str:
    """Asterisk's reply to one command on a live channel; updates `variables` like Asterisk."""
    channel = ChannelSim(variables=variables)
    return channel.respond(command)


# --- env block -------------------------------------------------------------------------------


def build_env(
    script: str,
    *,
    query: str = "",
    args: Sequence[str] = (),
    uniqueid: str = "1795416507.1",
    callerid: str = "unknown",
    channel: str = "PJSIP/10000-00000001",
    host: str = "127.0.0.1",
    port: int = 4573,
    extra: Mapping[str, str] | None = None,
) -> list[str]:
    """The env lines in res_agi.c's order, without the terminating empty line.

    As res_agi.c does, agi_network_script is left out when the script is empty. `extra`
    replaces the value of a name already present, or is added before the agi_arg_N lines.
    """
    full = f"{script}?{query}" if query else script
    env: dict[str, str] = {"agi_network": "yes"}
    if full:
        env["agi_network_script"] = full
    env |= {
        "agi_request": f"agi://{host}:{port}/{full}",
        "agi_channel": channel,
        "agi_language": "en",
        "agi_type": channel.split("/", 1)[0],
        "agi_uniqueid": uniqueid,
        "agi_version": "22.10.1",
        "agi_callerid": callerid,
        "agi_calleridname": "unknown",
        "agi_callingpres": "67" if callerid == "unknown" else "0",
        "agi_callingani2": "0",
        "agi_callington": "0",
        "agi_callingtns": "0",
        "agi_dnid": "unknown",
        "agi_rdnis": "unknown",
        "agi_context": "callgate",
        "agi_extension": "s",
        "agi_priority": "1",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "139765145974464",
    }
    env |= dict(extra or {})
    lines = [f"{name}: {value}" for name, value in env.items()]
    return lines + [f"agi_arg_{index}: {arg}" for index, arg in enumerate(args, 1)]


# --- the session -----------------------------------------------------------------------------


class _Inbox:
    """Everything the server sends, pumped in the background so early bytes are seen at once."""

    def __init__(self, reader: asyncio.StreamReader, agi_buf_len: int) -> None:
        self._reader = reader
        self._buffer = bytearray()
        self._max_line = agi_buf_len - 1
        self._arrived = asyncio.Event()
        self.raw = bytearray()
        self.eof = False
        self.last_was_cut = False

    async def pump(self) -> None:
        try:
            while chunk := await self._reader.read(65536):
                self._buffer += chunk
                self.raw += chunk
                self._arrived.set()
        except OSError:
            pass
        finally:
            self.eof = True
            self._arrived.set()

    def pending(self) -> bool:
        return bool(self._buffer)

    async def readline(self) -> str | None:
        """One command like res_agi.c's fgets loop: at most agi_buf_len-1 bytes, "\\n" stripped."""
        while True:
            newline = self._buffer.find(b"\n", 0, self._max_line)
            if newline >= 0 or len(self._buffer) >= self._max_line:
                size = newline + 1 if newline >= 0 else self._max_line
                line = bytes(self._buffer[:size])
                del self._buffer[:size]
                self.last_was_cut = newline < 0
                return line.removesuffix(b"\n").decode("utf-8", "surrogateescape")
            if self.eof:
                # fgets hands back a last line without "\n" too, and Asterisk runs it.
                line, self._buffer = bytes(self._buffer), bytearray()
                return line.decode("utf-8", "surrogateescape") if line else None
            self._arrived.clear()
            await self._arrived.wait()


@dataclass
class _Options:
    responder: Responder | None
    hangup_before_reply: int | None
    hangup_at_end: bool
    allow_pipelining: bool
    pipeline_grace_s: float
    agi_buf_len: int
    # written after the env block, before any command is read (b"HANGUP\n": the caller hung
    # up while the server decided, as in transcript 017); a HANGUP marks the channel dead
    early: tuple[bytes, ...] = ()
    dead_after_env: bool = False  # the env block's last write already ended in HANGUP


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, options: _Options) -> None:
        self.reader, self.writer, self.options = reader, writer, options
        self.channel = ChannelSim(dead=options.dead_after_env)
        self.inbox = _Inbox(reader, options.agi_buf_len)
        self.sent = bytearray()
        self.commands: list[str] = []
        self.replies: list[str] = []
        self.pipelined: list[str] = []
        self.closed_by_server = False

    def result(self) -> AGISessionResult:
        return AGISessionResult(
            variables=dict(self.channel.variables),
            commands=list(self.commands),
            raw_sent=bytes(self.sent),
            raw_received=bytes(self.inbox.raw),
            closed_by_server=self.closed_by_server,
            replies=list(self.replies),
            pipelined=list(self.pipelined),
        )

    async def send(self, data: bytes) -> bool:
        """Write and drain; False when the server has gone (Asterisk ignores that error)."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            return False
        self.sent += data
        return True

    async def send_env(self, chunks: Sequence[bytes], pause_s: float) -> None:
        for chunk in chunks:
            if not await self.send(chunk):
                return
            if pause_s:
                await asyncio.sleep(pause_s)

    async def send_early(self) -> None:
        for chunk in self.options.early:
            if chunk == b"HANGUP\n":
                self.channel.dead = True
            if not await self.send(chunk):
                return

    async def converse(self) -> None:
        """Read a command, reply, repeat, until the server closes (or sends `failure`)."""
        while (command := await self.inbox.readline()) is not None:
            self.commands.append(command)
            if self.inbox.last_was_cut:
                message = f"command longer than {self.options.agi_buf_len - 1} bytes: {command[:60]!r}..."
                raise CommandTooLongError(message, self.result())
            await self._check_pipelining(command)
            if command[:7].lower() == "failure":
                break  # AGISTATUS=FAILURE: Asterisk stops reading and hangs up the session
            await self._reply(command, len(self.commands))
        else:
            self.closed_by_server = True
        if self.options.hangup_at_end:
            await self.send(b"HANGUP\n")

    async def _check_pipelining(self, command: str) -> None:
        await asyncio.sleep(self.options.pipeline_grace_s)  # let an early next command arrive
        if not self.inbox.pending():
            return
        self.pipelined.append(command)
        if not self.options.allow_pipelining:
            message = f"server sent another command before the reply to {command!r}"
            raise PipeliningError(message, self.result())

    async def _reply(self, command: str, number: int) -> None:
        if number == self.options.hangup_before_reply:
            self.channel.dead = True
            await self.send(b"HANGUP\n")
        if self.options.responder is None:
            reply = self.channel.respond(command)
        else:
            reply = self.options.responder(command, self.channel.variables)
        self.replies.append(reply)
        if reply != NO_REPLY:
            await self.send(reply.removesuffix("\n").encode() + b"\n")


async def _run(
    host: str,
    port: int,
    env_chunks: Sequence[bytes],
    options: _Options,
    *,
    env_pause_s: float,
    disconnect: bool,
    timeout_s: float,
    local_addr: str | None = None,
) -> AGISessionResult:
    source = (local_addr, 0) if local_addr else None
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=source), timeout_s)
    sock = writer.get_extra_info("socket")
    if sock is not None:  # each env write its own segment, like Asterisk's one write per line
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    session = _Session(reader, writer, options)
    pump = asyncio.create_task(session.inbox.pump())
    try:
        async with asyncio.timeout(timeout_s):
            await session.send_env(env_chunks, env_pause_s)
            await session.send_early()
            if not disconnect:
                await session.converse()
    finally:
        pump.cancel()
        writer.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await pump
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    return session.result()


async def run_agi_session(
    host: str,
    port: int,
    script: str,
    *,
    query: str = "",
    args: Sequence[str] = (),
    uniqueid: str = "1795416507.1",
    callerid: str = "unknown",
    extra_env: Mapping[str, str] | None = None,
    env_lines: Sequence[str] | None = None,
    split_env: bool = True,
    hangup_before_reply: int | None = None,
    hangup_after_env: bool = False,
    hangup_at_end: bool = True,
    disconnect_after_env_lines: int | None = None,
    responder: Responder | None = None,
    timeout_s: float = 5.0,
    allow_pipelining: bool = False,
    pipeline_grace_s: float = 0.001,
    agi_buf_len: int = AGI_BUF_LEN,
    local_addr: str | None = None,
) -> AGISessionResult:
    """One FastAGI session against host:port, played like Asterisk 22.

    `local_addr` binds the client socket (e.g. 127.0.0.2) to play another Asterisk host.
    `hangup_after_env` plays a caller who hangs up while the server decides: `HANGUP\n` follows
    the env block before any command, the channel is dead from then on (dead-channel replies),
    and after the server closes Asterisk 22 writes a second `HANGUP\n` (transcript 017).

    `responder(command, variables)` replaces the Asterisk behaviour: it returns the reply
    (one line, or several joined by "\\n"), or NO_REPLY ("") to stay silent. It may update
    `variables`. Raises PipeliningError if the server pipelines (unless allow_pipelining),
    CommandTooLongError for a line over agi_buf_len - 1 bytes, TimeoutError if the whole
    session takes longer than timeout_s.
    """
    lines = list(env_lines) if env_lines is not None else build_env(
        script, query=query, args=args, uniqueid=uniqueid, callerid=callerid, host=host, port=port,
        extra=extra_env,
    )
    disconnect = disconnect_after_env_lines is not None
    if disconnect:
        lines = lines[:disconnect_after_env_lines]
    chunks = [f"{line}\n".encode() for line in lines] + ([] if disconnect else [b"\n"])
    if not split_env:
        chunks = [b"".join(chunks)]
    if hangup_after_env and not disconnect:
        # In the env block's last write, so it is on the wire before the server can answer:
        # the caller hung up while the decision ran (017), deterministically before the first command.
        chunks[-1] += b"HANGUP\n"
    options = _Options(responder, hangup_before_reply, hangup_at_end, allow_pipelining,
                       pipeline_grace_s, agi_buf_len, dead_after_env=hangup_after_env and not disconnect)
    return await _run(host, port, chunks, options, env_pause_s=ENV_WRITE_PAUSE_S if split_env else 0.0,
                      disconnect=disconnect, timeout_s=timeout_s, local_addr=local_addr)


# --- transcripts -----------------------------------------------------------------------------


class TranscriptDir(type(Path())):  # type: ignore[misc]
    """The transcripts directory; iterating it yields its *.json files in name order."""

    def __iter__(self) -> Iterator[Path]:
        return iter(sorted(Path(path) for path in self.glob("*.json")))


def transcript_paths() -> TranscriptDir:
    """The real Asterisk transcripts (the repository's copy of ../shared/agi/transcripts)."""
    return TranscriptDir(transcripts_dir())


def load_transcript(path: Path) -> dict[str, Any]:
    """A NNN-*.json session transcript (the MSet quoting file is a list and is refused)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "exchange" not in data:
        raise ValueError(f"{path} is not a session transcript")
    return data


def session_transcripts() -> list[Path]:
    """Every transcript of one FastAGI session (those with an `exchange`)."""
    return [path for path in transcript_paths() if isinstance(json.loads(path.read_text()), dict)]


def env_chunks(transcript: Mapping[str, Any]) -> list[bytes]:
    """The env block as recorded: the Asterisk-side chunks up to the one ending in the empty line.

    What Asterisk wrote after it and before the server's first command (017: the caller hung
    up, a lone `HANGUP\n`) is not env: see early_chunks."""
    chunks: list[bytes] = []
    for entry in transcript["exchange"]:
        if entry["from"] != "asterisk":
            break
        chunks.append(entry["bytes"].encode("utf-8"))
        if b"".join(chunks).endswith(b"\n\n"):
            break
    return chunks


def early_chunks(transcript: Mapping[str, Any]) -> list[bytes]:
    """What Asterisk wrote after the env block and before the server's first command."""
    skip = len(env_chunks(transcript))
    chunks: list[bytes] = []
    for entry in transcript["exchange"][skip:]:
        if entry["from"] != "asterisk":
            break
        if entry["bytes"]:
            chunks.append(entry["bytes"].encode("utf-8"))
    return chunks


def transcript_env(transcript: Mapping[str, Any]) -> dict[str, str]:
    text = b"".join(env_chunks(transcript)).decode("utf-8")
    return dict(line.split(": ", 1) for line in text.split("\n") if line)


async def replay_transcript(host: str, port: int, path: Path, *, timeout_s: float = 5.0) -> AGISessionResult:
    """Send a transcript's env block byte for byte in its recorded chunks, then what Asterisk
    wrote before the server's first command (017's out-of-band `HANGUP`: the channel is dead
    from then on), then act as Asterisk; after the server closes, the second `HANGUP`."""
    transcript = load_transcript(path)
    early = early_chunks(transcript)
    options = _Options(None, None, True, False, 0.001, AGI_BUF_LEN, early=tuple(early))
    return await _run(host, port, env_chunks(transcript), options, env_pause_s=0.002, disconnect=False,
                      timeout_s=timeout_s)
