"""The HTTP shim's connections: bounded in number and in time, and answered in the API's
envelope even when aiohttp cannot parse the request.

19,985 connections that sent partial headers were once held open until the process ran
out of file descriptors; FastAGI then could not accept its calls and /healthz died. So:
- at most `max_connections` are open (CALLGATE_HTTP_MAX_CONNECTIONS, and never more than
  half the process's file-descriptor limit, so that FastAGI, the database and the spool
  keep theirs); one more is answered 503 in the JSON envelope and closed at once;
- a connection without a complete request head for `idle_timeout_s` is closed: a new
  one (headers trickled or never sent) as well as one idle between keep-alive requests.
  This is aiohttp's own `keepalive_timeout`, which aiohttp 3.14 arms from the moment a
  connection is made (tests/test_http_limits.py checks it);
- a body that does not arrive within `body_timeout_s` is answered 408 (billing_core.http.app).
aiohttp has no connection limit of its own, so the listening socket is served by a
protocol factory that counts connections (`CappedSite`).

aiohttp answers a request it cannot parse (a request line or header over 8190 bytes, a
malformed header) itself, with a text body that quotes the start of the offending line —
for an API request, the path with its key and the query with its password. `_Handler`
answers those 400s in the JSON envelope instead, with no byte of the request in it.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from billing_core.config import Settings
from billing_core.errors import ApiError, ErrorCode
from billing_core.http import answers

log = structlog.get_logger(__name__)

MIN_CONNECTIONS = 16
LINGER_S = 2.0  # after an early answer (408, 413), read and drop what is still sent for this long
REFUSAL_LOG_EVERY_S = 10.0
MAX_LINE_BYTES = 8190  # aiohttp's limit for the request line and each header


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_connections: int = 1000
    idle_timeout_s: float = 10.0
    body_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_connections=_fd_bounded(settings.http_max_connections),
            idle_timeout_s=settings.http_idle_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
        )


def _fd_bounded(configured: int) -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max(MIN_CONNECTIONS, configured)
    bounded = max(MIN_CONNECTIONS, min(configured, soft // 2))
    if bounded < configured:
        log.warning("http.max_connections_bounded", configured=configured, used=bounded, fd_limit=soft)
    return bounded


def _refusal_bytes() -> bytes:
    error = ApiError(ErrorCode.E_UNDEFINED_INSTRUCTION, "too many open connections; try again later")
    body = answers.error_response(error, status=503).text or ""
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body.encode())}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return (head + body).encode()


class _Handler(RequestHandler):
    """aiohttp's connection handler, counted, with unparseable requests answered in the
    envelope (see the module docstring)."""

    def __init__(self, factory: ConnectionFactory, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._factory = factory
        self._released = False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._released:
            self._released = True
            self._factory.open -= 1
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own handling logs (through the redacting logger of billing_core.http.app)
        # and raises if an answer was already sent; its text answer is not used.
        super().handle_error(request, status, exc, message)
        if status >= 500:
            error = ApiError(ErrorCode.E_LUA_EXCEPTION)
        elif isinstance(exc, LineTooLong):
            error = ApiError(ErrorCode.E_INVALID_ARGUMENT, f"request line or header longer than {MAX_LINE_BYTES} bytes")
        else:
            error = ApiError(ErrorCode.E_INVALID_ARGUMENT, "malformed request line or headers")
        response = answers.error_response(error, status=status)
        response.force_close()
        return response


class _Refusal(asyncio.Protocol):
    """A connection past the cap: a 503 in the envelope, then closed, without reading."""

    def __init__(self, factory: ConnectionFactory) -> None:
        self._factory = factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._factory.refusal)
        transport.close()
        self._factory.refused()


class ConnectionFactory:
    """The listening socket's protocol factory: a counted `_Handler` per connection up to
    the cap, a `_Refusal` past it."""

    def __init__(self, server: web.Server, limits: HttpLimits, handler_kwargs: dict[str, Any]) -> None:
        self.server = server
        self.limits = limits
        self.handler_kwargs = handler_kwargs
        self.open = 0
        self.refusal = _refusal_bytes()
        self._refused = 0
        self._last_report = 0.0

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.limits.max_connections:
            return _Refusal(self)
        self.open += 1
        loop = asyncio.get_running_loop()
        return _Handler(self, self.server, loop=loop, **self.handler_kwargs)

    def refused(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._last_report >= REFUSAL_LOG_EVERY_S:  # one line per burst, not per connection
            log.warning(
                "http.connections_refused",
                refused=self._refused,
                open=self.open,
                max_connections=self.limits.max_connections,
            )
            self._last_report = now
            self._refused = 0


class CappedSite(web.BaseSite):
    """A TCP site whose connections come from a ConnectionFactory."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, factory: ConnectionFactory, *, reuse_port: bool
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._factory = factory
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, self._host, self._port, reuse_port=self._reuse_port or None
        )
