"""The HTTP shim: Narayana Billing API 2.2 over aiohttp, a thin transport.

Routes:
- GET|POST /billing/api/{version}/{key}/{method} — the API. Arguments are the query
  string and the body (form, multipart or a JSON object of scalars; the body wins over
  the query, the last of repeated fields wins; see billing_core.http.form for the limits).
  The shim checks only the version (2.2, else 400 E_INCORRECT_API_VERSION) and builds
  `Credentials(peer_ip, "http", apikey)`; the dispatcher authenticates, authorizes and
  validates. The answer's form and status: billing_core.http.answers.
- GET|POST /billing/api/{version}/{key}/{method}.{form} — the method's file form
  (`getLogs.csv`), the same credentials and checks; the body is the file, streamed
  (billing_core.http.files).
- GET /healthz — 200 "ok" when the database answers SELECT 1 within 1 s, else 503
  "unavailable"; 503 "degraded: …" while start-up still waits for the database
  (billing_core.readiness).
- GET /metrics — Prometheus exposition (billing_core.http.metrics).
- POST /jsonrpc/ — the JeraSoft VCS door (billing_core.http.vcs); GET|POST /billmgr — the
  BILLmanager door (billing_core.http.billmgr); both over the same dispatcher.
- GET /openapi.json — the OpenAPI 3.1 description made from the registry
  (billing_core.http.openapi); GET /docs — the same as an HTML page (docs_page).
- anything else — 404 (405 for a verb other than GET/POST), JSON envelope E_UNKNOWN_METHOD.

Connections (billing_core.http.connections): at most CALLGATE_HTTP_MAX_CONNECTIONS open,
closed after CALLGATE_HTTP_IDLE_TIMEOUT_S without a complete request head, a body read
bounded by CALLGATE_HTTP_BODY_TIMEOUT_S (408), and a request aiohttp cannot parse (a line
over 8190 bytes) answered 400 in the envelope without quoting it.

Logging: one `http.request` event per request with the API method, HTTP verb, status,
error code, peer and duration; never the path (it holds the API key) nor the query
string or body (they hold passwords). aiohttp's access log is off, and its server logger
(which quotes the raw request line of unparseable requests) is replaced by one that
keeps only the exception type.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy import text

from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.errors import ApiError, ErrorCode
from billing_core.http import answers, billmgr, docs_page, metrics, openapi, vcs, vcs_files
from billing_core.http.appkeys import DISPATCHER, LIMITS, SPOOL_BACKLOG, TRACE, Trace
from billing_core.http.connections import LINGER_S, CappedSite, ConnectionFactory, HttpLimits
from billing_core.http.form import MAX_BODY_BYTES, BadInput, request_arguments
from billing_core.spool import Spool, SpoolBacklog

log = structlog.get_logger(__name__)

API_VERSION = "2.2"
API_PREFIX = "/billing/api/"
API_ROUTE = API_PREFIX + "{version}/{key}/{method}"
HEALTH_TIMEOUT_S = 1.0

# The other front doors (billing_core.http.vcs, billing_core.http.billmgr) count as API requests.
API_PATHS = (API_PREFIX, vcs.PATH, vcs_files.PATH, billmgr.PATH)


async def _api(request: web.Request) -> web.StreamResponse:
    dispatcher = request.app[DISPATCHER]
    trace = request[TRACE]
    # `getLogs.csv`: the method's file form (billing_core.http.files)
    method, dot, form = request.match_info["method"].partition(".")
    if dispatcher.registry.get(method) is not None:
        trace.method = method
    if request.match_info["version"] != API_VERSION:
        error = ApiError(ErrorCode.E_INCORRECT_API_VERSION, f"this server speaks version {API_VERSION}")
        trace.result = error.code.value
        return answers.error_response(error)
    raw = await _arguments(request)
    cred = Credentials(
        peer_ip=request.remote or "", transport="http", apikey=request.match_info["key"], secure=request.secure
    )
    outcome = await dispatcher.call(method, raw, cred, form=form if dot else None)
    trace.result = answers.result_label(outcome)
    plain = outcome.key is not None and outcome.key.auth_by in dispatcher.services.settings.plain_auth_by
    return answers.render(outcome, plain=plain)


async def _arguments(request: web.Request) -> dict[str, str]:
    """The request's arguments, the body read within the body time-out (a slow body would
    otherwise hold its connection, and a file descriptor, for as long as the client likes)."""
    timeout_s = request.app[LIMITS].body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await request_arguments(request)
    except TimeoutError:
        raise BadInput(f"the request body did not arrive within {timeout_s:g} s", status=408) from None


async def _healthz(request: web.Request) -> web.StreamResponse:
    services = request.app[DISPATCHER].services
    readiness = services.readiness
    if not readiness.ready:
        why = readiness.last_error or "starting"
        detail = f"degraded: database not ready after {readiness.attempts} attempts ({why})"
        return web.Response(status=503, text=detail)
    db = services.db
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            async with db.begin(timeout_s=HEALTH_TIMEOUT_S) as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not healthy"; the type is enough to log
        log.warning("http.health_failed", error=type(exc).__name__)
        return web.Response(status=503, text="unavailable")
    return web.Response(text="ok")


async def _openapi(request: web.Request) -> web.StreamResponse:
    body = openapi.spec_text(request.app[DISPATCHER].registry)
    return web.Response(text=body, content_type="application/json", charset="utf-8")


async def _docs(request: web.Request) -> web.StreamResponse:
    body = docs_page.page(request.app[DISPATCHER].registry)
    return web.Response(text=body, content_type="text/html", charset="utf-8")


async def _metrics(request: web.Request) -> web.StreamResponse:
    body, content_type = metrics.exposition((request.app[SPOOL_BACKLOG],))
    return web.Response(body=body, headers={"Content-Type": content_type})


def _http_error(exc: web.HTTPException) -> web.Response:
    """Routing and protocol errors (404, 405, 413 …) in the API's JSON envelope."""
    code = ErrorCode.E_UNKNOWN_METHOD if exc.status in (404, 405) else ErrorCode.E_INVALID_ARGUMENT
    response = answers.error_response(ApiError(code, exc.reason), status=exc.status)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes an envelope (never a traceback); one log line per request."""
    trace = Trace()
    request[TRACE] = trace
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = _http_error(exc)
        trace.result = ErrorCode.E_UNKNOWN_METHOD.value if exc.status in (404, 405) else "bad_request"
    except BadInput as exc:
        response = answers.error_response(ApiError(ErrorCode.E_INVALID_ARGUMENT, exc.detail), status=exc.status)
        if exc.status == 408:
            response.force_close()  # the rest of the body may still be on its way
        trace.result = ErrorCode.E_INVALID_ARGUMENT.value
    except Exception as exc:
        # The message may quote input; log where it happened, not what it said.
        log.error("http.unexpected_error", error=type(exc).__name__, at=_where(exc))
        response = answers.error_response(ApiError(ErrorCode.E_LUA_EXCEPTION), status=500)
        trace.result = ErrorCode.E_LUA_EXCEPTION.value
    duration = time.perf_counter() - started
    if request.path.startswith(API_PATHS) or response.status == 404:
        metrics.observe(trace.method, trace.result, duration)
    log.info(
        "http.request",
        method=trace.method,
        verb=request.method,
        status=response.status,
        error=None if trace.result == "ok" else trace.result,
        peer=request.remote,
        duration_ms=round(duration * 1000, 2),
    )
    return response


def build_app(dispatcher: Dispatcher, limits: HttpLimits | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_guard])
    app[DISPATCHER] = dispatcher
    app[LIMITS] = limits or HttpLimits.from_settings(dispatcher.services.settings)
    app[SPOOL_BACKLOG] = SpoolBacklog(Spool(dispatcher.services.settings.spool_dir))
    # add_route, not add_get: add_get would also answer HEAD by running the method.
    app.router.add_route("GET", API_ROUTE, _api)
    app.router.add_route("POST", API_ROUTE, _api)
    app.router.add_route("GET", "/healthz", _healthz)
    app.router.add_route("GET", "/metrics", _metrics)
    vcs.add_routes(app)
    vcs_files.add_routes(app)
    billmgr.add_routes(app)
    app.router.add_route("GET", "/openapi.json", _openapi)
    app.router.add_route("GET", "/docs", _docs)
    return app


class _RedactRequestLine(logging.Filter):
    """aiohttp's server logger quotes the raw request line (API key, passwords) when it
    cannot parse a request: re-emit such records as a structlog event with the exception
    type only, and drop the original."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        event = "http.server_error" if record.levelno >= logging.WARNING else "http.server_debug"
        fields = {"detail": record.getMessage()[:200], "error": type(exc).__name__ if exc else None}
        if record.levelno >= logging.WARNING:
            log.warning(event, **fields)
        else:
            log.debug(event, **fields)
        return False


