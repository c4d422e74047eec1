"""The JeraSoft VCS door: JSON-RPC at `POST /jsonrpc/`, a thin transport to the dispatcher.

A request names a method (a Narayana name such as `getInfo`, or a VCS `module.action`
alias declared beside the method in the registry: `clients.editForm`), its params by
name (an object; a positional array holding one object counts as that object) and an
`id` that the answer echoes with its type. `"jsonrpc": "2.0"` may be there or not (the
seed's own request has none); the Content-Type is not looked at (jsonrpclib sends
text/xml). An array of requests is a batch, answered as an array; a request without
`id` is a notification (run, not answered; a batch of them only answers 204).

Credentials travel among the params: `auth: {"login", "password"}` with the password in
clear (the door sends its md5, the Narayana form, to the dispatcher's password check) or
`SID`, the `session_id` of an earlier answer. The door acts through the client key
`settings.vcs_apikey`, so its IP masks, allowed methods, the password lock-out and bans
apply exactly as at the Narayana door; no key configured = the door answers code:false.
`logout` (or `auth.logout`) with a SID ends that session.

Answer: {"jsonrpc": "2.0", "id": …, "result": {"code", "return", "session_id",
"messages", "errors"}}. A method failure is code:false with errors [{"code": "E_…",
"message": …}]; `return` is always an object (see `_return`). JSON-RPC `error` objects
are for protocol faults only: -32700 parse error, -32600 invalid request (also a body
over 64 KiB, HTTP 413), -32601 unknown method, -32602 params that are neither an object
nor an array of one object. Everything else is HTTP 200.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import simplejson  # type: ignore[import-untyped]
from aiohttp import web

from billing_core.api.dispatch import Credentials, Dispatcher, Outcome
from billing_core.auth.secrets_store import md5_hex
from billing_core.catalog.registry import MethodDef, TextAnswer
from billing_core.errors import DESCRIPTIONS, ApiError, ErrorCode
from billing_core.http.answers import dumps
from billing_core.http.appkeys import DISPATCHER, TRACE
from billing_core.http.form import MAX_BODY_BYTES, MAX_FIELDS, BadInput, check_field

PATH = "/jsonrpc"
MAX_BATCH = 100
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
LOGOUT = frozenset({"logout", "auth.logout"})
# Params the door consumes; the dispatcher's own `login`/`password` come only from `auth`.
DOOR_PARAMS = frozenset({"auth", "SID", "login", "password"})
JSON_TYPE = "application/json"


def add_routes(app: web.Application) -> None:
    for path in (PATH, PATH + "/"):
        app.router.add_route("POST", path, _endpoint)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _reply(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=dumps(payload), content_type=JSON_TYPE, charset="utf-8")


async def _endpoint(request: web.Request) -> web.StreamResponse:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _too_large()
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _too_large()
    try:
        data = simplejson.loads(body.decode("utf-8"), use_decimal=True, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        request[TRACE].result = "parse_error"
        return _reply(_error(None, PARSE_ERROR, "Parse error: the body is not UTF-8 JSON"))
    if isinstance(data, list):
        if not data or len(data) > MAX_BATCH:
            request[TRACE].result = "invalid_request"
            return _reply(_error(None, INVALID_REQUEST, f"Invalid Request: a batch holds 1..{MAX_BATCH} requests"))
        replies = [reply for item in data if (reply := await _one(request, item)) is not None]
        return _reply(replies) if replies else web.Response(status=204)
    reply = await _one(request, data)
    return _reply(reply) if reply is not None else web.Response(status=204)


def _too_large() -> web.Response:
    response = _reply(_error(None, INVALID_REQUEST, f"Invalid Request: the body exceeds {MAX_BODY_BYTES} bytes"), 413)
    response.force_close()
    return response


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | Decimal) and not isinstance(value, bool))


async def _one(request: web.Request, item: Any) -> dict[str, Any] | None:
    """One request's answer (None for a notification)."""
    trace = request[TRACE]
    if not isinstance(item, dict):
        trace.result = "invalid_request"
        return _error(None, INVALID_REQUEST, "Invalid Request: a request is an object")
    request_id = item.get("id")
    if not _valid_id(request_id):
        trace.result = "invalid_request"
        return _error(None, INVALID_REQUEST, "Invalid Request: id must be a string, a number or null")
    name = item.get("method")
    if not isinstance(name, str) or item.get("jsonrpc", "2.0") != "2.0":
        trace.result = "invalid_request"
        return _error(request_id, INVALID_REQUEST, "Invalid Request: method must be a string, jsonrpc absent or 2.0")
    params = item.get("params", {})
    if isinstance(params, list) and len(params) <= 1 and all(isinstance(p, dict) for p in params):
        params = params[0] if params else {}
    if not isinstance(params, dict):
        trace.result = "invalid_params"
        return _error(request_id, INVALID_PARAMS, "Invalid params: an object, or an array holding one object")
    dispatcher = request.app[DISPATCHER]
    if name in LOGOUT:
        result = await _logout(dispatcher, params)
    else:
        method = dispatcher.registry.vcs(name)
        if method is None:
            trace.result = ErrorCode.E_UNKNOWN_METHOD.value
            return _error(request_id, METHOD_NOT_FOUND, f"Method not found: {name[:64]}")
        trace.method = method.name
        outcome = await _call(request, dispatcher, method, params)
        trace.result = outcome.error.code.value if outcome.error else "ok"
        result = _result(outcome, method)
    return None if "id" not in item else {"jsonrpc": "2.0", "id": request_id, "result": result}


