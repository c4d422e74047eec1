"""Outcome → HTTP response (Narayana Billing API 2.2 answers).

JSON answer (the spec's envelope), `Content-Type: application/json; charset=utf-8`:
    {"result": bool, "response": ..., "description": str}
- success of a "json"/"depends" method: result=true, response = the value (Decimal money is
  written as an exact JSON number, e.g. 0.10, never through float; money_json decides
  its digits), description "".
- success of a "bool" method: result=true, response=true. The spec says such methods have
  "no answer but only result"; repeating true in `response` keeps the field's type
  predictable for clients that test `response` instead of `result`.
- a "bool" method that answers a DescribedAnswer (doMaintenance): its value as result and
  response, its description as description.
- a "text" method: result = TextAnswer.ok, response = TextAnswer.text; a declined answer
  (`Declined E_X`) has result=false and description = E_X's description.
- a "binary" method: the bytes themselves, content type sniffed (PDF, WAV, else octet-stream).
- a file form (`getLogs.csv`) or any method answering a FileAnswer: the file, streamed
  (billing_core.http.files).
- an error: result=false, response = the E_* code, description = ApiError.detail.

Plain answer (the spec's `config.api_plain_answer`, used when the key's auth_by is in
settings.plain_auth_by), `Content-Type: text/plain; charset=utf-8`: the body is only
TextAnswer.text, a str value as is, "true"/"false" for a bool, the JSON of any other
value, or the E_* code on error. A plain answer needs an identified key, so requests
rejected before the key is known (404, bad version, bad body, 401, 403) answer JSON.

HTTP status — the same for JSON and plain answers. The spec defines only three statuses
with fixed meanings (400 "the query is incorrect", 401 "the key is incorrect", 403
"access from this IP denied"), so they are used exactly for those, and every other
failure is a 200 whose `result` is false and whose `response` says why:
| answer | status |
|---|---|
| success, or a text method's declined answer | 200 |
| KeyRejected: unknown or disabled API key (the source IP is then banned) | 401 |
| SourceForbidden: source IP banned or outside the key's masks | 403 |
| E_INCORRECT_API_VERSION, E_UNKNOWN_METHOD, E_UNDEFINED_INSTRUCTION, E_MISSING_ARGUMENT, E_INVALID_ARGUMENT | 400 |
| E_AUTH_FAILED for login/password, E_INSUFFICIENT_ACCESS, E_DOES_NOT_BELONG_TO_YOU, other E_* | 200 |
| E_SQL_ERROR (database unreachable: retry later) | 503 |
| E_LUA_EXCEPTION (a bug: unexpected exception in a handler) | 500 |
Using 401/403 for a wrong user password or a missing right would tell a client that
follows the spec that its key is bad or its IP is locked out, which is false. The shim
adds 404 (no such path, E_UNKNOWN_METHOD), 405 (verb other than GET/POST) and 413 (body
over 64 KiB, E_INVALID_ARGUMENT), all with the JSON envelope.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import simplejson  # type: ignore[import-untyped]
import structlog
from aiohttp import web

from billing_core.api.dispatch import Outcome
from billing_core.catalog.registry import DescribedAnswer, FileAnswer, TextAnswer
from billing_core.errors import DESCRIPTIONS, ApiError, ErrorCode, KeyRejected, SourceForbidden
from billing_core.http.files import file_response

log = structlog.get_logger(__name__)

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain"
CHARSET = "utf-8"

QUERY_ERRORS = frozenset(
    {
        ErrorCode.E_INCORRECT_API_VERSION,
        ErrorCode.E_UNKNOWN_METHOD,
        ErrorCode.E_UNDEFINED_INSTRUCTION,
        ErrorCode.E_MISSING_ARGUMENT,
        ErrorCode.E_INVALID_ARGUMENT,
    }
)
STATUS_BY_CODE: dict[ErrorCode, int] = {
    **dict.fromkeys(QUERY_ERRORS, 400),
    ErrorCode.E_SQL_ERROR: 503,
    ErrorCode.E_LUA_EXCEPTION: 500,
}


def status_for(error: ApiError) -> int:
    if isinstance(error, KeyRejected):
        return 401
    if isinstance(error, SourceForbidden):
        return 403
    return STATUS_BY_CODE.get(error.code, 200)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """JSON text; Decimal exact, NaN/Infinity refused (they are not JSON)."""
    text: str = simplejson.dumps(value, use_decimal=True, allow_nan=False, ensure_ascii=False, default=_json_default)
    return text


def _json(result: bool, response: Any, description: str, status: int) -> web.Response:
    body = dumps({"result": result, "response": response, "description": description})
    return web.Response(status=status, text=body, content_type=JSON_TYPE, charset=CHARSET)


def _plain(text: str, status: int) -> web.Response:
    return web.Response(status=status, text=text, content_type=TEXT_TYPE, charset=CHARSET)


def error_response(error: ApiError, *, plain: bool = False, status: int | None = None) -> web.Response:
    code = status if status is not None else status_for(error)
    if plain:
        return _plain(error.code.value, code)
    return _json(False, error.code.value, error.detail, code)


def _describe(code: str) -> str:
    try:
        return DESCRIPTIONS.get(ErrorCode(code), code)
    except ValueError:
        return code


def _text_response(answer: TextAnswer, plain: bool) -> web.Response:
    if plain:
        return _plain(answer.text, 200)
    description = "" if answer.ok else _describe(answer.error)
    return _json(answer.ok, answer.text, description, 200)


def _sniff(data: bytes) -> str:
    if data.startswith(b"%PDF"):
        return "application/pdf"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    return "application/octet-stream"


def _plain_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:f}"  # never exponent notation in a bare number
    if isinstance(value, int):
        return str(value)
    return dumps(value)


def _value_response(value: Any, plain: bool) -> web.Response:
    if isinstance(value, bytes | bytearray):
        return web.Response(status=200, body=bytes(value), content_type=_sniff(bytes(value)))
    if plain:
        return _plain(_plain_value(value), 200)
    result = value if isinstance(value, bool) else True
    return _json(result, value, "", 200)


def render(outcome: Outcome, *, plain: bool) -> web.Response:
    """The HTTP answer for a dispatcher outcome (see the module docstring for the rules)."""
    if outcome.error is not None:
        return error_response(outcome.error, plain=plain)
    value = outcome.value
    try:
        if isinstance(value, TextAnswer):
            return _text_response(value, plain)
        if isinstance(value, DescribedAnswer):
            if plain:
                return _plain(_plain_value(value.value), 200)
            return _json(value.value, value.value, value.description, 200)
        if isinstance(value, FileAnswer):
            return file_response(value)
        return _value_response(value, plain)
    except (TypeError, ValueError) as exc:
        # A handler returned something the wire cannot carry: a bug, not the caller's fault.
        method = outcome.method.name if outcome.method else "-"
        log.error("http.unserializable_answer", method=method, error=type(exc).__name__)
        return error_response(ApiError(ErrorCode.E_LUA_EXCEPTION), plain=plain)


def result_label(outcome: Outcome) -> str:
    """A bounded label for metrics: "ok", "declined" or an E_* code."""
    if outcome.error is not None:
        return outcome.error.code.value
    if isinstance(outcome.value, TextAnswer) and not outcome.value.ok:
        return outcome.value.error if outcome.value.error in ErrorCode.__members__ else "declined"
    return "ok"
