"""An asyncio FastAGI server: one session per connection, one command in flight at a time.

A session reads the env block, asks the dispatcher for an answer, sends the answer as AGI
commands one at a time (each waits for its reply) and closes the socket, which ends the
AGI() application in the dialplan. Every step has a time limit: Asterisk itself waits for
the next command forever, so a stuck session would hold the call.

The server routes nothing and checks no permissions: the dispatcher gets the peer's IP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import structlog

from billing_core.errors import ErrorCode
from fastagi import wire
from fastagi.contract import RESULT_DECLINED, VAR_ANSWER, VAR_ERROR, VAR_RESULT
from fastagi.messages import AGIAnswer, AGIDispatcher, AGIRequest

log = structlog.get_logger(__name__)

_BACKLOG: Final = 1024  # Asterisk opens one connection per AGI() call; bursts are normal
_READ_CHUNK: Final = 65536
_MAX_REPLY_BYTES: Final = 65536
_SECRET_MARKERS: Final = ("PASSWORD", "PIN", "AUTH")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    env_timeout_s: float = 5.0
    reply_timeout_s: float = 5.0
    dispatch_timeout_s: float = 3.0
    max_env_bytes: int = 65536
    max_line_bytes: int = wire.MAX_LINE_BYTES


class _PeerGone(Exception):
    """Asterisk closed or reset the connection."""


class _LineTooLong(Exception):
    """A line longer than allowed; it has been skipped up to its "\\n"."""


def declined(code: ErrorCode) -> dict[str, str]:
    """The answer for a session we cannot serve: the dialplan sees Declined and why."""
    return {VAR_RESULT: RESULT_DECLINED, VAR_ERROR: code.value, VAR_ANSWER: f"{RESULT_DECLINED} {code.value}"}


def redacted(values: Mapping[str, str]) -> dict[str, str]:
    """Values safe to log: those of *PASSWORD*, *PIN* and *AUTH* keys are masked."""
    return {key: "***" if any(m in key.upper() for m in _SECRET_MARKERS) else value for key, value in values.items()}


def peer_ip_of(writer: asyncio.StreamWriter) -> str:
    """The peer's address; an IPv4-mapped IPv6 address is given as plain IPv4 for allow-lists."""
    peer = writer.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer:
        return ""
    host = str(peer[0])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return host


def _well_formed(answer: object) -> bool:
    """An AGIAnswer of str -> str with CALLGATE_RESULT: anything else fails closed (Declined)."""
    if not isinstance(answer, AGIAnswer) or not isinstance(answer.variables, dict):
        return False
    items: Iterable[tuple[object, object]] = answer.variables.items()  # typed, but not checked at run time
    return VAR_RESULT in answer.variables and all(isinstance(x, str) for item in items for x in item)


