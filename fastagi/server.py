"""An asyncio FastAGI server: one session per connection, one command in flight at a time.

A session reads the env block, asks the dispatcher for an answer, sends the answer as AGI
commands one at a time (each waits for its reply) and closes the socket, which ends the
AGI() application in the dialplan. Every step has a time limit: Asterisk itself waits for
the next command forever, so a stuck session would hold the call.

This module is the listener: the configuration, the listening socket and the set of open
sessions. A session (the per-connection asyncio.Protocol) is fastagi.session's; its names
that callers import from here are re-exported.

The server routes nothing and checks no permissions: the dispatcher gets the peer's IP.
"""

from __future__ import annotations

import asyncio
from functools import partial
from types import TracebackType
from typing import Final

import structlog

from fastagi import wire
from fastagi.config import ServerConfig as ServerConfig  # re-exported: callers build it from here
from fastagi.messages import AGIDispatcher, AGIRequest
from fastagi.session import _Session as _Session  # re-exported: tests drive a session by hand
from fastagi.session_util import declined, peer_ip_of, redacted

log = structlog.get_logger(__name__)

_BACKLOG: Final = 1024  # Asterisk opens one connection per AGI() call; bursts are normal


class FastAGIServer:
    """Owns the listening socket and every session: wait_closed() returns when all are over.

    close() stops listening and drops sessions still waiting for their env block; sessions
    already dispatched finish (a callFinish is a CDR), each bounded by its time limits.
    """

    def __init__(self, dispatch: AGIDispatcher, config: ServerConfig | None = None) -> None:
        self._dispatch = dispatch
        self._config = config or ServerConfig()
        self._closing = False
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._drained: list[asyncio.Future[None]] = []
        # The dispatcher's `undelivered(request, variables)`, if it has one: told of each answer
        # that never reached a live channel (a callPrepare's hold is then released).
        self._on_undelivered = getattr(dispatch, "undelivered", None)
        self._followups: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            partial(_Session, self, loop), host, port, reuse_port=reuse_port, backlog=_BACKLOG
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
        for session in [s for s in self._sessions if s.idle]:
            session._cancel()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        while self._sessions:
            waiter = asyncio.get_running_loop().create_future()
            self._drained.append(waiter)
            await waiter
        await self.settled()

    async def settled(self) -> None:
        """Wait for the dispatcher's follow-ups of undelivered answers started so far."""
        while self._followups:
            await asyncio.wait(set(self._followups))

    def _undelivered(self, request: AGIRequest, variables: dict[str, str], context: dict[str, object]) -> None:
        log.info("agi_answer_undelivered", **context)  # the context names the script and result
        if self._on_undelivered is None:
            return
        task = asyncio.get_running_loop().create_task(self._on_undelivered(request, variables))
        self._followups.add(task)
        task.add_done_callback(self._followed_up)

    def _followed_up(self, task: asyncio.Task[None]) -> None:
        self._followups.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agi_followup_failed", error=type(task.exception()).__name__)

    async def __aenter__(self) -> FastAGIServer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.close()
        await self.wait_closed()

    def _session_over(self, session: _Session) -> None:
        self._sessions.discard(session)
        if not self._sessions:
            for waiter in self._drained:
                if not waiter.done():
                    waiter.set_result(None)
            self._drained.clear()


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
