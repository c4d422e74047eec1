"""One FastAGI connection: the asyncio.Protocol that runs a session (overview: fastagi.server).

A state machine driven by the transport's callbacks, with one task only while the dispatcher
works and timer handles for the time limits: streams, a task per connection and a timeout
context per step cost several times the CPU of the session itself. Apart from the listener
(fastagi.server) to read in one sitting; its base class (fastagi.session_dispatch) decides
the answer, fastagi.session_util holds the helpers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Final, Protocol, cast

import structlog

from billing_core.errors import ErrorCode
from fastagi import metrics, wire
from fastagi.config import ServerConfig
from fastagi.messages import AGIDispatcher, AGIRequest
from fastagi.session_dispatch import _Dispatching
from fastagi.session_util import declined, enabled, env_end, has_hangup_line, peer_ip_of, redacted


class SessionHost(Protocol):
    """What a session needs of the server that accepted it (fastagi.server.FastAGIServer):
    its limits and dispatcher, whether it is closing, its set of live sessions, and where
    to report the session's end and an answer that never reached its channel."""

    _config: ServerConfig
    _dispatch: AGIDispatcher
    _closing: bool
    _sessions: set[_Session]

    def _session_over(self, session: _Session) -> None: ...

    def _undelivered(self, request: AGIRequest, variables: dict[str, str], context: dict[str, object]) -> None: ...

log = structlog.get_logger(__name__)

_MAX_REPLY_BYTES: Final = 65536
_WHOLE_ENV_BYTES: Final = 16384  # an env block up to this size is decoded at once (they are ~1 KiB)

# Where a session is. Plain ints: they are compared on every callback.
_ENV: Final = 0  # reading the env block; close() drops the session
_DISPATCH: Final = 1  # the dispatcher works; bytes that arrive wait in the buffer
_WRITE: Final = 2  # the next command waits for the transport's write buffer to drain
_REPLY: Final = 3  # a command is out; its reply is awaited
_DONE: Final = 4  # closing: nothing more is read or sent