class _LineReader:
    """Splits the byte stream into "\\n"-terminated lines, never holding more than a line's limit."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = bytearray()

    async def readline(self, max_bytes: int) -> bytes | None:
        """The next line without "\\n" (and without a "\\r" before it); None at EOF."""
        too_long = False
        while (newline := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > max_bytes:
                too_long = True
                self._buffer.clear()  # keep skipping until the line ends
            chunk = await self._reader.read(_READ_CHUNK)
            if not chunk:
                return None
            self._buffer += chunk
        line = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        if too_long or newline + 1 > max_bytes:
            raise _LineTooLong
        return line.removesuffix(b"\r")


@dataclass(slots=True)
class _EnvBlock:
    lines: list[str]
    oversized: bool


class _Session:
    """One FastAGI connection, from the env block to the close."""

    def __init__(self, config: ServerConfig, dispatch: AGIDispatcher, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self._config = config
        self._dispatch = dispatch
        self._lines = _LineReader(reader)
        self._writer = writer
        self.context: dict[str, object] = {"peer_ip": peer_ip_of(writer)}
        self.commands_sent = 0
        self.hangups_seen = 0

    @property
    def peer_ip(self) -> str:
        return str(self.context["peer_ip"])

    async def read_env(self) -> _EnvBlock | None:
        """The env block, or None when it did not come complete within env_timeout_s."""
        try:
            async with asyncio.timeout(self._config.env_timeout_s):
                return await self._collect_env()
        except TimeoutError:
            log.info("agi_env_timeout", **self.context)
            return None

    async def _collect_env(self) -> _EnvBlock:
        # An oversized block is still read to its end, so that the Declined answer is
        # written to an Asterisk that is listening for commands again.
        lines: list[str] = []
        total = 0
        oversized = False
        while True:
            try:
                raw = await self._lines.readline(self._config.max_env_bytes)
            except _LineTooLong:
                oversized = True
                continue
            if raw is None:
                raise _PeerGone("EOF inside the env block")
            if not raw:
                return _EnvBlock(lines, oversized)
            total += len(raw) + 1
            oversized = oversized or total > self._config.max_env_bytes
            if not oversized:
                lines.append(raw.decode("utf-8", "replace"))

    async def answer(self, env: _EnvBlock) -> dict[str, str]:
        """The variables to set: the dispatcher's, or Declined with the reason."""
        if env.oversized:
            log.warning("agi_env_rejected", reason="oversized", **self.context)
            return declined(ErrorCode.E_INVALID_ARGUMENT)
        try:
            request = wire.build_request(wire.parse_env_block(env.lines), self.peer_ip)
        except wire.EnvError as error:
            log.warning("agi_env_rejected", reason=error.detail, code=error.code.value, **self.context)
            return declined(error.code)
        self.context |= {"script": request.script, "uniqueid": request.uniqueid}
        log.debug("agi_request", args=redacted(request.args), **self.context)
        return await self._dispatch_bounded(request)

    async def _dispatch_bounded(self, request: AGIRequest) -> dict[str, str]:
        try:
            async with asyncio.timeout(self._config.dispatch_timeout_s):
                answer = await self._dispatch(request)
        except TimeoutError:
            # The dispatcher waits on the backend (database, cache): it did not answer in time.
            log.error("agi_dispatch_timeout", timeout_s=self._config.dispatch_timeout_s, **self.context)
            return declined(ErrorCode.E_SQL_ERROR)
        except Exception:
            log.exception("agi_dispatch_failed", **self.context)
            return declined(ErrorCode.E_LUA_EXCEPTION)
        if not _well_formed(answer):
            log.error("agi_answer_invalid", answer_type=type(answer).__name__, **self.context)
            return declined(ErrorCode.E_LUA_EXCEPTION)
        return dict(answer.variables)

    def encode(self, variables: dict[str, str]) -> wire.EncodedAnswer:
        try:
            encoded = wire.encode_answer(variables, max_line_bytes=self._config.max_line_bytes)
        except ValueError as error:
            log.error("agi_answer_unencodable", error=str(error), **self.context)
            variables = declined(ErrorCode.E_LUA_EXCEPTION)
            encoded = wire.encode_answer(variables, max_line_bytes=self._config.max_line_bytes)
        if encoded.truncated:
            log.warning("agi_answer_truncated", names=list(encoded.truncated), **self.context)
        self.context["result"] = variables.get(VAR_RESULT, "")
        log.debug("agi_answer", variables=redacted(variables), **self.context)
        return encoded

    async def send(self, lines: Sequence[str]) -> bool:
        """Each command, then its reply, in turn; False when Asterisk refused one."""
        for line in lines:
            reply = await self._exchange(line)
            if not reply.ok:
                log.warning("agi_command_refused", code=reply.code, reply=reply.text[:200],
                            command_number=self.commands_sent, **self.context)
                return False
        return True

    async def _exchange(self, line: str) -> wire.AGIReply:
        async with asyncio.timeout(self._config.reply_timeout_s):
            self._writer.write(line.encode("utf-8") + b"\n")
            self.commands_sent += 1
            await self._writer.drain()
            return await self._read_reply()

    async def _read_reply(self) -> wire.AGIReply:
        lines: list[str] = []
        while not lines or wire.reply_needs_more(lines):
            raw = await self._lines.readline(_MAX_REPLY_BYTES)
            if raw is None:
                raise _PeerGone("EOF while waiting for a reply")
            text = raw.decode("utf-8", "replace")
            if not lines and wire.is_hangup(text):
                # Out of band: the channel hung up. The reply to our command still follows.
                self.hangups_seen += 1
                continue
            lines.append(text)
        return wire.parse_reply(lines)

    async def close(self, *, abort: bool) -> None:
        """Close the socket; bounded, since a peer that stops reading would hold a graceful close."""
        if abort:
            self._writer.transport.abort()
            return
        self._writer.close()
        try:
            async with asyncio.timeout(self._config.reply_timeout_s):
                await self._writer.wait_closed()
        except (TimeoutError, OSError):
            self._writer.transport.abort()