async def _logout(dispatcher: Dispatcher, params: dict[str, Any]) -> dict[str, Any]:
    session = params.get("SID")
    ended = isinstance(session, str) and await dispatcher.end_session(session)
    return _envelope(True, {"logged_out": ended}, None)


def _wire_value(name: str, value: Any) -> str | None:
    if value is None:
        return None  # null = argument absent
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | Decimal):
        return str(value)
    raise BadInput(f"argument {name[:64]!r} must be a string, number, boolean or null")


def arguments(params: dict[str, Any]) -> tuple[dict[str, str], str | None]:
    """The dispatcher's raw arguments (auth -> login + md5 password) and the SID, if any."""
    raw: dict[str, str] = {}
    for name, value in params.items():
        if name in DOOR_PARAMS:
            continue
        text = _wire_value(name, value)
        if text is not None:
            check_field(name, text)
            raw[name] = text
    if len(raw) > MAX_FIELDS:
        raise BadInput(f"more than {MAX_FIELDS} arguments")
    auth = params.get("auth")
    if auth is not None:
        if not isinstance(auth, dict) or not all(isinstance(auth.get(k), str) for k in ("login", "password")):
            raise BadInput("auth must be an object {login, password} of strings")
        check_field("login", auth["login"])
        check_field("password", auth["password"])
        raw["login"] = auth["login"]
        raw["password"] = md5_hex(auth["password"])
    session = params.get("SID")
    if session is not None and not isinstance(session, str):
        raise BadInput("SID must be a string")
    return raw, session


async def _call(request: web.Request, dispatcher: Dispatcher, method: MethodDef, params: dict[str, Any]) -> Outcome:
    apikey = dispatcher.services.settings.vcs_apikey
    if not apikey:
        detail = "the VCS door is closed: callgate has no CALLGATE_VCS_APIKEY"
        return Outcome(error=ApiError(ErrorCode.E_UNDEFINED_INSTRUCTION, detail), method=method)
    try:
        raw, session = arguments(params)
    except BadInput as exc:
        return Outcome(error=ApiError(ErrorCode.E_INVALID_ARGUMENT, exc.detail), method=method)
    cred = Credentials(
        peer_ip=request.remote or "",
        transport="vcs",
        apikey=apikey,
        secure=request.secure,
        sessions=True,
        session=session,
        open_session=True,
    )
    return await dispatcher.call(method.name, raw, cred)


def _envelope(
    code: bool, value: dict[str, Any], session: str | None, errors: list[Any] | None = None
) -> dict[str, Any]:
    return {"code": code, "return": value, "session_id": session, "messages": [], "errors": errors or []}


def _describe(code: str) -> str:
    try:
        return DESCRIPTIONS.get(ErrorCode(code), code)
    except ValueError:
        return code


def list_name(method: MethodDef) -> str:
    """The name a list answer travels under: the module of the first VCS alias (routes.list
    -> "routes"), else "list"."""
    return method.aliases.vcs[0].split(".", 1)[0] if method.aliases.vcs else "list"


def _return(value: Any, method: MethodDef) -> dict[str, Any]:
    """Always an object: a dict as is, a list under list_name, a bool as {"result"}, a text
    answer as {"text", "result", …fields}, any other value as {"value"}."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {list_name(method): value}
    if isinstance(value, bool):
        return {"result": value}
    if isinstance(value, TextAnswer):
        return {"text": value.text, "result": value.result, **value.fields}
    return {"value": value}


def _result(outcome: Outcome, method: MethodDef) -> dict[str, Any]:
    if outcome.error is not None:
        error = {"code": outcome.error.code.value, "message": outcome.error.detail}
        return _envelope(False, {}, outcome.session, [error])
    value = outcome.value
    if isinstance(value, bytes | bytearray):
        detail = "a file answer: ask for it over plain HTTP"
        error = {"code": ErrorCode.E_UNDEFINED_INSTRUCTION.value, "message": detail}
        return _envelope(False, {}, outcome.session, [error])
    if isinstance(value, TextAnswer) and not value.ok:
        error = {"code": value.error or "declined", "message": _describe(value.error)}
        return _envelope(False, _return(value, method), outcome.session, [error])
    code = value if isinstance(value, bool) else True
    try:
        dumps(value)
    except (TypeError, ValueError):
        error = {"code": ErrorCode.E_LUA_EXCEPTION.value, "message": DESCRIPTIONS[ErrorCode.E_LUA_EXCEPTION]}
        return _envelope(False, {}, outcome.session, [error])
    return _envelope(code, _return(value, method), outcome.session)