_server_logger = logging.getLogger("billing_core.http.server")
_server_logger.addFilter(_RedactRequestLine())


async def start_http(
    dispatcher: Dispatcher, host: str, port: int, *, reuse_port: bool = False, limits: HttpLimits | None = None
) -> web.AppRunner:
    """Serve the shim on host:port (0 = any free port, see `bound_port`); returns the
    started runner, to be stopped with `await runner.cleanup()`. `limits` default to the
    settings' (billing_core.http.connections)."""
    limits = limits or HttpLimits.from_settings(dispatcher.services.settings)
    handler_kwargs: dict[str, Any] = {
        "access_log": None,
        "logger": _server_logger,
        "keepalive_timeout": limits.idle_timeout_s,
        "lingering_time": LINGER_S,
    }
    runner = web.AppRunner(build_app(dispatcher, limits), **handler_kwargs)
    await runner.setup()
    assert runner.server is not None
    factory = ConnectionFactory(runner.server, limits, handler_kwargs)
    site = CappedSite(runner, host, port, factory, reuse_port=reuse_port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("http.listening", host=host, port=bound_port(runner), max_connections=limits.max_connections)
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port the runner's first listening socket is bound to."""
    addresses = runner.addresses
    if not addresses:
        raise RuntimeError("the HTTP runner is not listening")
    return int(addresses[0][1])