class _Session(_Dispatching, asyncio.Protocol):
    """One FastAGI connection, from the env block to the close.

    Bytes are split into "\\n"-terminated lines as they come, never holding more than a
    line's limit: a longer line is skipped to its end and then reported as too long. A
    small env block is taken whole; what comes while no reply is awaited waits, up to a
    reply's limit, with reading paused beyond it.
    """

    __slots__ = (  # and _Dispatching's
        "_buffer", "_commands", "_config", "_debug", "_delivered", "_dispatch", "_env", "_env_bytes", "_eof",
        "_finished", "_log", "_loop", "_lost", "_lost_exc", "_outcome", "_oversized", "_reading_paused", "_reply",
        "_reply_bytes", "_request", "_server", "_skipping", "_started", "_state", "_task", "_timer", "_transport",
        "_writing_paused", "commands_sent", "context", "hangups_seen", "hung_up",
    )

    _transport: asyncio.Transport
    _log: Any

    def __init__(self, server: SessionHost, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self._config = server._config
        self._dispatch = server._dispatch
        self._state = _ENV
        self._started = time.monotonic()
        self._buffer = b""  # the start of a line (or, while dispatching, what came meanwhile)
        self._skipping = False  # inside a line too long to hold
        self._env: list[str] = []
        self._env_bytes = 0
        self._oversized = False
        self._debug = False
        self._task: asyncio.Task[None] | None = None
        self._overdue = False
        self._timer: asyncio.TimerHandle | None = None
        self._commands: Sequence[str] = ()
        self._reply: list[str] = []
        self._reply_bytes = 0
        self._reading_paused = False
        self._writing_paused = False
        self._eof = False
        self._lost = False
        self._lost_exc: Exception | None = None
        self._finished = False
        self._outcome = "error"
        self._error = ""  # the CALLGATE_ERROR sent, for the metrics
        self.context: dict[str, object] = {}
        self.commands_sent = 0
        self.hangups_seen = 0
        # The answer reached a live channel only if no HANGUP came before its last reply
        # (Asterisk still answers 200 to EXEC on a dead channel: only the HANGUP line tells).
        self.hung_up = False
        self._delivered = False
        self._request: AGIRequest | None = None
        self._sent: dict[str, str] | None = None  # the answer's variables

    @property
    def peer_ip(self) -> str:
        return str(self.context["peer_ip"])

    @property
    def idle(self) -> bool:
        """Still waiting for its env block: close() drops it."""
        return self._state == _ENV

    # --- transport callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        if self._server._closing:  # accepted just before close(): never a session
            self._state = _DONE
            self._finished = True
            self._transport.abort()
            return
        self._server._sessions.add(self)
        # Once per session: unless structlog caches loggers, the module's lazy proxy assembles
        # a new one on every call.
        self._log = log.bind()
        self.context["peer_ip"] = peer_ip_of(transport)
        self._timer = self._loop.call_later(self._config.env_timeout_s, self._env_timeout)

    def data_received(self, data: bytes) -> None:
        if self._state == _DONE:
            return
        buffer = self._buffer + data if self._buffer else data
        if self._state != _ENV and self._state != _REPLY:
            self._hold(buffer)
            return
        self._buffer = b""
        try:
            if (self._state == _ENV and not (self._env_bytes or self._oversized or self._skipping)
                    and len(buffer) <= min(_WHOLE_ENV_BYTES, self._config.max_env_bytes)):
                self._take_whole_env(buffer)
            else:
                self._take_lines(buffer)
        except Exception:
            self._fail()

    def eof_received(self) -> bool:
        if self._state != _DISPATCH and self._state != _WRITE:
            return False  # the transport closes itself; connection_lost() ends the session
        # Half closed while the answer is on its way: it still goes out, and a reply that
        # came before the EOF still counts, as with any reply held meanwhile.
        self._eof = True
        return True

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._state == _WRITE:
            try:
                self._write_command()
                self._unless_half_closed()
            except Exception:
                self._fail()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._lost_exc = exc
        if self._finished:
            return
        if self._state == _DONE:
            self._finish()
        elif self._state != _DISPATCH:
            self._peer_lost()
        # else: the dispatch goes on (a callFinish is a CDR); the session ends with it

    # --- the env block --------------------------------------------------------------------

    def _take_whole_env(self, buffer: bytes) -> None:
        """The usual case: no line taken yet and the block, if whole, too small to be oversized
        or to hold a line too long. Decoded at once, as _take_lines would line by line."""
        end, after = env_end(buffer)
        if end < 0:
            self._buffer = buffer  # wait for the rest
            return
        text = buffer[:end].decode("utf-8", "replace")  # "\n" is never part of a UTF-8 sequence
        lines = text.split("\n") if end else []
        self._env = [line.removesuffix("\r") for line in lines] if "\r" in text else lines
        self._buffer = buffer[after:]  # before any command goes out: it may hold its reply
        self.hung_up = has_hangup_line(self._buffer)  # the caller left already (same segment)
        self._env_complete()

    def _take_lines(self, buffer: bytes) -> None:
        lines = buffer.split(b"\n")
        rest = lines.pop()
        for index, line in enumerate(lines):
            if self._state == _ENV:
                self._env_line(line)
            else:
                self._reply_line(line)
            if self._state != _ENV and self._state != _REPLY:
                if self._state != _DONE:  # the rest waits for the next command
                    self._hold(b"\n".join([*lines[index + 1 :], rest]))
                return
        limit = self._config.max_env_bytes if self._state == _ENV else _MAX_REPLY_BYTES
        if len(rest) > limit:  # keep skipping until the line ends
            self._skipping = True
            rest = b""
        self._buffer = rest

    def _hold(self, buffer: bytes) -> None:
        """Keep what came while no reply is awaited; Asterisk sends nothing here but HANGUP,
        so stop reading rather than hold more than a reply's limit."""
        self._buffer = buffer
        self.hung_up = self.hung_up or has_hangup_line(buffer)  # while the decision is made
        if len(buffer) > _MAX_REPLY_BYTES and not (self._reading_paused or self._eof):
            self._reading_paused = True
            self._transport.pause_reading()

    def _env_line(self, line: bytes) -> None:
        # An oversized block is still read to its end, so that the Declined answer is
        # written to an Asterisk that is listening for commands again.
        max_bytes = self._config.max_env_bytes
        if self._skipping or len(line) >= max_bytes:  # longer than the limit with its "\n"
            self._skipping = False
            self._oversized = True
            return
        line = line.removesuffix(b"\r")
        if not line:
            self._env_complete()
            return
        self._env_bytes += len(line) + 1
        self._oversized = self._oversized or self._env_bytes > max_bytes
        if not self._oversized:
            self._env.append(line.decode("utf-8", "replace"))

    def _env_complete(self) -> None:
        assert self._timer is not None
        self._timer.cancel()
        self._state = _DISPATCH  # from here on close() lets the session finish
        self._debug = enabled(self._log, logging.DEBUG)
        if self._oversized:
            self._log.warning("agi_env_rejected", reason="oversized", **self.context)
            self._answer(declined(ErrorCode.E_INVALID_ARGUMENT))
            return
        try:
            request = wire.build_request(wire.parse_env_block(self._env), self.peer_ip)
        except wire.EnvError as error:
            self._log.warning("agi_env_rejected", reason=error.detail, code=error.code.value, **self.context)
            self._answer(declined(error.code))
            return
        self._request = request
        self.context |= {"script": request.script, "uniqueid": request.uniqueid}
        if self._debug:
            self._log.debug("agi_request", args=redacted(request.args), **self.context)
        self._task = self._loop.create_task(self._run_dispatch(request))

    def _env_timeout(self) -> None:
        self._log.info("agi_env_timeout", **self.context)
        self._end("env_timeout")

    # --- the answer (_Dispatching's decides it) -------------------------------------------

    def _answer(self, variables: dict[str, str]) -> None:
        if self._state == _DONE:  # ended by an error of our own meanwhile
            return
        try:
            self._commands = self._encode(variables).lines
            if self._lost:  # Asterisk left during the dispatch
                self._peer_lost()
            elif self._commands:
                self._send_next()
                self._unless_half_closed()
            else:
                self._end("answered")
        except Exception:
            self._fail()

    # --- commands and replies -------------------------------------------------------------

    def _send_next(self) -> None:
        """The next command, within reply_timeout_s of which its reply must have come."""
        self._timer = self._loop.call_later(self._config.reply_timeout_s, self._reply_timeout)
        if self._writing_paused:
            self._state = _WRITE  # resume_writing() sends it
        else:
            self._write_command()

    def _write_command(self) -> None:
        self._transport.write(self._commands[self.commands_sent].encode("utf-8") + b"\n")
        self.commands_sent += 1
        self._state = _REPLY
        if self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()
        if self._buffer:
            held, self._buffer = self._buffer, b""
            self._take_lines(held)

    def _unless_half_closed(self) -> None:
        """Once the replies held so far are used up: with the peer half closed, the command in
        flight can get no reply."""
        if self._eof and self._state == _REPLY:
            self._peer_lost()

    def _reply_line(self, line: bytes) -> None:
        if self._skipping or len(line) >= _MAX_REPLY_BYTES:  # longer than the limit with its "\n"
            self._skipping = False
            self._reply_too_long()
            return
        text = line.removesuffix(b"\r").decode("utf-8", "replace")
        reply = self._reply
        if not reply and wire.is_hangup(text):
            # Out of band: the channel hung up. The reply to our command still follows.
            self.hangups_seen += 1
            self.hung_up = True
            return
        reply.append(text)
        if wire.reply_needs_more(reply):
            self._reply_bytes += len(line) + 1
            if self._reply_bytes > _MAX_REPLY_BYTES:  # a 520 usage block is bounded like one line
                self._reply_too_long()
            return
        self._reply = []
        self._reply_bytes = 0
        assert self._timer is not None
        self._timer.cancel()
        parsed = wire.parse_reply(reply)
        if not parsed.ok:
            self._log.warning("agi_command_refused", code=parsed.code, reply=parsed.text[:200],
                              command_number=self.commands_sent, **self.context)
            self._end("refused")
        elif self.commands_sent < len(self._commands):
            self._send_next()
        else:
            self._delivered = not self.hung_up
            self._end("answered")

    def _reply_too_long(self) -> None:
        self._log.warning("agi_reply_too_long", **self.context)
        self._end("protocol_error")

    def _reply_timeout(self) -> None:
        self._log.warning("agi_reply_timeout", timeout_s=self._config.reply_timeout_s, **self.context)
        self._end("reply_timeout")

    # --- the end --------------------------------------------------------------------------

    def _peer_lost(self) -> None:
        exc = self._lost_exc
        if exc is not None and not isinstance(exc, ConnectionError):
            self._fail(exc)
            return
        if exc is not None:
            detail = type(exc).__name__
        else:
            detail = "EOF inside the env block" if self._state == _ENV else "EOF while waiting for a reply"
        self._log.info("agi_peer_gone", detail=detail, **self.context)
        self._end("peer_gone")

    def _fail(self, exc_info: BaseException | bool = True) -> None:
        self._log.exception("agi_session_failed", exc_info=exc_info, **self.context)
        self._end("error")

    def _end(self, outcome: str) -> None:
        """Close the connection; the session is over when the transport is."""
        if self._state == _DONE:
            return
        self._state = _DONE
        self._outcome = outcome
        if self._timer is not None:
            self._timer.cancel()
        if self._lost:
            self._finish()
            return
        transport = self._transport
        unsent = transport.get_write_buffer_size()
        transport.close()
        if unsent:  # a peer that stops reading would hold a graceful close: bounded
            self._timer = self._loop.call_later(self._config.reply_timeout_s, transport.abort)

    def _cancel(self) -> None:
        """Drop the session now: close() with the env block incomplete, or the task cancelled."""
        if self._state == _DONE:
            return
        self._state = _DONE
        self._outcome = "cancelled"
        if self._timer is not None:
            self._timer.cancel()
        self._log.info("agi_session_cancelled", **self.context)
        if self._lost:
            self._finish()
        else:
            self._transport.abort()

    def _finish(self) -> None:
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
        duration_s = time.monotonic() - self._started
        context = self.context
        metrics.session_done(str(context.get("script", "")), str(context.get("result", "")), self._error,
                             self._outcome, duration_s)
        if self._outcome != "cancelled":
            self._log.info("agi_session_done", outcome=self._outcome, commands=self.commands_sent,
                           hangups=self.hangups_seen, duration_ms=round(duration_s * 1000, 1), **context)
        self._server._session_over(self)
        if self._sent is not None and self._request is not None and not self._delivered and (
                self.hung_up or self.commands_sent == 0):  # a dead channel, or nothing ever sent
            self._server._undelivered(self._request, self._sent, self.context)