class FastAGIServer:
    """Owns the listening socket and every session task: wait_closed() returns when all are over.

    close() stops listening and drops sessions still waiting for their env block; sessions
    already dispatched finish (a callFinish is a CDR), each bounded by its time limits.
    """

    def __init__(self, dispatch: AGIDispatcher, config: ServerConfig | None = None) -> None:
        self._dispatch = dispatch
        self._config = config or ServerConfig()
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[object]] = set()
        self._idle: set[asyncio.Task[object]] = set()
        self._closing = False

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> asyncio.Server:
        self._server = await asyncio.start_server(
            self._handle, host, port, reuse_port=reuse_port, backlog=_BACKLOG
        )
        log.info("agi_server_listening", addresses=[s.getsockname() for s in self._server.sockets])
        return self._server

    @property
    def server(self) -> asyncio.Server:
        if self._server is None:
            raise RuntimeError("FastAGIServer.start() has not been called")
        return self._server

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful with port=0)."""
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in self._idle:
            task.cancel()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        while self._sessions:
            await asyncio.gather(*self._sessions, return_exceptions=True)

    async def __aenter__(self) -> FastAGIServer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.close()
        await self.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:  # accepted just before close(): its task started after wait_closed() looked
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self._idle.add(task)
        try:
            await self._serve(_Session(self._config, self._dispatch, reader, writer), task)
        finally:
            self._sessions.discard(task)
            self._idle.discard(task)

    async def _serve(self, session: _Session, task: asyncio.Task[object]) -> None:
        started = time.monotonic()
        outcome = "error"
        try:
            outcome = await self._converse(session, task)
        except _PeerGone as gone:
            outcome = "peer_gone"
            log.info("agi_peer_gone", detail=str(gone), **session.context)
        except ConnectionError as error:
            outcome = "peer_gone"
            log.info("agi_peer_gone", detail=type(error).__name__, **session.context)
        except TimeoutError:
            outcome = "reply_timeout"
            log.warning("agi_reply_timeout", timeout_s=self._config.reply_timeout_s, **session.context)
        except _LineTooLong:
            outcome = "protocol_error"
            log.warning("agi_reply_too_long", **session.context)
        except asyncio.CancelledError:
            outcome = "cancelled"
            await session.close(abort=True)
            log.info("agi_session_cancelled", **session.context)
            raise
        except Exception:
            log.exception("agi_session_failed", **session.context)
        finally:
            self._idle.discard(task)  # closing must not be cut short by close() cancelling idlers
            if outcome != "cancelled":
                await session.close(abort=False)
                log.info("agi_session_done", outcome=outcome, commands=session.commands_sent,
                         hangups=session.hangups_seen,
                         duration_ms=round((time.monotonic() - started) * 1000, 1), **session.context)

    async def _converse(self, session: _Session, task: asyncio.Task[object]) -> str:
        env = await session.read_env()
        if env is None:
            return "env_timeout"
        self._idle.discard(task)  # from here on close() lets the session finish
        encoded = session.encode(await session.answer(env))
        return "answered" if await session.send(encoded.lines) else "refused"


async def start_server(
    dispatch: AGIDispatcher,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    env_timeout_s: float = 5.0,
    reply_timeout_s: float = 5.0,
    dispatch_timeout_s: float = 3.0,
    max_env_bytes: int = 65536,
    max_line_bytes: int = wire.MAX_LINE_BYTES,
) -> asyncio.Server:
    """Listen for FastAGI on host:port and serve every connection with `dispatch`.

    The returned asyncio.Server's close() stops listening; sessions already open end within
    their time limits. Use FastAGIServer directly to also drop idle sessions on close().
    Set max_line_bytes=wire.LEGACY_MAX_LINE_BYTES for Asterisk releases older than the 8 KiB
    command buffer.
    """
    config = ServerConfig(env_timeout_s, reply_timeout_s, dispatch_timeout_s, max_env_bytes, max_line_bytes)
    return await FastAGIServer(dispatch, config).start(host, port, reuse_port=reuse_port)


__all__ = ["FastAGIServer", "ServerConfig", "declined", "peer_ip_of", "redacted", "start_server"]
